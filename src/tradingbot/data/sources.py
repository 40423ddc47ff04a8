"""Where bars come from: bundled datasets (:mod:`tradingbot.data.bundled`), the synthetic
market, and user files.

Nothing is downloaded: ``sp500``, ``nasdaq`` and ``vix`` come from the ``arch`` package,
``googl`` and ``eurusd`` from ``gym-anytrading``, ``sp500_universe`` (20 US large caps) and
``sp500_index`` from ``skfolio`` (daily adjusted closes only: see :func:`close_only_bars`),
``synthetic`` is generated from a seed.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tradingbot.config import SyntheticConfig
from tradingbot.data.bundled import BUNDLED, BUNDLED_UNIVERSES, close_only_bars
from tradingbot.data.catalog import DATASET_NAMES, synthetic_origin
from tradingbot.data.synthetic import generate_market
from tradingbot.data.timestamps import parse_timestamps
from tradingbot.data.validate import (
    OPTIONAL_COLUMNS,
    PRICE_COLUMNS,
    DataError,
    RowNames,
    validate_bars,
)

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
    # Instruments added by data.train_sources: in training episodes only, never evaluated.
    train_only: frozenset[str] = frozenset()


def csv_line_numbers(path: Path, n_rows: int) -> np.ndarray | None:
    """The 1-based line on which each data record of a CSV file starts.

    Blank lines are skipped as pandas skips them, and a record with a quoted line break counts
    from its first line. Returns None when the count differs from ``n_rows`` (a dialect this
    reader and pandas see differently): rows are then named by number instead of a wrong line.
    """
    starts: list[int] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            end = 0
            for record in reader:
                start, end = end + 1, reader.line_num
                if record and (len(record) > 1 or record[0].strip()):
                    starts.append(start)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    lines = np.asarray(starts[1:], dtype=np.int64)  # starts[0] is the header
    return lines if len(lines) == n_rows else None


def _first_non_utf8(path: Path) -> tuple[int, bytes]:
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                return number, line[err.start : err.end]
    return 0, b""


def _check_header(path: Path, head: bytes) -> None:
    """Refuse a header that names a column the loader reads twice.

    pandas renames the second ``close`` to ``close.1``, and the first would be used silently.
    """
    known = {*PRICE_COLUMNS, *OPTIONAL_COLUMNS, "signal", *TIMESTAMP_COLUMNS, *INSTRUMENT_COLUMNS}
    reader = csv.reader(io.StringIO(head.decode("utf-8-sig", errors="replace")))
    try:
        header = next(r for r in reader if r and (len(r) > 1 or r[0].strip()))
    except (StopIteration, csv.Error):
        return
    seen: set[str] = set()
    for name in header:
        key = name.strip().lower()
        if key in known and key in seen:
            raise DataError(
                f"{path}: line {reader.line_num}: the header names column {name.strip()!r} twice"
            )
        seen.add(key)


def _read_csv(path: Path) -> pd.DataFrame:
    with path.open("rb") as f:
        head = f.read(1 << 16)
    if not head.strip():
        raise DataError(f"{path}: empty file; a CSV needs a header line naming the columns")
    nul = head.find(b"\x00")
    if nul >= 0:
        line = head[:nul].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line}: NUL byte; this is a binary file, not CSV text "
            f"(CSV files are read as UTF-8 text)"
        )
    _check_header(path, head)
    try:
        table = pd.read_csv(path)
    except UnicodeDecodeError:
        line, bad = _first_non_utf8(path)
        raise DataError(
            f"{path}: line {line}: bytes {bad!r} are not UTF-8 text; save the file as UTF-8"
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(
            f"{path}: no columns; a CSV needs a header line naming the columns"
        ) from None
    except pd.errors.ParserError as err:
        # pandas names the line ("Expected 6 fields in line 3, saw 7").
        raise DataError(f"{path}: cannot read as CSV: {str(err).strip()}") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror or err}") from None
    if not isinstance(table.index, pd.RangeIndex):
        # pandas makes the first field the index when every row has one field more than the
        # header names; the columns would then be read shifted by one.
        lines = csv_line_numbers(path, len(table))
        line = int(lines[0]) if lines is not None and len(lines) else 2
        raise DataError(
            f"{path}: line {line}: the rows have {len(table.columns) + 1} fields but the "
            f"header names {len(table.columns)}"
        )
    return table


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV or Parquet file as it is (no parsing of values beyond the format's own).

    Raises
    ------
    DataError
        For a missing, empty, binary, non-UTF-8 or malformed file, naming it (and the line).
    """
    suffix = path.suffix.lower()
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    if suffix == ".csv":
        return _read_csv(path)
    if suffix in (".parquet", ".pq"):
        try:
            return pd.read_parquet(path)
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: cannot read as Parquet: {err}") from None
    raise DataError(f"{path}: unsupported file type {suffix!r}; use .csv or .parquet")


def load_user_file(
    path: str | Path, min_rows: int = 2, timestamp_unit: str | None = None
) -> MarketData:
    """Load one or many instruments from a CSV or Parquet file.

    The file has a timestamp column (timestamp/datetime/date/time, any case) or a datetime
    index, columns open, high, low, close[, volume] in any case, and optionally an instrument
    column (instrument/symbol/ticker) for several instruments in long format. Numeric
    timestamps need ``timestamp_unit`` (``data.timestamp_unit``). Errors name the CSV line
    (1-based, the header is line 1) or, for Parquet, the 1-based data row.
    """
    path = Path(path)
    table = read_table(path)
    if isinstance(table.index, pd.DatetimeIndex):
        table = table.reset_index(names=table.index.name or "timestamp")
    rows = (
        RowNames(lambda: csv_line_numbers(path, len(table)))
        if path.suffix.lower() == ".csv"
        else RowNames()
    )
    lower = {str(c).strip().lower(): c for c in table.columns}
    ts_col = next((lower[c] for c in TIMESTAMP_COLUMNS if c in lower), None)
    if ts_col is None:
        raise DataError(
            f"{path}: no timestamp column; name one of {', '.join(TIMESTAMP_COLUMNS)} (any case)"
        )
    stamps = parse_timestamps(table[ts_col], str(path), str(ts_col), timestamp_unit, rows)
    inst_col = next((lower[c] for c in INSTRUMENT_COLUMNS if c in lower), None)
    frame = table.drop(columns=[ts_col])
    frame.index = stamps
    if inst_col is None:
        return MarketData(
            name=str(path),
            bars={path.stem: validate_bars(frame, str(path), path.stem, min_rows, rows)},
            origin=str(path),
        )
    bars = {}
    names = frame[inst_col]
    missing = names.isna().to_numpy()
    if missing.any():
        row = int(np.argmax(missing))
        raise DataError(f"{path}: {rows.name(row)}, column {inst_col!r}: missing instrument name")
    for name in pd.unique(names):
        positions = np.flatnonzero((names == name).to_numpy())
        part = frame.iloc[positions].drop(columns=[inst_col])
        bars[str(name)] = validate_bars(
            part, str(path), str(name), min_rows, rows.subset(positions)
        )
    return MarketData(name=str(path), bars=bars, origin=str(path))


def load_market(
    source: str,
    synthetic: SyntheticConfig | None = None,
    instruments: list[str] | None = None,
    min_rows: int = 2,
    timestamp_unit: str | None = None,
) -> MarketData:
    """Load a bundled dataset by name, the synthetic market, or a user CSV/Parquet file.

    ``timestamp_unit`` (``data.timestamp_unit``) is what numeric timestamps in a user file
    count since 1970-01-01 UTC: s, ms, us or ns.
    """
    if source == "synthetic":
        cfg = synthetic or SyntheticConfig()
        paths = generate_market(
            cfg.n_instruments, cfg.n_bars, cfg.seed, cfg.predictability, cfg.start
        )
        data = MarketData(
            name="synthetic",
            bars={k: validate_bars(p.bars, "synthetic", k, min_rows) for k, p in paths.items()},
            origin=synthetic_origin(cfg.seed),
            extra={f"{k}/regime": p.regimes for k, p in paths.items()},
        )
    elif source in BUNDLED:
        spec = BUNDLED[source]
        data = MarketData(
            name=source,
            bars={spec.instrument: validate_bars(spec.load(), source, spec.instrument, min_rows)},
            origin=spec.origin,
        )
    elif source in BUNDLED_UNIVERSES:
        universe = BUNDLED_UNIVERSES[source]
        closes = universe.load()
        data = MarketData(
            name=source,
            bars={
                str(t): validate_bars(close_only_bars(closes[t]), source, str(t), min_rows)
                for t in closes.columns
            },
            origin=universe.origin,
        )
    elif Path(source).suffix.lower() in (".csv", ".parquet", ".pq") or Path(source).exists():
        data = load_user_file(source, min_rows, timestamp_unit)
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


def add_training_sources(
    data: MarketData,
    sources: list[str],
    synthetic: SyntheticConfig | None = None,
    min_rows: int = 2,
    timestamp_unit: str | None = None,
) -> MarketData:
    """``data`` with the instruments of ``sources`` (``data.train_sources``) added as
    training-only instruments (:attr:`MarketData.train_only`).

    Raises
    ------
    DataError
        When an added instrument has the name of one already there.
    """
    if not sources:
        return data
    bars, train_only = dict(data.bars), set(data.train_only)
    for source in sources:
        extra = load_market(source, synthetic, None, min_rows, timestamp_unit)
        for name, frame in extra.bars.items():
            if name in bars:
                raise DataError(
                    f"data.train_sources: {source!r} has instrument {name!r}, which "
                    f"{data.name} (or another training source) already has"
                )
            bars[name] = frame
            train_only.add(name)
    origin = f"{data.origin}; training also on {', '.join(sources)}"
    return MarketData(data.name, bars, origin, data.extra, frozenset(train_only))
