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
import torch

from tradingbot.config import EnvConfig
from tradingbot.env.simulator import actions_to_targets


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
    """Per metric: the ensemble's value beside the single seeds' spread (mean, std, min, max
    over members) and each member's value (columns ``seed_<k>``)."""
    rows = []
    for metric in metrics:
        values = np.array([m[metric] for m in members.values()], dtype=float)
        rows.append(
            {
                "metric": metric,
                "ensemble": ensemble[metric],
                "seeds": len(values),
                "seed_mean": float(values.mean()),
                "seed_std": float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
                "seed_min": float(values.min()),
                "seed_max": float(values.max()),
                **{f"seed_{s}": m[metric] for s, m in members.items()},
            }
        )
    return rows
