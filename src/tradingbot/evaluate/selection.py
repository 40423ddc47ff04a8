"""The selection protocol: every choice is made on bars that end before the test bars.

In walk-forward, each fold's training period is split once more: the last ``validation_length``
of it (one year by default) is held out as the fold's validation window. Every candidate
configuration is trained on the bars before that window (the feature normalization fitted on
them only), scored by its Sharpe on the window, and the best one is then *retrained* on the
fold's whole training period and run over the test period. The test bars take no part in the
choice. Ties (and candidates without a Sharpe) go to the first candidate listed.

Every configuration tried is recorded (:func:`write_selection`, ``selection.json``), including
configurations tried earlier outside the protocol, so the deflated Sharpe ratio can count them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from tradingbot.data.splits import DateRange, Fold
from tradingbot.safe_write import make_dirs, write_text

SELECTION_FILE = "selection.json"


def validation_window(
    fold: Fold, stamps: pd.DatetimeIndex, length: str = "365D"
) -> tuple[DateRange, DateRange]:
    """The fold's training period split into (inner training, validation): the validation
    window is the training bars in the last ``length`` (a pandas offset) before its end.

    Parameters
    ----------
    fold: the walk-forward fold.
    stamps: the sorted union of the instruments' timestamps.
    length: the validation window's length.
    """
    cut = fold.train.end - pd.tseries.frequencies.to_offset(length)
    lo = int(stamps.searchsorted(fold.train.start, side="left"))
    split = int(stamps.searchsorted(cut, side="right"))
    hi = int(stamps.searchsorted(fold.train.end, side="right"))
    if split - lo < 2 or hi - split < 2:
        raise ValueError(
            f"fold {fold.index}: training period {fold.train} is too short to hold out "
            f"a {length} validation window"
        )
    return (
        DateRange(stamps[lo], stamps[split - 1]),
        DateRange(stamps[split], stamps[hi - 1]),
    )


def scored_span(stamps: pd.DatetimeIndex, span: DateRange) -> DateRange:
    """The range to backtest so that the bars scored are exactly ``span``'s: it starts at the
    bar before ``span`` (the decision at that bar's close fills at the first bar of ``span``),
    or at ``span``'s own first bar when there is none before it."""
    first = int(stamps.searchsorted(span.start, side="left"))
    return DateRange(stamps[max(first - 1, 0)], span.end)


def choose(scores: Mapping[str, float]) -> str:
    """The candidate with the highest score; ties and NaN scores go to the first listed."""
    if not scores:
        raise ValueError("no candidates to choose from")
    best, best_score = next(iter(scores)), -math.inf
    for name, score in scores.items():
        if not math.isnan(score) and score > best_score:
            best, best_score = name, score
    return best


def write_selection(
    out: Path,
    candidates: Mapping[str, Sequence[str]],
    trials: Sequence[Mapping[str, Any]],
    history: Sequence[Mapping[str, Any]] = (),
    protocol: str = "",
    trial_sharpes: Sequence[float] = (),
) -> dict[str, Any]:
    """Write ``selection.json`` and return what it holds.

    Parameters
    ----------
    out: the directory.
    candidates: candidate name -> its config overrides.
    trials: one record per candidate scored (fold, seed, window, score, chosen, ...).
    history: configurations tried before, outside this protocol (name, overrides, where their
        results were seen, Sharpe where known), counted too.
    protocol: a sentence saying how the choice was made.
    trial_sharpes: annualized Sharpe ratios of configurations tried, measured on comparable
        bars, whose variance the deflated Sharpe ratio uses.

    ``n_configurations`` counts the distinct candidates plus the history's entries: the number
    of trials the deflated Sharpe ratio is given.
    """
    record = {
        "protocol": protocol,
        "candidates": {name: list(overrides) for name, overrides in candidates.items()},
        "n_configurations": len(candidates) + len(history),
        "trial_sharpes": [float(x) for x in trial_sharpes],
        "history": [dict(h) for h in history],
        "trials": [dict(t) for t in trials],
    }
    make_dirs(out)
    write_text(out / SELECTION_FILE, json.dumps(record, indent=2, default=str), root=out)
    return record


def read_selection(path: Path) -> tuple[int, list[float]]:
    """``(n_configurations, trial_sharpes)`` of a ``selection.json`` (annualized Sharpes).

    Raises ``ValueError`` naming the file when it is not a selection record.
    """
    try:
        record = json.loads(Path(path).read_text())
        return int(record["n_configurations"]), [float(x) for x in record.get("trial_sharpes", [])]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not a readable selection record ({err})") from err


def run_selection(run_dir: Path) -> tuple[int, list[float]]:
    """How many configurations were tried to arrive at a run's config, and their annualized
    Sharpe ratios where recorded: the run directory's ``selection.json`` (copied there from
    ``evaluation.selection_file`` at training), else one configuration."""
    path = Path(run_dir) / SELECTION_FILE
    if not path.exists():
        return 1, []
    return read_selection(path)
