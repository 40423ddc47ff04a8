"""The agent beside every baseline on the same bars: metrics, bootstrap intervals, SPA, DSR.

Used by ``backtest`` (one split), ``walkforward`` and ``benchmarks/real_data.py`` (stitched test
folds). The statistics are those of :mod:`tradingbot.evaluate.statistics`; this module lines the
policies' bars up and puts the numbers into one table and one dict of tests.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradingbot.config import StatisticsConfig
from tradingbot.evaluate.backtest import backtest_metrics
from tradingbot.evaluate.statistics import (
    deflated_sharpe_of_returns,
    sharpe_intervals,
    spa_test,
)
from tradingbot.safe_write import atomic_path, write_text

TABLE_METRICS = ("annual_return", "max_drawdown", "cvar_5", "exposure", "turnover")


@dataclass
class Comparison:
    """The comparison of one agent with its baselines.

    Parameters
    ----------
    table: one row per policy: ``sharpe`` with its bootstrap interval, ``agent_minus`` (the
        agent's Sharpe minus the policy's) with its interval, and the :data:`TABLE_METRICS`.
    tests: ``spa`` (see :func:`~tradingbot.evaluate.statistics.spa_test`), ``deflated_sharpe``
        (see :func:`~tradingbot.evaluate.statistics.deflated_sharpe_of_returns`), ``bars``,
        ``start``, ``end``.
    """

    table: pd.DataFrame
    tests: dict[str, Any]

    def write(self, out: Path, tag: str) -> None:
        """Write ``statistics_<tag>.csv`` and ``tests_<tag>.json`` into ``out``."""
        with atomic_path(out / f"statistics_{tag}.csv", root=out) as tmp:
            self.table.to_csv(tmp, index=False)
        write_text(out / f"tests_{tag}.json", json.dumps(self.tests, indent=2, default=str), out)


def aligned_returns(bars: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per-bar returns of every policy, one column each, on the bars they all have."""
    # sort=True: the bars in time order whatever order the policies' indexes arrive in.
    returns = pd.concat({name: frame["return"] for name, frame in bars.items()}, axis=1, sort=True)
    aligned = returns.dropna()
    if len(aligned) < 3:
        raise ValueError(
            f"the policies {list(bars)} share {len(aligned)} bars; need at least 3 to compare"
        )
    return aligned


def compare_policies(
    bars: Mapping[str, pd.DataFrame],
    bars_per_year: float,
    cfg: StatisticsConfig,
    agent: str = "agent",
    n_trials: int = 1,
    trial_sharpes: np.ndarray | None = None,
) -> Comparison:
    """The agent beside every other policy in ``bars`` on the bars they share.

    Parameters
    ----------
    bars: policy -> backtest bars (columns ``return``, ``position``, ``trade``).
    bars_per_year: annualization.
    cfg: bootstrap settings.
    agent: the agent's key in ``bars``.
    n_trials: configurations tried to arrive at the agent (for the deflated Sharpe).
    trial_sharpes: their per-bar Sharpe ratios where known.
    """
    returns = aligned_returns(bars)
    names = list(returns.columns)
    intervals = sharpe_intervals(
        returns, agent, bars_per_year, cfg.bootstrap_reps, cfg.seed, cfg.level, cfg.block_length
    )
    block = int(intervals["block_length"].iloc[0])
    sharpe = intervals[intervals["quantity"] == "sharpe"].set_index("policy")
    difference = intervals[intervals["quantity"] == "agent - baseline"].set_index("policy")
    rows = []
    for name in names:
        frame = bars[name].loc[returns.index]
        metrics = backtest_metrics(frame)
        rows.append(
            {
                "policy": name,
                "sharpe": sharpe.loc[name, "estimate"],
                "sharpe_low": sharpe.loc[name, "ci_low"],
                "sharpe_high": sharpe.loc[name, "ci_high"],
                "agent_minus": difference["estimate"].get(name, np.nan),
                "agent_minus_low": difference["ci_low"].get(name, np.nan),
                "agent_minus_high": difference["ci_high"].get(name, np.nan),
                **{k: metrics[k] for k in TABLE_METRICS},
            }
        )
    baselines = returns.drop(columns=agent)
    try:
        spa: dict[str, Any] = spa_test(
            returns[agent], baselines, cfg.bootstrap_reps, cfg.seed, block
        )
    except ValueError as err:  # e.g. an agent that never traded: no Sharpe to compare
        spa = {"pvalue": float("nan"), "note": str(err)}
    tests = {
        "spa": spa,
        "deflated_sharpe": deflated_sharpe_of_returns(
            returns[agent].to_numpy(), n_trials, trial_sharpes
        ),
        "bars": len(returns),
        "start": str(returns.index[0]),
        "end": str(returns.index[-1]),
        "level": cfg.level,
        "bootstrap_reps": cfg.bootstrap_reps,
        "block_length": block,
        "seed": cfg.seed,
    }
    return Comparison(pd.DataFrame(rows), tests)
