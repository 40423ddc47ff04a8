import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from conftest import make_bars
from tradingbot.config import DataConfig, EnvConfig, FeatureConfig, SplitConfig
from tradingbot.data.market import load_prepared, prepare_market
from tradingbot.data.sources import MarketData
from tradingbot.data.splits import DateRange
from tradingbot.env import ENV_ID, MarketEnv, MarketVecEnv

OPEN = [100, 100, 101, 103, 102, 105, 104, 104, 106, 107]
CLOSE = [100, 101, 102, 104, 103, 104, 106, 105, 107, 108]


def hand_market(cfg: DataConfig):
    bars = make_bars(OPEN, CLOSE)
    market = prepare_market(MarketData("hand", {"X": bars}, "test"), cfg)
    return market, DateRange(bars.index[0], bars.index[-1])


def run_actions(short_data_cfg, fill, commission, slippage, actions):
    market, span = hand_market(short_data_cfg)
    cfg = EnvConfig(
        fill=fill, commission_bps=commission, slippage_bps=slippage, episode_length=None
    )
    env = MarketEnv(market, span, cfg)
    env.reset(seed=0)
    assert env.sim.row[0] == 2  # first row with every feature defined (two-bar lookback)
    equity, rewards = [], []
    for a in actions:
        _, r, term, _, info = env.step(np.array([a], dtype=np.float32))
        equity.append(info["equity"])
        rewards.append(r)
        assert not term
    return np.array(equity), np.array(rewards)


ACTIONS = [1.0, 1.0, -0.5, 0.0]


def test_equity_next_open_with_costs(short_data_cfg):
    # Commission 10 bps + slippage 5 bps = 0.0015 of traded notional.
    equity, rewards = run_actions(short_data_cfg, "next_open", 10.0, 5.0, ACTIONS)
    e1 = (1.0 - 0.0015 * 1.0) * (104 / 103)  # buy 1 at open 103, hold to close 104
    e2 = e1 * (102 / 104) * (103 / 102)  # gap 104->102 then 102->103, no trade
    at_fill = e2 * (105 / 103)
    e3 = (at_fill - 0.0015 * 1.5 * at_fill) * (1 - 0.5 * (104 / 105 - 1))  # flip to -0.5
    at_fill = e3 * (1 - 0.5 * (104 / 104 - 1))
    e4 = at_fill - 0.0015 * 0.5 * at_fill  # close the short at open 104
    np.testing.assert_allclose(equity, [e1, e2, e3, e4], rtol=1e-12)
    np.testing.assert_allclose(rewards.cumsum(), np.log(equity), rtol=1e-6)


def test_equity_next_open_without_costs(short_data_cfg):
    equity, _ = run_actions(short_data_cfg, "next_open", 0.0, 0.0, ACTIONS)
    e1 = 104 / 103
    e2 = e1 * (103 / 104)
    e3 = e2 * (105 / 103) * (1 - 0.5 * (104 / 105 - 1))
    np.testing.assert_allclose(equity, [e1, e2, e3, e3], rtol=1e-12)


def test_equity_next_close_with_costs(short_data_cfg):
    equity, _ = run_actions(short_data_cfg, "next_close", 10.0, 5.0, ACTIONS)
    e1 = 1.0 - 0.0015  # flat from close 102 to close 104, buy 1 at close 104
    e2 = e1 * (103 / 104)
    at_fill = e2 * (104 / 103)
    e3 = at_fill - 0.0015 * 1.5 * at_fill
    at_fill = e3 * (1 - 0.5 * (106 / 104 - 1))
    e4 = at_fill - 0.0015 * 0.5 * at_fill
    np.testing.assert_allclose(equity, [e1, e2, e3, e4], rtol=1e-12)


def test_equity_next_close_without_costs(short_data_cfg):
    equity, _ = run_actions(short_data_cfg, "next_close", 0.0, 0.0, ACTIONS)
    e2 = 103 / 104
    e3 = e2 * (104 / 103)
    e4 = e3 * (1 - 0.5 * (106 / 104 - 1))
    np.testing.assert_allclose(equity, [1.0, e2, e3, e4], rtol=1e-12)


def test_episode_truncates_at_data_end(short_data_cfg):
    market, span = hand_market(short_data_cfg)
    env = MarketEnv(market, span, EnvConfig(episode_length=None))
    env.reset(seed=0)
    steps, trunc = 0, False
    while not trunc:
        _, _, term, trunc, _ = env.step(np.array([0.0], dtype=np.float32))
        steps += 1
        assert not term
    assert steps == 7 and env.sim.row[0] == 9  # rows 2..9: seven fills, the last at row 9


def test_ruin_terminates(short_data_cfg):
    bars = make_bars([100] * 6 + [100, 40, 40, 40], [100] * 6 + [100, 40, 40, 40])
    market = prepare_market(MarketData("crash", {"X": bars}, "t"), short_data_cfg)
    env = MarketEnv(
        market,
        DateRange(bars.index[0], bars.index[-1]),
        EnvConfig(episode_length=None, ruin_floor=0.5),
    )
    env.reset(seed=0)
    terms = [env.step(np.array([1.0], dtype=np.float32))[2] for _ in range(5)]
    assert terms == [False, False, False, False, True]  # the 60% gap at row 7 ruins a long


@pytest.mark.parametrize(
    ("action", "long_only", "expected"),
    [("discrete", False, [-1.0, 0.0, 1.0]), ("discrete", True, [0.0, 1.0])],
)
def test_discrete_actions_map_to_positions(short_data_cfg, action, long_only, expected):
    market, span = hand_market(short_data_cfg)
    env = MarketEnv(
        market, span, EnvConfig(action=action, long_only=long_only, episode_length=None)
    )
    assert env.action_space.n == len(expected)
    for a, pos in enumerate(expected):
        env.reset(seed=0)
        assert env.step(a)[4]["position"] == pos


def test_long_only_continuous_range(short_data_cfg):
    market, span = hand_market(short_data_cfg)
    env = MarketEnv(market, span, EnvConfig(long_only=True))
    assert env.action_space.low[0] == 0.0 and env.action_space.high[0] == 1.0
    env.reset(seed=0)
    assert env.step(np.array([-0.7], dtype=np.float32))[4]["position"] == 0.0


@pytest.fixture(scope="module")
def synthetic_market():
    return load_prepared(DataConfig(source="synthetic"), window=3)


@pytest.mark.parametrize(
    "cfg",
    [
        EnvConfig(),
        EnvConfig(action="discrete"),
        EnvConfig(long_only=True, window=3, fill="next_close"),
    ],
)
def test_env_checkers(synthetic_market, cfg):
    gym_check_env(MarketEnv(synthetic_market, "train", cfg), skip_render_check=True)
    sb3_check_env(MarketEnv(synthetic_market, "train", cfg), warn=True)


def test_registered_with_gymnasium():
    env = gym.make(ENV_ID)
    obs, _ = env.reset(seed=3)
    assert env.observation_space.contains(obs)


def test_vec_env_equals_single_envs(synthetic_market):
    n, seed = 4, 11
    cfg = EnvConfig(n_envs=n, episode_length=40, window=3)
    vec = MarketVecEnv(synthetic_market, "train", cfg, seed=seed)
    singles = [MarketEnv(synthetic_market, "train", cfg) for _ in range(n)]
    obs = vec.reset()
    for i, env in enumerate(singles):
        np.testing.assert_array_equal(obs[i], env.reset(seed=seed + i)[0])
    rng = np.random.default_rng(0)
    ends = 0
    for _ in range(200):
        actions = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
        obs, rewards, dones, infos = vec.step(actions)
        for i, env in enumerate(singles):
            o, r, term, trunc, info = env.step(actions[i])
            assert rewards[i] == np.float32(r)
            assert dones[i] == (term or trunc)
            assert infos[i]["equity"] == info["equity"] and infos[i]["cost"] == info["cost"]
            if term or trunc:
                ends += 1
                np.testing.assert_array_equal(infos[i]["terminal_observation"], o)
                assert infos[i]["TimeLimit.truncated"] == (trunc and not term)
                o, _ = env.reset()
            np.testing.assert_array_equal(obs[i], o)
    assert ends >= n * 4  # several auto-resets were compared


def test_features_are_shared_not_copied(synthetic_market):
    small = MarketVecEnv(synthetic_market, "train", EnvConfig(n_envs=2))
    large = MarketVecEnv(synthetic_market, "train", EnvConfig(n_envs=512))
    assert small.sim.market.features is large.sim.market.features is synthetic_market.features
    per_env_state = sum(a.nbytes for a in (large.sim.row, large.sim.position, large.sim.equity))
    assert per_env_state < synthetic_market.features.nbytes


def test_split_boundaries_respected(synthetic_market):
    env = MarketVecEnv(
        synthetic_market, "validation", EnvConfig(n_envs=16, episode_length=None), seed=0
    )
    env.reset()
    inst = synthetic_market.instruments[0]
    from tradingbot.data.splits import rows_in

    lo, hi = rows_in(inst.timestamps, synthetic_market.splits["validation"])
    for _ in range(hi - lo + 5):
        env.step(np.zeros((16, 1), dtype=np.float32))
        assert ((env.sim.row >= lo) & (env.sim.row < hi)).all()


@pytest.mark.parametrize("fill", ["next_open", "next_close"])
def test_cash_rate_on_the_uninvested_part(short_data_cfg, fill):
    # 5% a year on daily weekday bars (252 a year): r = 1.05 ** (1 / 252) - 1 per bar, earned on
    # the equity at the step's start times 1 - |position held into the step|.
    market, span = hand_market(short_data_cfg)
    r = 1.05 ** (1 / 252) - 1
    cfg = EnvConfig(fill=fill, cash_rate=0.05, commission_bps=0.0, slippage_bps=0.0)
    env = MarketEnv(market, span, cfg.model_copy(update={"episode_length": None}))
    env.reset(seed=0)
    equity = [info["equity"] for info in (env.step(np.array([a]))[4] for a in ACTIONS)]
    plain, _ = run_actions(short_data_cfg, fill, 0.0, 0.0, ACTIONS)
    # Positions held into each step: 0 (flat start), 1, 1, -0.5 -> uninvested 1, 0, 0, 0.5.
    e1 = plain[0] + 1.0 * r
    growth = plain[1:] / plain[:-1]
    e2 = e1 * growth[0]
    e3 = e2 * growth[1]
    e4 = e3 * growth[2] + e3 * 0.5 * r
    np.testing.assert_allclose(equity, [e1, e2, e3, e4], rtol=1e-12)


def test_cash_rate_flat_earns_the_annual_rate_over_a_year():
    # Flat for 252 daily bars at 3% a year: exactly 1.03; the same for every policy's cash.
    n = 300
    bars = make_bars([100.0] * n, [100.0 + (i % 3) for i in range(n)])
    cfg_data = DataConfig(
        features=FeatureConfig(return_windows=[1], volatility_window=2, volume_window=2, vix="off"),
        split=SplitConfig(train_fraction=0.5, validation_fraction=0.1),
    )
    market = prepare_market(MarketData("flat", {"X": bars}, "t"), cfg_data)
    env = MarketEnv(market, DateRange(bars.index[0], bars.index[-1]), EnvConfig(cash_rate=0.03))
    env.reset(seed=0)
    for _ in range(252):
        *_, info = env.step(np.array([0.0], dtype=np.float32))
    assert info["equity"] == pytest.approx(1.03, rel=1e-12)
