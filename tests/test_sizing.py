"""env.sizing: the volatility-scaled action, worked by hand, through the simulator's costs,
and the same positions from backtest, warm-up and signals."""

import math
import statistics

import numpy as np
import pandas as pd
import pytest
from tests.conftest import make_bars

from conftest import TINY_MODEL
from tradingbot.config import DataConfig, EnvConfig, SizingConfig
from tradingbot.config_loading import load_config
from tradingbot.data.market import prepare_market
from tradingbot.data.sources import MarketData
from tradingbot.env.simulator import MarketSimulator, actions_to_targets, make_action_space
from tradingbot.env.sizing import position_scales, volatility_scale
from tradingbot.evaluate.backtest import ConstantPolicy, run_backtest
from tradingbot.evaluate.baselines import run_baselines
from tradingbot.evaluate.runs import load_run, prepare_for_run
from tradingbot.signals import compute_signals
from tradingbot.train import train

CLOSES = [100.0, 101.0, 99.0, 102.0, 100.0, 103.0, 101.0, 104.0, 102.0, 105.0, 103.0, 106.0]


def hand_sigma(closes: list[float], t: int, window: int) -> float:
    """Annualized (252) sample std of the ``window`` log returns ending at bar t."""
    returns = [math.log(closes[i] / closes[i - 1]) for i in range(t - window + 1, t + 1)]
    return statistics.stdev(returns) * math.sqrt(252)


def test_volatility_scale_known_values():
    scale = volatility_scale(np.array(CLOSES), 252.0, 0.10, 3)
    # Three returns need four closes: bars 0..2 have no forecast and are flat.
    np.testing.assert_array_equal(scale[:3], 0.0)
    for t in (3, 4, 11):
        assert scale[t] == pytest.approx(0.10 / hand_sigma(CLOSES, t, 3), rel=1e-12)


def test_volatility_scale_is_causal():
    t = 6
    future = np.array(CLOSES)
    future[t + 1 :] *= np.exp(np.linspace(0.1, -0.3, len(CLOSES) - t - 1))
    a = volatility_scale(np.array(CLOSES), 252.0, 0.10, 3)
    b = volatility_scale(future, 252.0, 0.10, 3)
    np.testing.assert_array_equal(a[: t + 1], b[: t + 1])
    assert not np.array_equal(a[t + 1 :], b[t + 1 :])


def test_targets_are_action_times_scale_capped():
    cfg = EnvConfig(sizing=SizingConfig(mode="vol_scaled", cap=0.8))
    scale = np.array([0.5, 2.0, 2.0, 0.0])
    targets = actions_to_targets(np.array([[1.0], [0.3], [-0.6], [1.0]]), cfg, scale)
    np.testing.assert_allclose(targets, [0.5, 0.6, -0.8, 0.0])  # -1.2 capped at -0.8
    long_only = cfg.model_copy(update={"long_only": True})
    targets = actions_to_targets(np.array([[1.0], [0.3], [-0.6], [1.0]]), long_only, scale)
    np.testing.assert_allclose(targets, [0.5, 0.6, 0.0, 0.0])
    with pytest.raises(ValueError, match="vol_scaled"):
        actions_to_targets(np.array([[1.0]]), cfg)


def tiny_market(short_data_cfg: DataConfig):
    bars = make_bars([c * 0.995 for c in CLOSES], CLOSES)
    data = MarketData("hand", {"X": bars}, "hand")
    return prepare_market(data, short_data_cfg)


@pytest.mark.parametrize("fill", ["next_open", "next_close"])
def test_simulator_step_costs_the_scaled_position(short_data_cfg, fill):
    """One step by hand: q = a * 0.10 / sigma_t (window 3), equity after the fill and cost."""
    market = tiny_market(short_data_cfg)
    sizing = SizingConfig(mode="vol_scaled", target_volatility=0.10, window=3)
    cfg = EnvConfig(fill=fill, sizing=sizing, commission_bps=1.0, slippage_bps=2.0)
    sim = MarketSimulator(market, "train", cfg, n_envs=1)
    sim.reset_envs([0])
    t = 5
    sim.row[:] = t
    q = 0.7 * 0.10 / hand_sigma(CLOSES, t, 3)
    assert 0 < q < 1
    target = sim.targets(np.array([[0.7]]))
    assert target[0] == pytest.approx(q, rel=1e-12)
    reward, *_ = sim.step(target)
    open_next, close_next = CLOSES[t + 1] * 0.995, CLOSES[t + 1]
    c = 3e-4
    if fill == "next_open":
        equity = (1.0 - c * q) * (1 + q * (close_next / open_next - 1))
    else:
        equity = 1.0 - c * q
    assert sim.position[0] == pytest.approx(q, rel=1e-12)
    assert sim.equity[0] == pytest.approx(equity, rel=1e-12)
    assert reward[0] == pytest.approx(math.log(equity), rel=1e-10)


def test_backtest_positions_and_baselines_under_vol_scaling(short_data_cfg):
    """A constant action 0.5 holds 0.5 x scale of its decision bar; the baselines' positions
    are not rescaled (buy-and-hold stays at 1)."""
    market = tiny_market(short_data_cfg)
    sizing = SizingConfig(mode="vol_scaled", target_volatility=0.10, window=3)
    cfg = EnvConfig(sizing=sizing)
    scale = position_scales(market, sizing)
    policy = ConstantPolicy(0.5, make_action_space(cfg))
    bars = run_backtest(policy, market, "train", cfg, "X")
    decision_rows = market.instruments[0].timestamps.get_indexer(bars["decision_timestamp"])
    np.testing.assert_allclose(bars["position"], np.minimum(0.5 * scale[decision_rows], 1.0))
    assert (bars["action"] == 0.5).all()
    base = run_baselines(market, "train", cfg, "X", load_config().evaluation.baselines)
    np.testing.assert_array_equal(base["buy_and_hold"]["position"], 1.0)


def test_signals_and_backtest_agree_with_vol_scaling_and_long_features(tmp_path):
    """A tiny run with the long-horizon features and vol-scaled actions: signals and the
    backtest of the test split give the same positions, each action x scale of its bar."""
    overrides = [
        "data.source=synthetic",
        "data.features.set=long_horizon",
        "env.sizing.mode=vol_scaled",
        *TINY_MODEL,
        "run.total_timesteps=128",
        "run.name=sized",
        f"run.out_dir={tmp_path}",
    ]
    run = load_run(train(load_config(overrides=overrides)).run_dir)
    market = prepare_for_run(run)
    assert "drawdown_250" in market.feature_names
    test = market.splits["test"]
    signals = compute_signals(run, "synthetic", start=test.start)
    backtest = run_backtest(
        run.model, market, test, run.config.env, "SYN0", run.config.evaluation.warmup_bars
    )
    paired = signals.loc[pd.DatetimeIndex(backtest["decision_timestamp"])]
    np.testing.assert_array_equal(paired["position"].to_numpy(), backtest["position"].to_numpy())
    scale = position_scales(market, run.config.env.sizing)
    rows = market.instruments[0].timestamps.get_indexer(backtest["decision_timestamp"])
    action = np.clip(backtest["action"].to_numpy(), -1.0, 1.0)
    expected = np.clip(action * scale[rows], -1.0, 1.0)
    np.testing.assert_allclose(backtest["position"].to_numpy(), expected, rtol=1e-6)
