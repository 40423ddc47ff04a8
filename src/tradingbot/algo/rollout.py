"""Collecting one rollout of DistributionalPPO: the fused recurrent inference step per env step,
time-limit bootstrapping, and the per-rollout work (log-probs, quantiles, GAE) done once on the
stacked outputs instead of per step."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from tradingbot.algo.buffer import RecurrentRolloutBuffer
from tradingbot.algo.policy import LSTMStates

if TYPE_CHECKING:
    from tradingbot.algo.ppo import DistributionalPPO


def collect_rollouts(
    self: DistributionalPPO,
    env: VecEnv,
    callback: BaseCallback,
    rollout_buffer: RecurrentRolloutBuffer,
) -> bool:
    """Fill ``rollout_buffer`` with ``n_steps`` steps per env of ``self`` (the algorithm);
    False if a callback stopped training. Values and quantiles are stored in return units
    (de-normalized). ``callback.update_locals`` sees SB3's usual names (``self``, ``infos``,
    ``dones``, ``new_obs``, ``rewards``, ...)."""
    assert self._last_obs is not None and self._last_episode_starts is not None
    ret_mean, ret_std = self._return_scale()
    rollout_buffer.reset()
    callback.on_rollout_start()
    policy = self.policy
    n_steps, n_envs = rollout_buffer.n_steps, env.num_envs
    # Per rollout, not per step: the inference weights (fixed until the next update), the
    # Gaussian noise of every step, and (after the loop) log-probs, quantiles, values and
    # distribution parameters from the stacked raw network outputs.
    weights = policy.rollout_weights(fresh=True)
    noise = None
    if not policy.discrete:
        noise = th.randn(n_steps, n_envs, policy.action_dim, device=self.device)
    terminal_values = th.zeros(n_steps, n_envs, device=self.device)
    hs, cs, actor_outs, critic_raws, raw_actions, starts, rewards_list = ([] for _ in range(7))
    states = self._last_lstm_states
    for t in range(n_steps):
        starts_np = np.asarray(self._last_episode_starts, dtype=np.float32).reshape(n_envs)
        keep = None
        if starts_np.any():
            keep = th.as_tensor(1.0 - starts_np, device=self.device).unsqueeze(-1)
        obs = self._obs_tensor(self._last_obs)  # type: ignore[arg-type]
        rollout_buffer.observations[t] = obs
        with th.inference_mode():
            actor_out, critic_raw, new_states = policy.rollout_step(obs, states, keep, weights)
            action, raw_action = policy.sample_action(
                actor_out, weights, None if noise is None else noise[t]
            )
        new_obs, rewards, dones, infos = env.step(self._env_actions(action))
        self.num_timesteps += env.num_envs

        callback.update_locals(locals())
        if not callback.on_step():
            return False
        self._update_info_buffer(infos, dones)

        # Time-limit bootstrap: a truncated episode continues in expectation, so the critic's
        # value of the terminal observation (from that env's current LSTM state) is added
        # to the reward as gamma * V, as SB3 does.
        truncated = [
            i
            for i in np.flatnonzero(dones)
            if infos[i].get("terminal_observation") is not None
            and infos[i].get("TimeLimit.truncated", False)
        ]
        if truncated:
            index = th.as_tensor(truncated)
            terminal_obs = self._obs_tensor(
                np.stack([infos[i]["terminal_observation"] for i in truncated])
            )
            terminal_states = LSTMStates(*(s[index] for s in new_states))
            value = policy.predict_values(
                terminal_obs, terminal_states, th.zeros(len(truncated)), weights
            )
            terminal_values[t, index] = value * ret_std + ret_mean

        hs.append(states.h)
        cs.append(states.c)
        actor_outs.append(actor_out)
        critic_raws.append(critic_raw)
        raw_actions.append(raw_action)
        starts.append(starts_np)
        rewards_list.append(np.asarray(rewards, dtype=np.float32))
        states = new_states
        self._last_obs = new_obs  # type: ignore[assignment]
        self._last_episode_starts = dones

    with th.inference_mode():
        raw_action_all = th.stack(raw_actions)
        log_probs, values, quantiles, dist_params = policy.rollout_outputs(
            th.stack(actor_outs), th.stack(critic_raws), raw_action_all, weights, noise
        )
        rollout_buffer.store_rollout(
            episode_starts=th.from_numpy(np.stack(starts)),
            lstm_h=th.stack(hs),
            lstm_c=th.stack(cs),
            raw_actions=raw_action_all,
            log_probs=log_probs,
            values=values * ret_std + ret_mean,
            quantiles=quantiles * ret_std + ret_mean,
            dist_params=dist_params,
            rewards=th.from_numpy(np.stack(rewards_list)),
            terminal_values=terminal_values,
        )

    self._last_lstm_states = states
    last_dones = th.as_tensor(dones, dtype=th.float32)
    last_values = policy.predict_values(self._obs_tensor(new_obs), states, last_dones, weights)
    rollout_buffer.compute_returns_and_advantage(
        last_values * ret_std + ret_mean, last_dones, self.config.gamma, self.config.gae_lambda
    )
    callback.update_locals(locals())
    callback.on_rollout_end()
    return True
