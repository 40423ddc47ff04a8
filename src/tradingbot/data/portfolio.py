"""A universe of K assets on common dates, as the arrays the portfolio environment reads.

Every asset's causal features (:func:`tradingbot.data.features.compute_features`, the value at
bar t from bars <= t only) are stacked into one (T, K, F) array and normalized with statistics
fitted on the training rows of all assets together (one normalization shared by the assets, so
the permutation-equivariant policy reads every asset on the same scale).

Close-only data (open = high = low = close on every bar, as skfolio's adjusted closes): the
range feature (always 0) is left out, there is no volume feature, and orders fill at the next
close; :func:`close_only_note` says so in ``data show`` and in the run's record.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tradingbot.config import DataConfig
from tradingbot.data.features import (
    FeatureNormalizer,
    compute_features,
    feature_lookback,
    first_valid_row,
)
from tradingbot.data.sources import MarketData, load_market
from tradingbot.data.splits import DateRange, date_splits, rows_in, split_span
from tradingbot.data.validate import DataError

CLOSE_ONLY_DROPPED = ("range", "volume_z")


def is_close_only(data: MarketData) -> bool:
    """Whether every bar of every instrument has open = high = low = close."""
    return all(
        bool((b["open"] == b["close"]).all())
        and bool((b["high"] == b["close"]).all())
        and bool((b["low"] == b["close"]).all())
        for b in data.bars.values()
    )


def close_only_note() -> str:
    """What close-only data change, in one line (``data show`` and the run record)."""
    return (
        "close-only data (open = high = low = close): orders fill at the next close; the "
        "range and volume features are off (portfolio runs leave them out; in a "
        "single-instrument run the range is constant 0)"
    )


@dataclass
class PortfolioMarket:
    """Prices and normalized features of K assets on common dates.

    Parameters
    ----------
    names: the assets, in column order.
    timestamps: the common dates (T).
    close: (T, K) float64 closes.
    features: (T, K, F) float32 normalized features (NaN before ``first_valid``).
    feature_names: the F feature columns.
    normalizer: the fitted normalization (train rows of every asset).
    splits: train / validation / test date ranges.
    first_valid: the first row at which every asset's features are defined.
    close_only: whether the data have closes only (see the module docstring).
    """

    names: list[str]
    timestamps: pd.DatetimeIndex
    close: np.ndarray
    features: np.ndarray
    feature_names: list[str]
    normalizer: FeatureNormalizer
    splits: dict[str, DateRange]
    first_valid: int
    close_only: bool

    @property
    def n_assets(self) -> int:
        return len(self.names)

    def span(self, split: str | DateRange) -> DateRange:
        return split_span(self.splits, split)

    def rows(self, split: str | DateRange) -> tuple[int, int]:
        """Rows ``[lo, hi)`` of the split usable as decision bars (features defined)."""
        lo, hi = rows_in(self.timestamps, self.span(split))
        lo = max(lo, self.first_valid)
        if hi - lo < 2:
            raise DataError(
                f"split {self.span(split)} has {max(hi - lo, 0)} bar(s) with every feature "
                f"defined; need at least 2"
            )
        return lo, hi


def _common_dates(data: MarketData) -> pd.DatetimeIndex:
    """The instruments' shared timestamps; a DataError names the first one that differs."""
    names = list(data.bars)
    first = data.bars[names[0]].index
    for name in names[1:]:
        index = data.bars[name].index
        if not index.equals(first):
            missing = first.difference(index)
            extra = index.difference(first)
            what = (
                f"lacks {missing[0]}" if len(missing) else f"has {extra[0]} that {names[0]} lacks"
            )
            raise DataError(
                f"{data.name}: a portfolio needs every instrument on the same dates; "
                f"instrument {name} {what}"
            )
    return first


def prepare_portfolio(
    data: MarketData,
    cfg: DataConfig,
    fit_on: DateRange | None = None,
    normalizer: FeatureNormalizer | None = None,
) -> PortfolioMarket:
    """Features, normalization and splits of a multi-instrument dataset on common dates.

    Parameters
    ----------
    data: validated bars of at least two instruments.
    cfg: the data config (features, splits; VIX is never added: it does not cover 1990-2022).
    fit_on: rows whose features fit the normalization; default: the train split.
    normalizer: a stored normalization to reuse instead of fitting one.
    """
    if len(data.bars) < 2:
        raise DataError(
            f"{data.name}: a portfolio needs at least 2 instruments, got {len(data.bars)}"
        )
    timestamps = _common_dates(data)
    close_only = is_close_only(data)
    frames = {}
    for name, bars in data.bars.items():
        frame = compute_features(bars, cfg.features, vix=None)
        if close_only:
            frame = frame.drop(columns=[c for c in CLOSE_ONLY_DROPPED if c in frame.columns])
        frames[name] = frame
    names = list(frames)
    feature_names = list(frames[names[0]].columns)
    for name, frame in frames.items():
        if list(frame.columns) != feature_names:
            raise DataError(
                f"{data.name}: instrument {name} has features {list(frame.columns)}, "
                f"others have {feature_names} (e.g. volume missing for some instruments)"
            )
    try:
        first_valid = max(first_valid_row(f) for f in frames.values())
    except ValueError as err:
        raise DataError(f"{data.name}: {err}") from None
    raw = np.stack([frames[n].to_numpy() for n in names], axis=1)  # (T, K, F)
    splits = date_splits(timestamps, cfg.split, data.name)
    if normalizer is None:
        lo, hi = rows_in(timestamps, fit_on or splits["train"])
        lo = max(lo, first_valid)
        if hi - lo < 2:
            raise DataError(
                f"{data.name}: the training rows have {max(hi - lo, 0)} bar(s) with every "
                f"feature defined (the features need {feature_lookback(cfg.features)} bars)"
            )
        rows = raw[lo:hi].reshape(-1, raw.shape[2])
        normalizer = FeatureNormalizer.fit([rows], feature_names, cfg.features.clip)
    elif normalizer.names != feature_names:
        raise DataError(
            f"{data.name}: features {feature_names} differ from the stored normalization's "
            f"{normalizer.names}"
        )
    features = normalizer.transform(raw.reshape(-1, raw.shape[2])).reshape(raw.shape)
    close = np.stack([data.bars[n]["close"].to_numpy(dtype=np.float64) for n in names], axis=1)
    return PortfolioMarket(
        names=names,
        timestamps=timestamps,
        close=close,
        features=features,
        feature_names=feature_names,
        normalizer=normalizer,
        splits=splits,
        first_valid=first_valid,
        close_only=close_only,
    )


def load_portfolio(cfg: DataConfig) -> PortfolioMarket:
    """Load ``cfg.source`` (e.g. ``sp500_universe``) and prepare it as a portfolio."""
    min_rows = feature_lookback(cfg.features) + 2
    data = load_market(cfg.source, cfg.synthetic, cfg.instruments, min_rows, cfg.timestamp_unit)
    return prepare_portfolio(data, cfg)
