"""CVaR risk objective of DistributionalPPO: pure functions on returns and critic quantiles.

The objective ``E[G] + lambda * CVaR_alpha(G)`` is optimized through the Rockafellar-Uryasev
form ``CVaR_alpha(G) = max_nu nu - E[(nu - G)+] / alpha``, with ``nu`` the critic's alpha-quantile
(VaR) of the state's return distribution: the return used for the advantage becomes
``G' = G - (lambda / alpha) * max(nu - G, 0)`` (``lambda * nu`` is constant per state and drops out
of the advantage). The critic itself keeps learning the plain return distribution.
"""

from __future__ import annotations

import math

import torch as th

from tradingbot.algo.losses import cvar_from_quantiles, quantile_at


def ru_penalty(returns: th.Tensor, var: th.Tensor, alpha: float, weight: float) -> th.Tensor:
    """``(weight / alpha) * max(var - returns, 0)``: what R-U shaping subtracts from a return."""
    return (weight / alpha) * (var - returns).clamp(min=0.0)


def state_var(quantiles: th.Tensor, alpha: float) -> th.Tensor:
    """VaR_alpha (the alpha-quantile) of each state's predicted return distribution from its
    critics' quantiles (..., K, N), the critics' quantiles averaged first."""
    return quantile_at(quantiles.mean(dim=-2), alpha)


def shape_advantages(
    advantages: th.Tensor,
    returns: th.Tensor,
    quantiles: th.Tensor,
    alpha: float,
    weight: float,
) -> tuple[th.Tensor, th.Tensor]:
    """
    Advantages of the shaped return ``G' = G - (weight / alpha) * max(nu - G, 0)``.

    Parameters
    ----------
    advantages : th.Tensor
        GAE advantages ``G - V``, shape (T, E).
    returns : th.Tensor
        Lambda-returns ``G`` in return units, shape (T, E).
    quantiles : th.Tensor
        Stored critic quantiles in return units, shape (T, E, K, N).

    Returns
    -------
    tuple[th.Tensor, th.Tensor]
        (shaped advantages, the penalty subtracted), each (T, E).
    """
    penalty = ru_penalty(returns, state_var(quantiles, alpha), alpha, weight)
    return advantages - penalty, penalty


def empirical_cvar(samples: th.Tensor, alpha: float) -> float:
    """CVaR_alpha of equally weighted samples (the finite ones); NaN when there are none."""
    samples = samples.reshape(-1)
    samples = samples[th.isfinite(samples)]
    if samples.numel() == 0:
        return math.nan
    return float(cvar_from_quantiles(samples.double(), alpha))


def dual_ascent(
    multiplier: float, cvar: float, limit: float, lr: float, max_multiplier: float
) -> float:
    """One projected dual-ascent step of the Lagrange multiplier of ``CVaR >= limit``: it grows
    while the constraint is violated and shrinks (to >= 0) while it holds. A non-finite CVaR
    leaves it unchanged."""
    if not math.isfinite(cvar):
        return multiplier
    return min(max(multiplier + lr * (limit - cvar), 0.0), max_multiplier)
