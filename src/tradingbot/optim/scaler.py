"""Variance-based gradient scaler: shrink gradients whose per-element noise dominates their signal.

Per element it tracks EMAs of ``g`` and ``g^2`` over optimizer steps (bias-corrected like Adam), so
noise that cancels across elements (two weights whose gradients flip sign in opposite directions,
leaving the tensor's mean gradient at zero) is still seen as variance — tracking the variance of a
tensor's mean gradient would miss it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

__all__ = ["VarianceGradientScaler"]

_AGGREGATES = ("mean", "percentile")


def noise_to_signal_ratios(
    mean_hat: Tensor, sq_mean_hat: Tensor, sizes: list[int], eps: float
) -> Tensor:
    """
    Per-tensor noise-to-signal ratios ``mean(s) / (mean(E[g]^2) + eps)``.

    Parameters
    ----------
    mean_hat : Tensor
        bias-corrected EMA of ``g`` (``E[g]``) of every tensor, flattened and concatenated.
    sq_mean_hat : Tensor
        bias-corrected EMA of ``g^2`` (``E[g^2]``), same layout.
    sizes : list[int]
        the number of elements of each tensor, in order (they sum to the length).
    eps : float
        added to the denominator.

    Returns
    -------
    Tensor
        1-D float64 tensor, one ratio per tensor; ``s = max(E[g^2] - E[g]^2, 0)`` is the per-
        element variance.
    """
    signal = mean_hat.square()
    variance = (sq_mean_hat - signal).clamp_min_(0.0)
    # Both per-tensor sums from one (2, n) tensor: one reduction per tensor, not two.
    both = torch.stack([variance, signal])
    sums = torch.stack([part.sum(dim=1) for part in both.split(sizes, dim=1)]).double()
    counts = torch.tensor(sizes, dtype=torch.float64, device=sums.device)
    return (sums[:, 0] / counts) / (sums[:, 1] / counts + eps)


def aggregate_ratios(ratios: Tensor, aggregate: str, percentile: float) -> Tensor:
    """
    Combine per-tensor ratios: their mean, or a percentile (linear interpolation).

    Parameters
    ----------
    ratios : Tensor
        1-D tensor of per-tensor ratios.
    aggregate : str
        ``"mean"`` or ``"percentile"``.
    percentile : float
        percentile in ``[0, 100]`` used when ``aggregate == "percentile"``.

    Returns
    -------
    Tensor
        0-dim tensor.
    """
    if aggregate == "mean":
        return ratios.mean()
    return torch.quantile(ratios, percentile / 100.0)


def scale_factor(ratio: float, alpha: float, min_factor: float) -> float:
    """``clamp(1 / (1 + alpha * ratio), min_factor, 1)``."""
    return min(max(1.0 / (1.0 + alpha * ratio), min_factor), 1.0)


class VarianceGradientScaler:
    """
    Scale all gradients down when their stochastic variance is large relative to their mean.

    Call :meth:`update` with the flat (raw, unclipped) gradient after ``backward()`` and
    multiply the gradients by the factor it returns (DistributionalPPO's update does so through
    ``clip_scales``, after the norm clip of the raw gradient). The caller calls it only with
    finite gradients (a non-finite step is skipped before the scaler, changing none of its
    statistics). Each call advances the step
    count ``t`` and, for each tensor, the per-element EMAs ``m <- beta m + (1 - beta) g`` and
    ``q <- beta q + (1 - beta) g^2`` (bias-corrected by ``1 - beta^k``, ``k`` the number of
    updates of that tensor). Then ``s = max(q_hat - m_hat^2, 0)``, the per-tensor ratio is
    ``mean(s) / (mean(m_hat^2) + eps)``, the ratios of the tensors are aggregated (mean or
    percentile) into ``r`` and ``factor = clamp(1 / (1 + alpha r), min_factor, 1)``. Once
    ``t > warmup`` the factor is that; before, it is 1 (statistics are still updated).

    Parameters
    ----------
    params : Iterable[Tensor]
        the parameters whose gradients are scaled (order matters for the state).
    beta : float
        EMA decay of the gradient moments, in ``[0, 1)``.
    alpha : float
        strength: the factor is ``1 / (1 + alpha * ratio)`` before clamping.
    eps : float
        added to the signal term of the ratio.
    warmup : int
        number of steps during which statistics are gathered but the factor is 1.
    min_factor : float
        lower bound of the factor, in ``(0, 1]``.
    aggregate : str
        ``"mean"`` of the per-tensor ratios or a ``"percentile"`` of them.
    percentile : float
        percentile in ``[0, 100]`` for ``aggregate="percentile"``.
    max_ratio : float | None
        upper bound of each tensor's ratio before aggregation (``None``: none), so that one
        tensor whose mean gradient vanishes (ratio ~ variance / eps) cannot dominate the mean of
        the ratios.
    grad_norm_beta : float | None
        decay of an EMA of the global L2 norm of the (finite) gradients it sees, bias-corrected,
        exposed as ``grad_norm_ema`` for logging (``None``: not tracked; when tracked,
        ``state_dict`` carries it under ``grad_norm_ema`` and ``grad_norm_steps``).

    Attributes ``last_factor`` (the factor returned by the latest call) and ``last_ratio`` (the
    aggregated ratio, ``nan`` before the first finite step) are meant for logging.
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        beta: float = 0.99,
        alpha: float = 1.0,
        eps: float = 1e-8,
        warmup: int = 10,
        min_factor: float = 0.1,
        aggregate: str = "mean",
        percentile: float = 90.0,
        max_ratio: float | None = None,
        grad_norm_beta: float | None = None,
    ) -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta (need 0 <= beta < 1): {beta}")
        if alpha < 0.0:
            raise ValueError(f"Invalid alpha: {alpha}")
        if eps <= 0.0:
            raise ValueError(f"Invalid eps: {eps}")
        if warmup < 0:
            raise ValueError(f"Invalid warmup: {warmup}")
        if not 0.0 < min_factor <= 1.0:
            raise ValueError(f"Invalid min_factor (need 0 < min_factor <= 1): {min_factor}")
        if aggregate not in _AGGREGATES:
            raise ValueError(f"Invalid aggregate {aggregate!r}, expected one of {_AGGREGATES}")
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"Invalid percentile: {percentile}")
        if max_ratio is not None and not max_ratio > 0.0:
            raise ValueError(f"Invalid max_ratio (need > 0): {max_ratio}")
        if grad_norm_beta is not None and not 0.0 <= grad_norm_beta < 1.0:
            raise ValueError(f"Invalid grad_norm_beta (need 0 <= beta < 1): {grad_norm_beta}")
        self.params = list(params)
        if not self.params:
            raise ValueError("VarianceGradientScaler got an empty parameter list")
        self.beta = beta
        self.alpha = alpha
        self.eps = eps
        self.warmup = warmup
        self.min_factor = min_factor
        self.aggregate = aggregate
        self.percentile = percentile
        self.max_ratio = max_ratio
        self.grad_norm_beta = grad_norm_beta
        self._norm_ema = 0.0
        self._norm_steps = 0
        if len({(p.dtype, p.device) for p in self.params}) > 1:
            raise ValueError("VarianceGradientScaler needs parameters of one dtype and device")
        self.step_count = 0
        # Statistics live in flat buffers (one kernel per operation over all tensors);
        # ``exp_avg[i]`` / ``exp_avg_sq[i]`` are views of parameter i's part.
        self.sizes = [p.numel() for p in self.params]
        first = self.params[0]
        self._flat_exp_avg = torch.zeros(sum(self.sizes), dtype=first.dtype, device=first.device)
        self._flat_exp_avg_sq = torch.zeros_like(self._flat_exp_avg)
        self.exp_avg = self._views(self._flat_exp_avg)
        self.exp_avg_sq = self._views(self._flat_exp_avg_sq)
        # Per-tensor update counts (saved with the state; equal unless a loaded state says
        # otherwise, which keeps each tensor's bias correction exact).
        self.tensor_steps = torch.zeros(len(self.params), dtype=torch.int64)
        self.last_factor = 1.0
        self.last_ratio = float("nan")

    @property
    def grad_norm_ema(self) -> float:
        """Bias-corrected EMA of the global gradient norm (``nan`` before the first step or
        when not tracked)."""
        if self.grad_norm_beta is None or self._norm_steps == 0:
            return float("nan")
        return self._norm_ema / (1.0 - self.grad_norm_beta**self._norm_steps)

    def _views(self, flat: Tensor) -> list[Tensor]:
        return [
            part.view_as(p) for part, p in zip(flat.split(self.sizes), self.params, strict=True)
        ]

    @torch.no_grad()
    def update(self, flat_grad: Tensor) -> float:
        """
        Advance the statistics with one finite gradient and return its factor, without
        touching any gradient (the caller applies it).

        Parameters
        ----------
        flat_grad : Tensor
            every parameter's gradient flattened and concatenated in the constructor's order (the
            caller has checked that it is finite).

        Returns
        -------
        float
            the factor (1.0 during warmup).
        """
        self.step_count += 1
        weight = 1.0 - self.beta
        self.tensor_steps += 1
        self._flat_exp_avg.mul_(self.beta).add_(flat_grad, alpha=weight)
        self._flat_exp_avg_sq.mul_(self.beta).addcmul_(flat_grad, flat_grad, value=weight)
        steps = self.tensor_steps.tolist()
        if len(set(steps)) == 1:
            correction: Tensor | float = 1.0 - self.beta ** steps[0]
        else:  # some tensor missed a step: a bias correction per tensor, per element
            per_tensor = 1.0 - self.beta ** self.tensor_steps.double()
            sizes = torch.tensor(self.sizes, device=per_tensor.device)
            correction = per_tensor.repeat_interleave(sizes).to(flat_grad)
        ratios = noise_to_signal_ratios(
            self._flat_exp_avg / correction,
            self._flat_exp_avg_sq / correction,
            self.sizes,
            self.eps,
        )
        if self.max_ratio is not None:
            ratios = ratios.clamp(max=self.max_ratio)
        if self.grad_norm_beta is not None:
            norm = float(torch.linalg.vector_norm(flat_grad.double()))
            beta = self.grad_norm_beta
            self._norm_ema = beta * self._norm_ema + (1.0 - beta) * norm
            self._norm_steps += 1
        ratio = float(aggregate_ratios(ratios, self.aggregate, self.percentile))
        self.last_ratio = ratio
        factor = 1.0
        if self.step_count > self.warmup:
            factor = scale_factor(ratio, self.alpha, self.min_factor)
        self.last_factor = factor
        return factor

    def state_dict(self) -> dict[str, Tensor | int | float]:
        """Flat state of tensors and plain numbers (no pickled objects; safetensors-friendly).

        Keys: ``step_count``, ``last_factor``, ``last_ratio``, ``tensor_steps`` and
        ``exp_avg.{i}``, ``exp_avg_sq.{i}`` per parameter index ``i``. Hyperparameters are not
        included (they come from the configuration).
        """
        state: dict[str, Tensor | int | float] = {
            "step_count": self.step_count,
            "last_factor": self.last_factor,
            "last_ratio": self.last_ratio,
            "tensor_steps": self.tensor_steps.clone(),
        }
        for i, (m, q) in enumerate(zip(self.exp_avg, self.exp_avg_sq, strict=True)):
            state[f"exp_avg.{i}"] = m.clone()
            state[f"exp_avg_sq.{i}"] = q.clone()
        if self.grad_norm_beta is not None:
            state["grad_norm_ema"] = self._norm_ema
            state["grad_norm_steps"] = self._norm_steps
        return state

    def load_state_dict(self, state_dict: dict[str, Tensor | int | float]) -> None:
        """
        Restore a state produced by :meth:`state_dict` (values are copied).

        Parameters
        ----------
        state_dict : dict[str, Tensor | int | float]
            the flat state; shapes must match this scaler's parameters.
        """
        expected = {"step_count", "last_factor", "last_ratio", "tensor_steps"}
        expected |= {f"{k}.{i}" for i in range(len(self.params)) for k in ("exp_avg", "exp_avg_sq")}
        norm_keys = {"grad_norm_ema", "grad_norm_steps"}
        if self.grad_norm_beta is not None and not norm_keys & set(state_dict):
            state_dict = {**state_dict, "grad_norm_ema": 0.0, "grad_norm_steps": 0}  # older
        if self.grad_norm_beta is not None:
            expected |= norm_keys
        if set(state_dict) != expected:
            missing, extra = expected - set(state_dict), set(state_dict) - expected
            raise ValueError(
                f"scaler state mismatch: missing {sorted(missing)}, unexpected {sorted(extra)}"
            )
        tensor_steps = torch.as_tensor(state_dict["tensor_steps"], dtype=torch.int64)
        if tensor_steps.shape != self.tensor_steps.shape:
            raise ValueError("scaler state has a different number of parameters")
        for i, p in enumerate(self.params):
            for key, target in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
                value = state_dict[f"{key}.{i}"]
                if not isinstance(value, Tensor) or value.shape != p.shape:
                    raise ValueError(f"scaler state {key}.{i} does not match parameter {i}")
                target[i].copy_(value.detach())
        self.tensor_steps = tensor_steps.clone()
        self.step_count = int(state_dict["step_count"])
        self.last_factor = float(state_dict["last_factor"])
        self.last_ratio = float(state_dict["last_ratio"])
        if self.grad_norm_beta is not None:
            self._norm_ema = float(state_dict["grad_norm_ema"])
            self._norm_steps = int(state_dict["grad_norm_steps"])
