import pandas as pd
import pytest

from tradingbot.config import ConfigError, SplitConfig, WalkForwardConfig
from tradingbot.data.splits import date_splits, rows_in, walk_forward_folds

DAYS = pd.date_range("2010-01-01", "2014-12-31", freq="D")


def test_fraction_splits_partition_the_dates():
    s = date_splits(DAYS, SplitConfig(train_fraction=0.6, validation_fraction=0.2))
    n = len(DAYS)
    assert s["train"].start == DAYS[0] and s["train"].end == DAYS[round(0.6 * n) - 1]
    assert s["validation"].start == DAYS[round(0.6 * n)]
    assert s["test"].end == DAYS[-1]
    lens = [rows_in(DAYS, s[k]) for k in ("train", "validation", "test")]
    assert lens[0][1] == lens[1][0] and lens[1][1] == lens[2][0] and lens[2][1] == n


def test_date_splits():
    s = date_splits(DAYS, SplitConfig(train_end="2012-12-31", validation_end="2013-12-31"))
    assert s["train"].end == pd.Timestamp("2012-12-31")
    assert s["validation"].start == pd.Timestamp("2013-01-01")
    assert s["test"].start == pd.Timestamp("2014-01-01")


def test_empty_split_is_error():
    with pytest.raises(ValueError, match="split 'test' is empty"):
        date_splits(DAYS, SplitConfig(train_end="2013-12-31", validation_end="2015-06-30"))


def test_expanding_folds_with_embargo():
    folds = walk_forward_folds(
        DAYS, WalkForwardConfig(first_test_start="2012-01-01", test_length="365D", embargo_bars=5)
    )
    assert [f.test.start for f in folds] == [
        pd.Timestamp("2012-01-01"),
        pd.Timestamp("2012-12-31"),
        pd.Timestamp("2013-12-31"),
        pd.Timestamp("2014-12-31"),
    ]
    for f in folds:
        assert f.train.start == DAYS[0]
        gap = DAYS.get_loc(f.test.start) - DAYS.get_loc(f.train.end) - 1
        assert gap == 5  # five embargoed bars between train and test


def test_rolling_folds_keep_train_length():
    folds = walk_forward_folds(
        DAYS,
        WalkForwardConfig(
            first_test_start="2012-01-01",
            test_length="365D",
            mode="rolling",
            train_length="730D",
            n_folds=2,
        ),
    )
    assert len(folds) == 2
    for f in folds:
        assert f.train.start == f.test.start - pd.Timedelta(days=730)
        assert f.train.end == f.test.start - pd.Timedelta(days=1)


def test_rolling_needs_length():
    with pytest.raises(ValueError, match="train_length"):
        WalkForwardConfig(mode="rolling")


def test_unreadable_offset_names_the_config_key():
    with pytest.raises(ConfigError, match=r"data\.walk_forward\.test_length: 'banana'"):
        walk_forward_folds(DAYS, WalkForwardConfig(test_length="banana"))


def test_no_fold_in_the_data_is_a_config_error():
    # The first test window starts after the last bar (2014-12-31).
    cfg = WalkForwardConfig(first_test_start="2016-01-01", test_length="365D")
    with pytest.raises(ConfigError, match=r"data\.walk_forward: no fold fits"):
        walk_forward_folds(DAYS, cfg)
