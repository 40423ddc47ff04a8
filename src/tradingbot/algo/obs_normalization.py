"""Observation normalization owned by the algorithm, the input-side analogue of PopArt.

The policy reads ``x_n = clip((x - mu) / s, -c, c)`` with ``s = sqrt(var + eps)``, running
statistics ``(mu, var)`` of the raw observations ``x`` (SB3's ``RunningMeanStd``). Within a rollout
they are constant, and the rollout's buffer holds the normalized observations, so the update
sees what the rollout's policy saw. After the update the statistics absorb the rollout's raw
observations, and every linear map that reads ``x_n`` (each LSTM's ``W_ih``, ``b_ih``) is
rewritten so that the function of ``x`` does not change:

    W' (x - mu') / s' + b' = W (x - mu) / s + b   for every x
    <=> W' = W * s' / s (column by column),  b' = b + W (mu' - mu) / s

(exact wherever the clip binds neither before nor after). So moving statistics cannot move a
policy whose learning rate has decayed to nothing, unlike ``VecNormalize``'s (docs/benchmarks.md,
issue 24).

Adam's moments of the rescaled columns are rescaled with them: the gradient of a column of
``W'`` is that of ``W``'s times ``s / s'`` (its input is scaled by ``s / s'``), so ``m`` is
multiplied by ``s / s'`` and ``v`` by ``(s / s')^2``, the moments the gradients would have had in
the new parameterization; Adam's step ``m / sqrt(v)`` is then what it was (up to ``eps``), as it
would be had the weights not been rewritten. The mean shift mixes a column's gradient into the
bias's, which a per-element (diagonal) state cannot represent: that part is left as it is.
"""

from __future__ import annotations

import numpy as np
import torch as th
from stable_baselines3.common.running_mean_std import RunningMeanStd
from torch import nn

from tradingbot.algo.config_sections import ObservationNormalizationConfig
from tradingbot.algo.fast.flat import FlatGradients


def normalize_observations(
    obs: th.Tensor, mean: th.Tensor, std: th.Tensor, clip: float
) -> th.Tensor:
    """
    ``clip((obs - mean) / std, -clip, clip)``, as ``VecNormalize`` normalizes.

    Parameters
    ----------
    obs : Tensor
        Raw observations (..., obs_dim).
    mean, std : Tensor
        Per-entry mean and ``sqrt(var + epsilon)``, (obs_dim,), the dtype of ``obs``.
    clip : float
        Bound of the normalized observation.

    Returns
    -------
    Tensor
    """
    return ((obs - mean) / std).clamp(-clip, clip)


def compensated_input_layer(
    weight: th.Tensor,
    bias: th.Tensor,
    old: tuple[th.Tensor, th.Tensor],
    new: tuple[th.Tensor, th.Tensor],
) -> tuple[th.Tensor, th.Tensor]:
    """
    The weight and bias of a linear map on normalized inputs that compute, on the inputs
    normalized with the ``new`` statistics, what ``(weight, bias)`` computed with the ``old``.

    ``W' = W * s' / s`` (per input column) and ``b' = b + W (mu' - mu) / s``.

    Parameters
    ----------
    weight : Tensor
        (out, obs_dim).
    bias : Tensor
        (out,).
    old, new : tuple of Tensor
        (mean, std) before and after, each (obs_dim,), float64 (the arithmetic is float64; the
        result has ``weight``'s dtype).

    Returns
    -------
    tuple of Tensor
        (new weight, new bias).
    """
    (mean, std), (new_mean, new_std) = old, new
    w = weight.to(th.float64)
    new_weight = w * (new_std / std)
    new_bias = bias.to(th.float64) + w @ ((new_mean - mean) / std)
    return new_weight.to(weight.dtype), new_bias.to(bias.dtype)


class ObservationNormalizer(nn.Module):
    """
    The running observation statistics (buffers ``mean``, ``var``, ``count``, float64, saved
    with the policy) and the normalization they define.

    Parameters
    ----------
    obs_dim : int
        Entries of one observation.
    clip : float
        Bound of the normalized observation.
    epsilon : float
        Added to the variance before the square root.
    """

    mean: th.Tensor
    var: th.Tensor
    count: th.Tensor

    def __init__(self, obs_dim: int, clip: float, epsilon: float) -> None:
        super().__init__()
        self.clip, self.epsilon = clip, epsilon
        # RunningMeanStd's start: mean 0, var 1, a count of 1e-4.
        start = RunningMeanStd(shape=(obs_dim,))
        self.register_buffer("mean", th.as_tensor(start.mean, dtype=th.float64))
        self.register_buffer("var", th.as_tensor(start.var, dtype=th.float64))
        self.register_buffer("count", th.tensor(float(start.count), dtype=th.float64))

    def std(self) -> th.Tensor:
        """``sqrt(var + epsilon)``, float64, (obs_dim,)."""
        return th.sqrt(self.var + self.epsilon)

    def forward(self, obs: th.Tensor) -> th.Tensor:
        """The normalized observations (``obs``'s dtype; the statistics rounded to it)."""
        mean, std = self.mean.to(obs.dtype), self.std().to(obs.dtype)
        return normalize_observations(obs, mean, std, self.clip)

    @th.no_grad()
    def absorb(self, raw_obs: th.Tensor) -> tuple[tuple[th.Tensor, th.Tensor], ...]:
        """
        Update the statistics with a batch of raw observations (``RunningMeanStd.update``, the
        parallel formula).

        Parameters
        ----------
        raw_obs : Tensor
            (batch, obs_dim).

        Returns
        -------
        tuple
            ((mean, std) before, (mean, std) after), float64.
        """
        old = (self.mean.clone(), self.std())
        rms = RunningMeanStd(shape=tuple(self.mean.shape))
        rms.mean = self.mean.cpu().numpy().copy()
        rms.var = self.var.cpu().numpy().copy()
        rms.count = float(self.count)
        rms.update(raw_obs.detach().cpu().numpy().astype(np.float64))
        self.mean.copy_(th.as_tensor(rms.mean))
        self.var.copy_(th.as_tensor(rms.var))
        self.count.fill_(float(rms.count))
        return old, (self.mean.clone(), self.std())


def observation_normalizer(
    obs_dim: int, config: ObservationNormalizationConfig
) -> ObservationNormalizer | None:
    """The policy's :class:`ObservationNormalizer` under ``config`` (``None`` when it is off)."""
    if not config.enabled:
        return None
    return ObservationNormalizer(obs_dim, config.clip, config.epsilon)


def normalized(normalizer: ObservationNormalizer | None, obs: th.Tensor) -> th.Tensor:
    """``obs`` under ``normalizer`` (unchanged when observation normalization is off)."""
    return obs if normalizer is None else normalizer(obs)


@th.no_grad()
def absorb_observations(
    normalizer: ObservationNormalizer,
    lstms: list[nn.LSTM],
    raw_obs: th.Tensor,
    adam_moments: list[tuple[th.Tensor, th.Tensor]] | None = None,
    compensate_initial: bool = True,
) -> None:
    """
    Update the statistics with ``raw_obs`` and rewrite each LSTM's input weights (``W_ih``,
    ``b_ih``) so that the LSTMs compute on raw observations what they computed before
    (:func:`compensated_input_layer`); rescale the Adam moments of each ``W_ih`` (see the
    module docstring).

    Parameters
    ----------
    normalizer : ObservationNormalizer
        The statistics, updated.
    lstms : list of nn.LSTM
        Every LSTM that reads the normalized observation.
    raw_obs : Tensor
        The rollout's raw observations, (batch, obs_dim).
    adam_moments : list of (Tensor, Tensor), optional
        Per LSTM, the (exp_avg, exp_avg_sq) of its ``W_ih``, shaped like it (views into the
        optimizer state), rescaled in place; ``None``: no Adam state to rescale.
    compensate_initial : bool
        Rewrite the weights at the first update of the statistics too (their start, mean 0 and
        variance 1, has a count under 1). ``False``: the first statistics are set and nothing
        is rewritten, so the policy starts on normalized inputs.
    """
    first = float(normalizer.count) < 1
    old, new = normalizer.absorb(raw_obs)
    if first and not compensate_initial:
        return
    for lstm in lstms:
        weight, bias = compensated_input_layer(lstm.weight_ih_l0, lstm.bias_ih_l0, old, new)
        lstm.weight_ih_l0.copy_(weight)
        lstm.bias_ih_l0.copy_(bias)
    if adam_moments is None:
        return
    grad_ratio = (old[1] / new[1]).to(lstms[0].weight_ih_l0.dtype)  # s / s' per column
    for exp_avg, exp_avg_sq in adam_moments:
        exp_avg.mul_(grad_ratio)
        exp_avg_sq.mul_(grad_ratio.square())


def input_weight_moments(
    optimizer: th.optim.Optimizer, gradients: FlatGradients, lstms: list[nn.LSTM]
) -> list[tuple[th.Tensor, th.Tensor]] | None:
    """
    Views of the optimizer's (exp_avg, exp_avg_sq) of each LSTM's ``W_ih``, shaped like it:
    slices of the flat state of Adam (one flat parameter) or the per-parameter state of the
    adaptive UPGD. ``None`` before the first step, or for an optimizer without those moments
    (plain UPGD: its utilities are left as they are).

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        The model's optimizer.
    gradients : FlatGradients
        The policy's flat parameters (where each parameter lies in Adam's flat state).
    lstms : list of nn.LSTM
        The LSTMs reading the observation.

    Returns
    -------
    list of (Tensor, Tensor) or None
    """
    flat_state = optimizer.state.get(gradients.param, {})
    offsets, start = {}, 0
    for p in gradients.params:
        offsets[id(p)] = start
        start += p.numel()
    moments = []
    for lstm in lstms:
        weight = lstm.weight_ih_l0
        if "exp_avg" in flat_state:
            begin = offsets[id(weight)]
            moments.append(
                tuple(
                    flat_state[name][begin : begin + weight.numel()].view_as(weight)
                    for name in ("exp_avg", "exp_avg_sq")
                )
            )
            continue
        state = optimizer.state.get(weight, {})
        if "exp_avg" not in state or "exp_avg_sq" not in state:
            return None
        moments.append((state["exp_avg"], state["exp_avg_sq"]))
    return moments  # type: ignore[return-value]
