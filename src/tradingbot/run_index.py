"""``tradingbot runs``: the run directories under a directory, one row each, with key numbers.

A row is read from the run's own files only, without loading a model or importing torch:
``run.json`` (seed, creation time), ``config.yaml`` (data source, seed), the header of
``model.safetensors`` (steps trained) and ``backtest/test/metrics.csv`` (test Sharpe ratio and
maximum drawdown of the agent and of buy-and-hold, each the mean over instruments). A file that
is missing or unreadable leaves its cells empty; it does not stop the listing. A seed ensemble's
row is its ensemble's (steps: its least-trained member's; seed: its first member's).
"""

from __future__ import annotations

import csv
import json
import math
import struct
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from tradingbot.config_loading import read_config_file
from tradingbot.errors import UserError

# The header key of the checkpoint manifest (tradingbot.checkpoint.MANIFEST_KEY; not imported
# from there because that module imports torch).
MANIFEST_KEY = "tradingbot.manifest"
MAX_HEADER_BYTES = 16 << 20
MAX_SMALL_FILE_BYTES = 1 << 20
TEST_METRICS = Path("backtest") / "test" / "metrics.csv"


@dataclass
class RunRow:
    """One run directory's row of the table (None where the run has no such number)."""

    name: str
    data: str | None = None
    steps: int | None = None
    seed: int | None = None
    created: str | None = None
    sharpe: float | None = None
    max_drawdown: float | None = None
    bh_sharpe: float | None = None
    bh_max_drawdown: float | None = None


COLUMNS = tuple(f.name for f in fields(RunRow))
TEXT_COLUMNS = ("name", "data", "created")


def _small_text(path: Path) -> str | None:
    if not path.is_file() or path.stat().st_size > MAX_SMALL_FILE_BYTES:
        return None
    return path.read_text(encoding="utf-8", errors="replace")


def trained_steps(model: Path) -> int | None:
    """The ``step`` in a checkpoint's manifest, read from the safetensors header alone."""
    if not model.is_file():
        return None
    with model.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            return None
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES:
            return None
        header = json.loads(handle.read(length))
    manifest = json.loads(header.get("__metadata__", {}).get(MANIFEST_KEY, "{}"))
    step = manifest.get("step")
    return step if isinstance(step, int) else None


def ensemble_steps(run_dir: Path, seeds: Any) -> int | None:
    """A seed ensemble's steps: the fewest any member (``members/seed_<k>/model.safetensors``
    for each of ``run.seeds``) was trained for; None when a member has no model yet."""
    if not isinstance(seeds, list) or not seeds:
        return None
    steps = [trained_steps(run_dir / "members" / f"seed_{s}" / "model.safetensors") for s in seeds]
    return None if any(s is None for s in steps) else min(s for s in steps if s is not None)


def read_test_metrics(path: Path) -> dict[str, tuple[float | None, float | None]]:
    """policy -> (mean Sharpe, mean max drawdown) over instruments, from a ``metrics.csv``."""
    text = _small_text(path)
    if text is None:
        return {}
    values: dict[str, list[tuple[float, float]]] = {}
    for row in csv.DictReader(text.splitlines()):
        try:
            pair = (float(row["sharpe"]), float(row["max_drawdown"]))
        except (KeyError, TypeError, ValueError):
            continue
        values.setdefault(row.get("policy", ""), []).append(pair)
    return {
        policy: (_mean([p[0] for p in pairs]), _mean([p[1] for p in pairs]))
        for policy, pairs in values.items()
    }


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def _get(mapping: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def read_run(run_dir: Path) -> RunRow:
    """The row of one run directory (cells of unreadable files left empty)."""
    row = RunRow(name=run_dir.name)
    try:
        config = read_config_file(run_dir / "config.yaml")
    except UserError:
        config = {}
    source = _get(config, "data", "source")
    row.data = str(source) if source is not None else None
    try:
        record = json.loads(_small_text(run_dir / "run.json") or "{}")
    except json.JSONDecodeError:
        record = {}
    seed = _get(record, "seed")
    seed = seed if seed is not None else _get(config, "run", "seed")
    row.seed = seed if isinstance(seed, int) else None
    created = _get(record, "created")
    row.created = str(created)[:19].replace("T", " ") if created else None
    try:
        row.steps = trained_steps(run_dir / "model.safetensors")
        if row.steps is None and (run_dir / "members").is_dir():
            row.steps = ensemble_steps(run_dir, _get(config, "run", "seeds"))
    except (OSError, ValueError, AttributeError):
        row.steps = None
    metrics = read_test_metrics(run_dir / TEST_METRICS)
    row.sharpe, row.max_drawdown = metrics.get("agent", (None, None))
    row.bh_sharpe, row.bh_max_drawdown = metrics.get("buy_and_hold", (None, None))
    return row


def is_run_dir(path: Path) -> bool:
    """A directory (not a link) holding a ``config.yaml`` or ``run.json``."""
    return (
        path.is_dir()
        and not path.is_symlink()
        and ((path / "config.yaml").is_file() or (path / "run.json").is_file())
    )


def list_runs(directory: Path) -> list[RunRow]:
    """The rows of every run directory directly under ``directory`` (or of ``directory``
    itself when it is one), by name."""
    if not directory.is_dir():
        problem = "not a directory" if directory.exists() else "no such directory"
        raise UserError(f"{directory}: {problem} (give the run.out_dir that holds the runs)")
    if is_run_dir(directory):
        return [read_run(directory)]
    return [read_run(p) for p in sorted(directory.iterdir()) if is_run_dir(p)]


def sort_rows(rows: list[RunRow], column: str, reverse: bool = False) -> list[RunRow]:
    """Rows sorted by ``column``: text A to Z, numbers largest first (the best Sharpe, the
    smallest drawdown, the longest run); ``reverse`` flips that; empty cells always last."""
    if column not in COLUMNS:
        raise UserError(f"--sort must be one of {', '.join(COLUMNS)}, got {column!r}")
    present = [r for r in rows if getattr(r, column) is not None]
    missing = [r for r in rows if getattr(r, column) is None]
    descending = column not in TEXT_COLUMNS
    present.sort(key=lambda r: getattr(r, column), reverse=descending != reverse)
    return present + missing


def format_cell(value: Any) -> str:
    """A table cell: floats to 3 decimals, empty cells as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
