"""Stable-Baselines3 ``VecEnv`` over the array simulator (all environments in one call)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

from tradingbot.config import EnvConfig
from tradingbot.data.market import PreparedMarket
from tradingbot.data.splits import DateRange
from tradingbot.env.simulator import (
    MarketSimulator,
    make_action_space,
    make_observation_space,
)


class StepInfos(Sequence):
    """The per-environment ``info`` dicts of one step, built when first read.

    Behaves as the list of dicts SB3 expects (indexing, slicing, iteration, ``len``; a dict,
    once read, is kept, so writing into it sticks), but a step whose infos nobody reads does
    not pay for building N dicts: the arrays behind them are computed anyway.
    """

    __slots__ = ("_columns", "_dicts", "_lists")

    def __init__(self, columns: dict[str, np.ndarray]) -> None:
        self._columns = columns
        self._lists: dict[str, list[Any]] | None = None
        self._dicts: list[dict[str, Any] | None] = [None] * len(next(iter(columns.values())))

    def __len__(self) -> int:
        return len(self._dicts)

    def _get(self, i: int) -> dict[str, Any]:
        info = self._dicts[i]
        if info is None:
            if self._lists is None:  # one conversion per column, not per element
                self._lists = {key: col.tolist() for key, col in self._columns.items()}
            info = {key: col[i] for key, col in self._lists.items()}
            self._dicts[i] = info
        return info

    def __getitem__(self, index: int | slice) -> Any:  # type: ignore[override]
        if isinstance(index, slice):
            return [self._get(i) for i in range(*index.indices(len(self)))]
        return self._get(range(len(self))[index])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self._get(i) for i in range(len(self)))

    def __repr__(self) -> str:
        return repr(list(self))


class SharedStateVecEnv(VecEnv):
    """A VecEnv whose environments are rows of one array state (no sub-environment objects):
    attribute reads and method calls go to the one object, once per requested index, and
    setting an attribute of some environments only is refused."""

    def _indices(self, indices: VecEnvIndices) -> Sequence[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return list(indices)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self, attr_name) for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise AttributeError(
            f"{type(self).__name__} environments share one state; cannot set {attr_name}"
        )

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any
    ) -> list[Any]:
        method = getattr(self, method_name)
        return [method(*method_args, **kwargs) for _ in self._indices(indices)]

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        return [False for _ in self._indices(indices)]


class MarketVecEnv(SharedStateVecEnv):
    """N market environments stepped together as arrays, with SB3's auto-reset semantics.

    Environment i is seeded with ``seed + i`` by :meth:`seed`, so it replays exactly what a
    single :class:`~tradingbot.env.single.MarketEnv` reset with that seed does. Each step's
    ``info`` carries ``equity``, ``position``, ``trade`` and ``cost``; at the end of an episode
    also ``terminal_observation``, ``TimeLimit.truncated`` and ``episode`` (return ``r``,
    length ``l``, seconds ``t``), as SB3's ``Monitor`` would.

    Parameters
    ----------
    market: prepared features and prices.
    split: the split name or date range episodes are drawn from.
    cfg: the environment config; ``cfg.n_envs`` environments unless ``n_envs`` is given.
    n_envs: overrides ``cfg.n_envs``.
    seed: seeds environment i with ``seed + i`` before the first reset.
    instruments: names of the instruments episodes are drawn from (default: all).
    """

    def __init__(
        self,
        market: PreparedMarket,
        split: str | DateRange = "train",
        cfg: EnvConfig | None = None,
        n_envs: int | None = None,
        seed: int | None = None,
        instruments: list[str] | None = None,
    ) -> None:
        self.cfg = cfg or EnvConfig()
        self.sim = MarketSimulator(market, split, self.cfg, n_envs or self.cfg.n_envs, instruments)
        self.render_mode = None  # read by VecEnv.__init__ through get_attr
        super().__init__(
            self.sim.n_envs, make_observation_space(self.sim), make_action_space(self.cfg)
        )
        self._actions: np.ndarray | None = None
        self._episode_return = np.zeros(self.num_envs)
        self._start_time = time.time()
        if seed is not None:
            self.seed(seed)

    def reset(self) -> VecEnvObs:
        self.sim.seed(self._seeds)
        self._reset_seeds()
        self._reset_options()
        self.sim.reset_envs(range(self.num_envs))
        self._episode_return[:] = 0.0
        return self.sim.observe()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        assert self._actions is not None, "step_async must come before step_wait"
        targets = self.sim.targets(self._actions)
        reward, terminated, truncated, trade, cost = self.sim.step(targets)
        self._episode_return += reward
        # Copies: resetting an environment below rewrites its slot of the simulator's arrays.
        infos = StepInfos(
            {
                "equity": self.sim.equity.copy(),
                "position": self.sim.position.copy(),
                "trade": trade,
                "cost": cost,
            }
        )
        obs = self.sim.observe()
        done = terminated | truncated
        if done.any():
            ended = np.flatnonzero(done)
            for i in ended:
                infos[i]["terminal_observation"] = obs[i].copy()
                infos[i]["TimeLimit.truncated"] = bool(truncated[i])
                infos[i]["episode"] = {
                    "r": float(self._episode_return[i]),
                    "l": int(self.sim.steps[i]),
                    "t": round(time.time() - self._start_time, 6),
                }
            self._episode_return[ended] = 0.0
            self.sim.reset_envs(ended)
            obs[ended] = self.sim.observe(ended)
        return obs, reward.astype(np.float32), done, infos

    def close(self) -> None:
        pass

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The environments' full state (for exact resume from a checkpoint)."""
        arrays, state = self.sim.state_dict()
        arrays["episode_return"] = self._episode_return.copy()
        return arrays, state

    def load_state_dict(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        episode_return = np.asarray(arrays["episode_return"], dtype=np.float64).copy()
        if episode_return.shape != (self.num_envs,) or not np.isfinite(episode_return).all():
            raise ValueError(
                f"env state 'episode_return' must be {self.num_envs} finite values, got "
                f"shape {episode_return.shape}"
            )
        self.sim.load_state_dict(arrays, state)
        self._episode_return = episode_return
