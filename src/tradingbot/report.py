"""``tradingbot report RUN_DIR``: one self-contained, offline ``report.html`` for a run.

The report reads what training and evaluation wrote into the run directory:

- ``config.yaml`` and ``run.json`` (the resolved config; hash, seed, versions, command);
- ``backtest/<split>/bars_<instrument>_<policy>.csv`` and ``backtest/<split>/metrics.csv``
  (and a seed ensemble's ``seed_spread.csv``);
- ``tb/<name>_<n>/events.out.tfevents.*`` (Stable-Baselines3's TensorBoard scalars);
- optionally ``evaluation/folds.csv``, ``evaluation/summary.csv``, ``evaluation/regimes.csv``.

plotly.js is embedded once, inline, so the file opens without a network. A missing optional piece
becomes a short note in the report, never an error. A small inline script lists any JavaScript
error and any chart that did not render at the top of the page (the browser test reads it).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import yaml
from plotly.offline import get_plotlyjs

from tradingbot import report_charts as charts
from tradingbot import report_risk
from tradingbot.report_comparison import comparison_sections
from tradingbot.report_portfolio import weight_columns, weights_figure
from tradingbot.report_style import ERROR_CAPTURE_JS, STYLE
from tradingbot.safe_write import write_text

POLICY_ORDER = (
    "agent",
    "buy_and_hold",
    "flat",
    "risk_matched",
    "vol_target",
    "trend",
    "momentum",
)
SPLIT_ORDER = ("test", "validation", "train")
EVALUATION_TABLES = (
    ("folds.csv", "Walk-forward folds (per fold, seed, policy and instrument)"),
    ("summary.csv", "Summary over folds and seeds (mean and confidence interval)"),
    ("regimes.csv", "By volatility regime"),
    ("stitched.csv", "Stitched test folds per seed, beside the baselines held continuously"),
    ("seed_spread.csv", "Seed spread of the stitched metrics (training noise, one market path)"),
)


def _id(*parts: str) -> str:
    return "-".join(re.sub(r"[^A-Za-z0-9_]+", "_", p) for p in parts)


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _fmt(value: Any) -> str:
    """A table cell: floats to 4 significant digits (compact, so wide tables fit the page),
    NaN as a dash."""
    if isinstance(value, float):
        if value != value:
            return "&ndash;"
        return f"{value:.4g}"
    return html.escape(str(value))


def _header(name: str) -> str:
    """A column header that may wrap after its underscores (long metric names)."""
    return html.escape(name).replace("_", "_<wbr>")


def html_table(frame: pd.DataFrame, caption: str | None = None) -> str:
    """A DataFrame as a minimal HTML table (numbers right-aligned, text left-aligned).

    Parameters
    ----------
    frame: the table; its index is not shown (reset it first to keep it).
    caption: an optional caption above the table.
    """
    numeric = {c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])}
    head = "".join(
        f'<th class="{"" if c in numeric else "text"}">{_header(str(c))}</th>'
        for c in frame.columns
    )
    body = []
    for row in frame.itertuples(index=False):
        cells = "".join(
            f'<td class="{"" if c in numeric else "text"}">{_fmt(v)}</td>'
            for c, v in zip(frame.columns, row, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (
        f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def figure_html(fig: go.Figure, div_id: str) -> str:
    """One figure as an HTML fragment with the given div id, without plotly.js.

    Parameters
    ----------
    fig: the figure.
    div_id: the id of the chart's div (unique in the page).
    """
    inner = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id)
    return f'<div class="chart">{inner}</div>'


def _ordered(names: Iterable[str], order: tuple[str, ...]) -> list[str]:
    names = list(names)
    return [n for n in order if n in names] + sorted(n for n in names if n not in order)


def read_bars(split_dir: Path) -> dict[str, dict[str, pd.DataFrame]]:
    """The bars of one split: instrument -> policy -> bars, indexed by timestamp.

    The instrument is read from the file's ``instrument`` column, and the policy is what follows
    ``bars_<instrument>_`` in the file name (so names with underscores parse unambiguously).

    Parameters
    ----------
    split_dir: ``RUN_DIR/backtest/<split>``.
    """
    out: dict[str, dict[str, pd.DataFrame]] = {}
    for path in sorted(split_dir.glob("bars_*.csv")):
        frame = pd.read_csv(path, index_col="timestamp")
        frame.index = pd.DatetimeIndex(pd.to_datetime(frame.index), name="timestamp")
        stem = path.stem.removeprefix("bars_")
        instrument = str(frame["instrument"].iloc[0]) if len(frame) else ""
        if instrument and stem.startswith(instrument + "_"):
            policy = stem[len(instrument) + 1 :]
        else:
            policy = next((p for p in POLICY_ORDER if stem.endswith("_" + p)), stem.split("_")[-1])
            instrument = stem[: -len(policy) - 1] or instrument
        out.setdefault(instrument, {})[policy] = frame
    return {
        inst: {p: out[inst][p] for p in _ordered(out[inst], POLICY_ORDER)} for inst in sorted(out)
    }


def read_scalars(tb_dir: Path) -> dict[str, pd.DataFrame]:
    """TensorBoard scalars of every run under ``tb_dir``: tag -> frame of ``run, step, value``.

    Parameters
    ----------
    tb_dir: ``RUN_DIR/tb`` (one sub-directory per SB3 ``learn`` call, e.g. ``DistributionalPPO_1``).
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dirs = sorted({p.parent for p in tb_dir.rglob("events.out.tfevents.*")})
    rows: dict[str, list[tuple[str, int, float]]] = {}
    for run_dir in run_dirs:
        accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
        accumulator.Reload()
        name = run_dir.relative_to(tb_dir).as_posix() if run_dir != tb_dir else tb_dir.name
        for tag in accumulator.Tags().get("scalars", []):
            rows.setdefault(tag, []).extend(
                (name, int(e.step), float(e.value)) for e in accumulator.Scalars(tag)
            )
    return {tag: pd.DataFrame(r, columns=["run", "step", "value"]) for tag, r in rows.items()}


def _instrument_section(split: str, instrument: str, bars: dict[str, pd.DataFrame]) -> str:
    parts = [
        f'<h3 id="{_id(split, instrument)}">{html.escape(split)}: {html.escape(instrument)}</h3>'
    ]
    figures: list[tuple[str, go.Figure]] = [
        ("equity", charts.equity_figure(bars, "Equity: the agent and the baselines")),
        ("drawdown", charts.drawdown_figure(bars)),
    ]
    agent = bars.get("agent")
    if agent is not None:
        figures.append(("position", charts.position_figure(agent)))
        if weight_columns(agent):  # a portfolio run: its weights per asset
            figures.append(("weights", weights_figure(agent)))
        if "var_5_pct" in agent:
            figures.append(("var", report_risk.var_figure(agent)))
    figures.append(("rolling_sharpe", charts.rolling_sharpe_figure(bars)))
    figures.append(("returns", charts.return_histogram_figure(bars)))
    notes = []
    if agent is None:
        notes.append("No agent bars for this instrument: position and quantile charts skipped.")
    elif charts.quantile_columns(agent):
        figures.append(("quantiles", charts.quantile_fan_figure(agent)))
    else:
        notes.append("The agent's bars have no critic quantiles (q_0 ...): fan chart skipped.")
    parts.extend(_note(n) for n in notes)
    if len(bars) > 3:  # every baseline: a legend above the plot would wrap over it
        for _, fig in figures:
            fig.update_layout(
                legend={
                    "orientation": "v",
                    "yanchor": "top",
                    "y": 1.0,
                    "xanchor": "left",
                    "x": 1.02,
                },
                margin={"l": 60, "r": 110},
            )
    grid = "".join(figure_html(fig, _id(split, instrument, key)) for key, fig in figures)
    parts.append(f'<div class="grid">{grid}</div>')
    return "\n".join(parts)


def _split_section(split_dir: Path) -> str:
    split = split_dir.name
    parts = [f'<h2 id="{_id("split", split)}">Backtest: {html.escape(split)}</h2>']
    metrics = split_dir / "metrics.csv"
    if metrics.exists():
        parts.append(html_table(pd.read_csv(metrics), f"Metrics on {split}"))
    else:
        parts.append(_note(f"No metrics.csv for {split}."))
    spread = split_dir / "seed_spread.csv"  # a seed ensemble (run.seeds)
    if spread.exists():
        caption = f"The seed ensemble (policy agent) beside its single seeds on {split}"
        parts.append(html_table(pd.read_csv(spread), caption))
    parts.append(comparison_sections(split_dir))
    parts.append(_var_calibration_html(split_dir))
    try:
        bars = read_bars(split_dir)
    except (KeyError, ValueError) as err:
        return "\n".join([*parts, _note(f"Could not read the bars of {split}: {err}")])
    if not bars:
        parts.append(_note(f"No bars_*.csv for {split}."))
    for instrument, by_policy in bars.items():
        parts.append(_instrument_section(split, instrument, by_policy))
    return "\n".join(parts)


def _var_calibration_html(split_dir: Path) -> str:
    """The split's VaR calibration table (``var_calibration.csv``), with how it is counted."""
    path = split_dir / "var_calibration.csv"
    head = f"<h3>VaR calibration on {html.escape(split_dir.name)}</h3>"
    if not path.exists():
        return head + _note("No var_calibration.csv (a backtest before GARCH VaR existed).")
    text = f"<p>{html.escape(report_risk.CALIBRATION_TEXT)}</p>"
    return head + text + html_table(pd.read_csv(path))


def _data_notes(run_dir: Path) -> str:
    """What the prices and the cash leave out (dividends, interest), from the config."""
    path = run_dir / "config.yaml"
    config = yaml.safe_load(path.read_text()) if path.exists() else {}
    return f'<h2 id="data">Data</h2>\n<p>{html.escape(report_risk.data_notes(config or {}))}</p>'


def _run_facts(run_dir: Path) -> str:
    path = run_dir / "run.json"
    if not path.exists():
        return _note("No run.json.")
    try:
        facts = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        return _note(f"run.json is not valid JSON: {err}")
    rows: list[tuple[str, str]] = [("run directory", str(run_dir))]
    for key, value in facts.items():
        if isinstance(value, dict):
            rows.extend((f"{key}.{k}", str(v)) for k, v in value.items())
        elif isinstance(value, list):
            rows.append((key, " ".join(map(str, value))))
        else:
            rows.append((key, str(value)))
    return html_table(pd.DataFrame(rows, columns=["fact", "value"]))


def _training_section(run_dir: Path) -> str:
    parts = ['<h2 id="training">Training curves</h2>']
    tb_dir = run_dir / "tb"
    scalars = read_scalars(tb_dir) if tb_dir.is_dir() else {}
    if not scalars:
        parts.append(_note("No TensorBoard scalars under tb/."))
    else:
        parts.append(figure_html(charts.training_curves_figure(scalars), "training-curves"))
    return "\n".join(parts)


def _evaluation_section(run_dir: Path) -> str:
    parts = ['<h2 id="evaluation">Walk-forward evaluation</h2>']
    found = False
    for name, caption in EVALUATION_TABLES:
        path = run_dir / "evaluation" / name
        if path.exists():
            found = True
            parts.append(f"<h3>{html.escape(caption)}</h3>")
            parts.append(html_table(pd.read_csv(path)))
    if (run_dir / "evaluation").is_dir():
        parts.append(comparison_sections(run_dir / "evaluation"))
    if not found:
        parts.append(_note("No evaluation/ tables (folds, summary, regimes) in this run."))
    return "\n".join(parts)


def _pbt_section(run_dir: Path) -> str:
    """Each PBT member's score and hyperparameters over time, when the run came from PBT."""
    path = run_dir / "pbt" / "members.csv"
    if not path.exists():
        return ""
    from tradingbot.pbt.export import MEMBER_COLUMNS, pbt_figure

    members = pd.read_csv(path)
    hyperparameters = [c for c in members.columns if c not in MEMBER_COLUMNS]
    config = (
        yaml.safe_load((run_dir / "config.yaml").read_text())
        if (run_dir / "config.yaml").exists()
        else {}
    )
    metric = (config.get("pbt") or {}).get("metric", "score")
    return (
        '<h2 id="pbt">Population-based training</h2>\n'
        + figure_html(pbt_figure(members, hyperparameters, metric), "pbt-members")
        + html_table(members)
    )


def _config_section(run_dir: Path) -> str:
    path = run_dir / "config.yaml"
    body = (
        f"<pre>{html.escape(path.read_text())}</pre>" if path.exists() else _note("No config.yaml.")
    )
    return f'<h2 id="config">Resolved config</h2>\n{body}'


def build_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write the run's self-contained HTML report and return its path.

    Parameters
    ----------
    run_dir: the run directory (``config.yaml``, ``run.json``, ``tb/``, ``backtest/``, ...).
    out: where to write the report (default ``run_dir / "report.html"``).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    root = run_dir if out is None else None  # a path the caller chose may lie elsewhere
    out = run_dir / "report.html" if out is None else Path(out)
    backtest = run_dir / "backtest"
    splits = [p.name for p in backtest.iterdir() if p.is_dir()] if backtest.is_dir() else []
    split_dirs = [backtest / s for s in _ordered(splits, SPLIT_ORDER)]
    nav = "".join(
        f'<a href="#{_id("split", d.name)}">backtest: {html.escape(d.name)}</a>' for d in split_dirs
    )
    nav += '<a href="#data">data</a>'
    nav += '<a href="#evaluation">evaluation</a><a href="#training">training</a>'
    nav += '<a href="#config">config</a>'
    sections = [_split_section(d) for d in split_dirs] or [_note("No backtest/ results.")]
    title = f"tradingbot report: {run_dir.name}"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style>
<script>{ERROR_CAPTURE_JS}</script>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<div id="report-errors" hidden><strong>Problems while rendering this report:</strong><ul></ul></div>
<h1>{html.escape(title)}</h1>
<nav>{nav}</nav>
<h2 id="run">Run</h2>
{_run_facts(run_dir)}
{_data_notes(run_dir)}
{"".join(sections)}
{_evaluation_section(run_dir)}
{_pbt_section(run_dir)}
{_training_section(run_dir)}
{_config_section(run_dir)}
</body></html>
"""
    write_text(out, page, root=root)
    return out
