"""One prediction of a trained policy for observations given the LSTM state: the actions the
env takes and the policy's step output in return units (``DistributionalPPO.predict_details``)."""

from __future__ import annotations

import numpy as np
import torch as th
from gymnasium import spaces

from tradingbot.algo.policy import LSTMStates, PolicyStep, RecurrentActorCritic
from tradingbot.algo.rollout import env_actions, obs_tensor


def predict_step(
    policy: RecurrentActorCritic,
    observation: np.ndarray,
    state: tuple[np.ndarray, ...] | None,
    episode_start: np.ndarray | None,
    deterministic: bool,
    return_stats: tuple[float, float],
    observation_space: spaces.Space,
    action_space: spaces.Space,
) -> tuple[np.ndarray, tuple[np.ndarray, ...], PolicyStep]:
    """
    The policy's step for one observation or a batch.

    Parameters
    ----------
    policy : RecurrentActorCritic
        The policy (its current inference weights).
    observation : ndarray
        One observation (``observation_space``'s shape) or a batch (n_envs, *obs_shape).
    state : tuple of ndarray or None
        The LSTM (h, c) of the previous call (``None``: zeros).
    episode_start : ndarray or None
        1 where an observation starts an episode (``None``: no reset).
    deterministic : bool
        Take the mode of the action distribution.
    return_stats : tuple of float
        The return-normalization (mean, std): quantiles and value come back in return units.
    observation_space, action_space : gymnasium.spaces.Space
        The env's spaces.

    Returns
    -------
    tuple
        (actions, the new LSTM state as arrays, the step output in return units); a single
        observation gives a single action.
    """
    device = policy.taus.device
    obs = np.asarray(observation, dtype=np.float32)
    vectorized = obs.shape != observation_space.shape
    obs_t = obs_tensor(obs, policy.obs_dim, device)
    n_envs = obs_t.shape[0]
    if state is None:
        states = policy.initial_state(n_envs)
    else:
        states = LSTMStates(*(th.as_tensor(s, dtype=th.float32, device=device) for s in state))
    if episode_start is None:
        starts = th.zeros(n_envs, device=device)
    else:
        starts = th.as_tensor(np.asarray(episode_start, dtype=np.float32), device=device)
    step = policy.step(obs_t, states, starts.reshape(n_envs), deterministic=deterministic)
    ret_mean, ret_std = return_stats
    step = step._replace(
        quantiles=step.quantiles * ret_std + ret_mean, value=step.value * ret_std + ret_mean
    )
    actions = env_actions(step.action, action_space)
    new_state = tuple(s.cpu().numpy() for s in step.states)
    return (actions if vectorized else actions[0]), new_state, step
