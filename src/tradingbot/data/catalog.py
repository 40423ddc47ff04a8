"""The bundled datasets' registry and the summary `tradingbot data list` prints.

A listing should start at once, so the summary (instruments, rows, first and last bar) is read
from the files' lines with the standard library, not with pandas (whose import alone takes
about 0.25 s). It counts what :func:`tradingbot.data.sources.load_market` loads: the records
with a parseable date and, where a file has rows without a quote, only the quoted ones; a test
compares the two for every dataset. ``tradingbot data show NAME`` loads and validates a
dataset in full.
"""

from __future__ import annotations

import csv
import gzip
import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path


@dataclass(frozen=True)
class BundledFile:
    """A data file that ships inside an installed package.

    Parameters
    ----------
    name : the dataset name (``data.source``).
    instrument : the name of its one instrument ("" for a wide file).
    origin : where it comes from, for the record.
    package : the installed top-level package holding the file.
    path : the file's path inside the package directory.
    date_column, date_format : the timestamp column and its ``strptime`` format.
    quote_column : a column whose missing values mean "no bar on this date" (the row is left
        out), or None when every record is a bar.
    wide : every column but the date is an instrument's close (a universe on common dates).
    """

    name: str
    instrument: str
    origin: str
    package: str
    path: str
    date_column: str
    date_format: str
    quote_column: str | None = None
    wide: bool = False


BUNDLED_FILES: dict[str, BundledFile] = {
    f.name: f
    for f in (
        BundledFile(
            "sp500",
            "SPX",
            "arch.data.sp500 (S&P 500 daily, 1999-2018)",
            "arch",
            "data/sp500/sp500.csv.gz",
            "Date",
            "%m/%d/%Y",
        ),
        BundledFile(
            "vix",
            "VIX",
            "arch.data.vix (VIX daily close, 2014-2018; holidays without a quote left out)",
            "arch",
            "data/vix/vix.csv.gz",
            "Date",
            "%m/%d/%Y",
            quote_column="vix",
        ),
        BundledFile(
            "nasdaq",
            "IXIC",
            "arch.data.nasdaq (NASDAQ Composite daily, 1999-2018)",
            "arch",
            "data/nasdaq/nasdaq.csv.gz",
            "Date",
            "%m/%d/%Y",
        ),
        BundledFile(
            "googl",
            "GOOGL",
            "gym_anytrading STOCKS_GOOGL (daily)",
            "gym_anytrading",
            "datasets/data/STOCKS_GOOGL.csv",
            "Date",
            "%Y-%m-%d",
        ),
        BundledFile(
            "eurusd",
            "EURUSD",
            "gym_anytrading FOREX_EURUSD_1H_ASK (hourly, 2017)",
            "gym_anytrading",
            "datasets/data/FOREX_EURUSD_1H_ASK.csv",
            "Time",
            "%d.%m.%Y %H:%M:%S.%f",
        ),
        BundledFile(
            "sp500_index",
            "SP500",
            "skfolio.datasets.load_sp500_index (S&P 500 index, daily close, 1990-2022; close-only)",
            "skfolio",
            "datasets/data/sp500_index.csv.gz",
            "Date",
            "%Y-%m-%d",
        ),
        BundledFile(
            "sp500_universe",
            "",
            "skfolio.datasets.load_sp500_dataset (20 US large caps, daily adjusted closes, "
            "1990-2022; close-only)",
            "skfolio",
            "datasets/data/sp500_dataset.csv.gz",
            "Date",
            "%Y-%m-%d",
            wide=True,
        ),
    )
}
DATASET_NAMES = (*BUNDLED_FILES, "synthetic")


@dataclass(frozen=True)
class DatasetSummary:
    """One row of ``tradingbot data list``.

    Parameters
    ----------
    name : the dataset name.
    instruments : how many instruments it has.
    rows : bars over all instruments.
    first, last : the earliest and the latest bar.
    origin : where it comes from.
    """

    name: str
    instruments: int
    rows: int
    first: datetime
    last: datetime
    origin: str


def package_dir(package: str) -> Path:
    """The directory of an installed top-level package, found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_path(spec: BundledFile) -> Path:
    """Where the file of a bundled dataset lies on this machine."""
    return package_dir(spec.package) / spec.path


def _has_quote(text: str) -> bool:
    try:
        return not math.isnan(float(text))
    except ValueError:  # arch writes "." for a holiday without a quote
        return False


def summarize_file(spec: BundledFile) -> DatasetSummary:
    """Count the bars of a bundled file and read its first and last date, from its lines.

    The bundled files are sorted by date (the loader refuses unsorted bars), so only the first
    and the last record's dates are parsed: ``strptime`` on every line would cost more than the
    rest of the listing.
    """
    path = bundled_path(spec)
    raw = gzip.open(path, "rt", newline="") if path.suffix == ".gz" else open(path, newline="")
    with raw as handle:
        reader = csv.DictReader(handle)
        columns = [c for c in reader.fieldnames or () if c != spec.date_column]
        dates = [
            row[spec.date_column]
            for row in reader
            if spec.quote_column is None or _has_quote(row[spec.quote_column])
        ]
    first, last = (datetime.strptime(dates[i], spec.date_format) for i in (0, -1))
    instruments = len(columns) if spec.wide else 1
    return DatasetSummary(
        spec.name, instruments, instruments * len(dates), first, last, spec.origin
    )


def synthetic_origin(seed: int) -> str:
    """The origin recorded for the synthetic market of a seed."""
    return f"synthetic regime-switching market (seed {seed})"


def summarize_synthetic(n_instruments: int, n_bars: int, start: date, seed: int) -> DatasetSummary:
    """The synthetic market's extent: ``n_bars`` business days (Monday-Friday) from ``start``."""
    day = start
    while day.weekday() >= 5:  # pandas' bdate_range starts on the next business day
        day += timedelta(days=1)
    first = day
    for _ in range(n_bars - 1):
        day += timedelta(days=3 if day.weekday() == 4 else 1)
    return DatasetSummary(
        "synthetic",
        n_instruments,
        n_instruments * n_bars,
        datetime.combine(first, datetime.min.time()),
        datetime.combine(day, datetime.min.time()),
        synthetic_origin(seed),
    )


def list_datasets() -> list[DatasetSummary]:
    """The summary of every bundled dataset, and of the synthetic market at its defaults."""
    from tradingbot.config import SyntheticConfig

    synthetic = SyntheticConfig()
    summaries = [summarize_file(spec) for spec in BUNDLED_FILES.values()]
    summaries.append(
        summarize_synthetic(
            synthetic.n_instruments, synthetic.n_bars, synthetic.start, synthetic.seed
        )
    )
    return summaries
