"""The epochs of one DistributionalPPO update (:func:`run_epochs`) and each gradient step in
them: losses of a minibatch (accumulated over microbatches), then the gradient-variance
scaler, the per-network norm clip and the optimizer step. Everything here works on a
:class:`~tradingbot.algo.learner.Learner`, not on the algorithm."""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict

import numpy as np
import torch as th

from tradingbot.algo.buffer import SequenceChunks
from tradingbot.algo.fast.compiled import call_compiled, call_eager
from tradingbot.algo.fast.flat import clip_scales
from tradingbot.algo.guard import StepUndo
from tradingbot.algo.learner import Learner
from tradingbot.algo.losses import (
    categorical_kl,
    clipped_surrogate,
    critic_loss_per_sample,
    dsac_t_weights,
    gaussian_kl,
    k3_kl,
    quantile_spread,
)
from tradingbot.algo.robust import RobustStep, attacked_chunks, robust_regularizer


@dataclasses.dataclass(frozen=True)
class UpdateContext:
    """
    Constants of one update, shared by its minibatches.

    Parameters
    ----------
    ret_mean : float
        Return-normalization mean (targets and old quantiles are normalized).
    ret_std : float
        Return-normalization std.
    ent_coef : float
        Entropy coefficient of this update.
    clip_range : float
        Surrogate clip range of this update.
    adv_stats : tuple[float, float] | None
        (mean, std) of the rollout's advantages for ``rollout`` normalization (the advantages
        are divided by ``std + 1e-8``).
    sigma_bar : float | None
        DSAC-T ``sigma_bar`` (``None``: plain critic loss).
    kl_beta : float | None
        KL-penalty coefficient (``None``: no penalty).
    awr_coef : float | None
        AWR coefficient (``None``: no BC term).
    robust : RobustStep | None
        Robust-training constants (``None``: no adversarial regularizer).
    vf_coef : float | None
        Value-loss coefficient of this update (``None``: ``PPOConfig.vf_coef``).
    """

    ret_mean: float
    ret_std: float
    ent_coef: float
    clip_range: float
    adv_stats: tuple[float, float] | None = None
    sigma_bar: float | None = None
    kl_beta: float | None = None
    awr_coef: float | None = None
    robust: RobustStep | None = None
    vf_coef: float | None = None


def exact_kl(old_params: th.Tensor, new_params: th.Tensor, discrete: bool) -> th.Tensor:
    """Exact per-sample KL(old || new) from stored distribution parameters: logits
    (categorical) or ``[mean, std]`` of the pre-squash Gaussian (the tanh squash is a
    bijection, so the squashed distributions have the same KL)."""
    if discrete:
        return categorical_kl(old_params, new_params)
    dim = old_params.shape[-1] // 2
    return gaussian_kl(
        old_params[..., :dim], old_params[..., dim:], new_params[..., :dim], new_params[..., dim:]
    )


@th.no_grad()
def kl_after_update(learner: Learner, chunks: SequenceChunks) -> float:
    """Mean exact KL(old || current) of the action distributions over ``chunks`` (the whole
    rollout): the KL the update caused, measured after it (as the PPO paper's adaptive
    penalty uses it), one forward pass without gradients."""
    evaluation = learner.policy.evaluate_sequences(
        chunks.observations, chunks.episode_starts, chunks.initial_states, chunks.raw_actions
    )
    n = evaluation.dist_params.shape[0]
    old_params = chunks.old_dist_params.reshape(n, -1)
    return float(exact_kl(old_params, evaluation.dist_params, learner.policy.discrete).mean())


def minibatch_loss(
    learner: Learner,
    batch: SequenceChunks,
    ctx: UpdateContext,
    adv_mean: th.Tensor | float,
    adv_std: th.Tensor | float,
    robust_part: tuple[int, float] | None = None,
) -> tuple[th.Tensor, dict[str, th.Tensor]]:
    """Total loss of a (micro)batch (means over its samples) and its detached metrics; the
    policy sees the advantages ``(A - adv_mean) / adv_std``. ``robust_part`` (microbatches):
    how many leading chunks the robust regularizer attacks and the weight of its mean KL (see
    :func:`accumulate_gradients`); ``None``: the batch's own ``attacked_chunks``."""
    policy = learner.policy
    features = policy.sequence_features(
        batch.observations, batch.episode_starts, batch.initial_states
    )
    call = call_compiled if learner.compile_loss else call_eager  # PPOConfig.compile
    loss, metrics, dist_params = call(
        loss_from_features, learner, features, batch, ctx, adv_mean, adv_std
    )
    if ctx.robust is not None and ctx.robust.epsilon > 0 and (robust_part or (1,))[0] > 0:
        # SA-PPO: kappa * KL(pi(clean) || pi(PGD-perturbed)), actor only (tradingbot.algo.robust).
        n_attacked, robust_weight = robust_part if robust_part is not None else (None, 1.0)
        regularizer, robust_metrics = robust_regularizer(
            policy, batch, dist_params, ctx.robust, n_attacked, robust_weight
        )
        loss = loss + ctx.robust.kappa * regularizer
        metrics.update(robust_metrics)
        metrics["loss"] = loss.detach()
    return loss, metrics


def loss_from_features(
    learner: Learner, features: tuple[th.Tensor, ...], batch: SequenceChunks,
    ctx: UpdateContext, adv_mean: th.Tensor | float, adv_std: th.Tensor | float,
) -> tuple[th.Tensor, dict[str, th.Tensor], th.Tensor]:  # fmt: skip
    """The loss after the LSTMs, no robust term (and the new dist params): what compiles."""
    cfg, policy = learner.config, learner.policy
    evaluation = policy.evaluate_features(*features, batch.raw_actions)
    n = evaluation.log_prob.shape[0]

    # Policy: clipped surrogate (optionally dual-clipped), log-ratio clamped before exp.
    raw_advantages = batch.advantages.reshape(-1)
    advantages = (raw_advantages - adv_mean) / adv_std
    log_ratio = evaluation.log_prob - batch.old_log_probs.reshape(-1)
    log_ratio = log_ratio.clamp(-cfg.log_ratio_clamp, cfg.log_ratio_clamp)
    ratio = th.exp(log_ratio)
    surrogate = clipped_surrogate(advantages, ratio, ctx.clip_range, cfg.dual_clip)
    policy_loss = -surrogate.mean()
    old_params = batch.old_dist_params.reshape(n, -1)
    # Without the KL penalty the exact KL is only a metric: no graph for it.
    new_params = (
        evaluation.dist_params if ctx.kl_beta is not None else evaluation.dist_params.detach()
    )
    kl_exact = exact_kl(old_params, new_params, policy.discrete).mean()

    # Critic: quantile Huber loss against the normalized lambda-return, with value clipping
    # around the (re-normalized) old quantiles and DSAC-T weights when configured.
    n_critics, n_quantiles = evaluation.quantiles.shape[1:]
    value_targets = (batch.returns.reshape(-1) - ctx.ret_mean) / ctx.ret_std
    old_quantiles = None
    if cfg.value_clip.mode != "none":
        old_quantiles = batch.old_quantiles.reshape(n, n_critics, n_quantiles)
        old_quantiles = (old_quantiles - ctx.ret_mean) / ctx.ret_std
    adjust = cfg.critic_adjust
    # Detached spread of the quantiles, and DSAC-T's weights from it: the loss and the logged
    # metrics share them.
    spread = quantile_spread(evaluation.quantiles.detach())
    critic_weights = None
    if ctx.sigma_bar is not None:
        critic_weights = dsac_t_weights(spread, ctx.sigma_bar, adjust.eps, adjust.weight_clamp)
    value_loss = critic_loss_per_sample(
        evaluation.quantiles,
        value_targets,
        policy.taus,
        cfg.huber_kappa,
        old_quantiles=old_quantiles,
        clip_mode=cfg.value_clip.mode,
        clip_range=cfg.clip_range_vf,
        sigma_bar=ctx.sigma_bar,
        eps=adjust.eps,
        target_clip_xi=adjust.xi if adjust.target_clip else None,
        weights=critic_weights,
    ).mean()

    entropy_loss = -evaluation.entropy.mean()
    vf_coef = cfg.vf_coef if ctx.vf_coef is None else ctx.vf_coef
    loss = policy_loss + ctx.ent_coef * entropy_loss + vf_coef * value_loss
    metrics: dict[str, th.Tensor] = {}
    if ctx.kl_beta is not None:
        loss = loss + ctx.kl_beta * kl_exact
    if ctx.awr_coef is not None:
        log_max = math.log(cfg.awr.max_weight)
        bc_weights = th.exp((raw_advantages / cfg.awr.beta).clamp(max=log_max)).detach()
        bc_loss = -(bc_weights * evaluation.log_prob).mean()
        loss = loss + ctx.awr_coef * bc_loss
        metrics["bc_loss"] = bc_loss.detach()
        # The PPO side of the BC/PPO ratio: the mean size of the per-sample surrogate terms.
        # (The policy loss itself averages terms of both signs to ~0 under normalized
        # advantages, which made the ratio ill-conditioned.)
        metrics["ppo_objective_scale"] = surrogate.detach().abs().mean()
    with th.no_grad():
        metrics.update(
            loss=loss.detach(),
            policy_loss=policy_loss.detach(),
            value_loss=value_loss.detach(),
            entropy_loss=entropy_loss.detach(),
            approx_kl=k3_kl(log_ratio),
            kl_exact=kl_exact.detach(),
            clip_fraction=((ratio - 1.0).abs() > ctx.clip_range).float().mean(),
            quantile_spread=spread.mean(),
        )
        if critic_weights is not None:
            metrics["critic_weight"] = critic_weights.mean()
    return loss, metrics, evaluation.dist_params


def accumulate_gradients(
    learner: Learner,
    batch: SequenceChunks,
    ctx: UpdateContext,
    n_microbatches: int = 1,
) -> dict[str, th.Tensor]:
    """Zero the gradients, then backward the minibatch ``batch`` split into ``n_microbatches``
    consecutive microbatches, each loss weighted by its share of the samples, so the
    accumulated gradient is the whole minibatch's. Minibatch advantage statistics come from the
    whole minibatch, and so does the robust regularizer's set of attacked chunks: the first
    ``attacked_chunks`` of the minibatch, each microbatch attacking those it holds, its mean KL
    weighted so the sum is the minibatch's mean. Returns the sample-weighted mean of the
    microbatches' metrics."""
    cfg = learner.config
    if cfg.advantage_normalization == "minibatch":
        adv_mean, adv_std = batch.advantages.mean(), batch.advantages.std() + 1e-8
    elif cfg.advantage_normalization == "rollout":
        assert ctx.adv_stats is not None
        adv_mean, adv_std = ctx.adv_stats[0], ctx.adv_stats[1] + 1e-8
    else:
        adv_mean, adv_std = 0.0, 1.0
    learner.gradients.zero_()
    micro_batches = batch.split(n_microbatches)
    if len(micro_batches) == 1:
        loss, metrics = minibatch_loss(learner, batch, ctx, adv_mean, adv_std)
        loss.backward()
        return _with_awr_ratio(metrics, ctx)
    totals: dict[str, th.Tensor] = {}
    attacked = 0
    if ctx.robust is not None:
        attacked = attacked_chunks(batch.n_chunks, ctx.robust.fraction)
    offset = 0
    for micro in micro_batches:
        share = micro.n_chunks / batch.n_chunks
        robust_part = None
        if attacked:
            mine = min(max(attacked - offset, 0), micro.n_chunks)
            robust_part = (mine, mine / (attacked * share))
        offset += micro.n_chunks
        loss, metrics = minibatch_loss(learner, micro, ctx, adv_mean, adv_std, robust_part)
        (loss * share).backward()
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + share * value
    return _with_awr_ratio(totals, ctx)


def _with_awr_ratio(metrics: dict[str, th.Tensor], ctx: UpdateContext) -> dict[str, th.Tensor]:
    """Add ``bc_ppo_ratio = awr_coef * |BC loss| / mean |surrogate term|`` of the whole
    minibatch (from its accumulated metrics, so it does not depend on ``n_microbatches``)."""
    if ctx.awr_coef is not None:
        metrics["bc_ppo_ratio"] = (
            ctx.awr_coef * metrics["bc_loss"].abs() / (metrics["ppo_objective_scale"] + 1e-8)
        )
    return metrics


def apply_step(learner: Learner, square_norms: list[float]) -> dict[str, float]:
    """Scaler, per-network norm clip of the raw gradient, then the scaler's factor (one
    multiply for both) and optimizer step, on the accumulated, finite gradients whose
    per-network squared norms are ``square_norms`` (actor, critic). Returns the step's gradient
    statistics (the logged norms are the raw gradient's)."""
    stats: dict[str, float] = {}
    factor = 1.0
    scaler = learner.train_state.scaler
    if scaler is not None:
        factor = scaler.update(learner.gradients.flat)
        stats["scaler_factor"] = factor
        stats["scaler_ratio"] = scaler.last_ratio
        if scaler.grad_norm_beta is not None:
            stats["scaler_grad_norm_ema"] = scaler.grad_norm_ema
    # Clipped per network by default (cfg.grad_clip): a global clip lets the critic's larger
    # norm (2-3x the actor's on the oracle market) shrink the actor's step. Measured, the two
    # modes learn equally well there (docs/benchmarks.md); per-network keeps earlier results.
    cfg = learner.config
    scales, norms = clip_scales(square_norms, cfg.max_grad_norm, factor, cfg.grad_clip)
    learner.gradients.scale_(scales)
    stats["actor_grad_norm"], stats["critic_grad_norm"] = norms
    stats["grad_norm"] = math.sqrt(sum(norm**2 for norm in norms))
    learner.optimizer.step()
    last_stats = getattr(learner.optimizer, "last_stats", None)
    if last_stats:
        stats["upgd_mean_utility"] = last_stats["mean_utility"]
        stats["upgd_noise_std"] = last_stats["noise_std"]
    return stats


@dataclasses.dataclass
class EpochsResult:
    """
    What :func:`run_epochs` did.

    Parameters
    ----------
    stats : dict of str to list of float
        Each minibatch metric and step statistic, one value per optimizer step taken (the
        metrics of a step that was skipped or undone are left out).
    n_steps : int
        Optimizer steps taken (and kept).
    early_stopped : bool
        The KL early stop ended the epochs.
    """

    stats: dict[str, list[float]]
    n_steps: int
    early_stopped: bool


def run_epochs(
    learner: Learner, chunks: SequenceChunks, ctx: UpdateContext, verbose: int = 0
) -> EpochsResult:
    """
    The epochs of one update: ``n_epochs`` passes over minibatches of whole chunks.

    Each minibatch: losses accumulated over microbatches (:func:`accumulate_gradients`) ->
    non-finite guard on the loss and the gradient norms (skip, count, change nothing) -> KL
    early stop -> scaler, per-network norm clip, optimizer (:func:`apply_step`) -> a step that
    left a non-finite parameter is undone (parameters and optimizer state) and counted as
    skipped. Changes ``learner.train_state``: ``skipped_steps`` and, under DSAC-T,
    ``sigma_bar`` (after each step; the next minibatch uses it).

    Parameters
    ----------
    learner : Learner
        What the steps change.
    chunks : SequenceChunks
        The whole rollout cut into ``seq_len`` chunks.
    ctx : UpdateContext
        The update's constants.
    verbose : int
        1 or more: print the early stop.

    Returns
    -------
    EpochsResult
    """
    cfg = learner.config
    state = learner.train_state
    gradients = learner.gradients
    dsac_t = cfg.critic_adjust.mode == "dsac_t"
    chunks_per_batch = cfg.batch_size // cfg.seq_len
    stats: dict[str, list[float]] = defaultdict(list)
    n_steps = 0
    for epoch in range(cfg.n_epochs):
        # One gather per epoch; the minibatches are then views of consecutive chunks.
        shuffled = chunks.select(th.randperm(chunks.n_chunks))
        for start in range(0, chunks.n_chunks, chunks_per_batch):
            batch = shuffled.narrow(start, min(chunks_per_batch, chunks.n_chunks - start))
            metric_tensors = accumulate_gradients(learner, batch, ctx, cfg.n_microbatches)
            # One device sync for the metrics and the per-network gradient norms (a norm is
            # non-finite when one of its network's gradient elements is).
            values = th.cat(
                [th.stack(list(metric_tensors.values())), gradients.square_norms()]
            ).tolist()
            metrics = dict(zip(metric_tensors, values, strict=False))
            square_norms = values[len(metric_tensors) :]
            if not np.isfinite([metrics["loss"], *square_norms]).all():
                # Skip: parameters, optimizer, scaler and statistics stay as they were.
                gradients.zero_()
                state.skipped_steps += 1
                continue
            for name, value in metrics.items():
                stats[name].append(value)
            kl = metrics["kl_exact" if cfg.kl_early_stop == "exact" else "approx_kl"]
            if cfg.target_kl is not None and kl > 1.5 * cfg.target_kl:
                gradients.zero_()
                if verbose >= 1:
                    print(f"Early stopping at epoch {epoch} with {cfg.kl_early_stop} KL {kl:.4f}")
                return EpochsResult(stats, n_steps, early_stopped=True)
            undo = StepUndo(gradients.param, learner.optimizer)
            step_stats = apply_step(learner, square_norms)
            if not undo.step_was_finite():
                # A finite gradient gave a non-finite parameter (e.g. an overflowing step):
                # undo the step and count it as skipped, so nothing non-finite is saved.
                undo.restore()
                gradients.zero_()
                state.skipped_steps += 1
                continue
            for name, value in step_stats.items():
                stats[name].append(value)
            n_steps += 1
            if dsac_t:
                rate = cfg.critic_adjust.rate
                state.sigma_bar += rate * (metrics["quantile_spread"] - state.sigma_bar)
                ctx = dataclasses.replace(ctx, sigma_bar=state.sigma_bar)
    return EpochsResult(stats, n_steps, early_stopped=False)
