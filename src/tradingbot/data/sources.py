"""Where bars come from: bundled datasets read from installed packages, and user files.

Nothing is downloaded: ``sp500`` and ``vix`` come from the ``arch`` package, ``googl`` and
``eurusd`` from ``gym-anytrading``, ``synthetic`` is generated from a seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tradingbot.config import SyntheticConfig
from tradingbot.data.package_files import read_anytrading_dataset, read_arch_dataset
from tradingbot.data.synthetic import generate_market
from tradingbot.data.validate import DataError, validate_bars

TIMESTAMP_COLUMNS = ("timestamp", "datetime", "date", "time")
INSTRUMENT_COLUMNS = ("instrument", "symbol", "ticker")


@dataclass
class MarketData:
    """Validated bars of one or many instruments.

    Parameters
    ----------
    name: the dataset name or file path.
    bars: instrument name -> bars with a DatetimeIndex and float columns open, high, low,
        close[, volume][, signal].
    origin: where the bars were read from, for the record.
    """

    name: str
    bars: dict[str, pd.DataFrame]
    origin: str
    extra: dict[str, np.ndarray] = field(default_factory=dict)


def _arch_frame(module_name: str) -> pd.DataFrame:
    return read_arch_dataset(module_name)  # arch.data.<name>.load(), without importing arch


def _load_sp500() -> pd.DataFrame:
    return _arch_frame("sp500")[["Open", "High", "Low", "Close", "Volume"]]


def _load_vix_bars() -> pd.DataFrame:
    # arch ships VIX closes only; a close-only series is an OHLC bar with equal prices.
    close = load_vix_close()
    return pd.DataFrame({"open": close, "high": close, "low": close, "close": close})


def _load_googl() -> pd.DataFrame:
    frame = read_anytrading_dataset("STOCKS_GOOGL", "Date")
    return frame[["Open", "High", "Low", "Close", "Volume"]]


def _load_eurusd() -> pd.DataFrame:
    frame = read_anytrading_dataset("FOREX_EURUSD_1H_ASK", "Time")
    frame.index = pd.to_datetime(frame.index, format="%d.%m.%Y %H:%M:%S.%f")
    return frame


@dataclass(frozen=True)
class BundledDataset:
    """A dataset that ships inside an installed package."""

    name: str
    instrument: str
    origin: str
    load: Callable[[], pd.DataFrame]


BUNDLED: dict[str, BundledDataset] = {
    d.name: d
    for d in (
        BundledDataset("sp500", "SPX", "arch.data.sp500 (S&P 500 daily, 1999-2018)", _load_sp500),
        BundledDataset(
            "vix",
            "VIX",
            "arch.data.vix (VIX daily close, 2014-2018; holidays without a quote left out)",
            _load_vix_bars,
        ),
        BundledDataset("googl", "GOOGL", "gym_anytrading STOCKS_GOOGL (daily)", _load_googl),
        BundledDataset(
            "eurusd", "EURUSD", "gym_anytrading FOREX_EURUSD_1H_ASK (hourly, 2017)", _load_eurusd
        ),
    )
}
DATASET_NAMES = (*BUNDLED, "synthetic")


def load_vix_close() -> pd.Series:
    """VIX daily closes indexed by date.

    arch's file lists US market holidays with no quote (NaN); those dates are not trading
    days of the VIX, so they are left out here, in the one documented place.
    """
    close = _arch_frame("vix")["vix"].astype(float)
    return close[close.notna()]


def _parse_timestamps(values: pd.Series, path: str, column: str) -> pd.DatetimeIndex:
    parsed = pd.to_datetime(values, errors="coerce", utc=False, format="mixed")
    bad = parsed.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{path}: row {row}, column {column!r}: cannot read timestamp {values.iloc[row]!r}"
        )
    index = pd.DatetimeIndex(parsed)
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    return index


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV or Parquet file as it is (no parsing of values beyond the format's own)."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    raise DataError(f"{path}: unsupported file type {suffix!r}; use .csv or .parquet")


def load_user_file(path: str | Path, min_rows: int = 2) -> MarketData:
    """Load one or many instruments from a CSV or Parquet file.

    The file has a timestamp column (timestamp/datetime/date/time, any case) or a datetime
    index, columns open, high, low, close[, volume] in any case, and optionally an instrument
    column (instrument/symbol/ticker) for several instruments in long format.
    """
    path = Path(path)
    table = read_table(path)
    if isinstance(table.index, pd.DatetimeIndex):
        table = table.reset_index()
    lower = {str(c).strip().lower(): c for c in table.columns}
    ts_col = next((lower[c] for c in TIMESTAMP_COLUMNS if c in lower), None)
    if ts_col is None:
        raise DataError(
            f"{path}: no timestamp column; name one of {', '.join(TIMESTAMP_COLUMNS)} (any case)"
        )
    stamps = _parse_timestamps(table[ts_col], str(path), str(ts_col))
    inst_col = next((lower[c] for c in INSTRUMENT_COLUMNS if c in lower), None)
    frame = table.drop(columns=[ts_col])
    frame.index = stamps
    if inst_col is None:
        return MarketData(
            name=str(path),
            bars={path.stem: validate_bars(frame, str(path), path.stem, min_rows)},
            origin=str(path),
        )
    bars = {}
    names = frame[inst_col]
    if names.isna().any():
        row = int(np.flatnonzero(names.isna().to_numpy())[0])
        raise DataError(f"{path}: row {row}, column {inst_col!r}: missing instrument name")
    for name in pd.unique(names):
        rows = np.flatnonzero((names == name).to_numpy())
        part = frame.iloc[rows].drop(columns=[inst_col])
        try:
            bars[str(name)] = validate_bars(part, str(path), str(name), min_rows)
        except DataError as err:
            # Row numbers inside one instrument are translated back to the file's rows.
            raise DataError(_translate_rows(str(err), rows)) from None
    return MarketData(name=str(path), bars=bars, origin=str(path))


def _translate_rows(message: str, rows: np.ndarray) -> str:
    import re

    return re.sub(r"\brow (\d+)\b", lambda m: f"row {rows[int(m.group(1))]}", message)


def load_market(
    source: str,
    synthetic: SyntheticConfig | None = None,
    instruments: list[str] | None = None,
    min_rows: int = 2,
) -> MarketData:
    """Load a bundled dataset by name, the synthetic market, or a user CSV/Parquet file."""
    if source == "synthetic":
        cfg = synthetic or SyntheticConfig()
        paths = generate_market(
            cfg.n_instruments, cfg.n_bars, cfg.seed, cfg.predictability, cfg.start
        )
        data = MarketData(
            name="synthetic",
            bars={k: validate_bars(p.bars, "synthetic", k, min_rows) for k, p in paths.items()},
            origin=f"synthetic regime-switching market (seed {cfg.seed})",
            extra={f"{k}/regime": p.regimes for k, p in paths.items()},
        )
    elif source in BUNDLED:
        spec = BUNDLED[source]
        data = MarketData(
            name=source,
            bars={spec.instrument: validate_bars(spec.load(), source, spec.instrument, min_rows)},
            origin=spec.origin,
        )
    elif Path(source).suffix.lower() in (".csv", ".parquet", ".pq") or Path(source).exists():
        data = load_user_file(source, min_rows)
    else:
        raise DataError(
            f"unknown data source {source!r}: use one of {', '.join(DATASET_NAMES)} "
            f"or a path to a .csv/.parquet file"
        )
    if instruments is not None:
        missing = [i for i in instruments if i not in data.bars]
        if missing:
            raise DataError(
                f"{data.name}: instrument(s) {', '.join(missing)} not found; "
                f"available: {', '.join(data.bars)}"
            )
        data.bars = {i: data.bars[i] for i in instruments}
    return data
