"""data.train_sources: more instruments in training, each normalized on its own training bars,
evaluated on the source's instruments only."""

import numpy as np
import pytest

from tradingbot.config import DataConfig, EnvConfig
from tradingbot.config_loading import load_config
from tradingbot.data.features import compute_features, first_valid_row
from tradingbot.data.market import load_training_data, prepare_market
from tradingbot.data.sources import load_market
from tradingbot.data.splits import DateRange, Fold, rows_in
from tradingbot.data.validate import DataError
from tradingbot.env.simulator import MarketSimulator
from tradingbot.evaluate.jobs import run_fold_seed


def own_normalization(bars, cfg: DataConfig, span: DateRange) -> np.ndarray:
    """An instrument's features z-scored by the mean and std of its own rows in ``span``."""
    raw = compute_features(bars, cfg.features)
    lo, hi = rows_in(raw.index, span)
    train = raw.to_numpy()[max(lo, first_valid_row(raw)) : hi]
    std = train.std(axis=0)
    scaled = (raw.to_numpy() - train.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return np.clip(scaled, -cfg.features.clip, cfg.features.clip).astype(np.float32)


def test_each_training_source_has_its_own_normalization():
    cfg = DataConfig(source="sp500", train_sources=["nasdaq"])
    data = load_training_data(cfg)
    assert set(data.bars) == {"SPX", "IXIC"} and data.train_only == {"IXIC"}
    market = prepare_market(data, cfg)
    alone = prepare_market(load_market("sp500"), DataConfig(source="sp500"))
    assert [i.name for i in market.scored_instruments] == ["SPX"]
    spx, ixic = market.instruments
    assert not spx.train_only and ixic.train_only
    # The source's own normalization (the one a run stores) and splits are unchanged.
    np.testing.assert_array_equal(market.normalizer.mean, alone.normalizer.mean)
    np.testing.assert_array_equal(market.instrument_features(0), alone.instrument_features(0))
    assert market.splits == alone.splits
    # NASDAQ's rows are z-scored by its own training rows, not by the S&P's.
    expected = own_normalization(data.bars["IXIC"], cfg, market.splits["train"])
    np.testing.assert_allclose(market.instrument_features(1), expected, rtol=1e-6, atol=1e-6)
    pooled_like = alone.normalizer.transform(compute_features(data.bars["IXIC"], cfg.features))
    assert not np.allclose(market.instrument_features(1)[300:], pooled_like[300:], atol=1e-3)
    # Training episodes draw from both; the evaluation of one instrument from it alone.
    sim = MarketSimulator(market, "train", EnvConfig(), n_envs=64)
    sim.seed(list(range(64)))
    sim.reset_envs(range(64))
    assert set(sim.slot.tolist()) == {0, 1}


def test_a_training_source_without_training_bars_is_left_out():
    cfg = DataConfig(source="sp500", train_sources=["googl"])  # GOOGL starts in 2009
    data = load_training_data(cfg)
    fit = DateRange(data.bars["SPX"].index[0], data.bars["SPX"].index[1500])
    market = prepare_market(data, cfg, fit_on=fit)
    assert [i.name for i in market.instruments] == ["SPX"]
    later = prepare_market(data, cfg)  # the train split (1999-2012) has GOOGL's bars
    assert [i.name for i in later.instruments] == ["SPX", "GOOGL"]


def test_a_training_source_with_a_clashing_name_is_refused():
    with pytest.raises(DataError, match=r"train_sources.*'SPX'"):
        load_training_data(DataConfig(source="sp500", train_sources=["sp500"]))


def test_walkforward_job_trains_on_both_and_reports_the_source_only():
    config = load_config(
        overrides=[
            "data.source=sp500",
            "data.train_sources=[nasdaq]",
            "env.n_envs=2",
            "algo.n_steps=32",
            "algo.batch_size=64",
            "algo.seq_len=16",
            "algo.n_quantiles=8",
            "algo.lstm_hidden_size=8",
            "algo.net_arch=[8]",
            "run.total_timesteps=64",
            "evaluation.warmup_bars=5",
        ]
    )
    stamps = load_market("sp500").bars["SPX"].index
    fold = Fold(0, DateRange(stamps[0], stamps[2000]), DateRange(stamps[2001], stamps[2060]))
    result = run_fold_seed(config, fold, seed=0)
    assert list(result.bars) == ["SPX"]
    assert len(result.bars["SPX"]["agent"]) == 60
