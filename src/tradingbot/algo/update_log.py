"""What one DistributionalPPO update logs (``train/*``), from the update's inputs and results."""

from __future__ import annotations

import numpy as np
import torch as th

from tradingbot.algo.config import PPOConfig
from tradingbot.algo.policy import RecurrentActorCritic
from tradingbot.algo.state import TrainState
from tradingbot.algo.update import EpochsResult, UpdateContext


def lstm_norms(lstm_states: th.Tensor, hidden_size: int, shared_lstm: bool) -> dict[str, float]:
    """
    Mean L2 norm of the stored actor and critic LSTM hidden states of a rollout.

    Parameters
    ----------
    lstm_states : Tensor
        The buffer's stored states, (n_steps, 2, n_envs, state_size) with h first.
    hidden_size : int
        Units of each LSTM (the actor's are the first ``hidden_size`` columns).
    shared_lstm : bool
        One LSTM only (no critic norm).

    Returns
    -------
    dict of str to float
    """
    h = lstm_states[:, 0]
    norms = {"lstm_h_norm_actor": float(h[..., :hidden_size].norm(dim=-1).mean())}
    if not shared_lstm:
        norms["lstm_h_norm_critic"] = float(h[..., hidden_size:].norm(dim=-1).mean())
    return norms


def update_metrics(
    cfg: PPOConfig,
    state: TrainState,
    ctx: UpdateContext,
    result: EpochsResult,
    measured: dict[str, float],
    skipped_before: int,
    rollout_ev: float,
    policy: RecurrentActorCritic,
    lstm_states: th.Tensor,
) -> dict[str, float]:
    """
    The metrics of one update, logged as ``train/<name>``: the epochs' means (but the loss),
    the update's constants, the train state after it, the rollout's statistics.

    Parameters
    ----------
    cfg : PPOConfig
        The hyperparameters (which options are on).
    state : TrainState
        The train state after the update.
    ctx : UpdateContext
        The update's constants.
    result : EpochsResult
        What the epochs did.
    measured : dict of str to float
        Metrics measured before and after the epochs (CVaR shaping, KL after the update, ...).
    skipped_before : int
        ``state.skipped_steps`` before the epochs.
    rollout_ev : float
        Explained variance of the rollout's values.
    policy : RecurrentActorCritic
        The policy (its action std).
    lstm_states : Tensor
        The rollout's stored LSTM states.

    Returns
    -------
    dict of str to float
    """
    metrics = {
        **measured,
        **lstm_norms(lstm_states, policy.hidden_size, policy.shared_lstm),
    }
    means = {name: float(np.mean(values)) for name, values in result.stats.items()}
    metrics.update({name: mean for name, mean in means.items() if name != "loss"})
    if ctx.sigma_bar is not None:
        metrics["sigma_bar"] = state.sigma_bar
    if ctx.robust is not None:
        metrics["robust_epsilon"] = ctx.robust.epsilon
    metrics.update(ent_coef=ctx.ent_coef, clip_range=ctx.clip_range)
    if cfg.vf_coef_warmup > 0 and ctx.vf_coef is not None:
        metrics["vf_coef"] = ctx.vf_coef
    if cfg.entropy.boost_factor > 1.0:
        metrics["ent_boost"] = state.entropy_boost
    metrics.update(
        skipped_steps=state.skipped_steps,
        skipped_steps_update=state.skipped_steps - skipped_before,
        early_stopped=int(result.early_stopped),
        explained_variance=rollout_ev,
    )
    if not policy.discrete:
        with th.no_grad():
            metrics["std"] = float(th.exp(policy.log_std()).mean())
    metrics.update(return_mean=ctx.ret_mean, return_std=ctx.ret_std)
    return metrics
