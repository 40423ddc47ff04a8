"""Date splits (train / validation / test) and walk-forward folds.

A split is a closed range of timestamps; each instrument maps it to its own row range with
:func:`rows_in`. All boundaries are decided on the union of every instrument's timestamps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tradingbot.config import SplitConfig, WalkForwardConfig

SPLIT_NAMES = ("train", "validation", "test")


@dataclass(frozen=True)
class DateRange:
    """Timestamps ``start <= t <= end``."""

    start: pd.Timestamp
    end: pd.Timestamp

    def __str__(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M} .. {self.end:%Y-%m-%d %H:%M}"


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold: train on ``train``, evaluate on ``test``."""

    index: int
    train: DateRange
    test: DateRange


def rows_in(index: pd.DatetimeIndex, span: DateRange) -> tuple[int, int]:
    """Row range ``[lo, hi)`` of ``index`` inside ``span``."""
    lo = int(index.searchsorted(span.start, side="left"))
    hi = int(index.searchsorted(span.end, side="right"))
    return lo, hi


def date_splits(timestamps: pd.DatetimeIndex, cfg: SplitConfig) -> dict[str, DateRange]:
    """Train / validation / test ranges from dates or, when none are given, fractions."""
    stamps = timestamps.unique().sort_values()
    if len(stamps) < 3:
        raise ValueError(f"need at least 3 timestamps to split, got {len(stamps)}")
    if cfg.train_end is not None and cfg.validation_end is not None:
        train_hi = int(stamps.searchsorted(pd.Timestamp(cfg.train_end) + pd.Timedelta(days=1)))
        val_hi = int(stamps.searchsorted(pd.Timestamp(cfg.validation_end) + pd.Timedelta(days=1)))
    else:
        train_hi = round(len(stamps) * cfg.train_fraction)
        val_hi = round(len(stamps) * (cfg.train_fraction + cfg.validation_fraction))
    bounds = {
        "train": (0, train_hi),
        "validation": (train_hi, val_hi),
        "test": (val_hi, len(stamps)),
    }
    out = {}
    for name, (lo, hi) in bounds.items():
        if hi <= lo:
            raise ValueError(
                f"split {name!r} is empty with data from {stamps[0]} to {stamps[-1]} "
                f"(check data.split)"
            )
        out[name] = DateRange(stamps[lo], stamps[hi - 1])
    return out


def walk_forward_folds(timestamps: pd.DatetimeIndex, cfg: WalkForwardConfig) -> list[Fold]:
    """Consecutive test windows of ``test_length``; each fold trains on the bars before it.

    ``expanding``: training starts at the first bar. ``rolling``: training covers
    ``train_length`` before the test window. ``embargo_bars`` bars between the end of training
    and the start of the test are left out of both.
    """
    stamps = timestamps.unique().sort_values()
    step = pd.tseries.frequencies.to_offset(cfg.test_length)
    start = (
        pd.Timestamp(cfg.first_test_start)
        if cfg.first_test_start is not None
        else stamps[len(stamps) // 2]
    )
    folds: list[Fold] = []
    while start <= stamps[-1] and (cfg.n_folds is None or len(folds) < cfg.n_folds):
        end = start + step
        test_lo = int(stamps.searchsorted(start, side="left"))
        test_hi = int(stamps.searchsorted(end, side="left"))
        train_hi = test_lo - cfg.embargo_bars
        if cfg.mode == "rolling":
            assert cfg.train_length is not None
            train_start = start - pd.tseries.frequencies.to_offset(cfg.train_length)
            train_lo = int(stamps.searchsorted(train_start, side="left"))
        else:
            train_lo = 0
        if test_hi > test_lo and train_hi > train_lo:
            folds.append(
                Fold(
                    index=len(folds),
                    train=DateRange(stamps[train_lo], stamps[train_hi - 1]),
                    test=DateRange(stamps[test_lo], stamps[test_hi - 1]),
                )
            )
        start = end
    if not folds:
        raise ValueError(
            f"no walk-forward fold fits data from {stamps[0]} to {stamps[-1]} "
            f"(first_test_start={cfg.first_test_start}, test_length={cfg.test_length})"
        )
    return folds


def union_index(indexes: list[pd.DatetimeIndex]) -> pd.DatetimeIndex:
    """The sorted union of several instruments' timestamps."""
    return pd.DatetimeIndex(np.unique(np.concatenate([ix.to_numpy() for ix in indexes])))
