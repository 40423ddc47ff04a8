import numpy as np
import pytest

from conftest import make_bars
from tradingbot.config import DataConfig, EnvConfig
from tradingbot.data.market import load_prepared, prepare_market
from tradingbot.data.sources import MarketData
from tradingbot.data.splits import DateRange
from tradingbot.env import MarketVecEnv
from tradingbot.evaluate.backtest import ConstantPolicy, backtest_metrics, run_backtest

OPEN = [100, 100, 101, 103, 102, 105, 104, 104, 106, 107]
CLOSE = [100, 101, 102, 104, 103, 104, 106, 105, 107, 108]


@pytest.mark.parametrize("fill", ["next_open", "next_close"])
def test_buy_and_hold_is_price_ratio_minus_entry_cost(short_data_cfg, fill):
    bars = make_bars(OPEN, CLOSE)
    market = prepare_market(MarketData("hand", {"X": bars}, "t"), short_data_cfg)
    cfg = EnvConfig(fill=fill, commission_bps=10, slippage_bps=5)
    span = DateRange(bars.index[0], bars.index[-1])
    policy = ConstantPolicy(1.0, MarketVecEnv(market, span, cfg).action_space)
    result = run_backtest(policy, market, span, cfg, "X")
    # First decision at the close of row 2 (end of the warm-up), filled at row 3.
    entry = OPEN[3] if fill == "next_open" else CLOSE[3]
    expected = (1 - 0.0015) * CLOSE[-1] / entry
    assert result["equity"].iloc[-1] == pytest.approx(expected, rel=1e-12)
    assert result.index[0] == bars.index[3] and result.index[-1] == bars.index[-1]
    assert result["cost"].iloc[0] == pytest.approx(0.0015) and (result["cost"].iloc[1:] == 0).all()
    np.testing.assert_allclose(result["close"], CLOSE[3:])


def test_flat_keeps_equity(short_data_cfg):
    bars = make_bars(OPEN, CLOSE)
    market = prepare_market(MarketData("hand", {"X": bars}, "t"), short_data_cfg)
    span = DateRange(bars.index[0], bars.index[-1])
    cfg = EnvConfig()
    result = run_backtest(
        ConstantPolicy(0.0, MarketVecEnv(market, span, cfg).action_space), market, span, cfg, "X"
    )
    assert (result["equity"] == 1.0).all() and (result["return"] == 0).all()


class RandomPolicy:
    """Seeded random positions, to replay through the env by hand."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.actions = []

    def predict(self, observation, state=None, episode_start=None, deterministic=False):
        a = self.rng.uniform(-1, 1, (len(observation), 1)).astype(np.float32)
        self.actions.append(a)
        return a, state


def test_backtest_rewards_equal_env_rewards():
    market = load_prepared(DataConfig(source="synthetic"))
    cfg = EnvConfig(episode_length=None)
    policy = RandomPolicy(0)
    result = run_backtest(policy, market, "test", cfg, "SYN0")
    env = MarketVecEnv(market, "test", cfg, n_envs=1, seed=123)
    env.reset()
    rewards = [env.step(a)[1][0] for a in policy.actions]
    np.testing.assert_allclose(result["reward"], rewards, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.exp(result["reward"].cumsum()), result["equity"], rtol=1e-10)
    assert result.index.min() >= market.splits["test"].start


def test_backtest_metrics_against_buy_and_hold():
    market = load_prepared(DataConfig(source="sp500"))
    cfg = EnvConfig()
    space = MarketVecEnv(market, "test", cfg).action_space
    hold = run_backtest(ConstantPolicy(1.0, space), market, "test", cfg, "SPX")
    m = backtest_metrics(hold)
    assert m["exposure"] == 1.0
    assert "psr_vs_benchmark" not in m  # replaced by the bootstrap difference (statistics.py)
    bars = market.data.bars["SPX"]
    first = bars.index.get_loc(hold.index[0])
    ratio = bars["close"].iloc[-1] / bars["open"].iloc[first]
    assert m["total_return"] == pytest.approx((1 - 0.0003) * ratio - 1, rel=1e-9)


def test_cash_rate_reaches_every_policy(short_data_cfg):
    # Flat earns the cash rate on all its equity every bar; fully invested earns none of it.
    bars = make_bars(OPEN, CLOSE)
    market = prepare_market(MarketData("hand", {"X": bars}, "t"), short_data_cfg)
    span = DateRange(bars.index[0], bars.index[-1])
    cfg = EnvConfig(cash_rate=0.05, commission_bps=0.0, slippage_bps=0.0)
    space = MarketVecEnv(market, span, cfg).action_space
    flat = run_backtest(ConstantPolicy(0.0, space), market, span, cfg, "X")
    r = 1.05 ** (1 / 252) - 1
    np.testing.assert_allclose(flat["equity"], (1 + r) ** np.arange(1, 8), rtol=1e-12)
    hold = run_backtest(ConstantPolicy(1.0, space), market, span, cfg, "X")
    # The first step starts flat (its cash, 1, earns r) and buys at the open of row 3; then
    # it is fully invested: close-to-close growth only.
    first = CLOSE[3] / OPEN[3] + r
    assert hold["equity"].iloc[-1] == pytest.approx(first * CLOSE[-1] / CLOSE[3], rel=1e-12)
