"""Seed ensembles with scripted members: positions (not actions) are averaged, each member sees
its own position, and the scored run starts flat for every member after the warm-up."""

import numpy as np
import pytest
import torch

from conftest import make_bars
from tradingbot.config import DataConfig, EnvConfig
from tradingbot.data.market import load_prepared, prepare_market
from tradingbot.data.sources import MarketData
from tradingbot.data.splits import DateRange
from tradingbot.evaluate.backtest import run_backtest
from tradingbot.evaluate.ensemble import EnsemblePolicy, mixture_mean_std, position_env_config

OPEN = [100, 100, 101, 103, 102, 105, 104, 104, 106, 107]
CLOSE = [100, 101, 102, 104, 103, 104, 106, 105, 107, 108]


class ConstantAction:
    """A member that always asks for the same raw action (a float, or a discrete index)."""

    def __init__(self, action, discrete=False):
        self.action, self.discrete = action, discrete

    def predict(self, observation, state=None, episode_start=None, deterministic=False):
        n = len(observation)
        if self.discrete:
            return np.full(n, self.action, dtype=np.int64), state
        return np.full((n, 1), self.action, dtype=np.float32), state


class Alternator:
    """A member whose action is 1 minus the position its observation carries: alone, it goes
    1, 0, 1, 0, ... from a flat start. Records the positions it was shown."""

    def __init__(self):
        self.seen = []

    def predict(self, observation, state=None, episode_start=None, deterministic=False):
        self.seen.append(float(observation[0, -1]))
        return (1.0 - observation[:, -1:]).astype(np.float32), state


def hand_market(short_data_cfg):
    bars = make_bars(OPEN, CLOSE)
    market = prepare_market(MarketData("hand", {"X": bars}, "t"), short_data_cfg)
    return market, DateRange(bars.index[0], bars.index[-1])


def test_clipped_actions_are_averaged_as_positions(short_data_cfg):
    """Long-only members asking 1.5 (clipped to 1) and 0.5 hold 0.75 together; the mean of
    their actions, 1.0, would hold 1. Costs are paid on the ensemble's own trade."""
    market, span = hand_market(short_data_cfg)
    cfg = EnvConfig(long_only=True, commission_bps=10, slippage_bps=5)
    ensemble = EnsemblePolicy([ConstantAction(1.5), ConstantAction(0.5)], cfg)
    bars = run_backtest(ensemble, market, span, ensemble.env_config, "X")
    np.testing.assert_array_equal(bars["position"], 0.75)
    assert bars["cost"].iloc[0] == pytest.approx(0.0015 * 0.75, rel=1e-12)
    # next_open: held from the open of row 3 to the last close at 0.75 of equity.
    growth = (1 - 0.0015 * 0.75) * (1 + 0.75 * (CLOSE[3] / OPEN[3] - 1))
    for t in range(4, len(CLOSE)):
        growth *= (1 + 0.75 * (OPEN[t] / CLOSE[t - 1] - 1)) * (1 + 0.75 * (CLOSE[t] / OPEN[t] - 1))
    assert bars["equity"].iloc[-1] == pytest.approx(growth, rel=1e-12)


@pytest.mark.parametrize(
    ("long_only", "indices", "expected"),
    [(False, (2, 1), 0.5), (False, (0, 2, 2), 1 / 3), (True, (1, 0, 0, 0), 0.25)],
)
def test_discrete_members_hold_a_fractional_mean(short_data_cfg, long_only, indices, expected):
    """Discrete choices {-1, 0, 1} (or {0, 1}) average to a fraction: long + flat is 0.5,
    which no discrete action holds (the mean index 1.5 would be read as flat)."""
    market, span = hand_market(short_data_cfg)
    cfg = EnvConfig(action="discrete", long_only=long_only)
    members = [ConstantAction(i, discrete=True) for i in indices]
    ensemble = EnsemblePolicy(members, cfg)
    bars = run_backtest(ensemble, market, span, ensemble.env_config, "X")
    np.testing.assert_allclose(bars["position"], expected, rtol=0, atol=1e-15)


def test_each_member_sees_its_own_position_and_starts_flat_after_warmup():
    """An alternating member beside a constant 0.2: alone it holds 1, 0, 1, ... from the first
    scored bar, whatever its warm-up left (an odd warm-up ends on 1), so the ensemble holds
    0.6, 0.1, 0.6, ... Fed the ensemble's position instead, it would hold 1 - 0.6 = 0.4 next;
    without the flat start it would begin at 0."""
    market = load_prepared(DataConfig(source="synthetic"))
    cfg = EnvConfig(episode_length=None)
    alone = run_backtest(Alternator(), market, "test", cfg, "SYN0", warmup_bars=5)
    np.testing.assert_array_equal(alone["position"].iloc[:4], [1.0, 0.0, 1.0, 0.0])
    alternator = Alternator()
    ensemble = EnsemblePolicy([alternator, ConstantAction(0.2)], cfg)
    bars = run_backtest(ensemble, market, "test", ensemble.env_config, "SYN0", warmup_bars=5)
    assert alternator.seen[:6] == [0.0, 1.0, 0.0, 1.0, 0.0, 0.0]  # warm-up, then flat
    expected = np.where(np.arange(len(bars)) % 2 == 0, 0.6, 0.1)
    np.testing.assert_allclose(bars["position"], expected, rtol=0, atol=1e-7)
    np.testing.assert_allclose(
        bars["position"], (alone["position"] + np.float32(0.2)) / 2, rtol=0, atol=0
    )


def test_episode_start_resets_member_positions():
    cfg = EnvConfig()
    alternator = Alternator()
    ensemble = EnsemblePolicy([alternator], cfg)
    obs = np.zeros((1, 5), dtype=np.float32)
    _, state = ensemble.predict(obs, None, np.ones(1, dtype=bool))
    _, state = ensemble.predict(obs, state, np.zeros(1, dtype=bool))
    _, state = ensemble.predict(obs, state, np.ones(1, dtype=bool))
    assert alternator.seen == [0.0, 1.0, 0.0]


def test_mixture_mean_and_std_by_hand():
    """N(0, 1) and N(2, 1) mixed equally: mean 1, variance 1 + 1 = 2."""
    means = torch.tensor([[0.0], [2.0]])
    stds = torch.tensor([[1.0], [1.0]])
    mean, std = mixture_mean_std(means, stds)
    assert float(mean) == pytest.approx(1.0)
    assert float(std) == pytest.approx(np.sqrt(2.0))
    # Identical members: the mixture is the member.
    mean, std = mixture_mean_std(torch.tensor([[0.3], [0.3]]), torch.tensor([[0.5], [0.5]]))
    assert (float(mean), float(std)) == pytest.approx((0.3, 0.5))


def test_position_env_keeps_market_and_costs():
    cfg = EnvConfig(action="discrete", long_only=True, commission_bps=3, fill="next_close")
    env = position_env_config(cfg)
    assert env.action == "continuous"
    assert env.model_dump(exclude={"action"}) == cfg.model_dump(exclude={"action"})


def test_ensemble_refuses_bad_members():
    with pytest.raises(ValueError, match="at least one member"):
        EnsemblePolicy([], EnvConfig())
    with pytest.raises(ValueError, match="2 members but 1 seeds"):
        EnsemblePolicy([ConstantAction(0.1), ConstantAction(0.2)], EnvConfig(), seeds=[0])


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"env": {"sizing": {"mode": "vol_scaled"}}}, "env.sizing.mode"),
        ({"portfolio": {}}, "portfolio run"),
    ],
)
def test_ensemble_refuses_what_it_cannot_replay(extra: dict, words: str) -> None:
    from tradingbot.config import ConfigError
    from tradingbot.config_loading import validate_config

    raw = {"run": {"seeds": [0, 1]}, **extra}
    if "portfolio" in extra:
        raw["data"] = {"source": "sp500_universe"}
    with pytest.raises(ConfigError, match=words):
        validate_config(raw, "test")
