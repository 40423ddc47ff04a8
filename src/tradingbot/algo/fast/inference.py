"""The fused rollout step of the recurrent actor-critic: both LSTMs advanced in one cell step
(one input matmul, one sigmoid over three gates of every LSTM) and the actor and critic layers
fused layer by layer into one matmul each. Rollouts call it once per env step, where the
per-op dispatch of ``nn.LSTM`` and separate heads costs more than the arithmetic. Its reference
is the policy's ``evaluate_sequences`` (``nn.LSTM`` and the separate heads), which it must
equal (tests/test_fast_inference.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch as th
from torch import nn


class LSTMStates(NamedTuple):
    """Hidden and cell states, each (batch, n_lstms * hidden): columns ``[0, H)`` belong to the
    actor LSTM and ``[H, 2H)`` to the critic LSTM (absent with a shared LSTM)."""

    h: th.Tensor
    c: th.Tensor


class RolloutWeights(NamedTuple):
    """Inference-time weights derived from the parameters by :func:`derive_rollout_weights`
    (a few dozen small ops, so once per rollout and after each update, not per step); valid
    until the parameters change.

    The LSTMs' gate rows are side by side, LSTM by LSTM, each reordered to (input, forget,
    output, cell) so one sigmoid covers three gates of every LSTM; each LSTM keeps its own
    recurrent weight (``lstm_weight_hh``, one per LSTM: a block-diagonal one would multiply
    zeros); the weights are transposed for ``addmm``. ``layers`` are the actor MLP + head
    and the critic MLPs fused layer by layer into one block-diagonal (or, on a shared LSTM's
    features, concatenated) matmul each: the last layer's output is the actor's output followed
    by every critic's pre-quantile output (``n_actor`` columns, then ``n_critics`` blocks);
    ``activation`` (``PPOConfig.activation``'s function) follows every layer but the last."""

    lstm_weight_ih: th.Tensor
    lstm_weight_hh: list[th.Tensor]
    lstm_bias: th.Tensor
    layers: list[tuple[th.Tensor, th.Tensor]]
    log_std: th.Tensor | None
    std: th.Tensor | None
    hidden_size: int
    n_actor: int
    n_critics: int
    activation: Callable[[th.Tensor], th.Tensor]


@th.no_grad()
def derive_rollout_weights(
    lstms: Sequence[nn.LSTM],
    actor_linears: Sequence[nn.Linear],
    critic_first: nn.Linear,
    critic_weights: Sequence[th.Tensor],
    critic_biases: Sequence[th.Tensor],
    n_critics: int,
    shared_lstm: bool,
    log_std: th.Tensor | None,
    activation: Callable[[th.Tensor], th.Tensor],
) -> RolloutWeights:
    """
    The fused inference weights of the actor-critic's parameters.

    Parameters
    ----------
    lstms : sequence of nn.LSTM
        The LSTMs in state-column order (the actor's, then the critic's unless shared).
    actor_linears : sequence of nn.Linear
        The actor MLP's linear layers, then its head.
    critic_first : nn.Linear
        The critics' first layer (one wide ``Linear`` for every critic).
    critic_weights, critic_biases : sequence of Tensor
        The critics' later layers, (n_critics, fan_in, fan_out) and (n_critics, 1, fan_out).
    n_critics : int
        Number of critics.
    shared_lstm : bool
        Actor and critic read one LSTM (the first layers are concatenated, not block-diagonal).
    log_std : Tensor or None
        The Gaussian's log-std (``None``: categorical actor).
    activation : callable
        The hidden layers' activation (``heads.ACTIVATIONS[PPOConfig.activation]``).

    Returns
    -------
    RolloutWeights
    """
    # Gates (i, f, g, o) reordered to (i, f, o, g), LSTM after LSTM.
    n = lstms[0].hidden_size
    order = th.tensor([0, 1, 3, 2], device=critic_first.weight.device)

    def reordered(tensor: th.Tensor) -> th.Tensor:  # (4H, ...) with the gates reordered
        return tensor.view(4, n, *tensor.shape[1:]).index_select(0, order).flatten(0, 1)

    weight_ih = th.cat([reordered(lstm.weight_ih_l0) for lstm in lstms]).t().contiguous()
    weight_hh = [reordered(lstm.weight_hh_l0).t().contiguous() for lstm in lstms]
    bias = th.cat([reordered(lstm.bias_ih_l0 + lstm.bias_hh_l0) for lstm in lstms])

    layers = []
    for depth, actor_linear in enumerate(actor_linears):
        if depth == 0:
            critic_w, critic_b = critic_first.weight.t(), critic_first.bias
            if shared_lstm:
                weight = th.cat([actor_linear.weight.t(), critic_w], dim=1)
            else:
                weight = th.block_diag(actor_linear.weight.t(), critic_w)
        else:
            critic_b = critic_biases[depth - 1].reshape(-1)
            weight = th.block_diag(actor_linear.weight.t(), *critic_weights[depth - 1].unbind(0))
        layers.append((weight.contiguous(), th.cat([actor_linear.bias, critic_b])))
    std = None if log_std is None else th.exp(log_std)
    n_actor = actor_linears[-1].out_features
    return RolloutWeights(
        weight_ih, weight_hh, bias, layers, log_std, std, n, n_actor, n_critics, activation
    )


def reset_started(states: LSTMStates, keep: th.Tensor | None) -> LSTMStates:
    """The LSTM states with those of environments that start an episode set to zeros.

    ``keep``: ``1 - episode_starts`` of shape (n_envs, 1), or ``None`` when no environment
    starts one (the states are returned as they are).
    """
    if keep is None:
        return states
    # Replace, not multiply: a state made NaN by a bad observation must not outlive the
    # episode (NaN * 0 is NaN).
    h, c = states
    return LSTMStates(th.where(keep > 0, h, 0.0), th.where(keep > 0, c, 0.0))


def fused_step(
    obs: th.Tensor, states: LSTMStates, keep: th.Tensor | None, weights: RolloutWeights
) -> tuple[th.Tensor, th.Tensor, LSTMStates]:
    """
    The network part of a rollout step, with few small ops (no grad; call it under
    ``th.inference_mode``): one LSTM cell step and the fused actor/critic layers.

    Parameters
    ----------
    obs : Tensor
        Observations, shape (n_envs, obs_dim).
    states : LSTMStates
        LSTM states before this step (not yet reset).
    keep : Tensor or None
        ``1 - episode_starts`` of shape (n_envs, 1) (states are kept where it is positive,
        replaced by zeros elsewhere), or ``None`` when no env starts an episode.
    weights : RolloutWeights
        From :func:`derive_rollout_weights` of the current parameters.

    Returns
    -------
    tuple of (Tensor, Tensor, LSTMStates)
        Actor output (Gaussian mean or logits) (n_envs, out), the critics' pre-quantile output
        (n_envs, n_critics, n_quantiles) and the new LSTM states.
    """
    h, c = reset_started(states, keep)
    batch, n, n_lstms = h.shape[0], weights.hidden_size, len(weights.lstm_weight_hh)
    gates = th.addmm(weights.lstm_bias, obs, weights.lstm_weight_ih)
    for k, weight_hh in enumerate(weights.lstm_weight_hh):
        gates[:, 4 * n * k : 4 * n * (k + 1)].addmm_(h[:, n * k : n * (k + 1)], weight_hh)
    gates = gates.view(batch, n_lstms, 4 * n)
    sig = th.sigmoid(gates[..., : 3 * n])
    c = th.addcmul(
        sig[..., n : 2 * n] * c.view(batch, n_lstms, n),
        sig[..., :n],
        th.tanh(gates[..., 3 * n :]),
    )
    h = (sig[..., 2 * n :] * th.tanh(c)).view(batch, -1)
    c = c.view(batch, -1)
    x = h
    for depth, (weight, bias) in enumerate(weights.layers):
        if depth:
            x = weights.activation(x)
        x = th.addmm(bias, x, weight)
    n_actor = weights.n_actor
    critic_raw = x[:, n_actor:].view(x.shape[0], weights.n_critics, -1)
    return x[:, :n_actor], critic_raw, LSTMStates(h, c)
