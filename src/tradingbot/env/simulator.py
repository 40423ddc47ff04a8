"""The market simulator: N environments stepped as NumPy arrays in one call.

Timing. The agent sees bar t after its close and picks a target position. The order is filled
at the open of bar t+1 (``next_open``, default) or at its close (``next_close``), never at a
price the agent has already seen. Position is a fraction of equity in [-1, 1]; between fills it
is held at that fraction.

Equity over one step, with e the equity at the close of bar t, p the old and q the new
position, c = (commission_bps + slippage_bps) / 1e4:

- next_open:  e1 = e (1 + p (O[t+1]/C[t] - 1));  cost = c |q - p| e1;
              e' = (e1 - cost)(1 + q (C[t+1]/O[t+1] - 1))
- next_close: e1 = e (1 + p (C[t+1]/C[t] - 1));  cost = c |q - p| e1;  e' = e1 - cost

Cash. With ``cash_rate`` (annual, default 0) the uninvested part of the equity held into the
step earns interest: e' += e (1 - |p|) r_bar, with r_bar = (1 + cash_rate)^(1 / B) - 1 and B the
bars per year of the instrument's calendar (:func:`tradingbot.data.calendar.periods_per_year`).
It applies to every policy alike (agent and baselines run through this same step).

Reward: log(e' / e). An episode is truncated after ``episode_length`` steps or when the split's
data end, and terminated when equity falls below ``ruin_floor * initial_equity``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from tradingbot.config import EnvConfig
from tradingbot.data.calendar import periods_per_year
from tradingbot.data.market import PreparedMarket
from tradingbot.data.splits import DateRange
from tradingbot.env.sizing import position_scales, scale_targets

MIN_EQUITY = 1e-12  # equity is floored here so the log reward stays finite at ruin


class MarketSimulator:
    """Vectorized market state and dynamics shared by the VecEnv and the single-env view.

    Parameters
    ----------
    market: prepared features and prices (read, never copied).
    split: the split name or date range the episodes are drawn from.
    cfg: the environment config.
    n_envs: how many environments to step together.
    instruments: names of the instruments episodes are drawn from (default: all).
    """

    def __init__(
        self,
        market: PreparedMarket,
        split: str | DateRange,
        cfg: EnvConfig,
        n_envs: int,
        instruments: list[str] | None = None,
    ) -> None:
        self.market = market
        self.cfg = cfg
        self.n_envs = n_envs
        self.window = cfg.window
        self.cost_rate = (cfg.commission_bps + cfg.slippage_bps) / 1e4
        self.fill_at_open = cfg.fill == "next_open"
        ranges = market.ranges(split, cfg.window)
        names = [inst.name for inst in market.instruments]
        unknown = sorted(set(instruments or []) - set(names))
        if unknown:
            raise ValueError(f"unknown instrument(s) {unknown}; available: {names}")
        # Global row ranges [lo, hi) of each instrument that has at least one step in the split.
        self.instrument_ids = np.array(
            [
                i
                for i, (lo, hi) in enumerate(ranges)
                if hi > lo and (instruments is None or names[i] in instruments)
            ],
            dtype=np.int64,
        )
        if len(self.instrument_ids) == 0:
            raise ValueError(
                f"split {split} has no instrument with enough bars after the feature warm-up"
            )
        offsets = np.array([market.instruments[i].offset for i in self.instrument_ids])
        self.lo = np.array([ranges[i][0] for i in self.instrument_ids]) + offsets
        self.hi = np.array([ranges[i][1] for i in self.instrument_ids]) + offsets
        self.n_features = market.features.shape[1]
        self.obs_dim = self.window * self.n_features + 1

        # Per-row simple returns from the close of row t to the fill, and from an open fill to
        # the close of row t+1. The last row of each instrument is never stepped from.
        open_, close = market.open, market.close
        fill_price = open_[1:] if self.fill_at_open else close[1:]
        self._held_return = np.append(fill_price / close[:-1] - 1.0, np.nan)
        self._intrabar_return = np.append(close[1:] / open_[1:] - 1.0, np.nan)
        self._ruin_equity = cfg.ruin_floor * cfg.initial_equity
        self._cash_return = cash_returns(market, cfg.cash_rate) if cfg.cash_rate else None
        # Per row: the action -> position factor of env.sizing (None: the action is the position).
        self.position_scale = position_scales(market, cfg.sizing)

        self.rngs = [np.random.default_rng() for _ in range(n_envs)]
        self.row = np.zeros(n_envs, dtype=np.int64)  # global row of the bar just closed
        self.end_step = np.zeros(n_envs, dtype=np.int64)  # steps until truncation
        self.slot = np.zeros(n_envs, dtype=np.int64)  # index into instrument_ids
        self.position = np.zeros(n_envs)
        self.equity = np.full(n_envs, cfg.initial_equity)
        self.steps = np.zeros(n_envs, dtype=np.int64)

    STATE_ARRAYS = ("row", "end_step", "slot", "position", "equity", "steps")

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays of the environments' state and each generator's state (JSON-able)."""
        arrays = {name: getattr(self, name).copy() for name in self.STATE_ARRAYS}
        return arrays, {"rngs": [rng.bit_generator.state for rng in self.rngs]}

    def load_state_dict(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, refusing a different number of envs and
        values out of range (rows outside the split, an episode past its end, non-finite or
        non-positive equity, a position outside [-1, 1]); nothing changes unless all is valid."""
        values = {}
        for name in self.STATE_ARRAYS:
            value = np.asarray(arrays[name])
            if value.shape != (self.n_envs,):
                raise ValueError(
                    f"env state {name!r} has shape {value.shape}, expected ({self.n_envs},)"
                )
            values[name] = value.astype(getattr(self, name).dtype, copy=True)
        self._check_state(values)
        generators = restore_generators(self.rngs, state)
        for name, value in values.items():
            setattr(self, name, value)
        self.rngs = generators

    def _check_state(self, values: dict[str, np.ndarray]) -> None:
        """Refuse environment state that no episode of this split can be in."""
        slot, row, steps, end_step = (values[k] for k in ("slot", "row", "steps", "end_step"))
        bad = (slot < 0) | (slot >= len(self.instrument_ids))
        if bad.any():
            raise ValueError(f"env state 'slot' {slot[bad].tolist()} outside [0, {len(self.lo)})")
        lo, hi = self.lo[slot], self.hi[slot]
        checks = {
            "row": (row < lo) | (row >= hi),
            "steps": (steps < 0) | (steps > end_step),
            # The episode's remaining steps must stay inside the split's rows.
            "end_step": (end_step < 0) | (row - steps + end_step > hi - 1),
            "equity": ~np.isfinite(values["equity"]) | (values["equity"] <= 0),
            "position": ~(np.abs(values["position"]) <= 1.0),
        }
        for name, bad in checks.items():
            if bad.any():
                raise ValueError(
                    f"env state {name!r} out of range in environment(s) "
                    f"{np.flatnonzero(bad).tolist()}: {values[name][bad].tolist()}"
                )

    def seed(self, seeds: list[int | None]) -> None:
        """Re-seed environment i with ``seeds[i]`` (None leaves its generator as it is)."""
        for i, s in enumerate(seeds):
            if s is not None:
                self.rngs[i] = np.random.default_rng(s)

    def reset_envs(self, envs: np.ndarray | list[int]) -> None:
        """Start new episodes: a random instrument and start row per environment."""
        length = self.cfg.episode_length
        for i in envs:
            rng = self.rngs[i]
            slot = int(rng.integers(len(self.instrument_ids)))
            lo, hi = int(self.lo[slot]), int(self.hi[slot])
            latest_start = hi - 1 - (length or 0)
            start = (
                lo
                if length is None or latest_start <= lo
                else int(rng.integers(lo, latest_start + 1))
            )
            self.slot[i] = slot
            self.row[i] = start
            # Truncate at the episode length or when the split's last bar has been filled.
            self.end_step[i] = min(length or hi, hi - 1 - start)
            self.position[i] = 0.0
            self.equity[i] = self.cfg.initial_equity
            self.steps[i] = 0

    def observe(self, envs: np.ndarray | None = None) -> np.ndarray:
        """Observations (n, window * n_features + 1): the window's features and the position."""
        rows = self.row if envs is None else self.row[envs]
        position = self.position if envs is None else self.position[envs]
        return build_observations(self.market.features, rows, position, self.window)

    def targets(self, actions: np.ndarray) -> np.ndarray:
        """Target positions (n,) of a batch of actions taken at the bars just closed."""
        scale = None if self.position_scale is None else self.position_scale[self.row]
        return actions_to_targets(actions, self.cfg, scale)

    def step(
        self, target: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Move every environment one bar with target positions ``target`` (n,).

        Returns reward, terminated, truncated, trade (q - p) and cost, each (n,).
        """
        row, old, equity = self.row, self.position, self.equity
        at_fill = equity * (1.0 + old * self._held_return[row])
        trade = target - old
        cost = self.cost_rate * np.abs(trade) * at_fill
        new_equity = at_fill - cost
        if self.fill_at_open:  # then held from the fill at the open to the close
            new_equity *= 1.0 + target * self._intrabar_return[row]
        if self._cash_return is not None:  # interest on the uninvested part held into the step
            new_equity += equity * np.maximum(1.0 - np.abs(old), 0.0) * self._cash_return[row]
        np.maximum(new_equity, MIN_EQUITY, out=new_equity)
        reward = np.log(new_equity / equity)

        self.equity = new_equity
        self.position = target.astype(np.float64, copy=True)
        self.row = row + 1
        self.steps += 1
        terminated = new_equity < self._ruin_equity
        truncated = self.steps >= self.end_step
        return reward, terminated, truncated & ~terminated, trade, cost


def restore_generators(current: list[np.random.Generator], state: Any) -> list[np.random.Generator]:
    """New generators, one per environment, from the ``"rngs"`` entry of a saved env state.

    Each takes the bit generator type of the matching one in ``current``; ``ValueError`` when
    the entry is not a list of ``len(current)`` states or a state is malformed. Nothing in
    ``current`` changes, so a failed restore leaves the environment as it was.
    """
    rngs = state.get("rngs") if isinstance(state, dict) else None
    if not isinstance(rngs, list) or len(rngs) != len(current):
        raise ValueError(f"env state 'rngs' must list {len(current)} generator states")
    generators = []
    for rng, rng_state in zip(current, rngs, strict=True):
        generator = np.random.Generator(type(rng.bit_generator)())
        generator.bit_generator.state = rng_state  # raises on a malformed state
        generators.append(generator)
    return generators


def cash_returns(market: PreparedMarket, annual_rate: float) -> np.ndarray:
    """Per row of the market's arrays: the interest a unit of cash earns over one bar,
    (1 + annual_rate)^(1 / bars per year) - 1 by each instrument's calendar."""
    out = np.empty(len(market.close))
    for inst in market.instruments:
        per_year = periods_per_year(inst.timestamps)
        out[inst.offset : inst.offset + inst.n_bars] = (1.0 + annual_rate) ** (1.0 / per_year) - 1
    return out


def build_observations(
    features: np.ndarray, rows: np.ndarray, position: np.ndarray, window: int
) -> np.ndarray:
    """Observations (n, window * n_features + 1): the features of the ``window`` bars ending at
    each row (oldest first) and the position held."""
    if window == 1:
        feats = features[rows]
    else:
        feats = features[rows[:, None] + np.arange(-window + 1, 1)].reshape(len(rows), -1)
    obs = np.empty((len(rows), feats.shape[1] + 1), dtype=np.float32)
    obs[:, :-1] = feats
    obs[:, -1] = position
    return obs


def make_action_space(cfg: EnvConfig) -> spaces.Space:
    """Box of target positions ([-1, 1], or [0, 1] when long-only) or discrete choices."""
    if cfg.action == "discrete":
        return spaces.Discrete(2 if cfg.long_only else 3)
    low = 0.0 if cfg.long_only else -1.0
    return spaces.Box(low=low, high=1.0, shape=(1,), dtype=np.float32)


def make_observation_space(sim: MarketSimulator) -> spaces.Box:
    """Normalized features are clipped to +-clip and the position lies in [-1, 1]."""
    bound = max(sim.market.normalizer.clip, 1.0)
    return spaces.Box(low=-bound, high=bound, shape=(sim.obs_dim,), dtype=np.float32)


def actions_to_targets(
    actions: np.ndarray, cfg: EnvConfig, scale: np.ndarray | None = None
) -> np.ndarray:
    """Target positions (n,) from a batch of actions.

    Discrete: {short, flat, long} -> {-1, 0, 1}, or {flat, long} -> {0, 1} when long-only.
    Continuous: clipped to the action range. With ``env.sizing.mode`` ``vol_scaled`` that
    value is then multiplied by ``scale`` (n,), the decision bars' factors from
    :func:`~tradingbot.env.sizing.position_scales`, and clipped to the cap.
    """
    actions = np.asarray(actions)
    if cfg.action == "discrete":
        index = actions.reshape(-1).astype(np.int64)
        targets = index.astype(np.float64) if cfg.long_only else index.astype(np.float64) - 1.0
    else:
        low = 0.0 if cfg.long_only else -1.0
        first = actions.reshape(len(actions), -1)[:, 0].astype(np.float64)
        targets = np.minimum(np.maximum(first, low), 1.0)
    if cfg.sizing.mode == "position":
        return targets
    if scale is None:
        raise ValueError("env.sizing.mode 'vol_scaled' needs the bars' position scales")
    return scale_targets(targets, scale, cfg.sizing, cfg.long_only)
