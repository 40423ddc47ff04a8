"""Validation of OHLCV bars before anything trains on them.

Every failure raises :class:`DataError` naming the file, the row (0-based data row and its
timestamp when known) and the column. Nothing is filled, dropped or reordered.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tradingbot.errors import UserError

PRICE_COLUMNS = ("open", "high", "low", "close")
OPTIONAL_COLUMNS = ("volume",)


class DataError(UserError):
    """Market data that cannot be used as it is."""


def _where(source: str, instrument: str | None) -> str:
    return f"{source} [{instrument}]" if instrument else source


def _row_label(frame: pd.DataFrame, row: int) -> str:
    return f"row {row} ({frame.index[row]})"


def check_columns(columns: list[str], source: str) -> dict[str, str]:
    """Map lower-case required names to the frame's own (case-insensitive) column names."""
    lower = {}
    for col in columns:
        key = str(col).strip().lower()
        if key in lower:
            raise DataError(f"{source}: columns {lower[key]!r} and {col!r} differ only in case")
        lower[key] = col
    missing = [c for c in PRICE_COLUMNS if c not in lower]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {', '.join(missing)}; "
            f"found {', '.join(map(str, columns))}"
        )
    return lower


def _check_numeric(frame: pd.DataFrame, column: str, where: str) -> pd.Series:
    values = frame[column]
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() & values.notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{where}: {_row_label(frame, row)}, column {column!r}: "
            f"non-numeric value {values.iloc[row]!r}"
        )
    return numeric.astype(float)


def validate_bars(
    frame: pd.DataFrame, source: str, instrument: str | None = None, min_rows: int = 2
) -> pd.DataFrame:
    """Check one instrument's bars and return them as float columns on a DatetimeIndex.

    Parameters
    ----------
    frame: bars indexed by timestamp with columns open, high, low, close[, volume]
        (any case).
    source: the file or dataset name, used in error messages.
    instrument: the instrument's name, used in error messages.
    min_rows: the fewest rows that can be used (the feature lookback plus one step).
    """
    where = _where(source, instrument)
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise DataError(f"{where}: the index must be timestamps, got {type(frame.index).__name__}")
    names = check_columns(list(frame.columns), where)
    keep = [c for c in (*PRICE_COLUMNS, *OPTIONAL_COLUMNS) if c in names]
    extra = [c for c in ("signal",) if c in names]
    out = pd.DataFrame(index=frame.index)
    for col in (*keep, *extra):
        out[col] = _check_numeric(frame, names[col], where).to_numpy()
        values = out[col].to_numpy()
        finite = np.isfinite(values)
        if not finite.all():
            row = int(np.flatnonzero(~finite)[0])
            kind = (
                "missing value (NaN)"
                if np.isnan(values[row])
                else f"non-finite value {values[row]}"
            )
            raise DataError(f"{where}: {_row_label(out, row)}, column {names[col]!r}: {kind}")
    for col in PRICE_COLUMNS:
        values = out[col].to_numpy()
        bad = values <= 0
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{where}: {_row_label(out, row)}, column {names[col]!r}: "
                f"price must be > 0, got {values[row]}"
            )
    if "volume" in out:
        bad = out["volume"].to_numpy() < 0
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{where}: {_row_label(out, row)}, column {names['volume']!r}: "
                f"volume must be >= 0, got {out['volume'].iloc[row]}"
            )
    high, low = out["high"].to_numpy(), out["low"].to_numpy()
    bad = high < low
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{where}: {_row_label(out, row)}, columns {names['high']!r}/{names['low']!r}: "
            f"high {high[row]} < low {low[row]}"
        )
    stamps = out.index.to_numpy()
    if len(stamps) > 1:
        step = stamps[1:] - stamps[:-1]
        zero = np.timedelta64(0, "ns")
        dup = step == zero
        if dup.any():
            row = int(np.flatnonzero(dup)[0]) + 1
            raise DataError(
                f"{where}: {_row_label(out, row)}: duplicate timestamp (same as row {row - 1})"
            )
        back = step < zero
        if back.any():
            row = int(np.flatnonzero(back)[0]) + 1
            raise DataError(
                f"{where}: {_row_label(out, row)}: timestamps are not sorted "
                f"(earlier than row {row - 1}, {out.index[row - 1]})"
            )
    if len(out) < min_rows:
        raise DataError(
            f"{where}: too few rows: {len(out)}, need at least {min_rows} "
            f"(feature lookback plus one step)"
        )
    out.index.name = "timestamp"
    return out
