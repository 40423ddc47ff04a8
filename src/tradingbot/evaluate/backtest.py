"""Backtests: a policy run deterministically through the same simulator that training used.

One backtest covers one instrument over a whole split (or date range): the episode starts at
the split's first usable bar and runs until its data end (or ruin), with the same fills and
costs as in training. Baselines are policies too, so they see the same bars and costs.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import pandas as pd
from gymnasium import spaces

from tradingbot.config import EnvConfig
from tradingbot.data.market import PreparedMarket
from tradingbot.data.splits import DateRange
from tradingbot.env.vec_env import MarketVecEnv
from tradingbot.evaluate.metrics import performance_metrics, periods_per_year
from tradingbot.evaluate.warmup import warm_up

BAR_COLUMNS = (
    "instrument",
    "action",
    "position",
    "trade",
    "cost",
    "equity",
    "reward",
    "return",
    "close",
    "decision_timestamp",
    "fill_timestamp",
)


class Predictor(Protocol):
    """Anything with SB3's ``predict`` (DistributionalPPO, RecurrentPPO, PPO, baselines)."""

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]: ...


def discrete_positions(action_space: spaces.Discrete) -> list[float]:
    """The target positions a discrete action space's actions stand for, in action order."""
    return [0.0, 1.0] if action_space.n == 2 else [-1.0, 0.0, 1.0]


def position_action(position: float, action_space: spaces.Space) -> np.ndarray:
    """The action (batch of one) that asks for the target ``position`` in ``action_space``."""
    if isinstance(action_space, spaces.Discrete):
        choices = discrete_positions(action_space)
        if position not in choices:
            raise ValueError(f"position {position} is not one of the discrete choices {choices}")
        return np.array([choices.index(position)])
    return np.array([[position]], dtype=np.float32)


class MemorylessPolicy:
    """A :class:`Predictor` without recurrent state: :meth:`predict` returns the
    :meth:`actions` of the observations and passes the state through."""

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        return self.actions(observation), state

    def actions(self, observation: np.ndarray) -> np.ndarray:
        """The actions for a batch of observations (one per row)."""
        raise NotImplementedError


class ConstantPolicy(MemorylessPolicy):
    """Always asks for the same target position (buy-and-hold: 1, flat: 0).

    Parameters
    ----------
    position: the target position in [-1, 1].
    action_space: the environment's action space, to express the position as an action.
    """

    def __init__(self, position: float, action_space: spaces.Space) -> None:
        self.action = position_action(position, action_space)

    def actions(self, observation: np.ndarray) -> np.ndarray:
        """The constant action, once per observation."""
        return np.repeat(self.action, len(observation), axis=0)


class SchedulePolicy(MemorylessPolicy):
    """Asks for a target position given per bar of the instrument (the rule baselines).

    :func:`run_backtest` sets ``row`` to the instrument's row of the bar just closed before each
    decision, so ``positions[row]`` must use the bars up to that row only.

    Parameters
    ----------
    positions: target position per bar of the instrument (its own rows, oldest first).
    action_space: the environment's action space; a discrete one needs positions among its
        choices.
    """

    def __init__(self, positions: np.ndarray, action_space: spaces.Space) -> None:
        self.positions = np.asarray(positions, dtype=float)
        self.action_space = action_space
        self.row = 0
        if isinstance(action_space, spaces.Discrete):
            choices = discrete_positions(action_space)
            unknown = sorted(set(np.unique(self.positions)) - set(choices))
            if unknown:
                raise ValueError(
                    f"positions {unknown[:3]} are not among the discrete choices {choices}"
                )

    def actions(self, observation: np.ndarray) -> np.ndarray:
        """The action of the current row's position, once per observation."""
        action = position_action(self.positions[self.row], self.action_space)
        return np.repeat(action, len(observation), axis=0)


def run_backtest(
    policy: Predictor,
    market: PreparedMarket,
    split: str | DateRange,
    env_cfg: EnvConfig,
    instrument: str,
    warmup_bars: int = 0,
) -> pd.DataFrame:
    """Run ``policy`` deterministically over ``split`` of one instrument.

    Returns one row per filled bar, indexed by that bar's timestamp: the action, the position
    held over the bar, the trade at its fill, cost, equity at its close, reward (log growth)
    and simple return after costs, the close price, and the bar the decision was made at
    (``decision_timestamp``) and filled at (``fill_timestamp``, the index).

    A recurrent policy first runs over the ``warmup_bars`` bars before the split's first
    usable bar (:mod:`tradingbot.evaluate.warmup`, as ``signals`` does); the account starts
    flat at that first bar either way.
    """
    cfg = env_cfg.model_copy(update={"episode_length": None, "n_envs": 1})
    env = MarketVecEnv(market, split, cfg, n_envs=1, seed=0, instruments=[instrument])
    inst = next(i for i in market.instruments if i.name == instrument)
    obs = env.reset()
    state, episode_start = warm_up(
        policy, market, inst, int(env.sim.row[0]) - inst.offset, warmup_bars, cfg
    )
    rows: list[int] = []
    records: list[tuple[float, ...]] = []
    while True:
        if isinstance(policy, SchedulePolicy):
            policy.row = int(env.sim.row[0]) - inst.offset  # the bar just closed
        action, state = policy.predict(
            obs, state=state, episode_start=episode_start, deterministic=True
        )
        rows.append(int(env.sim.row[0]) + 1 - inst.offset)  # the bar this decision is filled in
        obs, reward, done, infos = env.step(action)
        info = infos[0]
        records.append(
            (
                float(np.asarray(action).reshape(-1)[0]),
                info["position"],
                info["trade"],
                info["cost"],
                info["equity"],
                float(reward[0]),
            )
        )
        episode_start = done
        if done[0]:
            break
    frame = pd.DataFrame(
        records, columns=["action", "position", "trade", "cost", "equity", "reward"]
    )
    frame["reward"] = np.log(
        frame["equity"] / frame["equity"].shift(1, fill_value=cfg.initial_equity)
    )
    frame["return"] = np.expm1(frame["reward"])
    frame["close"] = market.close[inst.offset + np.asarray(rows)]
    frame.insert(0, "instrument", instrument)
    frame["decision_timestamp"] = inst.timestamps[np.asarray(rows) - 1]
    frame["fill_timestamp"] = inst.timestamps[rows]
    frame.index = inst.timestamps[rows]
    frame.index.name = "timestamp"
    return frame[list(BAR_COLUMNS)]


def backtest_metrics(bars: pd.DataFrame) -> dict[str, float]:
    """Metrics of one backtest's bars (comparisons with baselines:
    :mod:`tradingbot.evaluate.comparison`)."""
    return performance_metrics(
        bars["return"].to_numpy(),
        bars["position"].to_numpy(),
        bars["trade"].to_numpy(),
        annualization=periods_per_year(pd.DatetimeIndex(bars.index)),
    )
