"""Log-probabilities and entropies of the policy's action distributions, computed from the
actor head's output without ``torch.distributions`` objects (their construction and checks
cost more than the arithmetic on these small batches; tests compare with them)."""

from __future__ import annotations

import math

import torch as th
from torch.nn import functional as F

LOG_2PI = math.log(2.0 * math.pi)
LOG_2 = math.log(2.0)


def categorical_log_prob(log_probs: th.Tensor, index: th.Tensor) -> th.Tensor:
    """
    Log-probability of the chosen action of a categorical distribution.

    Parameters
    ----------
    log_probs : Tensor
        Log-softmax of the logits, (..., n_actions).
    index : Tensor
        The action index as float, (..., 1).

    Returns
    -------
    Tensor
        Shape (...).
    """
    return log_probs.gather(-1, index.long()).squeeze(-1)


def squashed_gaussian_log_prob(
    mean: th.Tensor,
    raw_action: th.Tensor,
    log_std: th.Tensor,
    half_range: th.Tensor,
    noise: th.Tensor | None = None,
) -> th.Tensor:
    """
    Log-probability, in the Box action space, of ``action = center + half_range * tanh(u)``
    with ``u ~ N(mean, exp(log_std)^2)`` (the change of variables included).

    Parameters
    ----------
    mean : Tensor
        The Gaussian's mean (the actor output), (..., action_dim).
    raw_action : Tensor
        The pre-squash sample ``u``, (..., action_dim).
    log_std : Tensor
        The Gaussian's log-std, broadcastable to ``mean``.
    half_range : Tensor
        Half the Box's width per action dimension.
    noise : Tensor, optional
        The standardized sample ``(u - mean) / std`` when known (saves recomputing it).

    Returns
    -------
    Tensor
        Shape (...).
    """
    gaussian = _gaussian_log_density(mean, raw_action, log_std, noise)
    # log |d action / d u| of action = center + half_range * tanh(u), stable form of
    # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)).
    log_det = 2.0 * (LOG_2 - raw_action - F.softplus(-2.0 * raw_action))
    log_det = log_det + th.log(half_range)
    return (gaussian - log_det).sum(dim=-1)


def gaussian_entropy(log_std: th.Tensor) -> th.Tensor:
    """
    Entropy of a diagonal Gaussian, summed over the last dimension (the policy's entropy
    bonus uses the pre-squash Gaussian's: the squashed distribution's entropy has no closed
    form, and the Gaussian's is a standard, monotone proxy for exploration).

    Parameters
    ----------
    log_std : Tensor
        Log-std per dimension, (..., action_dim).

    Returns
    -------
    Tensor
        Shape (...).
    """
    return (0.5 + 0.5 * LOG_2PI + log_std).sum(dim=-1)


def gaussian_log_prob(
    mean: th.Tensor, raw_action: th.Tensor, log_std: th.Tensor, noise: th.Tensor | None = None
) -> th.Tensor:
    """
    Log-probability of ``raw_action`` under the diagonal Gaussian ``N(mean, exp(log_std)^2)``,
    summed over the last dimension: the policy's when the env receives the sample clipped to
    the Box (``ExplorationConfig.squash = 'clip'``, as SB3 does without squashing; the clip is
    not a change of variables).

    Parameters
    ----------
    mean, raw_action : Tensor
        (..., action_dim).
    log_std : Tensor
        Broadcastable to ``mean``.
    noise : Tensor, optional
        The standardized sample ``(raw_action - mean) / std`` when known.

    Returns
    -------
    Tensor
        Shape (...).
    """
    return _gaussian_log_density(mean, raw_action, log_std, noise).sum(dim=-1)


def _gaussian_log_density(
    mean: th.Tensor, raw_action: th.Tensor, log_std: th.Tensor, noise: th.Tensor | None
) -> th.Tensor:
    """Per-dimension log-density of ``raw_action`` under ``N(mean, exp(log_std)^2)`` (``noise``:
    the standardized sample when known)."""
    z = (raw_action - mean) * th.exp(-log_std) if noise is None else noise
    return -0.5 * z.square() - log_std - 0.5 * LOG_2PI
