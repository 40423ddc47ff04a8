"""Date splits (train / validation / test) and walk-forward folds.

A split is a closed range of timestamps; each instrument maps it to its own row range with
:func:`rows_in`. All boundaries are decided on the union of every instrument's timestamps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tradingbot.config import ConfigError, SplitConfig, WalkForwardConfig
from tradingbot.data.validate import DataError

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


def split_span(splits: dict[str, DateRange], split: str | DateRange) -> DateRange:
    """The date range of a named split (or ``split`` itself when it is a range)."""
    if isinstance(split, DateRange):
        return split
    if split not in splits:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(splits)}")
    return splits[split]


def rows_in(index: pd.DatetimeIndex, span: DateRange) -> tuple[int, int]:
    """Row range ``[lo, hi)`` of ``index`` inside ``span``."""
    lo = int(index.searchsorted(span.start, side="left"))
    hi = int(index.searchsorted(span.end, side="right"))
    return lo, hi


def date_splits(
    timestamps: pd.DatetimeIndex, cfg: SplitConfig, source: str = "data"
) -> dict[str, DateRange]:
    """Train / validation / test ranges from dates or, when none are given, fractions.

    Raises
    ------
    DataError
        When the data have too few timestamps for three non-empty splits by fraction.
    ConfigError
        When ``data.split.train_end`` / ``validation_end`` leave a split empty (dates outside
        the data); the message gives the data's first and last timestamps.
    """
    stamps = timestamps.unique().sort_values()
    if len(stamps) < 3:
        raise DataError(
            f"{source}: {len(stamps)} timestamp(s); need at least 3 to split into "
            f"train, validation and test"
        )
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
            if cfg.train_end is not None:
                raise ConfigError(
                    f"data.split: split {name!r} is empty: train_end {cfg.train_end} and "
                    f"validation_end {cfg.validation_end} with {source} from {stamps[0]} to "
                    f"{stamps[-1]}; choose dates inside the data"
                )
            raise DataError(
                f"{source}: split {name!r} is empty: {len(stamps)} timestamps from {stamps[0]} "
                f"to {stamps[-1]} are too few for train_fraction {cfg.train_fraction} and "
                f"validation_fraction {cfg.validation_fraction} (data.split)"
            )
        out[name] = DateRange(stamps[lo], stamps[hi - 1])
    return out


def _offset(alias: str, key: str) -> pd.offsets.BaseOffset:
    try:
        return pd.tseries.frequencies.to_offset(alias)
    except ValueError:
        raise ConfigError(
            f"data.walk_forward.{key}: {alias!r} is not a pandas offset alias (e.g. '365D', '1YE')"
        ) from None


def walk_forward_folds(timestamps: pd.DatetimeIndex, cfg: WalkForwardConfig) -> list[Fold]:
    """Consecutive test windows of ``test_length``; each fold trains on the bars before it.

    ``expanding``: training starts at the first bar. ``rolling``: training covers
    ``train_length`` before the test window. ``embargo_bars`` bars between the end of training
    and the start of the test are left out of both.
    """
    stamps = timestamps.unique().sort_values()
    if len(stamps) < 2:
        raise DataError(f"{len(stamps)} timestamp(s); walk-forward folds need more data")
    step = _offset(cfg.test_length, "test_length")
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
            train_start = start - _offset(cfg.train_length, "train_length")
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
        raise ConfigError(
            f"data.walk_forward: no fold fits data from {stamps[0]} to {stamps[-1]} "
            f"(first_test_start={cfg.first_test_start}, test_length={cfg.test_length})"
        )
    return folds


def union_index(indexes: list[pd.DatetimeIndex]) -> pd.DatetimeIndex:
    """The sorted union of several instruments' timestamps."""
    return pd.DatetimeIndex(np.unique(np.concatenate([ix.to_numpy() for ix in indexes])))
