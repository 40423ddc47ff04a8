"""The one timestamp parser for user files.

Text is read as ISO 8601 (fast) or, failing that, element by element; offsets are converted to
UTC. Numbers are refused unless ``data.timestamp_unit`` says what they count: read with pandas'
default unit (nanoseconds), an epoch in seconds puts every bar on 1970-01-01.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from tradingbot.data.validate import DataError, RowNames, show

TIMESTAMP_UNITS = ("s", "ms", "us", "ns")
# A time-zone offset (or Z/UTC/GMT) after a time of day at the end of a timestamp string.
_OFFSET = re.compile(r"\d:\d\d(?::\d\d(?:[.,]\d*)?)?\s*(?:[zZ]|UTC|GMT|[+-]\d\d(?::?\d\d)?)$")
# Epoch numbers read in too fine a unit (seconds as milliseconds, ...) all land in 1970; in
# too coarse a unit (milliseconds as seconds), thousands of years from now.
_EPOCH_FLOOR = pd.Timestamp("1971-01-01")
_EPOCH_CEILING = pd.Timestamp("2200-01-01")


def _timestamp_error(source: str, rows: RowNames, row: int, column: str, message: str) -> DataError:
    return DataError(f"{source}: {rows.name(row)}, column {column!r}: {message}")


def _parse_epoch(
    values: pd.Series, source: str, column: str, unit: str | None, rows: RowNames
) -> pd.Series:
    """Numbers as times since 1970-01-01 UTC in ``unit``; refused when no unit is given."""
    if unit is None:
        raise _timestamp_error(
            source,
            rows,
            0,
            column,
            f"timestamp {show(values.iloc[0])} is a number, which could count seconds, "
            f"milliseconds, microseconds or nanoseconds since 1970-01-01; set "
            f"data.timestamp_unit to one of {', '.join(TIMESTAMP_UNITS)} "
            f"(e.g. --set data.timestamp_unit=s)",
        )
    if unit not in TIMESTAMP_UNITS:
        raise DataError(f"data.timestamp_unit: {unit!r} is not one of {', '.join(TIMESTAMP_UNITS)}")
    numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
    parsed = pd.to_datetime(values, unit=unit, errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        what = (
            "missing timestamp"
            if np.isnan(numbers[row])
            else f"timestamp {show(values.iloc[row])} is out of range in unit {unit!r}"
        )
        raise _timestamp_error(source, rows, row, column, what)
    if len(parsed) and parsed.max() < _EPOCH_FLOOR:
        raise _timestamp_error(
            source,
            rows,
            0,
            column,
            f"every timestamp falls in 1970 when read in unit {unit!r} "
            f"({show(values.iloc[0])} is {parsed.iloc[0]}); is data.timestamp_unit right?",
        )
    late = (parsed >= _EPOCH_CEILING).to_numpy()
    if late.any():
        row = int(np.argmax(late))
        raise _timestamp_error(
            source,
            rows,
            row,
            column,
            f"timestamp {show(values.iloc[row])} read in unit {unit!r} is {parsed.iloc[row]}, "
            f"after {_EPOCH_CEILING.year}; is data.timestamp_unit right?",
        )
    return parsed


def _parse_each(values: pd.Series, source: str, column: str, rows: RowNames) -> pd.Series:
    """Strings that are not all ISO 8601: element by element (unreadable cells become NaT)."""
    try:
        return pd.to_datetime(values, errors="coerce", format="mixed")
    except (ValueError, TypeError, OverflowError):
        pass
    # pandas refuses to mix time-zone offsets. Instants with explicit offsets (e.g. local time
    # across a daylight-saving change) are unambiguous and are read as UTC; a mix of timestamps
    # with and without an offset is not.
    aware = values.astype(str).str.strip().str.contains(_OFFSET, regex=True).to_numpy()
    if not aware.all():
        row = int(np.argmax(aware != aware[0]))
        has = "has a" if aware[row] else "has no"
        raise _timestamp_error(
            source,
            rows,
            row,
            column,
            f"timestamp {show(values.iloc[row])} {has} time-zone offset, unlike "
            f"{rows.name(0)} ({show(values.iloc[0])}); give every timestamp an offset, or none",
        )
    return pd.to_datetime(values, errors="coerce", format="mixed", utc=True)


def _parse_text(values: pd.Series, source: str, column: str, rows: RowNames) -> pd.Series:
    """Date strings: ISO 8601 fast, anything else element by element; offsets become UTC."""
    try:
        parsed = pd.to_datetime(values, format="ISO8601")
    except (ValueError, TypeError, OverflowError):
        parsed = _parse_each(values, source, column, rows)
    bad = parsed.isna().to_numpy()  # missing cells are NaT in both paths, without an error
    if bad.any():
        row = int(np.argmax(bad))
        value = values.iloc[row]
        if pd.isna(value) or not str(value).strip():
            raise _timestamp_error(source, rows, row, column, "missing timestamp")
        hint = ""
        if str(value).strip().lstrip("+-").replace(".", "", 1).isdigit():
            hint = (
                "; a column of numbers needs data.timestamp_unit, and numbers cannot be mixed "
                "with dates"
            )
        raise _timestamp_error(
            source, rows, row, column, f"cannot read timestamp {show(value)}{hint}"
        )
    return parsed


def parse_timestamps(
    values: pd.Series,
    source: str,
    column: str,
    unit: str | None = None,
    rows: RowNames | None = None,
) -> pd.DatetimeIndex:
    """The one timestamp parser for user files: a naive UTC DatetimeIndex, or a DataError.

    Parameters
    ----------
    values: the timestamp column as read.
    source: the file, for error messages.
    column: the column's name, for error messages.
    unit: ``data.timestamp_unit``: what a number counts since 1970-01-01 UTC (s, ms, us,
        ns). Numbers are refused without it: 1577836800 read as nanoseconds (pandas' default)
        would put every bar on 1970-01-01.
    rows: how error messages name a row (a CSV's line numbers).

    Dates given as text are read as ISO 8601 or, failing that, element by element; timestamps
    with a time-zone offset are converted to UTC (offsets may differ, as across a
    daylight-saving change), and a column that mixes timestamps with and without an offset is
    refused.
    """
    rows = rows or RowNames()
    dtype = values.dtype
    if len(values) == 0:
        return pd.DatetimeIndex([], name=None)
    if pd.api.types.is_bool_dtype(dtype):
        raise _timestamp_error(
            source, rows, 0, column, f"true/false value {show(values.iloc[0])} is not a timestamp"
        )
    if pd.api.types.is_datetime64_any_dtype(dtype):
        parsed = values
        bad = parsed.isna().to_numpy()
        if bad.any():
            raise _timestamp_error(source, rows, int(np.argmax(bad)), column, "missing timestamp")
    elif pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        parsed = _parse_epoch(values, source, column, unit, rows)
    else:
        if pd.api.types.is_object_dtype(dtype):
            cells = values.to_numpy()
            numeric = (
                np.fromiter(
                    (isinstance(v, (bool, int, float, np.number)) for v in cells), bool, len(cells)
                )
                & values.notna().to_numpy()
            )
            if numeric.any():
                row = int(np.argmax(numeric))
                raise _timestamp_error(
                    source,
                    rows,
                    row,
                    column,
                    f"number {show(cells[row])} in a column of dates; numbers need "
                    f"data.timestamp_unit and cannot be mixed with dates",
                )
        parsed = _parse_text(values, source, column, rows)
    index = pd.DatetimeIndex(parsed)
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    return index
