"""The report's section of the agent beside every baseline, with the statistics over the
market path (:mod:`tradingbot.evaluate.comparison` writes the files it reads)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pandas as pd


def _interval(estimate: float, low: float, high: float) -> str:
    if estimate != estimate:
        return "&ndash;"
    if low != low:
        return f"{estimate:.2f}"
    return f"{estimate:.2f} [{low:.2f}, {high:.2f}]"


def comparison_html(table: pd.DataFrame, tests: dict[str, Any], title: str) -> str:
    """The agent beside every baseline: Sharpe and agent-minus-baseline Sharpe with their
    bootstrap intervals, the risk columns, and the SPA p-value and deflated Sharpe.

    Parameters
    ----------
    table: a ``statistics_<tag>.csv`` (:class:`tradingbot.evaluate.comparison.Comparison`).
    tests: the matching ``tests_<tag>.json``.
    title: the heading.
    """
    level = float(tests.get("level", 0.95))
    rows = []
    for r in table.itertuples(index=False):
        rows.append(
            f'<td class="text">{html.escape(str(r.policy))}</td>'
            f"<td>{_interval(r.sharpe, r.sharpe_low, r.sharpe_high)}</td>"
            f"<td>{_interval(r.agent_minus, r.agent_minus_low, r.agent_minus_high)}</td>"
            f"<td>{r.annual_return * 100:.2f}%</td><td>{r.max_drawdown * 100:.1f}%</td>"
            f"<td>{r.cvar_5 * 100:.2f}%</td><td>{r.exposure:.2f}</td>"
            f"<td>{r.turnover:.1f}</td>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "policy",
            f"Sharpe [{level:.0%} CI]",
            "agent minus policy [CI]",
            "annual return",
            "max drawdown",
            "CVaR 5%",
            "exposure",
            "turnover /yr",
        )
    )
    body = "".join(f"<tr>{row}</tr>" for row in rows)
    spa = tests.get("spa", {})
    dsr = tests.get("deflated_sharpe", {})
    per_baseline = ", ".join(f"{k} {v:.3f}" for k, v in spa.get("pvalues", {}).items())
    facts = (
        f"{tests.get('bars')} bars {html.escape(str(tests.get('start')))} to "
        f"{html.escape(str(tests.get('end')))}; stationary bootstrap, "
        f"{tests.get('bootstrap_reps')} resamples, mean block {tests.get('block_length')} bars, "
        f"seed {tests.get('seed')}. SPA p-value (null: the agent's Sharpe is no higher than "
        f"the best baseline's; one test per baseline, the largest p): "
        f"<b>{spa.get('pvalue', float('nan')):.3f}</b> ({html.escape(per_baseline)}). "
        f"Deflated Sharpe ratio: <b>{dsr.get('dsr', float('nan')):.3f}</b> "
        f"({dsr.get('n_trials')} configurations tried)."
    )
    return (
        f"<h3>{html.escape(title)}</h3><p>{facts}</p>"
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def comparison_sections(directory: Path) -> str:
    """Every ``statistics_<tag>.csv`` with its ``tests_<tag>.json`` in ``directory``."""
    parts = []
    for path in sorted(directory.glob("statistics_*.csv")):
        tag = path.stem.removeprefix("statistics_")
        tests_path = directory / f"tests_{tag}.json"
        try:
            tests = json.loads(tests_path.read_text()) if tests_path.exists() else {}
            title = f"Agent beside the baselines ({tag})"
            parts.append(comparison_html(pd.read_csv(path), tests, title))
        except (ValueError, KeyError, AttributeError) as err:
            message = html.escape(f"Could not read {path.name}: {err}")
            parts.append(f'<p class="note">{message}</p>')
    return "\n".join(parts)
