"""The listing read from the files' lines agrees with the full loader."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from tradingbot.config import SyntheticConfig
from tradingbot.data.catalog import DATASET_NAMES, list_datasets, summarize_synthetic
from tradingbot.data.sources import load_market


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_listing_matches_the_loaded_dataset(name: str) -> None:
    summary = next(s for s in list_datasets() if s.name == name)
    data = load_market(name)
    indexes = [bars.index for bars in data.bars.values()]
    assert summary.instruments == len(data.bars)
    assert summary.rows == sum(len(index) for index in indexes)
    assert pd.Timestamp(summary.first) == min(index[0] for index in indexes)
    assert pd.Timestamp(summary.last) == max(index[-1] for index in indexes)
    assert summary.origin == data.origin


def test_vix_listing_leaves_out_the_holidays_without_a_quote() -> None:
    # arch's file has 1,305 records; 46 holidays carry "." instead of a close.
    vix = next(s for s in list_datasets() if s.name == "vix")
    assert vix.rows == 1259


@pytest.mark.parametrize(
    ("start", "n_bars"),
    [(date(2000, 1, 3), 2520), (date(2021, 1, 2), 7), (date(2021, 1, 8), 1), (date(2021, 1, 9), 6)],
)
def test_synthetic_extent_matches_pandas_business_days(start: date, n_bars: int) -> None:
    # Starts on a Monday, a Saturday (moves to Monday), a Friday and a Saturday again; lengths
    # that end on a Friday and on a Monday catch an off-by-one over the weekend.
    summary = summarize_synthetic(2, n_bars, start, seed=3)
    days = pd.bdate_range(start=start, periods=n_bars)
    assert (summary.rows, summary.instruments) == (2 * n_bars, 2)
    assert pd.Timestamp(summary.first) == days[0] and pd.Timestamp(summary.last) == days[-1]


def test_synthetic_listing_uses_the_config_defaults() -> None:
    cfg = SyntheticConfig()
    summary = next(s for s in list_datasets() if s.name == "synthetic")
    assert summary.rows == cfg.n_instruments * cfg.n_bars
    assert summary.first.date() == cfg.start
