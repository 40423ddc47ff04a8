"""Allocation baselines and the bar-by-bar portfolio backtest shared with the agent.

Every policy, agent or baseline, is a list of target weights at the decision bars t0, t0 + h,
... (h = ``portfolio.rebalance_every``), each computed from prices up to the close of its
decision bar, and is scored by :func:`simulate_allocation`: the equations of
:mod:`tradingbot.env.portfolio` applied one bar at a time (holding is path-independent, so the
daily path ends each step exactly where the environment's step does).

Baselines (parameters in ``portfolio.baselines``, fixed in advance):

- ``equal_weight``: 1/K in each asset (skfolio ``EqualWeighted``).
- ``inverse_volatility``: skfolio ``InverseVolatility`` on the last ``estimation_window`` daily
  returns.
- ``hrp``: skfolio ``HierarchicalRiskParity`` (variance, default clustering) on the same window.
- ``min_variance``: skfolio ``MeanRisk`` (minimize variance, long-only, fully invested).
- ``momentum``: the top ``momentum_fraction`` of assets by the return from ``lookback`` to
  ``skip`` bars ago (12-1 months), held equally.
- ``index``: the index itself, fully invested (``sp500_index`` for the bundled universe).

skfolio is imported inside the functions that fit its estimators: the CLI's start-up stays
light.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from tradingbot.config import EnvConfig, PortfolioConfig
from tradingbot.config_portfolio import AllocationBaselineConfig
from tradingbot.data.portfolio import PortfolioMarket
from tradingbot.data.splits import DateRange
from tradingbot.env.portfolio import cash_per_bar, hold, rebalance

WeightRule = Callable[[np.ndarray, int], np.ndarray]
SKFOLIO_BASELINES = ("inverse_volatility", "hrp", "min_variance")


def decision_rows(lo: int, hi: int, every: int) -> np.ndarray:
    """Decision bars of a backtest over rows ``[lo, hi)``: lo, lo + h, ... with a full step
    (fill and hold to the next decision) inside the rows."""
    return np.arange(lo, hi - every, every, dtype=np.int64)


def simulate_allocation(
    close: np.ndarray,
    timestamps: pd.DatetimeIndex,
    rows: np.ndarray,
    targets: np.ndarray,
    every: int,
    cost_rate: float,
    cash_rate: float = 0.0,
    initial_equity: float = 1.0,
) -> pd.DataFrame:
    """Bar-by-bar backtest of target weights ``targets`` (D, K) decided at ``rows`` (D,).

    The target of decision bar t is filled at the close of t+1; weights drift in between.
    Returns one row per bar from ``rows[0] + 1`` to ``rows[-1] + every``: ``return`` (simple,
    after costs), ``equity``, ``position`` (gross exposure sum |w| held into the bar), ``trade``
    (sum |trade| at its close), ``cost`` and ``w_<k>`` (weights after the bar's close).
    """
    k = close.shape[1]
    fills = {int(r) + 1: i for i, r in enumerate(rows)}
    first, last = int(rows[0]), int(rows[-1]) + every
    equity = np.array([initial_equity])
    weights = np.zeros((1, k))
    out = np.zeros((last - first, 5 + k))
    for j, s in enumerate(range(first, last)):
        gross = float(np.abs(weights).sum())
        e1, drifted = hold(equity, weights, (close[s + 1] / close[s])[None], 1.0 + cash_rate)
        trade = np.zeros((1, k))
        cost = np.zeros(1)
        if s + 1 in fills:
            target = targets[fills[s + 1]][None]
            e1, trade, cost = rebalance(e1, drifted, target, cost_rate)
            drifted = target
        out[j, :5] = (e1[0] / equity[0] - 1.0, e1[0], gross, np.abs(trade).sum(), cost[0])
        out[j, 5:] = drifted[0]
        equity, weights = e1, drifted
    columns = ["return", "equity", "position", "trade", "cost"] + [f"w_{i}" for i in range(k)]
    return pd.DataFrame(out, index=timestamps[first + 1 : last + 1], columns=columns)


def trailing_returns(close: np.ndarray, t: int, window: int) -> np.ndarray:
    """The ``window`` daily simple returns ending at the close of bar t (bars <= t only)."""
    if t < window:
        raise ValueError(f"bar {t} has fewer than {window} past returns for the estimation window")
    prices = close[t - window : t + 1]
    return prices[1:] / prices[:-1] - 1.0


def equal_weights(close: np.ndarray, t: int) -> np.ndarray:
    """1/K in every asset (skfolio's ``EqualWeighted``)."""
    return np.full(close.shape[1], 1.0 / close.shape[1])


def skfolio_weights(name: str, returns: np.ndarray) -> np.ndarray:
    """Weights of skfolio's estimator ``name`` (one of :data:`SKFOLIO_BASELINES`) fitted on
    ``returns`` (bars x assets)."""
    from skfolio.optimization import HierarchicalRiskParity, InverseVolatility, MeanRisk

    estimators = {
        "inverse_volatility": InverseVolatility,
        "hrp": HierarchicalRiskParity,
        "min_variance": MeanRisk,
    }
    return np.asarray(estimators[name]().fit(returns).weights_, dtype=np.float64)


def momentum_weights(
    close: np.ndarray, t: int, lookback: int, skip: int, fraction: float
) -> np.ndarray:
    """Equal weights on the top ``round(fraction x K)`` (at least 1) assets by the return from
    the close ``lookback`` bars before t to the close ``skip`` bars before t; ties by order."""
    if t < lookback:
        raise ValueError(f"bar {t} has fewer than {lookback} past bars for momentum")
    score = close[t - skip] / close[t - lookback] - 1.0
    n_top = max(1, round(fraction * close.shape[1]))
    top = np.argsort(-score, kind="stable")[:n_top]
    weights = np.zeros(close.shape[1])
    weights[top] = 1.0 / n_top
    return weights


def baseline_rules(cfg: AllocationBaselineConfig) -> dict[str, WeightRule]:
    """Each asset baseline as a function (closes, decision bar) -> target weights."""
    window = cfg.estimation_window

    def fitted(name: str) -> WeightRule:
        return lambda close, t: skfolio_weights(name, trailing_returns(close, t, window))

    return {
        "equal_weight": equal_weights,
        **{name: fitted(name) for name in SKFOLIO_BASELINES},
        "momentum": lambda close, t: momentum_weights(
            close, t, cfg.momentum_lookback, cfg.momentum_skip, cfg.momentum_fraction
        ),
    }


def run_allocation_baselines(
    market: PortfolioMarket,
    split: str | DateRange,
    env_cfg: EnvConfig,
    cfg: PortfolioConfig,
    index_close: np.ndarray | None = None,
) -> dict[str, pd.DataFrame]:
    """Backtests of every baseline over the split (``index`` too when ``index_close``, the
    index's closes on the market's dates, is given), on the same decision bars and costs."""
    lo, hi = market.rows(split)
    rows = decision_rows(lo, hi, cfg.rebalance_every)
    cost_rate = (env_cfg.commission_bps + env_cfg.slippage_bps) / 1e4
    cash = cash_per_bar(market, env_cfg.cash_rate)
    out = {}
    for name, rule in baseline_rules(cfg.baselines).items():
        targets = np.stack([rule(market.close, int(t)) for t in rows])
        out[name] = simulate_allocation(
            market.close,
            market.timestamps,
            rows,
            targets,
            cfg.rebalance_every,
            cost_rate,
            cash,
            env_cfg.initial_equity,
        )
    if index_close is not None:
        close = np.asarray(index_close, dtype=np.float64).reshape(-1, 1)
        out["index"] = simulate_allocation(
            close,
            market.timestamps,
            rows,
            np.ones((len(rows), 1)),
            cfg.rebalance_every,
            cost_rate,
            cash,
            env_cfg.initial_equity,
        )
    return out


def index_closes(market: PortfolioMarket) -> np.ndarray:
    """The bundled S&P 500 index's closes on the universe's dates (a ValueError names a date
    the index lacks)."""
    from tradingbot.data.bundled import BUNDLED

    index = BUNDLED["sp500_index"].load()["close"]
    missing = market.timestamps.difference(index.index)
    if len(missing):
        raise ValueError(f"the index has no close on {missing[0]} (a date of the universe)")
    return index.reindex(market.timestamps).to_numpy(dtype=np.float64)
