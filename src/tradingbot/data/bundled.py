"""The datasets bundled in installed packages: one loader each, read without importing them.

``sp500``, ``nasdaq`` and ``vix`` come from ``arch``, ``googl`` and ``eurusd`` from
``gym-anytrading``, ``sp500_index`` and the universe ``sp500_universe`` from ``skfolio``. Their
names, origins and files are registered in :mod:`tradingbot.data.catalog` (which ``tradingbot
data list`` reads without pandas); validation happens in
:func:`tradingbot.data.sources.load_market`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from tradingbot.data.catalog import BUNDLED_FILES
from tradingbot.data.package_files import (
    read_anytrading_dataset,
    read_arch_dataset,
    read_skfolio_dataset,
)


def _arch_frame(module_name: str) -> pd.DataFrame:
    return read_arch_dataset(module_name)  # arch.data.<name>.load(), without importing arch


def _load_sp500() -> pd.DataFrame:
    return _arch_frame("sp500")[["Open", "High", "Low", "Close", "Volume"]]


def _load_nasdaq() -> pd.DataFrame:
    return _arch_frame("nasdaq")[["Open", "High", "Low", "Close", "Volume"]]


def _load_vix_bars() -> pd.DataFrame:
    return close_only_bars(load_vix_close())  # arch ships VIX closes only


def _load_googl() -> pd.DataFrame:
    frame = read_anytrading_dataset("STOCKS_GOOGL", "Date")
    return frame[["Open", "High", "Low", "Close", "Volume"]]


def _load_eurusd() -> pd.DataFrame:
    frame = read_anytrading_dataset("FOREX_EURUSD_1H_ASK", "Time")
    frame.index = pd.to_datetime(frame.index, format="%d.%m.%Y %H:%M:%S.%f")
    return frame


def close_only_bars(close: pd.Series) -> pd.DataFrame:
    """Bars of a close-only series: open, high and low equal to the close.

    Such data are traded at the next close (``portfolio.fill``), and their range and volume
    features are left out (:func:`tradingbot.data.portfolio.is_close_only`).
    """
    close = close.astype(float)
    return pd.DataFrame({"open": close, "high": close, "low": close, "close": close})


def _load_sp500_index() -> pd.DataFrame:
    return close_only_bars(read_skfolio_dataset("sp500_index")["SP500"])


def load_universe_closes() -> pd.DataFrame:
    """The 20 US large caps of ``skfolio.datasets.load_sp500_dataset()``: daily adjusted
    closes, one column per ticker, 1990-01-02 to 2022-12-28."""
    return read_skfolio_dataset("sp500_dataset")


@dataclass(frozen=True)
class BundledUniverse:
    """A bundled dataset of several instruments on common dates (one close column each)."""

    name: str
    origin: str
    load: Callable[[], pd.DataFrame]


BUNDLED_UNIVERSES: dict[str, BundledUniverse] = {
    "sp500_universe": BundledUniverse(
        "sp500_universe", BUNDLED_FILES["sp500_universe"].origin, load_universe_closes
    )
}


@dataclass(frozen=True)
class BundledDataset:
    """A dataset that ships inside an installed package."""

    name: str
    instrument: str
    origin: str
    load: Callable[[], pd.DataFrame]


_LOADERS: dict[str, Callable[[], pd.DataFrame]] = {
    "sp500": _load_sp500,
    "vix": _load_vix_bars,
    "nasdaq": _load_nasdaq,
    "googl": _load_googl,
    "eurusd": _load_eurusd,
    "sp500_index": _load_sp500_index,
}
BUNDLED: dict[str, BundledDataset] = {
    name: BundledDataset(name, spec.instrument, spec.origin, _LOADERS[name])
    for name, spec in BUNDLED_FILES.items()
    if not spec.wide
}


def load_vix_close() -> pd.Series:
    """VIX daily closes indexed by date.

    arch's file lists US market holidays with no quote (NaN); those dates are not trading
    days of the VIX, so they are left out here, in the one documented place.
    """
    close = _arch_frame("vix")["vix"].astype(float)
    return close[close.notna()]
