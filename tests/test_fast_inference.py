"""The fused rollout step (tradingbot.algo.fast.inference) against the policy's training-time
sequence evaluation, and the explicit refresh of its weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from conftest import BOX_ACTIONS, OBS_SPACE, make_policy, small_model
from tradingbot.algo.config import PPOConfig
from tradingbot.algo.policy import LSTMStates, RecurrentActorCritic


@pytest.mark.parametrize("action_space", [BOX_ACTIONS, spaces.Discrete(3)])
@pytest.mark.parametrize("shared_lstm", [False, True])
def test_rollout_steps_match_sequence_evaluation(action_space, shared_lstm: bool) -> None:
    """Log-probs, quantiles and distribution parameters computed step by step during a
    rollout (with resets) equal those of the training-time sequence evaluation."""
    policy = make_policy(action_space, shared_lstm=shared_lstm)
    n_envs, n_steps = 3, 7
    gen = th.Generator().manual_seed(1)
    obs = th.randn(n_steps, n_envs, 3, generator=gen)
    starts = (th.rand(n_steps, n_envs, generator=gen) < 0.3).float()
    states = LSTMStates(*th.randn(2, n_envs, policy.state_size, generator=gen))
    initial = states
    steps = []
    for t in range(n_steps):
        step = policy.step(obs[t], states, starts[t])
        steps.append(step)
        states = step.states
    evaluation = policy.evaluate_sequences(
        obs.transpose(0, 1),
        starts.transpose(0, 1),
        initial,
        th.stack([s.raw_action for s in steps], dim=1),
    )

    def by_env(name: str) -> th.Tensor:
        return th.stack([getattr(s, name) for s in steps], dim=1).flatten(0, 1)

    assert th.allclose(evaluation.log_prob, by_env("log_prob"), atol=1e-5)
    assert th.allclose(evaluation.quantiles, by_env("quantiles"), atol=1e-5)
    assert th.allclose(evaluation.dist_params, by_env("dist_params"), atol=1e-5)


@pytest.mark.parametrize("net_arch", [[], [16, 12]])
@pytest.mark.parametrize("action_space", [BOX_ACTIONS, spaces.Discrete(3)])
@pytest.mark.parametrize("shared_lstm", [False, True])
def test_batched_rollout_outputs_match_sequence_evaluation(
    net_arch: list[int], action_space, shared_lstm: bool
) -> None:
    """The rollout path (fused-weight steps, pre-drawn noise, outputs computed once for the
    whole rollout) equals the training-time evaluation, for any MLP depth."""
    th.manual_seed(0)
    config = PPOConfig(
        lstm_hidden_size=8, net_arch=net_arch, n_quantiles=5, shared_lstm=shared_lstm
    )
    policy = RecurrentActorCritic(OBS_SPACE, action_space, config)
    n_envs, n_steps = 3, 9
    gen = th.Generator().manual_seed(2)
    obs = th.randn(n_steps, n_envs, 3, generator=gen)
    starts = (th.rand(n_steps, n_envs, generator=gen) < 0.3).float()
    states = LSTMStates(*th.randn(2, n_envs, policy.state_size, generator=gen))
    initial = states
    noise = None if policy.discrete else th.randn(n_steps, n_envs, policy.action_dim)
    weights = policy.rollout_weights()
    actor_outs, critic_raws, raw_actions = [], [], []
    with th.inference_mode():
        for t in range(n_steps):
            keep = (1.0 - starts[t]).unsqueeze(-1) if bool(starts[t].any()) else None
            actor_out, critic_raw, states = policy.rollout_step(obs[t], states, keep, weights)
            _, raw_action = policy.sample_action(
                actor_out, weights, None if noise is None else noise[t]
            )
            actor_outs.append(actor_out)
            critic_raws.append(critic_raw)
            raw_actions.append(raw_action)
        log_prob, value, quantiles, dist_params = policy.rollout_outputs(
            th.stack(actor_outs), th.stack(critic_raws), th.stack(raw_actions), weights, noise
        )
    evaluation = policy.evaluate_sequences(
        obs.transpose(0, 1), starts.transpose(0, 1), initial, th.stack(raw_actions, dim=1)
    )

    def by_env(x: th.Tensor) -> th.Tensor:
        return x.transpose(0, 1).flatten(0, 1)

    assert th.allclose(evaluation.log_prob, by_env(log_prob), atol=1e-5)
    assert th.allclose(evaluation.quantiles, by_env(quantiles), atol=1e-5)
    assert th.allclose(evaluation.dist_params, by_env(dist_params), atol=1e-5)
    assert th.allclose(policy.value_from_quantiles(evaluation.quantiles), by_env(value))


def test_collected_rollout_matches_sequence_evaluation() -> None:
    """What collect_rollouts stores (log-probs, quantiles, values in return units, dist params)
    is what the training-time evaluation recomputes from the stored chunks."""
    from stable_baselines3.common.env_util import make_vec_env

    from tradingbot.algo.ppo import DistributionalPPO

    model = DistributionalPPO(
        "MlpLstmPolicy",
        make_vec_env("Pendulum-v1", n_envs=2, seed=0),
        n_steps=64,
        batch_size=32,
        n_epochs=1,
        lstm_hidden_size=8,
        n_quantiles=5,
        seq_len=16,
        seed=0,
    )
    model.learn(256)  # a few updates: return statistics and parameters away from their init
    buffer = model.rollout_buffer
    assert model.collect_rollouts(model.env, model._init_callback(None), buffer)
    chunks = buffer.to_chunks(16)
    with th.no_grad():
        evaluation = model.policy.evaluate_sequences(
            chunks.observations, chunks.episode_starts, chunks.initial_states, chunks.raw_actions
        )
    mean, std = model.return_scale()
    assert th.allclose(evaluation.log_prob, chunks.old_log_probs.reshape(-1), atol=1e-4)
    assert th.allclose(evaluation.dist_params, chunks.old_dist_params.flatten(0, 1), atol=1e-5)
    quantiles = evaluation.quantiles * std + mean
    assert th.allclose(quantiles, chunks.old_quantiles.flatten(0, 1), rtol=1e-5, atol=1e-4)


def test_rollout_weights_change_only_when_refreshed() -> None:
    """step() uses the weights last derived by refresh_rollout_weights (no cache keyed on
    parameter versions): an optimizer step leaves them as they were until the refresh, which
    derives the new ones; a loaded state acts as its source after a refresh."""
    policy = make_policy(BOX_ACTIONS)
    obs, starts = th.randn(4, 3), th.zeros(4)
    first = policy.rollout_weights()
    assert policy.rollout_weights() is first
    optimizer = th.optim.Adam(policy.parameters(), lr=0.1)
    evaluation = policy.evaluate_sequences(
        obs.unsqueeze(1), starts.unsqueeze(1), policy.initial_state(4), th.zeros(4, 1, 2)
    )
    (evaluation.log_prob.sum() + evaluation.quantiles.sum()).backward()
    optimizer.step()
    assert policy.rollout_weights() is first
    updated = policy.refresh_rollout_weights()
    assert policy.rollout_weights() is updated
    assert not th.equal(updated.lstm_weight_ih, first.lstm_weight_ih)
    other = make_policy(BOX_ACTIONS)
    other.step(obs, other.initial_state(4), starts)  # derives the weights of the initial state
    other.load_state_dict(policy.state_dict())
    other.refresh_rollout_weights()
    other_step = other.step(obs, other.initial_state(4), starts, deterministic=True)
    step = policy.step(obs, policy.initial_state(4), starts, deterministic=True)
    assert th.allclose(other_step.quantiles, step.quantiles)
    assert th.allclose(other_step.action, step.action)


def test_set_parameters_re_derives_the_inference_weights() -> None:
    """SB3's set_parameters loads the policy: predict() must then act with the loaded
    parameters, not with the weights derived from the old ones."""
    trained, other = small_model(), small_model(seed=1)
    trained.learn(64)
    obs = np.linspace(-1.0, 1.0, 3, dtype=np.float32)[None]
    before = other.predict(obs, deterministic=True)[0]
    other.set_parameters(trained.get_parameters())
    after = other.predict(obs, deterministic=True)[0]
    expected = trained.predict(obs, deterministic=True)[0]
    assert not np.allclose(before, expected)
    np.testing.assert_array_equal(after, expected)
