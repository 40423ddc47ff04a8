"""After a PBT run: the members table, the best member exported as a normal run directory, and
``pbt/pbt.html`` with each member's score and hyperparameters over time."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from tradingbot.checkpoint import read_manifest
from tradingbot.config import TradingConfig
from tradingbot.config_loading import dump_config
from tradingbot.data.market import load_prepared
from tradingbot.data.portfolio import load_portfolio
from tradingbot.pbt.member import MEMBER_FILE
from tradingbot.pbt.trainable import HP_PREFIX
from tradingbot.portfolio_run import write_portfolio_files
from tradingbot.safe_write import atomic_path, write_text
from tradingbot.train import MODEL_FILE, write_normalization

PBT_DIR = "pbt"
MEMBER_COLUMNS = (
    "trial_id",
    "iteration",
    "score",
    "metric",
    "timesteps",
    "seed",
    "exploits",
    "exploited_from",
    "resumed",
)


def members_table(results: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per report of every member, in the order they arrived: trial, iteration,
    score, hyperparameters, and whether the member had just taken another's checkpoint
    (``exploited_from``) or restored its own (``resumed``: after a pause or a crash).

    Parameters
    ----------
    results: the reported results (see :class:`tradingbot.pbt.runner.MembersRecorder`).
    """
    raw = pd.DataFrame([r for r in results if "score" in r])
    if raw.empty:
        return pd.DataFrame(columns=list(MEMBER_COLUMNS))
    source = raw["restored_from"].fillna("").astype(str)
    raw["exploited_from"] = source.where((source != "") & (source != raw["trial_id"]), "")
    raw["resumed"] = source == raw["trial_id"]
    hp_columns = [c for c in raw.columns if c.startswith(HP_PREFIX)]
    table = raw[[*MEMBER_COLUMNS, *hp_columns]].rename(
        columns={c: c.removeprefix(HP_PREFIX) for c in hp_columns}
    )
    return table.sort_values(["trial_id"], kind="stable").reset_index(drop=True)


def _best_checkpoint(grid: Any, mode: str) -> tuple[float, str, int, Any]:
    """(score, trial id, iteration, checkpoint) of the best-scoring checkpoint of any member."""
    candidates = []
    for result in grid:
        for checkpoint, metrics in result.best_checkpoints or []:
            if "score" in metrics:
                score = float(metrics["score"])
                key = score if mode == "max" else -score
                candidates.append(
                    (key, score, str(metrics["trial_id"]), int(metrics["iteration"]), checkpoint)
                )
    if not candidates:
        errors = [str(r.error) for r in grid if r.error is not None]
        raise RuntimeError(f"no PBT member reported a checkpoint; errors: {errors}")
    _, score, trial, iteration, checkpoint = max(candidates, key=lambda c: c[0])
    return score, trial, iteration, checkpoint


def trial_failures(grid: Any) -> dict[str, int]:
    """How many times each trial crashed and was retried from its checkpoint (from Tune's
    trial records; empty when this Ray version does not expose them)."""
    analysis = getattr(grid, "_experiment_analysis", None)
    trials = getattr(analysis, "trials", None) or []
    return {str(t.trial_id): int(getattr(t, "num_failures", 0)) for t in trials}


def _copy_atomic(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def export_best(
    config: TradingConfig, run_dir: Path, grid: Any, members: pd.DataFrame
) -> tuple[str, float, int]:
    """Make ``run_dir`` a normal run directory of the best member's best checkpoint.

    Writes ``model.safetensors``, ``normalization.safetensors`` (a portfolio's also
    ``portfolio.json``), ``config.yaml`` (the
    member's config: its hyperparameters and seed) and updates ``run.json`` (config hash,
    seed, and a ``pbt`` entry). Returns (trial id, score, iteration).
    """
    score, trial, iteration, checkpoint = _best_checkpoint(grid, config.pbt.mode)
    with checkpoint.as_directory() as directory:
        _copy_atomic(Path(directory) / MODEL_FILE, run_dir / MODEL_FILE)
        _copy_atomic(Path(directory) / MEMBER_FILE, run_dir / PBT_DIR / "best_member.json")
    best_config = TradingConfig.model_validate(read_manifest(run_dir / MODEL_FILE).config)
    write_text(run_dir / "config.yaml", dump_config(best_config), root=run_dir)
    if best_config.portfolio is not None:  # normalization and what the data imply
        write_portfolio_files(load_portfolio(best_config.data), run_dir)
    else:
        write_normalization(load_prepared(best_config.data, window=best_config.env.window), run_dir)
    record = json.loads((run_dir / "run.json").read_text())
    summary = {
        "best_trial": trial,
        "best_iteration": iteration,
        "best_score": score,
        "metric": config.pbt.metric,
        "split": config.pbt.split,
        "base_config_hash": record.get("config_hash"),
        "population": config.pbt.population,
        "exploits": int((members["exploited_from"] != "").sum()) if len(members) else 0,
        "resumes": int(members["resumed"].sum()) if len(members) else 0,
        "failures": trial_failures(grid),
    }
    record.update(config_hash=best_config.config_hash(), seed=best_config.run.seed, pbt=summary)
    write_text(run_dir / "run.json", json.dumps(record, indent=2) + "\n", root=run_dir)
    write_text(
        run_dir / PBT_DIR / "summary.json", json.dumps(summary, indent=2) + "\n", root=run_dir
    )
    return trial, score, iteration


def pbt_figure(members: pd.DataFrame, hyperparameters: list[str], metric: str) -> go.Figure:
    """Score and each hyperparameter against the interval, one line per member; a member
    that took another's checkpoint is marked with an x at that report."""
    rows = 1 + len(hyperparameters)
    titles = [f"score ({metric})", *hyperparameters]
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, subplot_titles=titles)
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
    for i, (trial, frame) in enumerate(members.groupby("trial_id", sort=True)):
        color = palette[i % len(palette)]
        exploited = frame["exploited_from"] != ""
        for row, column in enumerate(["score", *hyperparameters], start=1):
            fig.add_trace(
                go.Scatter(
                    x=frame["iteration"],
                    y=frame[column],
                    mode="lines+markers",
                    name=str(trial),
                    legendgroup=str(trial),
                    showlegend=row == 1,
                    line={"color": color},
                ),
                row=row,
                col=1,
            )
            fig.add_trace(
                go.Scatter(
                    x=frame.loc[exploited, "iteration"],
                    y=frame.loc[exploited, column],
                    mode="markers",
                    marker={"symbol": "x", "size": 11, "color": color},
                    name=f"{trial} exploit",
                    legendgroup=str(trial),
                    showlegend=False,
                    hovertext=frame.loc[exploited, "exploited_from"].map("from {}".format),
                ),
                row=row,
                col=1,
            )
    fig.update_layout(height=260 * rows, title="PBT members over time", template="plotly_white")
    fig.update_xaxes(title_text="interval", row=rows, col=1)
    return fig


def write_pbt_html(
    members: pd.DataFrame, hyperparameters: list[str], path: Path, config: TradingConfig
) -> Path:
    """A self-contained (offline) HTML page with :func:`pbt_figure` and the members table."""
    present = [h for h in hyperparameters if h in members.columns]
    fig = pbt_figure(members, present, config.pbt.metric)
    chart = fig.to_html(full_html=False, include_plotlyjs=False, div_id="pbt-members")
    table = members.to_html(index=False, float_format=lambda x: f"{x:.6g}", border=0)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>PBT members</title>
<script type="text/javascript">{get_plotlyjs()}</script>
<style>body{{font-family:system-ui,sans-serif;margin:0 auto;max-width:1400px;padding:0 24px}}
table{{border-collapse:collapse;font-size:12px}}td,th{{border:1px solid #ddd;padding:3px 6px}}
</style></head><body>
<h1>Population-based training</h1>
<p>Score: {config.pbt.metric} on the {config.pbt.split} split, reported every
{config.pbt.perturbation_interval} updates. An x marks a report right after the member took
another member's checkpoint (exploit) with perturbed hyperparameters.</p>
{chart}
<h2>Members</h2>
{table}
</body></html>
"""
    write_text(path, page)
    return path
