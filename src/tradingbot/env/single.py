"""A single-environment Gymnasium view of the array simulator (same code, N = 1)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from tradingbot.config import DataConfig, EnvConfig, SyntheticConfig
from tradingbot.data.market import PreparedMarket, load_prepared
from tradingbot.data.splits import DateRange
from tradingbot.env.simulator import (
    MarketSimulator,
    make_action_space,
    make_observation_space,
)


def default_market() -> PreparedMarket:
    """A small synthetic market, so that ``gymnasium.make`` works without arguments."""
    return load_prepared(DataConfig(source="synthetic", synthetic=SyntheticConfig(n_bars=600)))


class MarketEnv(gym.Env):
    """One market environment: observation = window of normalized features + position.

    Parameters
    ----------
    market: prepared features and prices; a small synthetic market when None.
    split: the split name or date range episodes are drawn from.
    cfg: the environment config (``n_envs`` is ignored: this is one environment).
    """

    metadata = {"render_modes": []}  # noqa: RUF012 (gymnasium's convention)

    def __init__(
        self,
        market: PreparedMarket | None = None,
        split: str | DateRange = "train",
        cfg: EnvConfig | None = None,
    ) -> None:
        self.cfg = cfg or EnvConfig()
        self.sim = MarketSimulator(market or default_market(), split, self.cfg, n_envs=1)
        self.observation_space = make_observation_space(self.sim)
        self.action_space = make_action_space(self.cfg)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self.sim.seed([seed])
        self.sim.reset_envs([0])
        return self.sim.observe()[0], self._info(0.0, 0.0)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        target = self.sim.targets(np.asarray(action)[None])
        reward, terminated, truncated, trade, cost = self.sim.step(target)
        info = self._info(float(trade[0]), float(cost[0]))
        return (
            self.sim.observe()[0],
            float(reward[0]),
            bool(terminated[0]),
            bool(truncated[0]),
            info,
        )

    def _info(self, trade: float, cost: float) -> dict[str, Any]:
        return {
            "equity": float(self.sim.equity[0]),
            "position": float(self.sim.position[0]),
            "trade": trade,
            "cost": cost,
        }
