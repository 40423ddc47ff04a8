"""The named steps of one DistributionalPPO update before and after its epochs (see
``DistributionalPPO.train``): return statistics, CVaR shaping of the advantages, the update's
constants, and the adaptations measured after the epochs. Each takes what it reads and returns
what it computes."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.running_mean_std import RunningMeanStd

from tradingbot.algo.buffer import SequenceChunks
from tradingbot.algo.config import PPOConfig, RiskConfig
from tradingbot.algo.learner import Learner
from tradingbot.algo.losses import cvar_from_quantiles, quantile_spread
from tradingbot.algo.obs_normalization import absorb_observations, input_weight_moments
from tradingbot.algo.risk import dual_ascent, empirical_cvar, shape_advantages
from tradingbot.algo.robust import robust_step
from tradingbot.algo.schedules import (
    adapt_clip_range,
    adapt_kl_beta,
    decay_awr_coef,
    entropy_coef,
    linear_schedule,
    update_entropy_boost,
    warmup_coef,
)
from tradingbot.algo.state import TrainState
from tradingbot.algo.update import UpdateContext, kl_after_update

LOGGER = logging.getLogger(__name__)
# A return std that grows by more than this factor in one update is reported (an outlier reward
# or a broken environment; ordinary training moves it by a few percent per update).
RETURN_STD_JUMP = 100.0


def return_scale(return_rms: RunningMeanStd, normalize: bool) -> tuple[float, float]:
    """
    (mean, std) mapping the critic's normalized outputs to return units.

    Parameters
    ----------
    return_rms : RunningMeanStd
        Running statistics of the lambda-returns.
    normalize : bool
        ``PPOConfig.normalize_returns`` (``False``: the identity, (0, 1)).

    Returns
    -------
    tuple of float
    """
    if not normalize:
        return 0.0, 1.0
    return float(return_rms.mean), float(np.sqrt(return_rms.var + 1e-8))


def update_return_statistics(
    return_rms: RunningMeanStd, returns: th.Tensor, normalize: bool, warn_on_jump: bool
) -> bool:
    """
    Add this rollout's lambda-returns to the running statistics (return normalization without
    lag: they update the statistics before they normalize this update's value targets).

    Parameters
    ----------
    return_rms : RunningMeanStd
        Updated in place (unless ``normalize`` is off or a return is not finite).
    returns : Tensor
        The rollout's lambda-returns.
    normalize : bool
        ``PPOConfig.normalize_returns``.
    warn_on_jump : bool
        Warn when the std grows by more than ``RETURN_STD_JUMP`` (not on the first update).

    Returns
    -------
    bool
        Whether every return is finite.
    """
    returns_finite = bool(th.isfinite(returns).all())
    if normalize and returns_finite:
        std_before = return_scale(return_rms, normalize)[1]
        return_rms.update(returns.reshape(-1).double().cpu().numpy())
        # The statistics never forget (running, not moving): one extreme return rescales
        # the critic's targets for the rest of training, so say so when it happens.
        std_after = return_scale(return_rms, normalize)[1]
        jump = std_after / std_before
        if warn_on_jump and jump > RETURN_STD_JUMP:
            LOGGER.warning(
                "warning: one rollout's returns (|G| up to %.3g) multiplied the return "
                "std by %.3g (now %.3g); the running statistics keep this for the rest "
                "of training",
                float(returns.abs().max()),
                jump,
                std_after,
            )
    return returns_finite


@dataclasses.dataclass(frozen=True)
class RiskShaping:
    """
    The output of :func:`shape_rollout_advantages`.

    Parameters
    ----------
    advantages : Tensor
        The advantages the update uses (shaped under a risk mode, else the input).
    risk_multiplier : float
        The CVaR multiplier after this rollout (dual ascent under ``cvar_constraint``).
    metrics : dict of str to float
        CVaR of the critic and of the returns; the weight and penalty when shaping.
    """

    advantages: th.Tensor
    risk_multiplier: float
    metrics: dict[str, float]


def shape_rollout_advantages(
    advantages: th.Tensor,
    returns: th.Tensor,
    quantiles: th.Tensor,
    risk: RiskConfig,
    risk_multiplier: float,
    returns_finite: bool,
) -> RiskShaping:
    """
    CVaR metrics of the rollout and, under a risk mode, the Rockafellar-Uryasev shaping of its
    advantages (:func:`~tradingbot.algo.risk.shape_advantages`) and the dual-ascent step of
    ``cvar_constraint``.

    Parameters
    ----------
    advantages, returns : Tensor
        The rollout's GAE advantages and lambda-returns, (n_steps, n_envs).
    quantiles : Tensor
        The stored quantiles (return units), (n_steps, n_envs, n_critics, n_quantiles).
    risk : RiskConfig
        The risk objective.
    risk_multiplier : float
        The current multiplier (``TrainState.risk_multiplier``).
    returns_finite : bool
        No dual-ascent step on a rollout with non-finite returns.

    Returns
    -------
    RiskShaping
    """
    critic_cvar = cvar_from_quantiles(quantiles.mean(dim=-2), risk.alpha)
    cvar = empirical_cvar(returns, risk.alpha)
    metrics = {"cvar_critic": float(critic_cvar.mean()), "cvar_empirical": cvar}
    if risk.mode == "none":
        return RiskShaping(advantages, risk_multiplier, metrics)
    weight = risk.weight if risk.mode == "mean_cvar" else risk_multiplier
    shaped, penalty = shape_advantages(advantages, returns, quantiles, risk.alpha, weight)
    if risk.mode == "cvar_constraint" and returns_finite:
        risk_multiplier = dual_ascent(
            weight, cvar, risk.cvar_limit, risk.dual_lr, risk.max_multiplier
        )
    metrics.update(risk_weight=weight, risk_penalty=float(penalty.mean()))
    return RiskShaping(shaped, risk_multiplier, metrics)


def begin_update(
    state: TrainState, cfg: PPOConfig, rollout_ev: float, quantiles: th.Tensor, ret_std: float
) -> None:
    """
    The train-state changes made before the epochs: the entropy boost follows the rollout's
    explained variance; on the first update, DSAC-T's ``sigma_bar`` starts at the rollout's
    mean quantile spread (normalized units) and the adaptive clip range at ``clip_range``.

    Parameters
    ----------
    state : TrainState
        Changed in place.
    cfg : PPOConfig
        The hyperparameters.
    rollout_ev : float
        Explained variance of the rollout's values.
    quantiles : Tensor
        The stored quantiles (return units).
    ret_std : float
        The return-normalization std.
    """
    ent = cfg.entropy
    if ent.boost_factor > 1.0:
        state.entropy_boost = update_entropy_boost(
            state.entropy_boost, rollout_ev, ent.ev_threshold, ent.boost_factor, ent.boost_max
        )
    if cfg.critic_adjust.mode == "dsac_t" and not state.sigma_bar > 0:
        spread = float(quantile_spread(quantiles).mean()) / ret_std
        if np.isfinite(spread):
            state.sigma_bar = spread
    if cfg.clip_adapt.enabled and not state.clip_range > 0:
        state.clip_range = cfg.clip_range


def update_context(
    cfg: PPOConfig,
    state: TrainState,
    advantages: th.Tensor,
    progress_remaining: float,
    return_stats: tuple[float, float],
    observation_space: spaces.Space,
    device: th.device | str,
) -> UpdateContext:
    """
    The constants of this update's minibatches, from the config, the training progress and
    the train state (read only).

    Parameters
    ----------
    cfg : PPOConfig
        The hyperparameters.
    state : TrainState
        Entropy boost, sigma_bar, KL beta, AWR coefficient and adapted clip range.
    advantages : Tensor
        The (shaped) advantages (their mean and std under ``rollout`` normalization).
    progress_remaining : float
        1 at the start of training, 0 at the end.
    return_stats : tuple of float
        The return-normalization (mean, std).
    observation_space : gymnasium.spaces.Space
        For the robust-training bounds.
    device : torch.device or str
        Where the robust-training tensors live.

    Returns
    -------
    UpdateContext
    """
    ent = cfg.entropy
    ent_coef = entropy_coef(
        cfg.ent_coef, ent.final, progress_remaining, state.entropy_boost, ent.minimum
    )
    robust = None
    if cfg.robust.enabled:  # off: nothing runs and no random number is drawn
        robust = robust_step(cfg.robust, progress_remaining, observation_space, device)
    clip_range = linear_schedule(cfg.clip_range, cfg.clip_range_final, progress_remaining)
    if cfg.clip_adapt.enabled:
        clip_range = state.clip_range
    adv_stats = None
    if cfg.advantage_normalization == "rollout":
        adv_stats = (float(advantages.mean()), float(advantages.std()))
    return UpdateContext(
        ret_mean=return_stats[0],
        ret_std=return_stats[1],
        ent_coef=ent_coef,
        clip_range=clip_range,
        adv_stats=adv_stats,
        sigma_bar=state.sigma_bar if cfg.critic_adjust.mode == "dsac_t" else None,
        kl_beta=state.kl_beta if cfg.kl_penalty else None,
        awr_coef=state.awr_coef if cfg.awr.enabled else None,
        robust=robust,
        vf_coef=warmup_coef(
            cfg.vf_coef, cfg.vf_coef_initial, cfg.vf_coef_warmup, progress_remaining
        ),
    )


def end_update(
    learner: Learner, chunks: SequenceChunks, stats: dict[str, list[float]]
) -> dict[str, float]:
    """
    The train-state changes measured after the epochs: KL beta and the adaptive clip range from
    the exact KL the update caused (one forward pass over the rollout), the AWR coefficient
    from the BC/PPO ratio.

    Parameters
    ----------
    learner : Learner
        Its ``train_state`` is changed in place.
    chunks : SequenceChunks
        The rollout's chunks.
    stats : dict of str to list of float
        The epochs' statistics (:class:`~tradingbot.algo.update.EpochsResult`).

    Returns
    -------
    dict of str to float
        The metrics to log (``kl_after_update``, ``kl_beta``, ``awr_coef``), as they apply.
    """
    cfg, state = learner.config, learner.train_state
    metrics: dict[str, float] = {}
    if (cfg.kl_penalty or cfg.clip_adapt.enabled) and stats.get("kl_exact"):
        # The KL the update caused, measured after it (the minibatches' KLs are measured
        # before each step, the first at ~0).
        kl_after = kl_after_update(learner, chunks)
        metrics["kl_after_update"] = kl_after
        if cfg.kl_penalty:
            target = cfg.kl_penalty_target or cfg.target_kl
            assert target is not None
            state.kl_beta = adapt_kl_beta(state.kl_beta, kl_after, target)
            metrics["kl_beta"] = state.kl_beta
        if cfg.clip_adapt.enabled:
            adapt = cfg.clip_adapt
            state.clip_range = adapt_clip_range(
                state.clip_range, kl_after, adapt.target_kl, adapt.factor, adapt.min_clip,
                adapt.max_clip,
            )  # fmt: skip
    if cfg.awr.enabled and stats.get("bc_ppo_ratio"):
        metrics["awr_coef"] = state.awr_coef  # the coefficient this update used
        ratio = float(np.mean(stats["bc_ppo_ratio"]))
        state.awr_coef = decay_awr_coef(state.awr_coef, ratio, cfg.awr.max_ratio, cfg.awr.decay)
    return metrics


def absorb_rollout_observations(learner: Learner, raw_obs: list[th.Tensor] | None) -> None:
    """
    After an update under ``observation_normalization``: the statistics absorb the rollout's raw
    observations and the LSTMs' input weights (and their Adam moments) are rewritten so that
    the policy computes the same function of raw observations
    (:func:`~tradingbot.algo.obs_normalization.absorb_observations`). Nothing when the option is
    off.

    Parameters
    ----------
    learner : Learner
        Policy, flat parameters and optimizer, changed in place.
    raw_obs : list of Tensor or None
        The rollout's raw observations, step by step, each (n_envs, obs_dim).
    """
    normalizer = learner.policy.obs_normalizer
    if normalizer is None or not raw_obs:
        return
    lstms = learner.policy.lstms
    moments = input_weight_moments(learner.optimizer, learner.gradients, lstms)
    compensate_initial = learner.config.observation_normalization.compensate_initial
    absorb_observations(normalizer, lstms, th.cat(raw_obs), moments, compensate_initial)
