"""From validated bars to the arrays the simulator reads: features, prices, split ranges."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tradingbot.config import DataConfig, FeatureConfig
from tradingbot.data.bundled import load_vix_close
from tradingbot.data.features import (
    FeatureNormalizer,
    compute_features,
    feature_lookback,
    first_valid_row,
    vix_covers,
)
from tradingbot.data.sources import MarketData, add_training_sources, load_market
from tradingbot.data.splits import DateRange, date_splits, rows_in, split_span, union_index
from tradingbot.data.validate import DataError

log = logging.getLogger(__name__)


@dataclass
class InstrumentSeries:
    """One instrument's arrays, shared read-only by every environment.

    Parameters
    ----------
    name: the instrument.
    timestamps: bar timestamps.
    offset: the instrument's first row in the market's concatenated arrays.
    first_valid: the first row whose features are all defined.
    train_only: an instrument of ``data.train_sources`` (normalized on its own training bars).
    """

    name: str
    timestamps: pd.DatetimeIndex
    offset: int
    first_valid: int
    train_only: bool = False  # added by data.train_sources: trained on, never evaluated

    @property
    def n_bars(self) -> int:
        return len(self.timestamps)


@dataclass
class PreparedMarket:
    """Normalized features, prices and date splits of a dataset.

    The instruments' rows are concatenated once into ``features`` (float32, NaN during each
    instrument's warm-up), ``open`` and ``close`` (float64); every simulator reads these same
    arrays, so memory does not grow with the number of environments.
    """

    data: MarketData
    instruments: list[InstrumentSeries]
    feature_names: list[str]
    normalizer: FeatureNormalizer
    splits: dict[str, DateRange]
    features: np.ndarray
    open: np.ndarray
    close: np.ndarray

    @property
    def scored_instruments(self) -> list[InstrumentSeries]:
        """The instruments evaluated: every one but ``data.train_sources``' additions."""
        return [inst for inst in self.instruments if not inst.train_only]

    def instrument_features(self, i: int) -> np.ndarray:
        inst = self.instruments[i]
        return self.features[inst.offset : inst.offset + inst.n_bars]

    def span(self, split: str | DateRange) -> DateRange:
        return split_span(self.splits, split)

    def ranges(self, split: str | DateRange, window: int = 1) -> list[tuple[int, int]]:
        """Per instrument, the rows ``[lo, hi)`` of the split usable as observations.

        Rows before the feature warm-up (and the observation window) are excluded; an
        instrument with fewer than two usable rows in the split gets an empty range.
        """
        out = []
        for inst in self.instruments:
            lo, hi = rows_in(inst.timestamps, self.span(split))
            lo = max(lo, inst.first_valid + window - 1)
            out.append((lo, hi) if hi - lo >= 2 else (lo, lo))
        return out


def _vix_for(data: MarketData, cfg: FeatureConfig) -> pd.Series | None:
    if cfg.vix == "off":
        return None
    vix = load_vix_close()
    covered = all(vix_covers(b.index, vix) for b in data.bars.values())
    if covered:
        return vix
    if cfg.vix == "on":
        raise DataError(
            f"{data.name}: features.vix is 'on' but VIX (2014-2018, daily) does not cover "
            f"every date of the data; use 'auto' or 'off'"
        )
    return None


def prepare_market(
    data: MarketData,
    cfg: DataConfig,
    window: int = 1,
    fit_on: DateRange | None = None,
    normalizer: FeatureNormalizer | None = None,
) -> PreparedMarket:
    """Compute features, fit (or reuse) the normalization and decide the date splits.

    Parameters
    ----------
    data: validated bars.
    cfg: the data config (features, splits).
    window: bars per observation; the first usable row moves by ``window - 1``.
    fit_on: rows whose features fit the normalization; default: the train split.
    normalizer: a stored normalization to reuse instead of fitting one (signals, backtests).

    The instruments of ``data.train_only`` (``data.train_sources``) are each normalized on
    their own rows in ``fit_on`` (one without such rows is left out); the others share one
    normalization, the one stored with a run. The date splits are decided on the others'
    timestamps.
    """
    vix = _vix_for(data, cfg.features)
    raw = {name: compute_features(bars, cfg.features, vix) for name, bars in data.bars.items()}
    names = list(next(iter(raw.values())).columns)
    for inst, frame in raw.items():
        if list(frame.columns) != names:
            raise DataError(
                f"{data.name}: instrument {inst} has features {list(frame.columns)}, "
                f"others have {names} (e.g. volume missing for some instruments)"
            )
    main = [b.index for name, b in data.bars.items() if name not in data.train_only]
    splits = date_splits(union_index(main), cfg.split, data.name)
    firsts = {}
    for inst, frame in raw.items():
        try:
            firsts[inst] = first_valid_row(frame)
        except ValueError as err:
            raise DataError(f"{data.name} [{inst}]: {err}") from None
    span = fit_on or splits["train"]
    own = {}  # each training-only instrument's normalization, fitted on its own training bars
    for inst in data.train_only:
        rows = _training_rows(raw[inst], firsts[inst], span)
        if len(rows) >= 2:
            own[inst] = FeatureNormalizer.fit([rows], names, cfg.features.clip)
        else:  # no training bars in this span (a later listing): left out of training
            log.info("%s: no training bars in %s; left out of this training", inst, span)
    raw = {k: v for k, v in raw.items() if k not in data.train_only or k in own}
    if normalizer is None:
        rows = [
            _training_rows(frame, firsts[inst], span)
            for inst, frame in raw.items()
            if inst not in data.train_only
        ]
        if sum(len(r) for r in rows) < 2:
            raise DataError(
                f"{data.name}: the training rows ({span}) have "
                f"{sum(len(r) for r in rows)} bar(s) with every feature defined, need at "
                f"least 2 (the features need {feature_lookback(cfg.features)} bars of history): "
                f"use more data or a longer training split (data.split)"
            )
        normalizer = FeatureNormalizer.fit(rows, names, cfg.features.clip)
    elif normalizer.names != names:
        raise DataError(
            f"{data.name}: features {names} differ from the stored normalization's "
            f"{normalizer.names}"
        )
    instruments, offset = [], 0
    for inst, frame in raw.items():
        extra = inst in data.train_only
        instruments.append(InstrumentSeries(inst, frame.index, offset, firsts[inst], extra))
        offset += len(frame)
    bars = [data.bars[inst] for inst in raw]
    features = [own.get(inst, normalizer).transform(f.to_numpy()) for inst, f in raw.items()]
    return PreparedMarket(
        data=data,
        instruments=instruments,
        feature_names=names,
        normalizer=normalizer,
        splits=splits,
        features=np.concatenate(features),
        open=np.concatenate([b["open"].to_numpy(dtype=np.float64) for b in bars]),
        close=np.concatenate([b["close"].to_numpy(dtype=np.float64) for b in bars]),
    )


def _training_rows(frame: pd.DataFrame, first_valid: int, span: DateRange) -> np.ndarray:
    """The rows of ``frame`` inside ``span`` with every feature defined."""
    lo, hi = rows_in(frame.index, span)
    return frame.to_numpy()[max(lo, first_valid) : hi]


def load_training_data(cfg: DataConfig, window: int = 1) -> MarketData:
    """``cfg.source`` (its ``cfg.instruments``) and the instruments of ``cfg.train_sources``."""
    min_rows = feature_lookback(cfg.features) + window + 1
    data = load_market(cfg.source, cfg.synthetic, cfg.instruments, min_rows, cfg.timestamp_unit)
    return add_training_sources(
        data, cfg.train_sources, cfg.synthetic, min_rows, cfg.timestamp_unit
    )


def load_prepared(cfg: DataConfig, window: int = 1) -> PreparedMarket:
    """Load ``cfg.source`` (and ``cfg.train_sources``) and prepare it (the usual path from a
    config to the simulator)."""
    return prepare_market(load_training_data(cfg, window), cfg, window)
