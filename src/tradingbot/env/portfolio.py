"""The portfolio environment: N environments x K assets and cash, stepped as arrays (SB3 VecEnv).

Timing and equations. One step covers h = ``portfolio.rebalance_every`` bars. At decision bar t
(after its close) the agent holds weights w (K asset weights as fractions of equity e; cash
1 - sum(w)) and picks target weights v. With C the (T, K) closes, r_c the cash rate per bar and
c = (commission_bps + slippage_bps) / 1e4:

- held to the fill at the close of bar t+1 (next close: close-only data have no open), with
  g_k = C_k[t+1] / C_k[t]:   e1 = e (sum_k w_k g_k + (1 - sum_k w_k)(1 + r_c));
  the weights drift to u_k = w_k g_k e / e1;
- trade at that close: cost = c sum_k |v_k - u_k| e1 (bps of each asset's traded notional);
  e2 = e1 - cost, held at weights v (of the equity after costs, as the single-instrument
  simulator does);
- held, drifting, to the next decision bar t+h, with G_k = C_k[t+h] / C_k[t+1]:
  e' = e2 (sum_k v_k G_k + (1 - sum_k v_k)(1 + r_c)^(h-1)), weights w'_k = v_k G_k e2 / e'.

Reward: log(e' / e). With h = 1 the last part is the identity.

Actions (K + 1 numbers, in [-1, 1] as the policy's tanh-squashed Gaussian gives them). Long-only
(default): v = softmax(logit_scale x action) over the K assets and cash (the last entry).
Long-short: v = a / max(1, sum_k |a_k| / L) from the asset part a, L the gross-leverage cap;
the cash entry is unused. Observation: (K, F + 1): each asset's normalized features at bar t and
its current weight. Episodes start at a random decision bar of the split and last
``env.episode_length`` steps (truncated) or until the split's data end; ``terminated`` when
equity falls below ``ruin_floor x initial_equity``. ``portfolio.assets_per_episode`` draws a
random subset of assets (in random order) per episode, so the policy cannot learn identities.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from tradingbot.config import ConfigError, EnvConfig, PortfolioConfig
from tradingbot.data.calendar import periods_per_year
from tradingbot.data.portfolio import PortfolioMarket
from tradingbot.data.splits import DateRange
from tradingbot.env.simulator import restore_generators
from tradingbot.env.vec_env import SharedStateVecEnv, StepInfos

MIN_EQUITY = 1e-12


def actions_to_weights(actions: np.ndarray, cfg: PortfolioConfig) -> np.ndarray:
    """Target asset weights (n, K) from actions (n, K + 1) (see the module docstring)."""
    a = np.asarray(actions, dtype=np.float64)
    if cfg.long_only:
        logits = cfg.logit_scale * a
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return (e / e.sum(axis=1, keepdims=True))[:, :-1]
    assets = np.clip(a[:, :-1], -1.0, 1.0)
    gross = np.abs(assets).sum(axis=1, keepdims=True)
    return assets / np.maximum(1.0, gross / cfg.gross_leverage)


def hold(
    equity: np.ndarray, weights: np.ndarray, growth: np.ndarray, cash_growth: float
) -> tuple[np.ndarray, np.ndarray]:
    """Equity and drifted weights after holding ``weights`` while prices grow by ``growth``
    (n, K) and cash by ``cash_growth``."""
    value = weights * growth
    new_equity = equity * (value.sum(axis=1) + (1.0 - weights.sum(axis=1)) * cash_growth)
    new_equity = np.maximum(new_equity, MIN_EQUITY)
    return new_equity, value * (equity / new_equity)[:, None]


def rebalance(
    equity: np.ndarray, weights: np.ndarray, target: np.ndarray, cost_rate: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trade from ``weights`` to ``target`` at equity ``equity``: (equity after costs, trade
    (n, K) in fractions of equity, cost (n,) in money)."""
    trade = target - weights
    cost = cost_rate * np.abs(trade).sum(axis=1) * equity
    return np.maximum(equity - cost, MIN_EQUITY), trade, cost


def cash_per_bar(market: PortfolioMarket, annual_rate: float) -> float:
    """Interest of one unit of cash over one bar by the data's calendar."""
    if annual_rate == 0.0:
        return 0.0
    return (1.0 + annual_rate) ** (1.0 / periods_per_year(market.timestamps)) - 1.0


class PortfolioVecEnv(SharedStateVecEnv):
    """N portfolio environments over K assets, stepped together (see the module docstring).

    Parameters
    ----------
    market: the prepared universe.
    split: split name or date range the episodes are drawn from.
    env_cfg: costs, episode length, equity, ruin floor, cash rate, ``n_envs``.
    cfg: the portfolio section.
    n_envs: overrides ``env_cfg.n_envs``.
    seed: seeds environment i with ``seed + i``.
    random_start: False starts every episode at the split's first decision bar (backtests).

    Each step's ``info`` carries ``equity``, ``cost``, ``turnover`` (sum of |trade|),
    ``weights`` (held after the step) and ``target``; at an episode's end also SB3's
    ``terminal_observation``, ``TimeLimit.truncated`` and ``episode``.
    """

    def __init__(
        self,
        market: PortfolioMarket,
        split: str | DateRange,
        env_cfg: EnvConfig,
        cfg: PortfolioConfig,
        n_envs: int | None = None,
        seed: int | None = None,
        random_start: bool = True,
    ) -> None:
        self.market, self.env_cfg, self.cfg = market, env_cfg, cfg
        self.lo, self.hi = market.rows(split)
        self.h = cfg.rebalance_every
        if self.hi - 1 - self.lo < self.h:
            raise ConfigError(
                f"portfolio.rebalance_every: {self.h} bars plus one exceed the {self.hi - self.lo}"
                f" usable bars of split {split}"
            )
        self.k = cfg.assets_per_episode or market.n_assets
        if self.k > market.n_assets:
            raise ConfigError(
                f"portfolio.assets_per_episode: {self.k} exceeds the data's {market.n_assets} "
                f"assets"
            )
        self.random_start = random_start
        self.cost_rate = (env_cfg.commission_bps + env_cfg.slippage_bps) / 1e4
        self.cash_rate = cash_per_bar(market, env_cfg.cash_rate)
        n = n_envs or env_cfg.n_envs
        n_features = market.features.shape[2]
        bound = max(market.normalizer.clip, 1.0 + cfg.gross_leverage)
        obs_space = spaces.Box(-bound, bound, shape=(self.k, n_features + 1), dtype=np.float32)
        act_space = spaces.Box(-1.0, 1.0, shape=(self.k + 1,), dtype=np.float32)
        self.render_mode = None
        super().__init__(n, obs_space, act_space)
        self.rngs = [np.random.default_rng() for _ in range(n)]
        self.row = np.zeros(n, dtype=np.int64)
        self.steps = np.zeros(n, dtype=np.int64)
        self.end_step = np.zeros(n, dtype=np.int64)
        self.equity = np.full(n, env_cfg.initial_equity)
        self.weights = np.zeros((n, self.k))
        self.assets = np.tile(np.arange(self.k), (n, 1))
        self._episode_return = np.zeros(n)
        self._actions: np.ndarray | None = None
        self._start_time = time.time()
        if seed is not None:
            self.seed(seed)

    # ---------------------------------------------------------------------------------------
    def _reset_envs(self, envs: Sequence[int] | np.ndarray) -> None:
        length = self.env_cfg.episode_length
        max_steps = (self.hi - 1 - self.lo) // self.h
        for i in envs:
            rng = self.rngs[i]
            steps = max_steps if length is None else min(length, max_steps)
            latest = self.hi - 1 - steps * self.h
            start = int(rng.integers(self.lo, latest + 1)) if self.random_start else self.lo
            self.row[i] = start
            self.end_step[i] = min(steps, (self.hi - 1 - start) // self.h)
            self.steps[i] = 0
            self.equity[i] = self.env_cfg.initial_equity
            self.weights[i] = 0.0
            if self.cfg.assets_per_episode is not None:
                self.assets[i] = rng.choice(self.market.n_assets, self.k, replace=False)

    def observe(self, envs: np.ndarray | None = None) -> np.ndarray:
        """Observations (n, K, F + 1): features at the decision bar and current weights."""
        idx = slice(None) if envs is None else envs
        rows, assets = self.row[idx], self.assets[idx]
        feats = self.market.features[rows[:, None], assets]
        return np.concatenate([feats, self.weights[idx][..., None]], axis=2).astype(np.float32)

    def reset(self) -> np.ndarray:
        for i, s in enumerate(self._seeds):
            if s is not None:
                self.rngs[i] = np.random.default_rng(s)
        self._reset_seeds()
        self._reset_options()
        self._reset_envs(range(self.num_envs))
        self._episode_return[:] = 0.0
        return self.observe()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs, self.k + 1)

    def step_targets(
        self, target: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Move every environment one step with target weights (n, K).

        Returns reward, terminated, truncated, trade (n, K) and cost (n,).
        """
        close, t, h = self.market.close, self.row, self.h
        assets = self.assets
        price_t = close[t[:, None], assets]
        price_fill = close[t[:, None] + 1, assets]
        price_next = close[t[:, None] + h, assets]
        e0 = self.equity
        e1, drifted = hold(e0, self.weights, price_fill / price_t, 1.0 + self.cash_rate)
        e2, trade, cost = rebalance(e1, drifted, target, self.cost_rate)
        e3, weights = hold(e2, target, price_next / price_fill, (1.0 + self.cash_rate) ** (h - 1))
        reward = np.log(e3 / e0)
        self.equity, self.weights = e3, weights
        self.row = t + h
        self.steps = self.steps + 1
        terminated = e3 < self.env_cfg.ruin_floor * self.env_cfg.initial_equity
        truncated = (self.steps >= self.end_step) & ~terminated
        return reward, terminated, truncated, trade, cost

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
        assert self._actions is not None, "step_async must come before step_wait"
        target = actions_to_weights(self._actions, self.cfg)
        reward, terminated, truncated, trade, cost = self.step_targets(target)
        self._episode_return += reward
        infos = StepInfos(
            {
                "equity": self.equity.copy(),
                "cost": cost,
                "turnover": np.abs(trade).sum(axis=1),
                "weights": self.weights.copy(),
                "target": target,
            }
        )
        obs = self.observe()
        done = terminated | truncated
        for i in np.flatnonzero(done):
            infos[i]["terminal_observation"] = obs[i].copy()
            infos[i]["TimeLimit.truncated"] = bool(truncated[i])
            infos[i]["episode"] = {
                "r": float(self._episode_return[i]),
                "l": int(self.steps[i]),
                "t": round(time.time() - self._start_time, 6),
            }
        if done.any():
            ended = np.flatnonzero(done)
            self._episode_return[ended] = 0.0
            self._reset_envs(ended)
            obs[ended] = self.observe(ended)
        return obs, reward.astype(np.float32), done, infos

    def close(self) -> None:
        pass

    STATE_ARRAYS = ("row", "steps", "end_step", "equity", "weights", "assets")

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The environments' full state (arrays, and each generator's state, JSON-able): what a
        checkpoint stores so that a resumed run continues exactly."""
        arrays = {name: getattr(self, name).copy() for name in self.STATE_ARRAYS}
        arrays["episode_return"] = self._episode_return.copy()
        return arrays, {"rngs": [rng.bit_generator.state for rng in self.rngs]}

    def load_state_dict(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output. Refused (ValueError, nothing changed): shapes
        other than these environments', a decision row outside the split or an episode that
        would run past its data, non-finite weights, non-positive equity, an asset index
        outside the universe or repeated within an environment."""
        n, k = self.num_envs, self.k
        values = {}
        for name in (*self.STATE_ARRAYS, "episode_return"):
            shape = (n, k) if name in ("weights", "assets") else (n,)
            value = np.asarray(arrays[name])
            if value.shape != shape:
                raise ValueError(f"env state {name!r} has shape {value.shape}, expected {shape}")
            dtype = (
                self._episode_return.dtype
                if name == "episode_return"
                else getattr(self, name).dtype
            )
            values[name] = value.astype(dtype, copy=True)
        row, steps, end = values["row"], values["steps"], values["end_step"]
        last_row = row + (end - steps) * self.h  # the decision row the episode ends at
        assets = np.sort(values["assets"], axis=1)
        problems = {
            "row": (row < self.lo) | (row >= self.hi),
            "steps": (steps < 0) | (steps > end) | (last_row > self.hi - 1),
            "equity": ~np.isfinite(values["equity"]) | (values["equity"] <= 0),
            "weights": ~np.isfinite(values["weights"]).all(axis=1),
            "episode_return": ~np.isfinite(values["episode_return"]),
            "assets": (assets[:, 0] < 0)
            | (assets[:, -1] >= self.market.n_assets)
            | (np.diff(assets, axis=1) == 0).any(axis=1),
        }
        for name, bad in problems.items():
            if bad.any():
                envs = np.flatnonzero(bad).tolist()
                raise ValueError(f"env state {name!r} is invalid in environment(s) {envs}")
        generators = restore_generators(self.rngs, state)
        for name in self.STATE_ARRAYS:
            setattr(self, name, values[name])
        self._episode_return = values["episode_return"]
        self.rngs = generators

    # ---------------------------------------------------------------------------------------
