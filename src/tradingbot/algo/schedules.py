"""Schedules of DistributionalPPO: learning rate and clip range (linear or adapted to the KL),
entropy coefficient, KL penalty, AWR coefficient, value-loss coefficient warm-up."""

from __future__ import annotations

import math


def linear_schedule(initial: float, final: float | None, progress_remaining: float) -> float:
    """Linear from ``initial`` (start of training) to ``final`` (end); ``progress_remaining``
    goes from 1 to 0 (SB3's convention) and is clipped to [0, 1]; ``final=None``: constant."""
    if final is None:
        return initial
    progress_remaining = min(max(progress_remaining, 0.0), 1.0)
    return final + (initial - final) * progress_remaining


def entropy_coef(
    initial: float,
    final: float | None,
    progress_remaining: float,
    boost: float = 1.0,
    minimum: float = 0.0,
) -> float:
    """``max(linear(initial -> final) * boost, minimum)``; ``progress_remaining`` goes from 1 at
    the start of training to 0 at its end (SB3's convention); ``final=None``: no decay."""
    return max(linear_schedule(initial, final, progress_remaining) * boost, minimum)


def update_entropy_boost(
    boost: float, explained_variance: float, threshold: float, factor: float, max_boost: float
) -> float:
    """Multiply the boost by ``factor`` (bounded by ``max_boost``) while the explained variance
    stays below ``threshold``; reset it to 1 once it does not. NaN (constant returns) keeps it."""
    if not math.isfinite(explained_variance):
        return boost
    if explained_variance < threshold:
        return min(boost * factor, max_boost)
    return 1.0


def adapt_kl_beta(beta: float, kl: float, target: float) -> float:
    """Adaptive KL penalty (PPO paper): double beta when ``kl > 1.5 target``, halve it when
    ``kl < target / 1.5``; non-finite KL keeps it."""
    if not math.isfinite(kl):
        return beta
    if kl > 1.5 * target:
        return beta * 2.0
    if kl < target / 1.5:
        return beta / 2.0
    return beta


def decay_awr_coef(coef: float, ratio: float, max_ratio: float, decay: float) -> float:
    """Multiply the AWR coefficient by ``decay`` when the BC/PPO loss ratio exceeds
    ``max_ratio``."""
    if math.isfinite(ratio) and ratio > max_ratio:
        return coef * decay
    return coef


def adapt_clip_range(
    clip_range: float, kl: float, target: float, factor: float, low: float, high: float
) -> float:
    """Adaptive clip range: divide by ``factor`` when ``kl > 1.5 target``, multiply by it when
    ``kl < target / 1.5``, then clamp to ``[low, high]``; a non-finite KL keeps it."""
    if not math.isfinite(kl):
        return clip_range
    if kl > 1.5 * target:
        clip_range = clip_range / factor
    elif kl < target / 1.5:
        clip_range = clip_range * factor
    return min(max(clip_range, low), high)


def warmup_coef(final: float, initial: float, warmup: float, progress_remaining: float) -> float:
    """Coefficient warm-up: linear from ``initial`` (start of training) to ``final`` over the
    first ``warmup`` fraction of training, ``final`` after it (``warmup <= 0``: ``final``);
    ``progress_remaining`` goes from 1 to 0 (SB3's convention) and is clipped to [0, 1]."""
    if warmup <= 0.0:
        return final
    progress = 1.0 - min(max(progress_remaining, 0.0), 1.0)
    return initial + (final - initial) * min(progress / warmup, 1.0)
