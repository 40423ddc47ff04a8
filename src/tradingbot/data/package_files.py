"""The data files bundled in installed packages, read without importing those packages.

``import arch.data.sp500`` runs ``arch/__init__.py``, which imports its models, SciPy and
matplotlib (seconds); ``gym_anytrading.datasets`` imports Gymnasium and matplotlib. The files
are plain CSVs, so they are read here the way the packages' own loaders read them
(``arch.data.utility.load_file``, ``gym_anytrading.datasets.utils.load_dataset``; a test
checks that the frames are equal), from the package directory that the import system finds
without executing the package.
"""

from __future__ import annotations

import pandas as pd

from tradingbot.data.catalog import package_dir


def read_arch_dataset(name: str) -> pd.DataFrame:
    """``arch.data.<name>.load()``: ``<name>.csv.gz`` with a parsed ``Date`` index and numeric
    columns (unparseable cells become NaN, as in arch)."""
    data = pd.read_csv(package_dir("arch") / "data" / name / f"{name}.csv.gz")
    if "Date" in data:
        data.Date = pd.to_datetime(data.Date)
        data = data.set_index("Date")
    for col in data:
        data[col] = pd.to_numeric(data[col], errors="coerce")
    return data


def read_anytrading_dataset(name: str, index_name: str) -> pd.DataFrame:
    """``gym_anytrading.datasets.<name>``: ``data/<name>.csv`` indexed by ``index_name``."""
    path = package_dir("gym_anytrading") / "datasets" / "data" / f"{name}.csv"
    return pd.read_csv(path, parse_dates=True, index_col=index_name)


def read_skfolio_dataset(name: str) -> pd.DataFrame:
    """``skfolio.datasets.load_<name>()``: ``data/<name>.csv.gz`` (one column per asset, a
    ``Date`` index parsed as ``%Y-%m-%d``), read without importing skfolio (which imports
    scikit-learn and cvxpy); a test checks the frame equals skfolio's own loader's."""
    data = pd.read_csv(package_dir("skfolio") / "datasets" / "data" / f"{name}.csv.gz", index_col=0)
    data.index = pd.to_datetime(data.index, format="%Y-%m-%d")
    return data
