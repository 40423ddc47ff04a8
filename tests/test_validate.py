"""Each class of bad input is refused with a message naming the file, row and column."""

import re

import numpy as np
import pandas as pd
import pytest

from tradingbot.data.sources import load_market, load_user_file
from tradingbot.data.validate import DataError


def write(tmp_path, text, name="bars.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = "date,Open,High,Low,Close,Volume\n" + "".join(
    f"2020-01-{d:02d},10,11,9,10.5,100\n" for d in range(1, 11)
)


def replace_line(text, line, new):
    lines = text.splitlines()
    lines[line] = new
    return "\n".join(lines) + "\n"


def test_good_file_loads_case_insensitive(tmp_path):
    data = load_user_file(write(tmp_path, GOOD))
    (bars,) = data.bars.values()
    assert list(bars.columns) == ["open", "high", "low", "close", "volume"]
    assert len(bars) == 10 and bars["close"].iloc[0] == 10.5


@pytest.mark.parametrize(
    ("line", "new", "expected"),
    [
        (3, "2020-01-03,10,11,9,abc,100", ["'Close'", "non-numeric", "abc"]),
        (4, "2020-01-04,10,11,9,,100", ["'Close'", "NaN"]),
        (5, "2020-01-05,10,11,9,inf,100", ["'Close'", "non-finite"]),
        (2, "2020-01-02,0,11,9,10,100", ["'Open'", "> 0"]),
        (6, "2020-01-06,10,11,9,-3,100", ["'Close'", "> 0"]),
        (7, "2020-01-07,10,8,9,10,100", ["'High'/'Low'", "high 8.0 < low 9.0"]),
        (8, "2020-01-05,10,11,9,10,100", ["not sorted", "earlier than line 8"]),
        (9, "2020-01-08,10,11,9,10,100", ["duplicate timestamp", "same as line 9"]),
        (1, "2020-13-45,10,11,9,10,100", ["'date'", "timestamp"]),
        (4, ",10,11,9,10,100", ["'date'", "missing timestamp"]),
        (2, "2020-01-02,10,11,9,10,-5", ["'Volume'", ">= 0"]),
        (
            2,
            "2020-01-02,12,11,9,10,100",
            ["'Open'", "open 12.0 is outside", "[low 9.0, high 11.0]"],
        ),
        (5, "2020-01-05,10,11,9,8.5,100", ["'Close'", "close 8.5 is outside"]),
    ],
)
def test_bad_values_name_file_line_column(tmp_path, line, new, expected):
    # ``line`` indexes the file's lines from 0 with the header at 0, so an editor shows the
    # edited line as ``line + 1``.
    path = write(tmp_path, replace_line(GOOD, line, new))
    with pytest.raises(DataError) as err:
        load_user_file(path)
    text = str(err.value)
    assert str(path) in text
    assert re.search(rf"\bline {line + 1}[ ,]", text), text
    for part in expected:
        assert part in text, (part, text)


def test_missing_column(tmp_path):
    path = write(tmp_path, "date,open,high,close\n2020-01-01,1,2,1\n")
    with pytest.raises(DataError, match=r"missing column\(s\) low"):
        load_user_file(path)


def test_missing_timestamp_column(tmp_path):
    path = write(tmp_path, "when,open,high,low,close\n2020-01-01,1,2,0.5,1\n")
    with pytest.raises(DataError, match="no timestamp column"):
        load_user_file(path)


def test_too_few_rows(tmp_path):
    path = write(tmp_path, GOOD)
    with pytest.raises(DataError, match="too few rows: 10, need at least 25"):
        load_user_file(path, min_rows=25)


def test_nothing_is_reordered_or_dropped(tmp_path):
    data = load_user_file(write(tmp_path, GOOD))
    (bars,) = data.bars.values()
    assert bars.index.is_monotonic_increasing and len(bars) == 10


def test_multi_instrument_csv_and_parquet(tmp_path):
    idx = pd.bdate_range("2021-01-01", periods=6)
    rows = []
    for sym, base in (("AAA", 10.0), ("BBB", 50.0)):
        for i, t in enumerate(idx):
            p = base + i
            rows.append(
                {"Timestamp": t, "Symbol": sym, "open": p, "high": p + 1, "low": p - 1, "close": p}
            )
    frame = pd.DataFrame(rows)
    frame.to_csv(tmp_path / "m.csv", index=False)
    frame.to_parquet(tmp_path / "m.parquet", index=False)
    for name in ("m.csv", "m.parquet"):
        data = load_market(str(tmp_path / name))
        assert list(data.bars) == ["AAA", "BBB"]
        np.testing.assert_allclose(data.bars["BBB"]["close"], 50.0 + np.arange(6))
    frame.loc[8, "close"] = -1.0  # BBB's third row: data row 8 (0-based), line 10 of the CSV
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"\[BBB\]: line 10 \(2021-01-05 .*'close'"):
        load_market(str(tmp_path / "bad.csv"))
    frame.to_parquet(tmp_path / "bad.parquet", index=False)  # no lines: rows counted from 1
    with pytest.raises(DataError, match=r"\[BBB\]: row 9 \(2021-01-05 .*'close'"):
        load_market(str(tmp_path / "bad.parquet"))


def test_unknown_source():
    with pytest.raises(DataError, match=r"unknown data source 'spx'.*sp500"):
        load_market("spx")


def test_unknown_instrument():
    with pytest.raises(DataError, match="instrument\\(s\\) ZZZ not found; available: SPX"):
        load_market("sp500", instruments=["ZZZ"])


def test_unsupported_extension(tmp_path):
    path = write(tmp_path, "x", name="bars.xlsx")
    with pytest.raises(DataError, match="unsupported file type"):
        load_market(str(path))


def test_line_numbers_count_blank_lines_and_quoted_line_breaks(tmp_path):
    # Line 1 header, 2 blank, 3-4 one record whose quoted note spans two lines, 5 blank,
    # 6 the bad bar (high < low): what an editor shows, not the data row (1).
    text = (
        "date,open,high,low,close,note\n"
        "\n"
        '2020-01-01,1,2,0.5,1,"two\nlines"\n'
        "\n"
        "2020-01-02,1,2,3,1,x\n"
    )
    path = write(tmp_path, text)
    assert text.splitlines().index("2020-01-02,1,2,3,1,x") + 1 == 6
    with pytest.raises(DataError, match=r"line 6 \(2020-01-02 00:00:00\), columns 'high'/'low'"):
        load_user_file(path)
