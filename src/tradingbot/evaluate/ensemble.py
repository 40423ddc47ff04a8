"""Seed ensembles: several members run on the same bars; the ensemble holds their mean position.

A member runs exactly as it would alone (a paper run of its own): its LSTM sees the same bars,
its observation carries its own previous target position, as the simulator feeds one back to a
single policy (0 at an episode's start, and at the first scored bar after a warm-up, see
:mod:`tradingbot.evaluate.warmup`), and its action becomes a target position by the
environment's rule (:func:`tradingbot.env.simulator.actions_to_targets`: clipped into the
range, or a discrete choice). The ensemble's target position is the mean of the members' target
positions: of positions, not of actions, so a clipped or discrete mapping applies before the
mean. A fractional mean of discrete choices is no discrete action, so an ensemble is stepped in
an environment whose action is the target position itself (:func:`position_env_config`).

The ensemble's position at every bar therefore equals the mean of the positions of the members'
own backtests over the same bars; only the account differs (the ensemble trades, and pays costs
on, the change of the mean).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from tradingbot.config import EnvConfig
from tradingbot.data.market import PreparedMarket
from tradingbot.data.splits import DateRange
from tradingbot.env.simulator import actions_to_targets, make_action_space
from tradingbot.evaluate.backtest import SchedulePolicy, run_backtest
from tradingbot.evaluate.statistics import seed_spread


def position_env_config(env_cfg: EnvConfig) -> EnvConfig:
    """The environment an ensemble is stepped in: ``env_cfg`` with a continuous action that is
    the target position (clipped into [-1, 1], or [0, 1] long-only); market, fills and costs
    are unchanged."""
    return env_cfg.model_copy(update={"action": "continuous"})


def member_positions(actions: np.ndarray, env_cfg: EnvConfig) -> np.ndarray:
    """A member's target positions (n,) from its actions, by the run's environment rule."""
    return actions_to_targets(actions, env_cfg)


def mixture_mean_std(means: torch.Tensor, stds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of an equal-weight mixture of Gaussians.

    Parameters
    ----------
    means, stds: (members, ...) each member's mean and standard deviation.

    Returns
    -------
    The mixture's mean ``m = mean_k mu_k`` and std ``sqrt(mean_k (sigma_k^2 + mu_k^2) - m^2)``.
    """
    mean = means.mean(dim=0)
    second = (stds**2 + means**2).mean(dim=0)
    return mean, torch.sqrt(torch.clamp(second - mean**2, min=0.0))


@dataclass
class EnsembleState:
    """An ensemble's recurrent state: each member's own, and each member's latest target
    position per environment (what its next observation carries)."""

    members: list[Any]
    positions: np.ndarray  # (members, n_envs)


class EnsembleStep(NamedTuple):
    """The ensemble's step details, in the fields ``signals`` and ``backtest`` read from a
    member's :class:`~tradingbot.algo.policy.PolicyStep`.

    ``quantiles`` (batch, critics, quantiles) and ``value`` (batch,): the members' critics
    averaged, level by level; ``dist_params``: for a Box action the mean and std of the
    equal-weight mixture of the members' pre-squash Gaussians (:func:`mixture_mean_std`), for
    a discrete one the log of the members' mean choice probabilities; ``member_positions``
    (members, batch): each member's target position.
    """

    quantiles: torch.Tensor
    value: torch.Tensor
    dist_params: torch.Tensor
    member_positions: np.ndarray


class EnsemblePolicy:
    """Members that each run alone over the same bars; the ensemble asks for their mean
    position (SB3's ``predict``, for :func:`~tradingbot.evaluate.backtest.run_backtest` in the
    :func:`position_env_config` environment, and the warm-up).

    Parameters
    ----------
    members: the members' policies (SB3's ``predict``; ``predict_details`` for
        :meth:`predict_details`), deterministic.
    env_cfg: the run's environment config, whose rule maps a member's action to its position.
    seeds: the members' seeds, for names (default 0, 1, ...).
    """

    def __init__(
        self, members: Sequence[Any], env_cfg: EnvConfig, seeds: Sequence[int] | None = None
    ) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = list(members)
        self.member_env = env_cfg
        self.seeds = list(seeds) if seeds is not None else list(range(len(self.members)))
        if len(self.seeds) != len(self.members):
            raise ValueError(f"{len(self.members)} members but {len(self.seeds)} seeds")
        self.env_config = position_env_config(env_cfg)

    def predict(
        self,
        observation: np.ndarray,
        state: EnsembleState | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, EnsembleState]:
        """The mean of the members' target positions (n, 1), as the position environment's
        action, and the new state."""
        action, new_state, _ = self._step(observation, state, episode_start, details=False)
        return action, new_state

    def predict_details(
        self,
        observation: np.ndarray,
        state: EnsembleState | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, EnsembleState, EnsembleStep]:
        """:meth:`predict`, plus the members' critics and action distributions combined
        (:class:`EnsembleStep`)."""
        action, new_state, steps = self._step(observation, state, episode_start, details=True)
        quantiles = torch.stack([s.quantiles for s in steps]).mean(dim=0)
        value = torch.stack([s.value for s in steps]).mean(dim=0)
        params = torch.stack([s.dist_params for s in steps])
        if self.member_env.action == "discrete":
            dist_params = torch.log(torch.softmax(params, dim=-1).mean(dim=0))
        else:
            means, stds = params.chunk(2, dim=-1)
            dist_params = torch.cat(mixture_mean_std(means, stds), dim=-1)
        return action, new_state, EnsembleStep(quantiles, value, dist_params, new_state.positions)

    def start_flat(self, state: EnsembleState | None) -> EnsembleState | None:
        """The state for a scored run that starts flat after a warm-up: every member's
        recurrent state kept, every member's position 0 (as each member's own account)."""
        if state is None:
            return None
        return EnsembleState(state.members, np.zeros_like(state.positions))

    def _step(
        self,
        observation: np.ndarray,
        state: EnsembleState | None,
        episode_start: np.ndarray | None,
        details: bool,
    ) -> tuple[np.ndarray, EnsembleState, list[Any]]:
        obs = np.asarray(observation, dtype=np.float32)
        if obs.ndim != 2:
            raise ValueError(f"an ensemble needs a batch of observations (n, dim), got {obs.shape}")
        n = len(obs)
        if state is None:
            state = EnsembleState([None] * len(self.members), np.zeros((len(self.members), n)))
        positions = state.positions
        if episode_start is not None:  # a new episode starts flat for every member
            starts = np.asarray(episode_start, dtype=bool).reshape(n)
            positions = np.where(starts[None, :], 0.0, positions)
        new_states, targets, steps = [], [], []
        for k, member in enumerate(self.members):
            member_obs = obs.copy()
            member_obs[:, -1] = positions[k]  # its own previous position, as when alone
            if details:
                action, member_state, step = member.predict_details(
                    member_obs, state.members[k], episode_start, deterministic=True
                )
                steps.append(step)
            else:
                action, member_state = member.predict(
                    member_obs,
                    state=state.members[k],
                    episode_start=episode_start,
                    deterministic=True,
                )
            new_states.append(member_state)
            targets.append(member_positions(action, self.member_env))
        stacked = np.stack(targets)
        return stacked.mean(axis=0).reshape(n, 1), EnsembleState(new_states, stacked), steps


def seed_spread_rows(
    ensemble: dict[str, float], members: dict[int, dict[str, float]], metrics: Sequence[str]
) -> list[dict[str, Any]]:
    """Per metric: the ensemble's value beside the single seeds' spread (``seeds`` and
    ``seed_mean``, ``seed_std``, ``seed_min``, ``seed_max``:
    :func:`~tradingbot.evaluate.statistics.seed_spread`) and each member's value (``seed_<k>``)."""
    rows = []
    for metric in metrics:
        values = {seed: m[metric] for seed, m in members.items()}
        spread = seed_spread(values)
        rows.append(
            {
                "metric": metric,
                "ensemble": ensemble[metric],
                "seeds": spread.pop("seeds"),
                **{f"seed_{k}": v for k, v in spread.items()},
                **{f"seed_{seed}": value for seed, value in values.items()},
            }
        )
    return rows


class ExactSchedule(SchedulePolicy):
    """:class:`~tradingbot.evaluate.backtest.SchedulePolicy` for a continuous position action,
    asking for each position in float64 (as :class:`EnsemblePolicy` does), not float32."""

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        return np.full((len(observation), 1), self.positions[self.row]), state


def mean_position_bars(
    member_bars: Sequence[pd.DataFrame],
    market: PreparedMarket,
    span: str | DateRange,
    env_cfg: EnvConfig,
    instrument: str,
) -> pd.DataFrame:
    """The seed ensemble of members already backtested alone over ``span`` (each one's
    :func:`~tradingbot.evaluate.backtest.run_backtest` bars of ``instrument``): the mean of
    their positions, decided at the same bars, run through the simulator with ``env_cfg``'s
    fills and costs. These are the bars :class:`EnsemblePolicy` of those members gives, without
    their models (walk-forward jobs keep bars, not models).

    Raises ``ValueError`` when the members' bars were not decided at the same bars (a member
    ruined before the end of ``span`` stops early).
    """
    decided = [pd.DatetimeIndex(b["decision_timestamp"]) for b in member_bars]
    if not member_bars or any(not d.equals(decided[0]) for d in decided):
        raise ValueError(
            f"{instrument}: the members' backtests were not decided at the same bars "
            f"({[len(d) for d in decided]} bars); a seed ensemble needs every member's position "
            "at every bar"
        )
    inst = next(i for i in market.instruments if i.name == instrument)
    rows = inst.timestamps.get_indexer(decided[0])
    if (rows < 0).any():
        raise ValueError(f"{instrument}: the members' decision bars are not the market's bars")
    schedule = np.full(inst.n_bars, np.nan)
    schedule[rows] = np.stack([b["position"].to_numpy() for b in member_bars]).mean(axis=0)
    position_env = position_env_config(env_cfg)
    policy = ExactSchedule(schedule, make_action_space(position_env))
    bars = run_backtest(policy, market, span, position_env, instrument)
    if bars["position"].isna().any() or len(bars) != len(rows):
        raise ValueError(f"{instrument}: {span} is not the span the members were backtested on")
    return bars
