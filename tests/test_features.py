import math
import statistics

import numpy as np
import pandas as pd
import pytest

from tradingbot.config import DataConfig, EnvConfig, FeatureConfig
from tradingbot.data.bundled import load_vix_close
from tradingbot.data.features import (
    MIN_BAR_VOLATILITY,
    compute_features,
    feature_lookback,
    first_valid_row,
    long_horizon_features,
)
from tradingbot.data.market import prepare_market
from tradingbot.data.sources import MarketData, load_market
from tradingbot.data.validate import validate_bars
from tradingbot.env.simulator import MarketSimulator, build_observations


def perturb_after(bars: pd.DataFrame, t: int, seed: int) -> pd.DataFrame:
    """Scale every bar after row t by random factors (a different future)."""
    rng = np.random.default_rng(seed)
    out = bars.copy()
    n = len(out) - t - 1
    factor = np.exp(rng.normal(0, 0.05, n))
    for col in ("open", "high", "low", "close"):
        out.iloc[t + 1 :, out.columns.get_loc(col)] *= factor
    if "volume" in out:
        out.iloc[t + 1 :, out.columns.get_loc("volume")] *= np.exp(rng.normal(0, 1, n))
    return out


@pytest.mark.parametrize("t", [30, 400, 2000, 4999])
def test_raw_features_do_not_look_ahead(t):
    bars = load_market("sp500").bars["SPX"]
    cfg = FeatureConfig()
    before = compute_features(bars, cfg)
    after = compute_features(perturb_after(bars, t, seed=t), cfg)
    pd.testing.assert_frame_equal(before.iloc[: t + 1], after.iloc[: t + 1])
    assert not before.iloc[t + 1 :].equals(after.iloc[t + 1 :])  # the perturbation is real


def test_vix_features_do_not_look_ahead():
    bars = load_market("sp500").bars["SPX"].loc["2014-02-01":"2018-12-28"]
    vix = load_vix_close()
    cfg = FeatureConfig()
    t = 500
    future = vix.copy()
    future[future.index > bars.index[t]] *= 1.5
    a, b = compute_features(bars, cfg, vix), compute_features(bars, cfg, future)
    assert "vix_level" in a and "vix_change" in a
    pd.testing.assert_frame_equal(a.iloc[: t + 1], b.iloc[: t + 1])
    assert np.isclose(a["vix_level"].iloc[t], np.log(vix[bars.index[t]]))


@pytest.mark.parametrize("fill", ["next_open", "next_close"])
def test_observations_do_not_look_ahead(fill):
    """Through the whole pipeline: normalization is fitted on the train split, and bars after
    t (t outside the train split) change no feature or observation at or before t."""
    cfg = DataConfig(source="sp500")
    data = load_market("sp500")
    market = prepare_market(data, cfg)
    t = int(data.bars["SPX"].index.searchsorted(market.splits["validation"].end)) + 10
    changed = MarketData(
        "sp500", {"SPX": validate_bars(perturb_after(data.bars["SPX"], t, 1), "x")}, "x"
    )
    other = prepare_market(changed, cfg)
    np.testing.assert_array_equal(market.features[: t + 1], other.features[: t + 1])
    env_cfg = EnvConfig(fill=fill, window=5)
    observations = []
    for m in (market, other):
        sim = MarketSimulator(m, "test", env_cfg, n_envs=1)
        sim.reset_envs([0])
        sim.row[:] = t
        observations.append(sim.observe())
    np.testing.assert_array_equal(observations[0], observations[1])


def test_known_feature_values():
    bars = pd.DataFrame(
        {
            "open": [10, 11, 12, 11, 13.0],
            "high": [11, 12, 13, 12, 14.0],
            "low": [9, 10, 11, 10, 12.0],
            "close": [10, 12, 12, 11, 13.0],
        },
        index=pd.bdate_range("2020-01-01", periods=5),
    )
    cfg = FeatureConfig(return_windows=[1, 2], volatility_window=3, volume_window=2, vix="off")
    f = compute_features(bars, cfg)
    assert np.isclose(f["ret_1"].iloc[1], np.log(12 / 10))
    assert np.isclose(f["ret_2"].iloc[3], np.log(11 / 12))
    r = np.log([12 / 10, 12 / 12, 11 / 12])
    assert np.isclose(f["volatility"].iloc[3], np.std(r, ddof=1))
    assert np.isclose(f["range"].iloc[4], np.log(14 / 12))
    assert "volume_z" not in f  # no volume column: the feature is left out, not filled
    assert first_valid_row(f) == 3


def test_normalization_uses_train_rows_only():
    cfg = DataConfig(source="sp500")
    data = load_market("sp500")
    market = prepare_market(data, cfg)
    raw = compute_features(data.bars["SPX"], cfg.features)
    train_end = int(raw.index.searchsorted(market.splits["train"].end, side="right"))
    rows = raw.to_numpy()[first_valid_row(raw) : train_end]
    np.testing.assert_allclose(market.normalizer.mean, rows.mean(axis=0))
    np.testing.assert_allclose(market.normalizer.std, rows.std(axis=0))


def _hourly_bars(days: pd.DatetimeIndex) -> pd.DataFrame:
    """Seven hourly bars (09:30 ... 15:30) on each of ``days``, a random walk."""
    stamps = pd.DatetimeIndex([d + pd.Timedelta(hours=9.5 + h) for d in days for h in range(7)])
    close = 100 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.002, len(stamps))))
    return pd.DataFrame(
        {"open": close, "high": close * 1.001, "low": close * 0.999, "close": close},
        index=stamps,
    )


def test_intraday_bars_never_see_the_same_days_vix_close():
    vix = load_vix_close()
    days = vix.loc["2015-03-02":"2015-04-30"].index
    bars = _hourly_bars(days)
    features = compute_features(bars, FeatureConfig(), vix)
    # Every bar of day d gets the close of the VIX date before d (day d's close comes after).
    previous = {d: vix.index[vix.index.get_loc(d) - 1] for d in days}
    expected = np.log([vix[previous[t.normalize()]] for t in bars.index])
    np.testing.assert_allclose(features["vix_level"].to_numpy(), expected)
    # Changing day d's VIX close changes no bar of day d, and every bar of the next date.
    d = days[10]
    changed = vix.copy()
    changed[d] *= 1.5
    other = compute_features(bars, FeatureConfig(), changed)
    same_day = bars.index.normalize() <= d
    pd.testing.assert_frame_equal(features[same_day], other[same_day])
    next_day = bars.index.normalize() == days[11]
    assert (other["vix_level"][next_day] > features["vix_level"][next_day]).all()


def test_daily_bars_use_the_same_days_vix_close():
    # A daily bar's decision is filled at the next open, after the VIX close of its day.
    vix = load_vix_close()
    bars = load_market("sp500").bars["SPX"].loc["2015-03-02":"2015-04-30"]
    features = compute_features(bars, FeatureConfig(), vix)
    np.testing.assert_allclose(
        features["vix_level"].to_numpy(), np.log(vix.reindex(bars.index).to_numpy())
    )


LONG = FeatureConfig(set="long_horizon", vix="off")


def test_long_horizon_known_values():
    """Small windows on a hand-written series: returns over 2 bars, volatility over 2 and 3
    returns, the 3-bar moving-average gap in units of the 3-return volatility, the drawdown
    from the 3-bar high."""
    closes = [100.0, 110.0, 99.0, 121.0, 108.0, 132.0]
    f = long_horizon_features(pd.Series(closes), (2,), (3,), (2, 3), 3)
    r = [math.log(closes[i] / closes[i - 1]) for i in range(1, 6)]  # r[i-1] ends at bar i
    t = 4
    assert f["ret_2"].iloc[t] == pytest.approx(math.log(108 / 99))
    assert f["vol_2"].iloc[t] == pytest.approx(statistics.stdev(r[2:4]))
    vol_3 = statistics.stdev(r[1:4])
    assert f["vol_3"].iloc[t] == pytest.approx(vol_3)
    assert f["vol_ratio"].iloc[t] == pytest.approx(statistics.stdev(r[2:4]) / vol_3)
    gap = (math.log(108) - math.log((99 + 121 + 108) / 3)) / vol_3
    assert f["ma_gap_3"].iloc[t] == pytest.approx(gap)
    assert f["ma_gap_3"].iloc[5] > 0 > f["ma_gap_3"].iloc[4]  # above / below the average
    assert f["drawdown_3"].iloc[t] == pytest.approx(math.log(108 / 121))
    assert f["drawdown_3"].iloc[5] == 0.0  # a new high
    # Warm-up: 3 returns need 4 closes, so bar 3 is the first with every column defined.
    assert f.iloc[:3].isna().any(axis=1).all()
    assert np.isfinite(f.iloc[3:].to_numpy()).all()
    assert f["ret_2"].iloc[2] == pytest.approx(math.log(99 / 100))
    assert np.isnan(f["ret_2"].iloc[1]) and np.isnan(f["drawdown_3"].iloc[1])


def test_long_horizon_flat_window_uses_the_volatility_floor():
    """Closes unchanged over the whole long window (a thinly traded stock): the ratio is 1,
    the gap is the log distance from the average over the floor, and nothing is NaN. Before
    the floor, vol_ratio and ma_gap were NaN here and the feature set refused the data."""
    closes = [100.0, 104.0, 103.0, 103.0, 103.0, 103.0, 103.0, 106.0]
    f = long_horizon_features(pd.Series(closes), (2,), (5,), (2, 3), 3)
    t = 5  # the returns of bars 3..5 are all 0; the 5-bar average (bars 1..5) includes 104
    assert f["vol_3"].iloc[t] == 0.0 and f["vol_2"].iloc[t] == 0.0
    assert f["vol_ratio"].iloc[t] == 1.0
    gap = math.log(103) - math.log((104 + 4 * 103) / 5)
    assert gap < 0
    assert f["ma_gap_5"].iloc[t] == pytest.approx(gap / MIN_BAR_VOLATILITY)
    assert np.isfinite(f.iloc[5:].to_numpy()).all()
    # A volatility above the floor is used as it is: bar 7's jump.
    r = [math.log(closes[i] / closes[i - 1]) for i in (5, 6, 7)]
    assert f["vol_ratio"].iloc[7] == pytest.approx(statistics.stdev(r[1:]) / statistics.stdev(r))


def test_long_horizon_feature_set_columns_and_defaults():
    bars = load_market("sp500").bars["SPX"]
    f = compute_features(bars, LONG)
    expected = long_horizon_features(bars["close"])
    for name in (
        "ret_60",
        "ret_120",
        "ret_250",
        "ma_gap_50",
        "ma_gap_200",
        "vol_20",
        "vol_60",
        "vol_ratio",
        "drawdown_250",
    ):
        pd.testing.assert_series_equal(f[name], expected[name])
    assert {"ret_1", "ret_5", "ret_20", "volatility", "range"} <= set(f.columns)
    # ret_250 needs 251 closes: row 250 is the first with every feature defined.
    assert first_valid_row(f) == 250 == feature_lookback(LONG)
    assert f["drawdown_250"].max() <= 0.0


@pytest.mark.parametrize("t", [260, 2000, 4999])
def test_long_horizon_features_do_not_look_ahead(t):
    bars = load_market("sp500").bars["SPX"]
    before = compute_features(bars, LONG)
    after = compute_features(perturb_after(bars, t, seed=t), LONG)
    pd.testing.assert_frame_equal(before.iloc[: t + 1], after.iloc[: t + 1])
    assert not before.iloc[t + 1 :].equals(after.iloc[t + 1 :])


def test_long_horizon_warm_up_leaves_no_nan_in_observations():
    """The first usable row is after the 250-bar warm-up; every observation of every split
    is finite."""
    cfg = DataConfig(source="sp500", features=LONG)
    market = prepare_market(load_market("sp500"), cfg)
    assert market.instruments[0].first_valid == 250
    assert not np.isfinite(market.features[:250]).all()
    for split in ("train", "validation", "test"):
        sim = MarketSimulator(market, split, EnvConfig(window=5), n_envs=1)
        rows = np.arange(sim.lo[0], sim.hi[0])
        assert rows[0] >= 250 + 4
        obs = build_observations(market.features, rows, np.zeros(len(rows)), 5)
        assert np.isfinite(obs).all()
