"""Tests of the recurrent actor-critic and of the packed sequence evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from scipy.optimize import brentq
from scipy.stats import norm
from torch import nn
from torch.distributions import Normal

from tradingbot.algo.config import PPOConfig
from tradingbot.algo.gradients import FlatGradients, clip_scales
from tradingbot.algo.losses import quantile_huber_loss
from tradingbot.algo.policy import LSTMStates, RecurrentActorCritic
from tradingbot.algo.sequence import lstm_over_chunks, lstm_step_by_step, lstms_over_chunks

OBS_SPACE = spaces.Box(-10.0, 10.0, (3,), dtype=np.float32)
BOX_ACTIONS = spaces.Box(
    np.array([-2.0, 0.0], dtype=np.float32), np.array([2.0, 1.0], dtype=np.float32)
)


def _random_chunks(n_chunks: int, seq_len: int, p_start: float, seed: int):
    gen = th.Generator().manual_seed(seed)
    inputs = th.randn(n_chunks, seq_len, 3, generator=gen)
    starts = (th.rand(n_chunks, seq_len, generator=gen) < p_start).float()
    h0, c0 = th.randn(n_chunks, 8, generator=gen), th.randn(n_chunks, 8, generator=gen)
    return inputs, starts, h0, c0


@pytest.mark.parametrize(("p_start", "seed"), [(0.0, 0), (0.2, 1), (0.5, 2), (1.0, 3)])
def test_packed_sequences_equal_step_by_step_loop(p_start: float, seed: int) -> None:
    th.manual_seed(seed)
    lstm = nn.LSTM(3, 8, batch_first=True)
    inputs, starts, h0, c0 = _random_chunks(6, 9, p_start, seed)
    if p_start == 0.2:
        starts[2, 0] = 1.0  # a chunk that begins with a reset
        starts[3, -1] = 1.0  # a one-step segment at the end of a chunk
    inputs.requires_grad_(True)

    packed = lstm_over_chunks(lstm, inputs, starts, h0, c0)
    weights = th.randn_like(packed)
    (packed * weights).sum().backward()
    packed_grads = [inputs.grad.clone(), *(p.grad.clone() for p in lstm.parameters())]
    inputs.grad = None
    lstm.zero_grad()

    looped = lstm_step_by_step(lstm, inputs, starts, h0, c0)
    (looped * weights).sum().backward()
    looped_grads = [inputs.grad, *(p.grad for p in lstm.parameters())]

    assert th.allclose(packed, looped, atol=1e-6)
    for got, expected in zip(packed_grads, looped_grads, strict=True):
        assert th.allclose(got, expected, atol=1e-5)


def test_episode_start_makes_outputs_independent_of_history() -> None:
    th.manual_seed(0)
    lstm = nn.LSTM(3, 8, batch_first=True)
    gen = th.Generator().manual_seed(5)
    new_episode = th.randn(1, 6, 3, generator=gen)
    # Two different histories (and stored states) before the same new episode at t = 4.
    histories = [th.randn(1, 4, 3, generator=gen) for _ in range(2)]
    starts = th.zeros(1, 10)
    starts[0, 4] = 1.0
    outputs = [
        lstm_over_chunks(
            lstm,
            th.cat([history, new_episode], dim=1),
            starts,
            th.randn(1, 8, generator=gen),
            th.randn(1, 8, generator=gen),
        )
        for history in histories
    ]
    assert not th.allclose(outputs[0][:, :4], outputs[1][:, :4])
    assert th.allclose(outputs[0][:, 4:], outputs[1][:, 4:], atol=1e-6)


def _policy(action_space: spaces.Space, **overrides) -> RecurrentActorCritic:
    th.manual_seed(0)
    config = PPOConfig(lstm_hidden_size=8, net_arch=[16], n_quantiles=5, **overrides)
    return RecurrentActorCritic(OBS_SPACE, action_space, config)


@pytest.mark.parametrize("action_space", [BOX_ACTIONS, spaces.Discrete(3)])
@pytest.mark.parametrize("shared_lstm", [False, True])
def test_rollout_steps_match_sequence_evaluation(action_space, shared_lstm: bool) -> None:
    """Log-probs, quantiles and distribution parameters computed step by step during a
    rollout (with resets) equal those of the training-time sequence evaluation."""
    policy = _policy(action_space, shared_lstm=shared_lstm)
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


def test_squashed_gaussian_log_prob_and_bounds() -> None:
    policy = _policy(BOX_ACTIONS)
    obs = th.randn(64, 3)
    step = policy.step(obs, policy.initial_state(64), th.ones(64))
    low, high = th.as_tensor(BOX_ACTIONS.low), th.as_tensor(BOX_ACTIONS.high)
    assert bool(((step.action >= low) & (step.action <= high)).all())
    mean, std = step.dist_params[:, :2], step.dist_params[:, 2:]
    # Change of variables a = c + h tanh(u): log p(a) = log N(u) - sum log(h (1 - tanh(u)^2)).
    half_range = (high - low) / 2
    jacobian = th.log(half_range * (1 - th.tanh(step.raw_action.double()) ** 2))
    expected = Normal(mean.double(), std.double()).log_prob(step.raw_action.double()) - jacobian
    assert th.allclose(step.log_prob.double(), expected.sum(-1), atol=1e-4)
    assert th.allclose(policy.squash(step.raw_action), step.action)


def test_log_std_is_bounded_and_initialized() -> None:
    policy = _policy(BOX_ACTIONS, log_std_init=-0.5, log_std_min=-3.0, log_std_max=1.0)
    assert th.allclose(policy.log_std(), th.full((2,), -0.5), atol=1e-6)
    with th.no_grad():
        policy.log_std_logit.fill_(1e4)
    assert th.allclose(policy.log_std(), th.full((2,), 1.0))


def test_quantiles_are_monotone_and_value_is_min_of_means() -> None:
    policy = _policy(spaces.Discrete(2))
    with th.no_grad():
        for p in policy.critic_head.parameters():
            p.normal_()
    quantiles = policy.critic_head(th.randn(50, 8))
    assert quantiles.shape == (50, 2, 5)
    assert bool((quantiles.diff(dim=-1) >= 0).all())
    expected = quantiles.mean(-1).min(-1).values
    assert th.allclose(policy.value_from_quantiles(quantiles), expected)
    policy_mean = _policy(spaces.Discrete(2), critic_value="mean")
    assert th.allclose(policy_mean.value_from_quantiles(quantiles), quantiles.mean(-1).mean(-1))


def _huber_quantiles(taus: np.ndarray, kappa: float, loc: float, scale: float) -> np.ndarray:
    """Exact minimizers of the expected quantile Huber loss under N(loc, scale^2): roots of
    E[|tau - 1{G < q}| clip(G - q, -kappa, kappa)] = 0, by quadrature (kappa -> 0: quantiles)."""
    grid = np.linspace(loc - 10 * scale, loc + 10 * scale, 200_001)
    weights = norm.pdf(grid, loc, scale)
    weights /= weights.sum()

    def first_order(q: float, tau: float) -> float:
        u = grid - q
        return float(np.sum(weights * np.abs(tau - (u < 0)) * np.clip(u, -kappa, kappa)))

    return np.array(
        [brentq(first_order, loc - 5 * scale, loc + 5 * scale, args=(t,)) for t in taus]
    )


@pytest.mark.parametrize("kappa", [0.1, 1.0])
def test_critic_learns_quantiles_of_a_normal_return(kappa: float) -> None:
    """One state, one-step episodes, return ~ N(1, 2^2): trained with the quantile Huber loss,
    each twin critic predicts the return's quantiles at the midpoint taus.

    With kappa = 0.1 the loss's minimizers are within 0.04 of norm.ppf(taus, 1, 2), so those are
    the expected values. With kappa = 1 the Huber part pulls the minimizers towards the median
    (by 0.34 at tau = 0.1 for this std of 2), so the known answer is the exact minimizer."""
    policy = _policy(spaces.Discrete(2))
    optimizer = th.optim.Adam(policy.critic_parameters(), lr=1e-2)
    # A 10x smaller step for the last 200 updates averages out the sampling noise.
    schedule = th.optim.lr_scheduler.LambdaLR(
        optimizer, lambda update: 1.0 if update < 300 else 0.1
    )
    gen = th.Generator().manual_seed(0)
    obs = th.zeros(1, 1, 3)
    for _ in range(500):
        # One observation, 4096 sampled returns as target samples of shape (1, M).
        returns = 1.0 + 2.0 * th.randn(1, 4096, generator=gen)
        evaluation = policy.evaluate_sequences(
            obs, th.ones(1, 1), policy.initial_state(1), th.zeros(1, 1, 1)
        )
        loss = sum(
            quantile_huber_loss(evaluation.quantiles[:, k], returns, policy.taus, kappa)
            for k in range(2)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    taus = policy.taus.numpy().astype(np.float64)
    if kappa == 0.1:
        expected = norm.ppf(taus, loc=1.0, scale=2.0)
    else:
        expected = _huber_quantiles(taus, kappa, loc=1.0, scale=2.0)
    predicted = evaluation.quantiles[0].detach().numpy()
    # 0.25 = 1/8 of the std: room for the sampling noise of the last updates.
    for k in range(2):
        assert np.abs(predicted[k] - expected).max() < 0.25, (k, predicted[k], expected)
    assert math.isclose(
        float(policy.value_from_quantiles(evaluation.quantiles.detach())[0]), 1.0, abs_tol=0.25
    )


def _losses(policy: RecurrentActorCritic, seed: int) -> tuple[th.Tensor, th.Tensor]:
    gen = th.Generator().manual_seed(seed)
    starts = (th.rand(4, 6, generator=gen) < 0.3).float()
    states = LSTMStates(*th.randn(2, 4, policy.state_size, generator=gen))
    evaluation = policy.evaluate_sequences(
        th.randn(4, 6, 3, generator=gen), starts, states, th.randn(4, 6, 2, generator=gen)
    )
    return -evaluation.log_prob.mean(), evaluation.quantiles.square().mean()


def _grads(policy: RecurrentActorCritic) -> list[th.Tensor]:
    return [th.zeros_like(p) if p.grad is None else p.grad.clone() for p in policy.parameters()]


def test_actor_and_critic_lstms_stay_independent() -> None:
    """The actor's loss reaches the actor LSTM only, the critic's the critic LSTM only."""
    policy = _policy(BOX_ACTIONS)
    for which, (own, other) in enumerate(
        [(policy.actor_lstm, policy.critic_lstm), (policy.critic_lstm, policy.actor_lstm)]
    ):
        policy.zero_grad()
        _losses(policy, 0)[which].backward()
        assert all(p.grad is not None and bool((p.grad != 0).any()) for p in own.parameters())
        assert all(p.grad is None or not p.grad.any() for p in other.parameters())


def test_flat_gradients_clip_each_network_alone() -> None:
    """Gradients of the actor and critic losses touch disjoint parameters (and LSTM rows), so
    the per-network norms of their sum are each loss's own, and clipping the sum per network
    equals clipping each loss's full gradient with torch's clip_grad_norm_."""
    policy = _policy(BOX_ACTIONS)
    max_norm = 0.01
    expected_grads, expected_norms = [], []
    for which in range(2):
        policy.zero_grad()
        _losses(policy, 0)[which].backward()
        expected_norms.append(float(th.nn.utils.clip_grad_norm_(policy.parameters(), max_norm)))
        expected_grads.append(_grads(policy))
    gradients = FlatGradients(policy.parameters(), policy.network_sizes())
    policy.zero_grad()  # replaces the views with None: zero_ must re-attach them
    gradients.zero_()
    sum(_losses(policy, 0)).backward()
    params = list(policy.parameters())
    assert all(p.grad is view for p, view in zip(params, gradients.views, strict=True))
    scales, norms = clip_scales(gradients.square_norms().tolist(), max_norm)
    assert norms == pytest.approx(expected_norms, rel=1e-5)
    assert min(expected_norms) > max_norm  # both were clipped
    gradients.scale_(scales)
    for got, actor, critic in zip(_grads(policy), *expected_grads, strict=True):
        assert th.allclose(got, actor + critic, atol=1e-7)
    gradients.flat[3] = float("nan")
    assert not np.isfinite(gradients.square_norms().tolist()).all()


def test_adam_over_the_flat_parameter_equals_adam_over_each_parameter() -> None:
    """The parameters' values are views of FlatGradients.param, and fused Adam over that one
    tensor moves every parameter as torch's Adam over the parameters does (the same float32
    arithmetic: at most one rounding step apart, measured 6e-8)."""
    reference = _policy(BOX_ACTIONS)
    policy = _policy(BOX_ACTIONS)
    policy.load_state_dict(reference.state_dict())
    gradients = FlatGradients(policy.parameters(), policy.network_sizes())
    assert all(
        p.untyped_storage().data_ptr() == gradients.param.untyped_storage().data_ptr()
        for p in policy.parameters()
    )
    expected_opt = th.optim.Adam(reference.parameters(), lr=1e-2, eps=1e-5, fused=True)
    flat_opt = th.optim.Adam([gradients.param], lr=1e-2, eps=1e-5, fused=True)
    for seed in range(3):
        reference.zero_grad()
        sum(_losses(reference, seed)).backward()
        expected_opt.step()
        gradients.zero_()
        sum(_losses(policy, seed)).backward()
        flat_opt.step()
    for got, want in zip(policy.parameters(), reference.parameters(), strict=True):
        assert th.allclose(got, want, rtol=1e-6, atol=1e-7)
    assert not th.equal(policy.actor_head.weight, _policy(BOX_ACTIONS).actor_head.weight)


def test_shared_lstm_counts_with_the_actor() -> None:
    policy = _policy(BOX_ACTIONS, shared_lstm=True)
    gradients = FlatGradients(policy.parameters(), policy.network_sizes())
    sum(_losses(policy, 0)).backward()
    critic = {id(p) for p in policy.critic_head.parameters()}
    squares = [0.0, 0.0]
    for p in policy.parameters():
        squares[id(p) in critic] += float(p.grad.double().square().sum())
    assert gradients.square_norms().tolist() == pytest.approx(squares, rel=1e-5)
    assert float(policy.actor_lstm.weight_ih_l0.grad.abs().sum()) > 0


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


@pytest.mark.parametrize("p_start", [0.0, 0.2])
def test_lstms_over_chunks_equal_each_lstm_alone(p_start: float) -> None:
    """Several LSTMs sharing the segmentation give each LSTM's own outputs and gradients."""
    policy = _policy(BOX_ACTIONS)
    gen = th.Generator().manual_seed(3)
    inputs = th.randn(5, 6, 3, generator=gen)
    starts = (th.rand(5, 6, generator=gen) < p_start).float()
    h0, c0 = th.randn(2, 5, policy.state_size, generator=gen)
    heads = th.randn(2, policy.hidden_size, generator=gen)
    together = lstms_over_chunks(policy.lstms, inputs, starts, h0, c0)
    sum((out * head).sum() for out, head in zip(together, heads, strict=True)).backward()
    grads = [p.grad.clone() for lstm in policy.lstms for p in lstm.parameters()]
    policy.zero_grad()
    alone, size = [], policy.hidden_size
    for k, (lstm, head) in enumerate(zip(policy.lstms, heads, strict=True)):
        units = slice(k * size, (k + 1) * size)
        out = lstm_over_chunks(lstm, inputs, starts, h0[:, units], c0[:, units])
        (out * head).sum().backward()
        alone.append(out.detach())
    for a, b in zip(together, alone, strict=True):
        assert th.allclose(a, b, atol=1e-6)
    expected = [p.grad for lstm in policy.lstms for p in lstm.parameters()]
    for g1, g2 in zip(grads, expected, strict=True):
        assert th.allclose(g1, g2, atol=1e-6)


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
    assert buffer.full
    chunks = buffer.to_chunks(16)
    with th.no_grad():
        evaluation = model.policy.evaluate_sequences(
            chunks.observations, chunks.episode_starts, chunks.initial_states, chunks.raw_actions
        )
    mean, std = model._return_scale()
    assert th.allclose(evaluation.log_prob, chunks.old_log_probs.reshape(-1), atol=1e-4)
    assert th.allclose(evaluation.dist_params, chunks.old_dist_params.flatten(0, 1), atol=1e-5)
    quantiles = evaluation.quantiles * std + mean
    assert th.allclose(quantiles, chunks.old_quantiles.flatten(0, 1), rtol=1e-5, atol=1e-4)


def test_rollout_weights_follow_parameter_updates() -> None:
    """The cached rollout weights are re-derived after an optimizer step or a state load."""
    policy = _policy(BOX_ACTIONS)
    obs, starts = th.randn(4, 3), th.zeros(4)
    first = policy.rollout_weights()
    assert policy.rollout_weights() is first
    optimizer = th.optim.Adam(policy.parameters(), lr=0.1)
    evaluation = policy.evaluate_sequences(
        obs.unsqueeze(1), starts.unsqueeze(1), policy.initial_state(4), th.zeros(4, 1, 2)
    )
    (evaluation.log_prob.sum() + evaluation.quantiles.sum()).backward()
    optimizer.step()
    updated = policy.rollout_weights()
    assert updated is not first
    assert not th.equal(updated.lstm_weight_ih, first.lstm_weight_ih)
    other = _policy(BOX_ACTIONS)
    other.step(obs, other.initial_state(4), starts)  # caches the weights of the initial state
    other.load_state_dict(policy.state_dict())
    other_step = other.step(obs, other.initial_state(4), starts, deterministic=True)
    step = policy.step(obs, policy.initial_state(4), starts, deterministic=True)
    assert th.allclose(other_step.quantiles, step.quantiles)
    assert th.allclose(other_step.action, step.action)
