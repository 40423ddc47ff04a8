"""Hostile and careless data files (issue 23, items 1, 2, 15 and 16; issue 27's line numbers).

Every file is generated in ``tmp_path``. Each user error is run through the CLI as a user runs
it (``data show FILE``, and ``train --data FILE`` for a few) and must give a non-zero exit, no
traceback and one error line naming the file and the line (CSV lines count from 1 with the
header as line 1) and column. The same cases are checked at the API level with the error type.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hostile.conftest import assert_user_error, run_cli, snapshot
from tradingbot.config import ConfigError, SplitConfig
from tradingbot.config_loading import load_config
from tradingbot.data.sources import load_user_file
from tradingbot.data.splits import date_splits
from tradingbot.data.validate import DataError, validate_bars

HEADER = "date,open,high,low,close,volume"
EPOCH_2020 = 1577836800  # 2020-01-01 00:00:00 UTC in seconds since 1970-01-01


def good_lines(n: int = 60) -> list[str]:
    """``n`` daily bars from 2020-01-01 whose open and close lie inside [low, high]."""
    days = pd.date_range("2020-01-01", periods=n, freq="D")
    return [f"{d:%Y-%m-%d},10,11,9,10.5,100" for d in days]


def write_csv(tmp_path: Path, name: str, rows: list[str], header: str = HEADER) -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def line_of(path: Path, text: str) -> int:
    """The 1-based line of ``path`` that starts with ``text`` (found independently of the code)."""
    lines = path.read_bytes().split(b"\n")
    return next(i for i, ln in enumerate(lines, start=1) if ln.startswith(text.encode()))


TRAIN_ARGS = (
    "--no-progress",
    "--set",
    "run.total_timesteps=256",
    "--set",
    "env.n_envs=2",
    "--set",
    "algo.n_steps=64",
    "--set",
    "algo.batch_size=64",
)


def train_cli(tmp_path: Path, data: Path, *extra: str):
    out = tmp_path / "runs"
    out.mkdir(exist_ok=True)
    before = snapshot(tmp_path)
    result = run_cli("train", "--data", data, *TRAIN_ARGS, "--set", f"run.out_dir={out}", *extra)
    # A refused file leaves nothing behind: no run directory, no other file touched.
    assert snapshot(tmp_path) == before
    return result


# --- item 1: values that are not prices, bars that are not bars ---------------------------------


def bool_open(tmp_path: Path) -> Path:
    rows = [r.replace(",10,11,", ",True,11,", 1) for r in good_lines()]
    return write_csv(tmp_path, "bool_open.csv", rows)


def test_boolean_open_column_is_refused(tmp_path):
    path = bool_open(tmp_path)
    line = assert_user_error(run_cli("data", "show", path), str(path), "'open'", "True")
    assert "line 2 (2020-01-01" in line  # the first data row is line 2
    with pytest.raises(DataError, match=r"line 2 \(2020-01-01 00:00:00\), column 'open': true"):
        load_user_file(path)


def test_boolean_open_column_stops_train(tmp_path):
    path = bool_open(tmp_path)
    assert_user_error(train_cli(tmp_path, path), str(path), "line 2", "'open'")


def test_booleans_among_numbers_are_refused():
    # Python True in an object column would be read as 1.0 by pandas' numeric conversion.
    index = pd.date_range("2020-01-01", periods=3, freq="D")
    frame = pd.DataFrame(
        {
            "open": np.array([10.0, True, 10.0], dtype=object),
            "high": 11.0,
            "low": 9.0,
            "close": 10.0,
        },
        index=index,
    )
    with pytest.raises(DataError, match=r"row 2 \(2020-01-02 00:00:00\), column 'open': true"):
        validate_bars(frame, "frame")


@pytest.mark.parametrize(
    ("column", "row", "value", "words"),
    [
        ("open", 7, "11.5", "open 11.5 is outside the bar's range [low 9.0, high 11.0]"),
        ("open", 12, "8.99", "open 8.99 is outside"),
        ("close", 30, "11.01", "close 11.01 is outside"),
        ("close", 59, "8.5", "close 8.5 is outside"),
    ],
)
def test_open_or_close_outside_the_bar_is_refused(tmp_path, column, row, value, words):
    path, line = outside_bar(tmp_path, column, row, value)
    assert line == row + 2  # header on line 1, data row 0 on line 2
    with pytest.raises(DataError) as err:
        load_user_file(path)
    assert f"{path} [outside]: line {line} (" in str(err.value)
    assert f"column '{column}': {words}" in str(err.value)


def outside_bar(tmp_path: Path, column: str, row: int, value: str) -> tuple[Path, int]:
    """A file whose data row ``row`` has ``column`` set to ``value``, and that row's line."""
    rows = good_lines()
    fields = rows[row].split(",")
    fields[1 if column == "open" else 4] = value
    rows[row] = ",".join(fields)
    path = write_csv(tmp_path, "outside.csv", rows)
    return path, line_of(path, rows[row])


def test_open_outside_the_bar_in_the_cli(tmp_path):
    path, line = outside_bar(tmp_path, "open", 7, "11.5")
    result = run_cli("data", "show", path)
    assert_user_error(result, str(path), f"line {line} (2020-01-08", "'open'", "outside")


def test_bar_exactly_at_low_and_high_is_accepted(tmp_path):
    # open at the low and close at the high are real bars; only strict violations are refused.
    rows = [r.replace(",10,11,9,10.5,", ",9,11,9,11,") for r in good_lines()]
    data = load_user_file(write_csv(tmp_path, "edges.csv", rows))
    (bars,) = data.bars.values()
    assert (bars["open"] == bars["low"]).all() and (bars["close"] == bars["high"]).all()


# --- item 2: integer epoch timestamps -----------------------------------------------------------


def epoch_rows(scale: int, n: int = 60) -> list[str]:
    return [f"{(EPOCH_2020 + 86400 * i) * scale},10,11,9,10.5,100" for i in range(n)]


@pytest.mark.parametrize("scale", [1, 1000])
def test_epoch_numbers_without_a_unit_are_refused(tmp_path, scale):
    path = write_csv(tmp_path, "epoch.csv", epoch_rows(scale))
    with pytest.raises(DataError, match=r"line 2, column 'date'.*set data\.timestamp_unit"):
        load_user_file(path)


def test_epoch_numbers_without_a_unit_in_the_cli(tmp_path):
    path = write_csv(tmp_path, "epoch.csv", epoch_rows(1))
    result = run_cli("data", "show", path)
    assert_user_error(result, str(path), "line 2", "'date'", "data.timestamp_unit")


def test_epoch_numbers_stop_train(tmp_path):
    path = write_csv(tmp_path, "epoch.csv", epoch_rows(1))
    assert_user_error(train_cli(tmp_path, path), str(path), "'date'", "data.timestamp_unit")


@pytest.mark.parametrize(("unit", "scale"), [("s", 1), ("ms", 1000), ("us", 10**6), ("ns", 10**9)])
def test_epoch_numbers_with_a_unit_land_on_their_dates(tmp_path, unit, scale):
    path = write_csv(tmp_path, "epoch.csv", epoch_rows(scale))
    (bars,) = load_user_file(path, timestamp_unit=unit).bars.values()
    expected = pd.date_range("2020-01-01", periods=60, freq="D")
    assert (bars.index == expected).all()


def test_epoch_unit_in_the_cli(tmp_path):
    path = write_csv(tmp_path, "epoch.csv", epoch_rows(1000))
    result = run_cli("data", "show", path, "--set", "data.timestamp_unit=ms")
    assert result.returncode == 0, result.output
    assert "2020-01-01 00:00:00" in result.output and "2020-02-29 00:00:00" in result.output


def test_epoch_seconds_read_as_milliseconds_are_refused(tmp_path):
    # 1577836800 ms is 1970-01-19: a unit off by 1000 puts every bar in 1970.
    path = write_csv(tmp_path, "epoch.csv", epoch_rows(1))
    with pytest.raises(DataError, match=r"line 2, column 'date': every timestamp falls in 1970"):
        load_user_file(path, timestamp_unit="ms")


def test_epoch_milliseconds_read_as_seconds_are_refused(tmp_path):
    # 1.6e12 s is tens of thousands of years away: out of range, not a silent date.
    path = write_csv(tmp_path, "epoch.csv", epoch_rows(1000))
    match = r"line 2, column 'date': timestamp 1577836800000 read in unit 's' is 51969-"
    with pytest.raises(DataError, match=match):
        load_user_file(path, timestamp_unit="s")


def test_unknown_timestamp_unit_is_a_config_error():
    with pytest.raises(ConfigError, match=r"data\.timestamp_unit"):
        load_config(None, ["data.timestamp_unit=minutes"])


# --- items 15 and 16: unreadable files name the file and the line -------------------------------


def test_empty_csv(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    assert_user_error(run_cli("data", "show", path), str(path), "empty file")
    with pytest.raises(DataError, match="empty file"):
        load_user_file(path)


def test_blank_lines_only_csv(tmp_path):
    path = tmp_path / "blank.csv"
    path.write_text("\n\n  \n")
    assert_user_error(run_cli("data", "show", path), str(path))


def test_binary_file_named_csv(tmp_path):
    path = tmp_path / "image.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    line = assert_user_error(run_cli("data", "show", path), str(path), "binary")
    assert "line 3" in line  # the first NUL byte follows the PNG signature's two line breaks


def test_binary_file_stops_train(tmp_path):
    path = tmp_path / "blob.csv"
    path.write_bytes(bytes(range(256)) * 8)
    assert_user_error(train_cli(tmp_path, path), str(path), "line 1", "binary")


def test_non_utf8_bytes(tmp_path):
    rows = good_lines(5)
    path = tmp_path / "latin1.csv"
    text = "\n".join([HEADER, *rows]) + "\n"
    path.write_bytes(text.encode().replace(b"2020-01-04,10", b"2020-01-04,1\xe90"))
    line = line_of(path, "2020-01-04")
    assert line == 5
    assert_user_error(run_cli("data", "show", path), str(path), f"line {line}", "UTF-8")


def test_garbage_parquet_stops_train(tmp_path):
    path = tmp_path / "bars.parquet"
    path.write_bytes(b"PAR1" + b"not really parquet" * 10)
    assert_user_error(train_cli(tmp_path, path), str(path), "Parquet")


def test_more_fields_than_header_names(tmp_path):
    # pandas would quietly make the first field the index and shift every column by one.
    rows = [f"{r},7" for r in good_lines()]
    path = write_csv(tmp_path, "extra.csv", rows)
    assert_user_error(run_cli("data", "show", path), str(path), "line 2", "7 fields", "names 6")


def test_naive_and_offset_timestamps_mixed(tmp_path):
    rows = good_lines()
    rows[9] = rows[9].replace("2020-01-10", "2020-01-10T00:00:00+05:00")
    path = write_csv(tmp_path, "mixed.csv", rows)
    line = line_of(path, "2020-01-10T")
    assert line == 11
    result = run_cli("data", "show", path)
    assert_user_error(result, str(path), f"line {line}", "'date'", "time-zone offset")


def test_differing_offsets_are_instants_read_as_utc(tmp_path):
    # Local midnight across the EU daylight-saving change of 2020-03-29 (+01:00, then +02:00):
    # every timestamp is an unambiguous instant; worked by hand in UTC.
    days = pd.date_range("2020-03-01", periods=60, freq="D")
    stamps = [
        f"{d:%Y-%m-%d}T00:00:00{'+01:00' if d < pd.Timestamp('2020-03-29') else '+02:00'}"
        for d in days
    ]
    path = write_csv(tmp_path, "dst.csv", [f"{s},10,11,9,10.5,100" for s in stamps])
    (bars,) = load_user_file(path).bars.values()
    assert bars.index[0] == pd.Timestamp("2020-02-29 23:00")
    assert bars.index[27] == pd.Timestamp("2020-03-27 23:00")  # 2020-03-28 +01:00
    assert bars.index[28] == pd.Timestamp("2020-03-28 22:00")  # 2020-03-29 +02:00
    assert bars.index.tz is None


# --- item 15: data too short for the splits, split dates outside the data -----------------------


def test_too_few_rows_for_the_splits(tmp_path):
    path = write_csv(tmp_path, "two.csv", good_lines(2))
    assert_user_error(run_cli("data", "show", path), str(path), "2 timestamp(s)")
    with pytest.raises(DataError, match="need at least 3"):
        date_splits(pd.DatetimeIndex(["2020-01-01", "2020-01-02"]), SplitConfig(), str(path))


def test_too_few_training_rows_for_the_features(tmp_path):
    # 30 daily bars: the training split is 70% of them, bars 0..20. The 20-bar return is first
    # defined at bar 20, so one training bar has every feature.
    path = write_csv(tmp_path, "thirty.csv", good_lines(30))
    result = train_cli(tmp_path, path)
    assert_user_error(result, str(path), "training rows", "1 bar(s)")


def test_split_dates_before_the_data(tmp_path):
    path = write_csv(tmp_path, "bars.csv", good_lines())
    dates = (
        "--set",
        "data.split.train_end=2019-01-01",
        "--set",
        "data.split.validation_end=2019-06-01",
    )
    result = run_cli("data", "show", path, *dates)
    assert_user_error(result, str(path), "data.split", "'train' is empty", "2020-01-01")
    assert_user_error(train_cli(tmp_path, path, *dates), str(path), "data.split")


def test_split_dates_after_the_data_are_a_config_error():
    days = pd.date_range("2020-01-01", periods=60, freq="D")
    cfg = SplitConfig(train_end="2020-02-01", validation_end="2021-01-01")
    with pytest.raises(ConfigError, match=r"data.split: split 'test' is empty.*bars.csv"):
        date_splits(days, cfg, "bars.csv")


def test_row_numbers_without_lines_count_from_one():
    # Frames and Parquet files have no lines: "row N" counts data rows from 1.
    index = pd.date_range("2020-01-01", periods=4, freq="D")
    frame = pd.DataFrame(
        {"open": 10.0, "high": 11.0, "low": 9.0, "close": [10.0, 10.0, np.nan, 10.0]}, index=index
    )
    with pytest.raises(DataError, match=r"row 3 \(2020-01-03 00:00:00\), column 'close': missing"):
        validate_bars(frame, "frame")


def test_a_column_named_twice(tmp_path):
    # pandas renames the second 'close' to 'close.1'; the first would be used without a word.
    rows = [f"{r},99" for r in good_lines()]
    path = write_csv(tmp_path, "twice.csv", rows, header=f"{HEADER},close")
    assert_user_error(run_cli("data", "show", path), str(path), "line 1", "'close' twice")
