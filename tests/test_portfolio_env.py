"""The portfolio environment and its data: hand-computed equity, costs and weights; no
look-ahead; the bundled universe read as skfolio reads it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tradingbot.config import DataConfig, EnvConfig, PortfolioConfig
from tradingbot.data.bundled import close_only_bars
from tradingbot.data.features import FeatureNormalizer
from tradingbot.data.portfolio import PortfolioMarket, load_portfolio, prepare_portfolio
from tradingbot.data.sources import MarketData, load_market
from tradingbot.data.splits import DateRange
from tradingbot.data.validate import DataError
from tradingbot.env.portfolio import PortfolioVecEnv, actions_to_weights
from tradingbot.evaluate.allocation import simulate_allocation

CLOSES = np.array(
    [
        [10.0, 20.0, 50.0],
        [11.0, 20.0, 45.0],
        [11.0, 22.0, 45.0],
        [12.1, 22.0, 54.0],
        [12.1, 19.8, 54.0],
    ]
)


def tiny_market(close: np.ndarray = CLOSES) -> PortfolioMarket:
    """3 assets x 5 bars; feature = the bar's index (so observations show which bar they read)."""
    t, k = close.shape
    stamps = pd.bdate_range("2021-01-04", periods=t)
    features = np.repeat(np.arange(t, dtype=np.float32)[:, None, None], k, axis=1)
    features = features + np.arange(k, dtype=np.float32)[None, :, None] / 10
    span = DateRange(stamps[0], stamps[-1])
    return PortfolioMarket(
        names=["A", "B", "C"][:k],
        timestamps=stamps,
        close=close.copy(),
        features=features,
        feature_names=["f"],
        normalizer=FeatureNormalizer(["f"], np.zeros(1), np.ones(1), 10.0),
        splits={"train": span, "validation": span, "test": span},
        first_valid=0,
        close_only=True,
    )


def make_env(market: PortfolioMarket, every: int = 1, bps: float = 10.0) -> PortfolioVecEnv:
    env_cfg = EnvConfig(n_envs=1, episode_length=None, commission_bps=bps, slippage_bps=0.0)
    cfg = PortfolioConfig(rebalance_every=every)
    env = PortfolioVecEnv(market, "train", env_cfg, cfg, random_start=False)
    env.reset()
    return env


TARGETS = [[0.5, 0.25, 0.0], [0.0, 0.0, 1.0], [1 / 3, 1 / 3, 1 / 3], [1 / 3, 1 / 3, 1 / 3]]


def test_hand_computed_three_assets_five_bars() -> None:
    env = make_env(tiny_market())
    c = 0.001  # 10 bps of traded notional
    # Step 1 (bar 0 -> fill at close 1): from cash to (0.5, 0.25, 0); nothing held yet.
    e1 = 1.0 * (1 - c * 0.75)
    # Step 2: hold (0.5, 0.25, 0 | cash 0.25) over bar 1->2, growth (1, 1.1, 1): 1.025;
    # drifted weights (0.5, 0.275, 0) / 1.025; trade to (0, 0, 1).
    u2 = np.array([0.5, 0.275, 0.0]) / 1.025
    e2 = e1 * 1.025 * (1 - c * (u2[0] + u2[1] + 1.0))
    # Step 3: all in C over bar 2->3 (x1.2); trade from (0, 0, 1) to thirds: 1/3 + 1/3 + 2/3.
    e3 = e2 * 1.2 * (1 - c * 4 / 3)
    # Step 4: thirds over bar 3->4, growth (1, 0.9, 1): 29/30; drift, then back to thirds.
    u4 = np.array([1 / 3, 0.3, 1 / 3]) / (29 / 30)
    e4 = e3 * (29 / 30) * (1 - c * np.abs(1 / 3 - u4).sum())
    expected = [e1, e2, e3, e4]
    equity = 1.0
    for step, target in enumerate(TARGETS):
        obs_before = env.observe()
        assert obs_before[0, :, 0] == pytest.approx(step + np.array([0, 0.1, 0.2]))  # bar `step`
        reward, terminated, truncated, trade, cost = env.step_targets(np.array([target]))
        assert env.equity[0] == pytest.approx(expected[step], rel=1e-12)
        assert reward[0] == pytest.approx(math.log(expected[step] / equity), rel=1e-10)
        assert env.weights[0] == pytest.approx(target)  # h = 1: held at the target after the fill
        assert not terminated[0]
        assert truncated[0] == (step == 3)  # 5 bars: 4 steps, then the data end
        equity = expected[step]
    assert cost[0] == pytest.approx(c * np.abs(1 / 3 - u4).sum() * e3 * 29 / 30)
    assert trade[0] == pytest.approx(1 / 3 - u4)
    # The daily backtest of the same targets ends each bar where the environment's step does.
    frame = simulate_allocation(
        CLOSES, tiny_market().timestamps, np.arange(4), np.array(TARGETS), 1, c
    )
    assert frame["equity"].to_numpy() == pytest.approx(expected, rel=1e-12)
    assert frame["trade"].iloc[0] == pytest.approx(0.75)
    assert frame["position"].to_numpy() == pytest.approx([0.0, 0.75, 1.0, 1.0])


def test_two_bar_step_drifts_between_fills() -> None:
    # h = 2: decision at bar 0, fill at close 1, hold to bar 2; decision at bar 2, fill at 3.
    env = make_env(tiny_market(), every=2, bps=0.0)
    env.step_targets(np.array([[0.5, 0.5, 0.0]]))
    # Held over bar 1->2 with growth (1, 1.1, 1): 1.05, weights (0.5, 0.55) / 1.05.
    assert env.equity[0] == pytest.approx(1.05)
    assert env.weights[0] == pytest.approx([0.5 / 1.05, 0.55 / 1.05, 0.0])
    assert env.row[0] == 2
    frame = simulate_allocation(
        CLOSES,
        tiny_market().timestamps,
        np.array([0, 2]),
        np.array([[0.5, 0.5, 0], [0, 0, 1]]),
        2,
        0.0,
    )
    assert frame["equity"].iloc[1] == pytest.approx(1.05)
    env.step_targets(np.array([[0.0, 0.0, 1.0]]))
    assert frame["equity"].iloc[3] == pytest.approx(env.equity[0])


def test_actions_to_weights_long_only_and_long_short() -> None:
    cfg = PortfolioConfig(logit_scale=4.0)
    # exp(4 * ln2 / 4) = 2 against 1, 1 and 1 (cash): 2/5, 1/5, 1/5 and cash 1/5.
    weights = actions_to_weights(np.array([[math.log(2) / 4, 0.0, 0.0, 0.0]]), cfg)
    assert weights[0] == pytest.approx([0.4, 0.2, 0.2])
    short = PortfolioConfig(long_only=False, gross_leverage=1.5)
    # gross 0.5 + 1 + 0.5 = 2 > 1.5: scaled by 1.5 / 2; the cash entry is unused.
    weights = actions_to_weights(np.array([[0.5, -1.0, 0.5, 0.9], [0.2, -0.3, 0.1, 0.0]]), short)
    assert weights[0] == pytest.approx([0.375, -0.75, 0.375])
    assert weights[1] == pytest.approx([0.2, -0.3, 0.1])  # gross 0.6: unchanged


def test_step_through_actions_and_sb3_infos() -> None:
    env = make_env(tiny_market(), bps=0.0)
    obs, _, _, infos = env.step(np.array([[math.log(2) / 4, 0.0, 0.0, 0.0]]))
    assert infos[0]["target"] == pytest.approx([0.4, 0.2, 0.2])
    assert obs.shape == (1, 3, 2) and obs[0, :, 1] == pytest.approx([0.4, 0.2, 0.2])
    for _ in range(3):
        obs, _, done, infos = env.step(np.zeros((1, 4)))
    assert done[0] and infos[0]["TimeLimit.truncated"] and "terminal_observation" in infos[0]
    assert obs[0, :, 1] == pytest.approx([0, 0, 0])  # reset: back in cash at bar 0


def test_no_look_ahead() -> None:
    # Changing the closes and features after bar s changes nothing the env shows or pays at or
    # before s.
    s = 2
    rng = np.random.default_rng(0)
    changed = tiny_market()
    changed.close[s + 1 :] *= rng.uniform(0.5, 2.0, size=changed.close[s + 1 :].shape)
    changed.features[s + 1 :] = rng.normal(size=changed.features[s + 1 :].shape)
    envs = [make_env(tiny_market()), make_env(changed)]
    for step in range(s):  # steps ending at bars 1..s
        observed = [env.observe() for env in envs]
        assert observed[0] == pytest.approx(observed[1])
        for env in envs:
            env.step_targets(np.array([TARGETS[step]]))
        assert envs[0].equity == pytest.approx(envs[1].equity)
    assert envs[0].observe() == pytest.approx(envs[1].observe())  # decision at bar s


def test_features_are_causal_on_the_universe() -> None:
    cfg = DataConfig(source="sp500_universe")
    data = load_market("sp500_universe")
    full = prepare_portfolio(data, cfg)
    cut = 3000
    short = MarketData("cut", {k: v.iloc[: cut + 1] for k, v in data.bars.items()}, "cut")
    truncated = prepare_portfolio(short, cfg, normalizer=full.normalizer)
    assert truncated.features[full.first_valid :] == pytest.approx(
        full.features[full.first_valid : cut + 1]
    )


def test_universe_matches_skfolio_and_is_close_only() -> None:
    from skfolio.datasets import load_sp500_dataset, load_sp500_index

    market = load_portfolio(DataConfig(source="sp500_universe"))
    reference = load_sp500_dataset()
    assert market.names == list(reference.columns)
    assert market.close == pytest.approx(reference.to_numpy())
    assert (market.timestamps == reference.index).all()
    assert market.close_only and market.feature_names == ["ret_1", "ret_5", "ret_20", "volatility"]
    index = load_market("sp500_index").bars["SP500"]["close"]
    assert index.to_numpy() == pytest.approx(load_sp500_index()["SP500"].to_numpy())


def test_portfolio_needs_common_dates() -> None:
    stamps = pd.bdate_range("2021-01-04", periods=30)
    closes = pd.Series(np.linspace(10, 12, 30), index=stamps)
    data = MarketData(
        "two", {"A": close_only_bars(closes), "B": close_only_bars(closes.drop(stamps[7]))}, "x"
    )
    with pytest.raises(DataError, match=r"instrument B lacks 2021-01-13"):
        prepare_portfolio(data, DataConfig())


def test_random_asset_subsets_per_episode() -> None:
    market = load_portfolio(DataConfig(source="sp500_universe"))
    env_cfg = EnvConfig(n_envs=4, episode_length=3)
    env = PortfolioVecEnv(market, "train", env_cfg, PortfolioConfig(assets_per_episode=5), seed=1)
    obs = env.reset()
    assert obs.shape == (4, 5, 5)
    assert len({tuple(a) for a in env.assets}) == 4  # different subsets
    for i in range(4):
        assert len(set(env.assets[i])) == 5
        expected = market.features[env.row[i], env.assets[i]]
        assert obs[i, :, :4] == pytest.approx(expected)
