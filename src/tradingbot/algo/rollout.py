"""The parts of collecting one DistributionalPPO rollout (``DistributionalPPO.collect_rollouts``
runs the loop): the env's actions, the time-limit bootstrap, and the per-rollout work
(log-probs, quantiles, values, GAE) done once on the stacked step outputs instead of per step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces

from tradingbot.algo.buffer import RecurrentRolloutBuffer
from tradingbot.algo.policy import LSTMStates, RecurrentActorCritic, RolloutWeights


def obs_tensor(obs: np.ndarray, obs_dim: int, device: th.device | str) -> th.Tensor:
    """
    Observations as a float32 tensor of shape (n_envs, obs_dim).

    Parameters
    ----------
    obs : ndarray
        One observation or a batch.
    obs_dim : int
        Elements of one observation.
    device : torch.device or str
        Where the tensor goes.

    Returns
    -------
    Tensor
    """
    return th.as_tensor(obs, dtype=th.float32, device=device).reshape(-1, obs_dim)


def env_actions(action: th.Tensor, action_space: spaces.Space) -> np.ndarray:
    """
    The policy's actions in the env's layout: (n_envs, *box_shape) or (n_envs,) indices.

    Parameters
    ----------
    action : Tensor
        The policy step's ``action``.
    action_space : gymnasium.spaces.Space
        Box or Discrete.

    Returns
    -------
    ndarray
    """
    action_np = action.cpu().numpy()
    if isinstance(action_space, spaces.Box):
        return action_np.reshape(-1, *action_space.shape)
    return action_np.reshape(-1)


def truncation_values(
    policy: RecurrentActorCritic,
    infos: Sequence[dict[str, Any]],
    dones: np.ndarray,
    new_states: LSTMStates,
    weights: RolloutWeights,
    device: th.device | str,
) -> tuple[th.Tensor, th.Tensor] | None:
    """
    The critic's value (normalized units) of the terminal observation of every env whose
    episode was truncated by a time limit, from that env's current LSTM state: a truncated
    episode continues in expectation, so ``gamma * V`` is added to its reward (as SB3 does).

    Parameters
    ----------
    policy : RecurrentActorCritic
        The policy.
    infos : sequence of dict
        The step's infos (``terminal_observation``, ``TimeLimit.truncated``).
    dones : ndarray
        The step's done flags.
    new_states : LSTMStates
        The LSTM states after the step.
    weights : RolloutWeights
        The rollout's inference weights.
    device : torch.device or str
        The policy's device.

    Returns
    -------
    tuple of Tensor or None
        (env indices, values), or ``None`` when no episode was truncated.
    """
    truncated = [
        i
        for i in np.flatnonzero(dones)
        if infos[i].get("terminal_observation") is not None
        and infos[i].get("TimeLimit.truncated", False)
    ]
    if not truncated:
        return None
    index = th.as_tensor(truncated)
    terminal_obs = obs_tensor(
        np.stack([infos[i]["terminal_observation"] for i in truncated]), policy.obs_dim, device
    )
    terminal_states = LSTMStates(*(s[index] for s in new_states))
    value = policy.predict_values(terminal_obs, terminal_states, th.zeros(len(truncated)), weights)
    return index, value


class RolloutSteps:
    """The raw outputs of a rollout's steps, kept per step and stored in the buffer at its
    end with the per-rollout work done once on the stacked tensors (:meth:`store`)."""

    def __init__(self) -> None:
        self.hs: list[th.Tensor] = []
        self.cs: list[th.Tensor] = []
        self.actor_outs: list[th.Tensor] = []
        self.critic_raws: list[th.Tensor] = []
        self.raw_actions: list[th.Tensor] = []
        self.starts: list[np.ndarray] = []
        self.rewards: list[np.ndarray] = []

    def append(
        self,
        states: LSTMStates,
        actor_out: th.Tensor,
        critic_raw: th.Tensor,
        raw_action: th.Tensor,
        starts: np.ndarray,
        rewards: np.ndarray,
    ) -> None:
        """Keep one step: the LSTM states before it, the network outputs, the raw action, the
        episode starts of its observations and its rewards."""
        self.hs.append(states.h)
        self.cs.append(states.c)
        self.actor_outs.append(actor_out)
        self.critic_raws.append(critic_raw)
        self.raw_actions.append(raw_action)
        self.starts.append(starts)
        self.rewards.append(np.asarray(rewards, dtype=np.float32))

    @th.inference_mode()
    def store(
        self,
        buffer: RecurrentRolloutBuffer,
        policy: RecurrentActorCritic,
        weights: RolloutWeights,
        noise: th.Tensor | None,
        terminal_values: th.Tensor,
        return_stats: tuple[float, float],
    ) -> None:
        """
        Log-probs, values, quantiles and distribution parameters of every step in one pass,
        and everything into ``buffer`` (values and quantiles in return units).

        Parameters
        ----------
        buffer : RecurrentRolloutBuffer
            Filled.
        policy : RecurrentActorCritic
            The policy.
        weights : RolloutWeights
            The rollout's inference weights.
        noise : Tensor or None
            The Gaussian noise of every step (``None``: categorical policy).
        terminal_values : Tensor
            Bootstrap values of truncated episodes (return units), (n_steps, n_envs).
        return_stats : tuple of float
            The return-normalization (mean, std).
        """
        ret_mean, ret_std = return_stats
        raw_action_all = th.stack(self.raw_actions)
        log_probs, values, quantiles, dist_params = policy.rollout_outputs(
            th.stack(self.actor_outs), th.stack(self.critic_raws), raw_action_all, weights, noise
        )
        buffer.store_rollout(
            episode_starts=th.from_numpy(np.stack(self.starts)),
            lstm_h=th.stack(self.hs),
            lstm_c=th.stack(self.cs),
            raw_actions=raw_action_all,
            log_probs=log_probs,
            values=values * ret_std + ret_mean,
            quantiles=quantiles * ret_std + ret_mean,
            dist_params=dist_params,
            rewards=th.from_numpy(np.stack(self.rewards)),
            terminal_values=terminal_values,
        )
