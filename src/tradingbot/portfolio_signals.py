"""Signals of a portfolio run: one row per bar and asset, with the portfolio's risk.

The agent runs over the whole of the data (from the first bar with every feature defined, so
its LSTM and its weights have their history, as in a backtest), deciding every
``portfolio.rebalance_every`` bars; rows are written from ``start`` on, up to the latest
decision bar (whose target fills at the next close, beyond the data: ``fill_timestamp``
empty). Per bar and asset:
``weight`` (held after the bar's close, after any fill there), ``target`` (the weight decided
at this bar, to be filled at ``fill_timestamp``, the next bar's close; empty between
decisions), ``decision`` and the portfolio's one-bar 5% VaR and CVaR in % of equity:
historical simulation of the held weights over the last ``RISK_WINDOW`` daily returns (bars up
to t only), see :func:`historical_var`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tradingbot.checkpoint import model_id
from tradingbot.data.splits import DateRange
from tradingbot.data.validate import DataError
from tradingbot.portfolio_run import (
    MODEL_FILE,
    agent_targets,
    allocation_frame,
    load_portfolio_run,
    portfolio_section,
)

RISK_WINDOW = 250
RISK_LEVEL = 0.05


def historical_var(returns: np.ndarray, weights: np.ndarray, level: float) -> tuple[float, float]:
    """VaR and CVaR (losses, as positive fractions) of a portfolio with ``weights`` (K,) over
    past per-bar asset returns ``returns`` (W, K): the ``level`` quantile of the portfolio's
    returns (linear interpolation) and the mean of the returns at or below it, negated."""
    portfolio = returns @ weights
    cut = float(np.quantile(portfolio, level))
    return -cut, -float(portfolio[portfolio <= cut].mean())


def compute_portfolio_signals(
    run_dir: str | Path, source: str | None = None, start: str | None = None
) -> pd.DataFrame:
    """The signals frame (rows per bar and asset; see the module docstring)."""

    run = load_portfolio_run(run_dir, source)
    market, cfg = run.market, portfolio_section(run.config)
    span = DateRange(market.timestamps[market.first_valid], market.timestamps[-1])
    rows, targets = agent_targets(run.model, market, span, run.config.env, cfg, include_last=True)
    frame = allocation_frame(market, rows[:-1], targets[:-1], run.config.env, cfg)
    first = pd.Timestamp(start) if start is not None else frame.index[0]
    scored = frame.index[frame.index >= first]
    if len(scored) == 0:
        raise DataError(f"no bar at or after --start {start} (the data end {frame.index[-1]})")
    positions = market.timestamps.get_indexer(scored)
    decided = {int(r): targets[i] for i, r in enumerate(rows)}
    daily = market.close[1:] / market.close[:-1] - 1.0  # daily[t - 1]: return into bar t
    mid = model_id(Path(run_dir) / MODEL_FILE)
    records = []
    for stamp, t in zip(scored, positions, strict=True):
        weights = frame.loc[stamp, [f"w_{n}" for n in market.names]].to_numpy(dtype=float)
        var = cvar = np.nan
        if t >= RISK_WINDOW:
            var, cvar = historical_var(daily[t - RISK_WINDOW : t], weights, RISK_LEVEL)
        target = decided.get(int(t))
        fill = (
            market.timestamps[t + 1]
            if target is not None and t + 1 < len(market.timestamps)
            else pd.NaT
        )
        for k, name in enumerate(market.names):
            records.append(
                {
                    "timestamp": stamp,
                    "fill_timestamp": fill,
                    "instrument": name,
                    "weight": weights[k],
                    "target": np.nan if target is None else target[k],
                    "decision": target is not None,
                    "cash_weight": 1.0 - weights.sum(),
                    "portfolio_var_5_pct": 100 * var,
                    "portfolio_cvar_5_pct": 100 * cvar,
                    "model_id": mid,
                }
            )
    return pd.DataFrame.from_records(records).set_index("timestamp")
