"""The ``portfolio`` section of a run config: K assets and cash, and the allocation
baselines they are compared with."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tradingbot.config_base import StrictModel


class AllocationBaselineConfig(StrictModel):
    """Parameters of the allocation baselines (:mod:`tradingbot.evaluate.allocation`), fixed
    in advance: covariance-based models (inverse volatility, HRP, minimum variance) are fitted
    on the ``estimation_window`` daily returns ending at the decision bar; cross-sectional
    momentum holds the top ``momentum_fraction`` of assets by their return over
    ``momentum_lookback`` bars skipping the latest ``momentum_skip`` (12-1 months), equally."""

    estimation_window: int = Field(252, ge=20)
    momentum_lookback: int = Field(252, ge=2)
    momentum_skip: int = Field(21, ge=0)
    momentum_fraction: float = Field(1.0 / 3.0, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _check(self) -> AllocationBaselineConfig:
        if self.momentum_skip >= self.momentum_lookback:
            raise ValueError(
                f"momentum_skip ({self.momentum_skip}) must be smaller than "
                f"momentum_lookback ({self.momentum_lookback})"
            )
        return self


class PortfolioConfig(StrictModel):
    """The portfolio environment (:mod:`tradingbot.env.portfolio`): K assets and cash.

    One step is ``rebalance_every`` bars: the decision at bar t is filled at the close of bar
    t+1 (``fill``; close-only data have no open) and held, drifting, until the next decision.
    Costs (``env.commission_bps + env.slippage_bps``), ``env.n_envs``, ``env.episode_length``
    (in steps), ``env.initial_equity``, ``env.ruin_floor`` and ``env.cash_rate`` come from the
    env section. Long-only: weights = softmax(``logit_scale`` x action) over the assets and
    cash. Long-short: asset weights = the action's asset part, scaled down to a gross leverage
    of at most ``gross_leverage``; the rest is cash. ``assets_per_episode``: each training
    episode trades a random subset of that many assets (None: all).
    """

    rebalance_every: int = Field(5, ge=1)
    fill: Literal["next_close"] = "next_close"
    long_only: bool = True
    gross_leverage: float = Field(1.0, gt=0.0)
    logit_scale: float = Field(4.0, gt=0.0)
    assets_per_episode: int | None = Field(None, ge=2)
    # Hidden width of the per-asset encoder of the permutation-equivariant policy.
    asset_embedding: int = Field(32, ge=1)
    baselines: AllocationBaselineConfig = Field(default_factory=AllocationBaselineConfig)
