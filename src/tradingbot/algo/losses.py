"""Small pure functions of DistributionalPPO's math, each tested alone against a known answer."""

from __future__ import annotations

import math

import numpy as np
import torch as th

from tradingbot.algo.fast.quantile_huber import quantile_huber_loss_per_sample


def midpoint_taus(
    n_quantiles: int, device: th.device | str | None = None, dtype: th.dtype = th.float32
) -> th.Tensor:
    """Quantile levels ``tau_i = (i + 0.5) / n``, midpoints of ``n`` equal bins, shape (n,)."""
    return (th.arange(n_quantiles, device=device, dtype=dtype) + 0.5) / n_quantiles


def quantile_huber_loss(
    pred_quantiles: th.Tensor,
    target: th.Tensor,
    taus: th.Tensor,
    kappa: float = 1.0,
    reduce: bool = True,
) -> th.Tensor:
    """
    Quantile Huber loss of QR-DQN: summed over predicted quantiles, averaged over target samples
    and batch (the convention of ``sb3_contrib.common.utils.quantile_huber_loss``).

    Parameters
    ----------
    pred_quantiles : th.Tensor
        Predicted quantiles, shape (B, N).
    target : th.Tensor
        Target samples, shape (B,) or (B, M).
    taus : th.Tensor
        Quantile levels of the predictions, shape (N,).
    kappa : float
        Huber threshold.
    reduce : bool
        Return the batch mean (scalar); otherwise the per-sample losses (B,).
    """
    per_sample = quantile_huber_loss_per_sample(pred_quantiles, target, taus, kappa)
    return per_sample.mean() if reduce else per_sample


def compute_gae(
    rewards: th.Tensor,
    values: th.Tensor,
    episode_starts: th.Tensor,
    last_values: th.Tensor,
    last_dones: th.Tensor,
    gamma: float,
    gae_lambda: float,
    terminal_values: th.Tensor | None = None,
) -> tuple[th.Tensor, th.Tensor]:
    """
    GAE(lambda) advantages and lambda-returns, vectorized over environments.

    Conventions of SB3's ``RolloutBuffer``: ``episode_starts[t]`` is 1 when observation ``t`` is
    the first of an episode (so step ``t - 1`` ended one), ``last_dones`` is 1 for environments
    whose last step ended an episode.

    Parameters
    ----------
    rewards : th.Tensor
        Rewards, shape (T, E).
    values : th.Tensor
        Value estimates of the observations, shape (T, E).
    episode_starts : th.Tensor
        Episode-start flags of the observations, shape (T, E).
    last_values : th.Tensor
        Values of the observations after the last step, shape (E,).
    last_dones : th.Tensor
        Whether the last step ended an episode, shape (E,).
    gamma : float
        Discount factor.
    gae_lambda : float
        GAE lambda.
    terminal_values : th.Tensor | None
        Time-limit bootstrap: value of the terminal observation for steps truncated by a time
        limit and 0 elsewhere, shape (T, E); ``gamma * terminal_values`` is added to the rewards
        (as SB3 does) so a truncated episode is not treated as terminated.

    Returns
    -------
    tuple[th.Tensor, th.Tensor]
        (advantages, returns), each shape (T, E).
    """
    if terminal_values is not None:
        rewards = rewards + gamma * terminal_values
    n_steps = rewards.shape[0]
    next_non_terminal = th.empty_like(rewards)
    next_non_terminal[:-1] = 1.0 - episode_starts[1:].to(rewards.dtype)
    next_non_terminal[-1] = 1.0 - last_dones.to(rewards.dtype)
    next_values = th.cat([values[1:], last_values.reshape(1, -1).to(values.dtype)])
    deltas = rewards + gamma * next_values * next_non_terminal - values
    decay = gamma * gae_lambda * next_non_terminal

    # The backward recursion runs in NumPy: a few ops per step over n_envs values, where each
    # torch op's dispatch would cost more than its arithmetic.
    deltas_np, decay_np = deltas.detach().cpu().numpy(), decay.detach().cpu().numpy()
    advantages_np = np.empty_like(deltas_np)
    last_gae = np.zeros_like(deltas_np[0])
    for step in reversed(range(n_steps)):
        # where(): a non-finite value after an episode's end must not leak into it (0 * nan).
        carried = np.where(decay_np[step] != 0, decay_np[step] * last_gae, 0.0)
        last_gae = deltas_np[step] + carried
        advantages_np[step] = last_gae
    advantages = th.from_numpy(advantages_np).to(rewards.device)
    # TD(lambda) return, the target of the critic.
    return advantages, advantages + values


def gaussian_kl(mu0: th.Tensor, std0: th.Tensor, mu1: th.Tensor, std1: th.Tensor) -> th.Tensor:
    """Exact KL(N(mu0, std0^2) || N(mu1, std1^2)) of diagonal Gaussians, summed over last dim."""
    var_ratio = (std0 / std1).square()
    mean_term = ((mu0 - mu1) / std1).square()
    return 0.5 * (var_ratio + mean_term - 1.0 - var_ratio.log()).sum(dim=-1)


def k3_kl(log_ratio: th.Tensor) -> th.Tensor:
    """k3 estimator of KL(old || new) from ``log_ratio = log p_new - log p_old`` on old samples:
    ``mean((r - 1) - log r)``, unbiased and always >= 0 (Schulman, "Approximating KL")."""
    return (th.expm1(log_ratio) - log_ratio).mean()


def explained_variance(y_pred: th.Tensor, y_true: th.Tensor) -> float:
    """``1 - Var[y_true - y_pred] / Var[y_true]``: 1 is perfect, 0 is no better than a constant,
    NaN when ``y_true`` is constant."""
    var_y = th.var(y_true)
    if var_y == 0:
        return math.nan
    return float(1.0 - th.var(y_true - y_pred) / var_y)


def categorical_kl(logits0: th.Tensor, logits1: th.Tensor) -> th.Tensor:
    """Exact KL(Cat(logits0) || Cat(logits1)) over the last dim."""
    log_p0 = th.log_softmax(logits0, dim=-1)
    log_p1 = th.log_softmax(logits1, dim=-1)
    return (log_p0.exp() * (log_p0 - log_p1)).sum(dim=-1)


def cvar_from_quantiles(quantiles: th.Tensor, alpha: float) -> th.Tensor:
    """
    CVaR_alpha of the distribution given by ``N`` equally weighted quantiles (last dim): the
    mean of the lowest ``alpha * N`` of them, the next one weighted by the fractional part
    when ``alpha * N`` is not whole. Quantiles are sorted first. Shape (...,).
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    sorted_q = th.sort(quantiles, dim=-1).values
    n = sorted_q.shape[-1]
    k = alpha * n
    whole = min(math.floor(k), n)
    frac = k - whole
    total = sorted_q[..., :whole].sum(dim=-1)
    if frac > 1e-12 and whole < n:
        total = total + frac * sorted_q[..., whole]
    return total / k


def quantile_at(quantiles: th.Tensor, alpha: float) -> th.Tensor:
    """The ``alpha``-quantile (VaR level) from ``N`` midpoint quantiles (last dim, sorted
    first), linearly interpolated between the levels ``(i + 0.5) / N`` and clamped at the
    ends. Shape (...,)."""
    sorted_q = th.sort(quantiles, dim=-1).values
    n = sorted_q.shape[-1]
    position = min(max(alpha * n - 0.5, 0.0), n - 1.0)
    low = math.floor(position)
    high = min(low + 1, n - 1)
    weight = position - low
    return (1.0 - weight) * sorted_q[..., low] + weight * sorted_q[..., high]


def clipped_surrogate(
    advantages: th.Tensor, ratio: th.Tensor, clip_range: float, dual_clip: float | None = None
) -> th.Tensor:
    """PPO's per-sample clipped surrogate objective ``min(r A, clip(r, 1 +- eps) A)`` (to be
    maximized); with ``dual_clip = c`` it is bounded below by ``c * A`` where ``A < 0``."""
    clipped_ratio = ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    objective = th.min(advantages * ratio, advantages * clipped_ratio)
    if dual_clip is not None:
        objective = th.where(advantages < 0, th.max(objective, dual_clip * advantages), objective)
    return objective


def mean_shift_offset(
    quantiles: th.Tensor, old_quantiles: th.Tensor, clip_range: float
) -> th.Tensor:
    """What ``mean_shift`` clipping adds to every quantile (last dim): the move that brings
    their mean back to within ``clip_range`` of the old mean (0 when it is). Shape (..., 1)."""
    mean = quantiles.mean(dim=-1, keepdim=True)
    old_mean = old_quantiles.mean(dim=-1, keepdim=True)
    return old_mean + (mean - old_mean).clamp(-clip_range, clip_range) - mean


def clip_quantiles(
    quantiles: th.Tensor, old_quantiles: th.Tensor, mode: str, clip_range: float
) -> th.Tensor:
    """
    Clipped version of predicted quantiles (last dim) around the old ones.

    ``mean_shift``: the quantiles shifted so that their mean moves by at most ``clip_range``
    from the old mean (shape unchanged). ``per_quantile``: each quantile clamped to within
    ``clip_range`` of its old value. ``none``: unchanged.
    """
    if mode == "none":
        return quantiles
    if mode == "mean_shift":
        return quantiles + mean_shift_offset(quantiles, old_quantiles, clip_range)
    if mode == "per_quantile":
        return old_quantiles + (quantiles - old_quantiles).clamp(-clip_range, clip_range)
    raise ValueError(f"unknown value clipping mode {mode!r}")


def quantile_spread(quantiles: th.Tensor) -> th.Tensor:
    """Spread of each sample's predicted quantiles: their (population) std over the last dim.

    Two-pass formula, as ``Tensor.std(unbiased=False)`` computes it; on CPU ``std`` over a short
    last dim is about 10x slower than these elementwise ops."""
    centred = quantiles - quantiles.mean(dim=-1, keepdim=True)
    return centred.square().mean(dim=-1).sqrt()


def dsac_t_weights(
    spread: th.Tensor,
    sigma_bar: float,
    eps: float,
    clamp: tuple[float, float] | None = None,
) -> th.Tensor:
    """DSAC-T's variance-based weights ``(sigma_bar^2 + eps) / (sigma_i^2 + eps)``, detached,
    from each sample's spread ``sigma_i`` (:func:`quantile_spread` of its quantiles), clamped
    to ``[low, high] = clamp`` when given."""
    weights = (sigma_bar**2 + eps) / (spread.detach().square() + eps)
    if clamp is not None:
        weights = weights.clamp(clamp[0], clamp[1])
    return weights


def critic_loss_per_sample(
    quantiles: th.Tensor,
    target: th.Tensor,
    taus: th.Tensor,
    kappa: float = 1.0,
    old_quantiles: th.Tensor | None = None,
    clip_mode: str = "none",
    clip_range: float | None = None,
    sigma_bar: float | None = None,
    eps: float = 1e-2,
    target_clip_xi: float | None = None,
    weights: th.Tensor | None = None,
    weight_clamp: tuple[float, float] | None = None,
) -> th.Tensor:
    """
    Per-sample, per-critic critic loss, shape (B, K).

    The quantile Huber loss of each critic's quantiles ``(B, K, N)`` against ``target`` (B,);
    with value clipping (``clip_mode`` != ``none``, ``old_quantiles`` (B, K, N)) the max of the
    unclipped and clipped losses per sample; with ``sigma_bar`` (DSAC-T) multiplied by the
    detached weights of :func:`dsac_t_weights`, the target first clipped to within
    ``target_clip_xi * sigma_bar`` of each critic's (detached) predicted mean when given.
    ``weights`` are those DSAC-T weights when the caller has them already (else computed here,
    clamped to ``weight_clamp`` when given).
    """
    n_critics = quantiles.shape[1]
    targets = target.unsqueeze(-1).expand(-1, n_critics)
    if sigma_bar is not None and target_clip_xi is not None:
        centre = quantiles.detach().mean(dim=-1)
        width = target_clip_xi * sigma_bar
        targets = targets.clamp(centre - width, centre + width)
    # Every critic in one call: targets (B, K, 1) are one target sample per (sample, critic).
    targets = targets.unsqueeze(-1)
    if clip_mode == "mean_shift":
        assert old_quantiles is not None and clip_range is not None
        # Shifting every quantile by d moves u = target - q by -d, so the clipped quantiles'
        # loss is the loss of the unshifted ones against target - d: both losses in one call.
        shift = mean_shift_offset(quantiles, old_quantiles, clip_range)
        pairs = th.stack([targets, targets - shift])
        both = quantile_huber_loss_per_sample(quantiles, pairs, taus, kappa)
        losses = th.max(both[0], both[1])
    else:
        losses = quantile_huber_loss_per_sample(quantiles, targets, taus, kappa)
    if clip_mode == "per_quantile":
        assert old_quantiles is not None and clip_range is not None
        clipped = clip_quantiles(quantiles, old_quantiles, clip_mode, clip_range)
        losses = th.max(losses, quantile_huber_loss_per_sample(clipped, targets, taus, kappa))
    if sigma_bar is not None:
        if weights is None:
            spread = quantile_spread(quantiles.detach())
            weights = dsac_t_weights(spread, sigma_bar, eps, weight_clamp)
        losses = losses * weights
    return losses
