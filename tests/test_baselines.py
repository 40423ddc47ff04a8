"""Baselines: positions and equity against a hand-worked 14-bar example."""

import numpy as np
import pytest

from conftest import make_bars
from tradingbot.config import BaselineConfig, EnvConfig
from tradingbot.data.market import prepare_market
from tradingbot.data.sources import MarketData
from tradingbot.data.splits import DateRange
from tradingbot.evaluate.baselines import (
    BASELINE_NAMES,
    baseline_policies,
    momentum_positions,
    run_baselines,
    trend_positions,
    volatility_target_positions,
)

OPEN = [100, 101, 102, 103, 105, 104, 102, 100, 100, 103, 106, 105, 103, 105]
CLOSE = [100, 102, 101, 104, 106, 103, 101, 99, 102, 105, 107, 104, 103, 106]
COST = 3e-4  # the default 1 bp commission + 2 bp slippage
SMALL = BaselineConfig(
    target_volatility=0.10,
    volatility_window=3,
    trend_window=3,
    momentum_lookback=4,
    momentum_skip=1,
)
# By hand. Trend (3-bar average of closes up to t): t=2: 101 vs mean 101 (tie: out);
# t=3: 104 > 102.33; t=4: 106 > 103.67; t=5: 103 < 104.33; t=6: 101 < 103.33; t=7: 99 < 101;
# t=8: 102 > 100.67; t=9: 105 > 102; t=10: 107 > 104.67; t=11: 104 < 105.33;
# t=12: 103 < 104.67; t=13: 106 > 104.33.
TREND_LONG_SHORT = [0, 0, 0, 1, 1, -1, -1, -1, 1, 1, 1, -1, -1, 1]
TREND_LONG_ONLY = [0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 1]
# Momentum 4-1: sign of C[t-1] / C[t-4] - 1: t=4: 104/100; t=5: 106/102; t=6: 103/101 (+);
# t=7: 101/104; t=8: 99/106; t=9: 102/103 (-); t=10: 105/101; t=11: 107/99; t=12: 104/102 (+);
# t=13: 103/105 (-).
MOMENTUM_LONG_SHORT = [0, 0, 0, 0, 1, 1, 1, -1, -1, -1, 1, 1, 1, -1]
MOMENTUM_LONG_ONLY = [0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0]


def hand_vol_target(t: int) -> float:
    """min(1, 0.10 / (sample sd of the 3 log returns ending at t * sqrt(252)))."""
    if t < 3:
        return 0.0
    r = [np.log(CLOSE[i] / CLOSE[i - 1]) for i in (t - 2, t - 1, t)]
    mean = sum(r) / 3
    sd = np.sqrt(sum((x - mean) ** 2 for x in r) / 2)
    return min(1.0, 0.10 / (sd * np.sqrt(252)))


def test_rule_positions_by_hand():
    np.testing.assert_array_equal(trend_positions(CLOSE, 3, long_only=False), TREND_LONG_SHORT)
    np.testing.assert_array_equal(trend_positions(CLOSE, 3, long_only=True), TREND_LONG_ONLY)
    np.testing.assert_array_equal(momentum_positions(CLOSE, 4, 1, False), MOMENTUM_LONG_SHORT)
    np.testing.assert_array_equal(momentum_positions(CLOSE, 4, 1, True), MOMENTUM_LONG_ONLY)
    vol = volatility_target_positions(CLOSE, 252, 0.10, 3, 1.0)
    np.testing.assert_allclose(vol, [hand_vol_target(t) for t in range(14)], rtol=1e-12)
    # t=3: returns 0.019803, -0.009852, 0.029270 (mean 0.013074): sample sd 0.020411,
    # annualized 0.32401 -> 0.10 / 0.32401
    assert vol[3] == pytest.approx(0.3086, abs=5e-4)
    # t=7: returns -0.0287, -0.0196, -0.0200: sd about 0.005, annualized 0.08: capped at 1
    assert vol[7] == 1.0 and 0 < vol[3:].min()


def test_volatility_target_is_capped():
    flat_prices = [100.0] * 6 + [100.5, 100.0, 100.5]
    vol = volatility_target_positions(flat_prices, 252, 0.10, 3, 0.8)
    np.testing.assert_array_equal(vol[:3], 0.0)  # not enough history
    np.testing.assert_array_equal(vol[3:6], 0.8)  # zero volatility: the cap


def test_rules_are_causal():
    """Changing the closes after t leaves every position up to t unchanged."""
    changed = [*CLOSE[:8], 50, 200, 60, 300, 10, 500]
    for rule in (
        lambda c: trend_positions(c, 3, False),
        lambda c: momentum_positions(c, 4, 1, False),
        lambda c: volatility_target_positions(c, 252, 0.1, 3, 1.0),
    ):
        np.testing.assert_array_equal(rule(CLOSE)[:8], rule(changed)[:8])


def hand_equity(targets: list[float], first_decision: int) -> tuple[list[float], list[float]]:
    """Positions held and equity per filled bar, from the simulator's documented next-open
    formula: e1 = e (1 + p (O/C_prev - 1)); e' = (e1 - c |q - p| e1)(1 + q (C/O - 1))."""
    equity, position, held, path = 1.0, 0.0, [], []
    for bar in range(first_decision + 1, len(CLOSE)):
        target = float(targets[bar - 1])  # decided at the previous close
        at_fill = equity * (1 + position * (OPEN[bar] / CLOSE[bar - 1] - 1))
        equity = (at_fill - COST * abs(target - position) * at_fill) * (
            1 + target * (CLOSE[bar] / OPEN[bar] - 1)
        )
        position = target
        held.append(target)
        path.append(equity)
    return held, path


@pytest.fixture
def hand_market(short_data_cfg):
    bars = make_bars(OPEN, CLOSE)
    return bars, prepare_market(MarketData("hand", {"X": bars}, "t"), short_data_cfg)


@pytest.mark.parametrize("long_only", [False, True])
def test_baseline_backtests_by_hand(hand_market, long_only):
    bars, market = hand_market
    span = DateRange(bars.index[0], bars.index[-1])
    env = EnvConfig(long_only=long_only)
    results = run_baselines(market, span, env, "X", SMALL, agent_exposure=0.37)
    assert list(results) == list(BASELINE_NAMES)
    trend = TREND_LONG_ONLY if long_only else TREND_LONG_SHORT
    momentum = MOMENTUM_LONG_ONLY if long_only else MOMENTUM_LONG_SHORT
    expected = {
        "buy_and_hold": [1.0] * 14,
        "flat": [0.0] * 14,
        "risk_matched": [0.37] * 14,
        "vol_target": [hand_vol_target(t) for t in range(14)],
        "trend": trend,
        "momentum": momentum,
    }
    for name, targets in expected.items():
        held, equity = hand_equity(targets, first_decision=2)  # features warm up over 2 bars
        frame = results[name]
        assert frame.index[0] == bars.index[3], name
        np.testing.assert_allclose(frame["position"], held, rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(frame["equity"], equity, rtol=1e-6, err_msg=name)


def test_rules_are_invested_from_the_first_test_bar(hand_market):
    """A split late in the data: the rules use the bars before it, so on its first bar they
    already hold the position their history implies (not a cold, flat start)."""
    bars, market = hand_market
    span = DateRange(bars.index[8], bars.index[-1])  # decisions from the close of bar 8
    results = run_baselines(market, span, EnvConfig(), "X", SMALL)
    assert results["trend"]["position"].iloc[0] == TREND_LONG_SHORT[8] == 1
    assert results["momentum"]["position"].iloc[0] == MOMENTUM_LONG_SHORT[8] == -1
    _, equity = hand_equity(TREND_LONG_SHORT, first_decision=8)
    np.testing.assert_allclose(results["trend"]["equity"], equity, rtol=1e-12)


def test_discrete_env_leaves_out_fractional_baselines(hand_market):
    _, market = hand_market
    policies = baseline_policies(market, "X", EnvConfig(action="discrete"), SMALL, 0.37)
    assert list(policies) == ["buy_and_hold", "flat", "trend", "momentum"]


def test_unknown_instrument_is_named(hand_market):
    _, market = hand_market
    with pytest.raises(ValueError, match="'Y'"):
        baseline_policies(market, "Y", EnvConfig(), SMALL)
