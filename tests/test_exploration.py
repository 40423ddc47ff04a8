"""State-dependent exploration (gSDE) and the clipped Gaussian (PPOConfig.exploration): the
distribution against torch's Normal and SB3's StateDependentNoiseDistribution, the noise's
schedule in a collected rollout, the deterministic action, the rollout path against the
training path, and exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import StateDependentNoiseDistribution
from torch.distributions import Normal

from conftest import BOX_ACTIONS, OBS_SPACE, make_policy
from tradingbot.algo.config import PPOConfig
from tradingbot.algo.exploration import draw_noise_matrices, state_dependent_std
from tradingbot.algo.policy import LSTMStates, RecurrentActorCritic

GSDE = {"mode": "gsde", "sample_freq": 4}


def _random_log_std(policy: RecurrentActorCritic, seed: int) -> None:
    """Distinct entries in the log-std matrix, so that a transposed or summed-over-the-wrong-
    axis std differs from the right one."""
    gen = th.Generator().manual_seed(seed)
    with th.no_grad():
        policy.log_std_logit.copy_(th.randn(policy.log_std_logit.shape, generator=gen))
    policy.refresh_rollout_weights()


def _one_step_features(policy: RecurrentActorCritic, obs: th.Tensor, states: LSTMStates):
    """The actor's features phi and Gaussian mean after one LSTM step, by torch's nn.LSTM and
    the MLP (not the policy's sequence code)."""
    n = policy.hidden_size
    h0, c0 = states.h[None, :, :n].contiguous(), states.c[None, :, :n].contiguous()
    out, _ = policy.actor_lstm(obs.unsqueeze(1), (h0, c0))
    features = policy.actor_mlp(out[:, 0])
    return features, policy.actor_head(features)


@pytest.mark.parametrize("squash", ["tanh", "clip"])
def test_gsde_log_prob_and_entropy_against_normal_with_per_state_std(squash: str) -> None:
    """std_k(s) = sqrt(sum_j phi_j(s)^2 sigma_jk^2 + 1e-6) by hand; log-prob and entropy of
    the training evaluation against torch.distributions.Normal with that std (minus the tanh's
    log-Jacobian when squashing)."""
    policy = make_policy(BOX_ACTIONS, exploration={**GSDE, "squash": squash})
    assert policy.log_std_logit.shape == (16, 2)  # (features, actions)
    _random_log_std(policy, 0)
    gen = th.Generator().manual_seed(1)
    n = 6
    obs = th.randn(n, 3, generator=gen)
    states = LSTMStates(*th.randn(2, n, policy.state_size, generator=gen))
    raw = th.randn(n, 2, generator=gen) * 2
    evaluation = policy.evaluate_sequences(obs.unsqueeze(1), th.zeros(n, 1), states, raw[:, None])
    with th.no_grad():
        features, mean = _one_step_features(policy, obs, states)
        sigma = th.exp(policy.log_std()).double()
        phi = features.double()
        std = th.stack(
            [th.sqrt((phi**2 * sigma[:, k] ** 2).sum(-1) + 1e-6) for k in range(2)], dim=-1
        )
    normal = Normal(mean.double(), std)
    expected = normal.log_prob(raw.double()).sum(-1)
    if squash == "tanh":
        half_range = (th.as_tensor(BOX_ACTIONS.high) - th.as_tensor(BOX_ACTIONS.low)) / 2
        expected -= th.log(half_range * (1 - th.tanh(raw.double()) ** 2)).sum(-1)
    assert th.allclose(evaluation.log_prob.double(), expected, atol=1e-4)
    assert th.allclose(evaluation.entropy.double(), normal.entropy().sum(-1), atol=1e-5)
    assert th.allclose(evaluation.dist_params[:, 2:].double(), std, atol=1e-5)
    assert th.allclose(evaluation.dist_params[:, :2], mean, atol=1e-6)
    # The per-state std differs between states (it would not with a state-independent std).
    assert float(std[:, 0].std()) > 1e-3


def test_state_dependent_std_by_hand() -> None:
    """sqrt(phi^2 @ sigma^2 + 1e-6): features (3, 4) with sigma columns (1, 1) and (2, 0.5)
    give sqrt(25) and sqrt(36 + 4); zero features give SB3's floor sqrt(1e-6), not 0."""
    sigma = th.tensor([[1.0, 2.0], [1.0, 0.5]], dtype=th.float64)
    phi = th.tensor([[3.0, 4.0], [0.0, 0.0]], dtype=th.float64)
    expected = th.tensor([[25.0, 40.0], [0.0, 0.0]], dtype=th.float64).add(1e-6).sqrt()
    assert th.allclose(state_dependent_std(phi, sigma), expected, rtol=1e-12, atol=0)


def test_gsde_unsquashed_distribution_equals_sb3s() -> None:
    """With the clip (no squash) the log-prob and entropy are those of SB3's
    StateDependentNoiseDistribution (full_std, no expln, features detached) given the same
    mean, log-std matrix and features."""
    policy = make_policy(BOX_ACTIONS, exploration={**GSDE, "squash": "clip"})
    _random_log_std(policy, 3)
    gen = th.Generator().manual_seed(4)
    n = 5
    obs = th.randn(n, 3, generator=gen)
    states = LSTMStates(*th.randn(2, n, policy.state_size, generator=gen))
    raw = th.randn(n, 2, generator=gen)
    evaluation = policy.evaluate_sequences(obs.unsqueeze(1), th.zeros(n, 1), states, raw[:, None])
    with th.no_grad():
        features, mean = _one_step_features(policy, obs, states)
        sb3 = StateDependentNoiseDistribution(2, full_std=True, use_expln=False)
        sb3.proba_distribution(mean, policy.log_std(), features)
        assert th.allclose(evaluation.log_prob, sb3.log_prob(raw), atol=1e-5)
        assert th.allclose(evaluation.entropy, sb3.entropy(), atol=1e-5)


def test_gsde_std_trains_sigma_not_the_features() -> None:
    """The features enter the std detached: the entropy's gradient reaches the log-std matrix
    and not the actor's MLP (SB3's learn_features=False)."""
    policy = make_policy(BOX_ACTIONS, exploration=GSDE)
    gen = th.Generator().manual_seed(5)
    obs = th.randn(4, 2, 3, generator=gen)
    states = LSTMStates(*th.randn(2, 4, policy.state_size, generator=gen))
    evaluation = policy.evaluate_sequences(obs, th.zeros(4, 2), states, th.zeros(4, 2, 2))
    evaluation.entropy.sum().backward()
    assert policy.log_std_logit.grad is not None and bool(policy.log_std_logit.grad.ne(0).all())
    for param in policy.actor_mlp.parameters():
        assert param.grad is None or not bool(param.grad.any())


def test_noise_matrices_are_constant_within_sample_freq_steps() -> None:
    th.manual_seed(0)
    sigma = th.tensor([[1.0, 0.1], [2.0, 0.5], [0.3, 3.0]])
    noise = draw_noise_matrices(sigma, n_steps=8, n_envs=2, sample_freq=3)
    assert noise.shape == (8, 2, 3, 2)
    for block in ([0, 1, 2], [3, 4, 5], [6, 7]):
        for t in block[1:]:
            assert th.equal(noise[t], noise[block[0]])
    assert not th.equal(noise[2], noise[3]) and not th.equal(noise[5], noise[6])
    assert not th.equal(noise[0, 0], noise[0, 1])  # one matrix per env
    once = draw_noise_matrices(sigma, n_steps=8, n_envs=2, sample_freq=0)
    assert all(th.equal(once[t], once[0]) for t in range(8))
    # Scale: theta_jk ~ N(0, sigma_jk^2), per entry.
    many = draw_noise_matrices(sigma, n_steps=20_000, n_envs=1, sample_freq=1)
    assert th.allclose(many.std(dim=0)[0], sigma, rtol=0.03)


def _constant_feature_model(sample_freq: int, squash: str = "tanh"):
    """A gSDE model on Pendulum whose actor features are the same in every state (the MLP's
    last weight zeroed, its bias set): then each step's noise phi @ theta is theta's alone."""
    from stable_baselines3.common.env_util import make_vec_env

    from tradingbot.algo.ppo import DistributionalPPO

    env = make_vec_env("Pendulum-v1", n_envs=3, seed=0)
    model = DistributionalPPO(
        "MlpLstmPolicy",
        env,
        seed=0,
        n_steps=16,
        batch_size=16,
        seq_len=8,
        n_epochs=1,
        lstm_hidden_size=8,
        net_arch=[8],
        n_quantiles=5,
        exploration={"mode": "gsde", "sample_freq": sample_freq, "squash": squash},
    )
    with th.no_grad():
        last = model.policy.actor_mlp[0]
        last.weight.zero_()
        last.bias.copy_(th.linspace(-1.0, 1.0, 8))
    return model


@pytest.mark.parametrize("sample_freq", [4, 5, 0])
def test_collected_noise_changes_every_sample_freq_steps(sample_freq: int) -> None:
    """In a collected rollout the raw action minus its mean (the noise) stays the same for
    ``sample_freq`` steps, changes at the next step, differs between envs, and is drawn anew
    at the next rollout; 0: one draw per rollout."""
    model = _constant_feature_model(sample_freq)
    _, callback = model._setup_learn(10_000)

    def rollout_noise() -> th.Tensor:
        assert model.collect_rollouts(model.env, callback, model.rollout_buffer, 16)
        buffer = model.rollout_buffer
        return buffer.raw_actions - buffer.dist_params[..., :1]

    eps = rollout_noise()  # (n_steps, n_envs, 1)
    freq = sample_freq or 16
    for t in range(1, 16):
        same = th.allclose(eps[t], eps[t - 1], atol=1e-6)
        assert same == (t % freq != 0), t
    assert not th.allclose(eps[0, 0], eps[0, 1], atol=1e-3)
    assert not th.allclose(rollout_noise()[0], eps[0], atol=1e-3)


def test_stochastic_predict_draws_new_noise_at_every_call() -> None:
    """``predict(deterministic=False)`` under gSDE samples the per-step distribution: the same
    observation and state give a new action at each call (noise matrices held as SB3 holds them
    until ``reset_noise`` would repeat it), and the deterministic call repeats its action."""
    model = _constant_feature_model(sample_freq=4)
    obs = model.env.reset()
    first, _ = model.predict(obs, None, None, deterministic=False)
    second, _ = model.predict(obs, None, None, deterministic=False)
    assert not np.allclose(first, second, atol=1e-4)
    mode, _ = model.predict(obs, None, None, deterministic=True)
    np.testing.assert_array_equal(mode, model.predict(obs, None, None, deterministic=True)[0])


@pytest.mark.parametrize("squash", ["tanh", "clip"])
def test_deterministic_action_is_the_mean(squash: str) -> None:
    """The deterministic action is the Gaussian's mean through the squash (or the clip): no
    noise, and the log-prob is that of the noise 0."""
    policy = make_policy(BOX_ACTIONS, exploration={**GSDE, "squash": squash}, log_std_init=1.5)
    with th.no_grad():  # means beyond the Box, so the clip is exercised
        policy.actor_head.weight.mul_(500.0)
    policy.refresh_rollout_weights()
    gen = th.Generator().manual_seed(6)
    obs = th.randn(32, 3, generator=gen)
    states = LSTMStates(*th.randn(2, 32, policy.state_size, generator=gen))
    step = policy.step(obs, states, th.zeros(32), deterministic=True)
    _, mean = _one_step_features(policy, obs, states)
    low, high = th.as_tensor(BOX_ACTIONS.low), th.as_tensor(BOX_ACTIONS.high)
    expected = (
        th.clamp(mean, low, high)
        if squash == "clip"
        else (high + low) / 2 + (high - low) / 2 * th.tanh(mean)
    )
    assert th.allclose(step.raw_action, mean, atol=1e-5)
    assert th.allclose(step.action, expected, atol=1e-5)
    if squash == "clip":
        assert bool((step.action == low).any()) and bool((step.action == high).any())
    stochastic = policy.step(obs, states, th.zeros(32))
    assert not th.allclose(stochastic.raw_action, mean, atol=1e-3)


@pytest.mark.parametrize("net_arch", [[], [16, 12]])
@pytest.mark.parametrize("shared_lstm", [False, True])
def test_gsde_rollout_path_matches_sequence_evaluation(net_arch: list[int], shared_lstm: bool):
    """The fused rollout step (features through the head's identity block), the pre-drawn
    noise matrices and the rollout's outputs equal the training-time evaluation."""
    th.manual_seed(0)
    config = PPOConfig(
        lstm_hidden_size=8,
        net_arch=net_arch,
        n_quantiles=5,
        shared_lstm=shared_lstm,
        exploration=GSDE,
    )
    policy = RecurrentActorCritic(OBS_SPACE, BOX_ACTIONS, config)
    _random_log_std(policy, 7)
    n_envs, n_steps = 3, 9
    gen = th.Generator().manual_seed(2)
    obs = th.randn(n_steps, n_envs, 3, generator=gen)
    starts = (th.rand(n_steps, n_envs, generator=gen) < 0.3).float()
    states = initial = LSTMStates(*th.randn(2, n_envs, policy.state_size, generator=gen))
    weights = policy.rollout_weights()
    noise = policy.rollout_noise(n_steps, n_envs, weights)
    assert noise is not None and noise.shape == (n_steps, n_envs, 8 if not net_arch else 12, 2)
    outs, raws = [], []
    with th.inference_mode():
        for t in range(n_steps):
            keep = (1.0 - starts[t]).unsqueeze(-1) if bool(starts[t].any()) else None
            actor_out, critic_raw, states = policy.rollout_step(obs[t], states, keep, weights)
            _, raw_action = policy.sample_action(actor_out, weights, noise[t])
            outs.append((actor_out, critic_raw))
            raws.append(raw_action)
        log_prob, _, quantiles, dist_params = policy.rollout_outputs(
            th.stack([o[0] for o in outs]), th.stack([o[1] for o in outs]), th.stack(raws), weights
        )
    evaluation = policy.evaluate_sequences(
        obs.transpose(0, 1), starts.transpose(0, 1), initial, th.stack(raws, dim=1)
    )

    def by_env(x: th.Tensor) -> th.Tensor:
        return x.transpose(0, 1).flatten(0, 1)

    assert th.allclose(evaluation.log_prob, by_env(log_prob), atol=1e-4)
    assert th.allclose(evaluation.quantiles, by_env(quantiles), atol=1e-5)
    assert th.allclose(evaluation.dist_params, by_env(dist_params), atol=1e-5)
    # The noise is phi @ theta: the actor output's features times this step's matrices.
    features = th.stack([o[0][:, 2:] for o in outs])
    means = th.stack([o[0][:, :2] for o in outs])
    expected = means + th.einsum("tef,tefa->tea", features, noise)
    assert th.allclose(th.stack(raws), expected, atol=1e-5)


def test_gsde_config_errors() -> None:
    with pytest.raises(ValueError, match=r"gsde.*Discrete"):
        make_policy(spaces.Discrete(3), exploration=GSDE)
    with pytest.raises(ValueError, match="sample_freq"):
        PPOConfig(exploration={"mode": "gsde", "sample_freq": -1})
    from tradingbot.algo.portfolio_policy import PortfolioActorCritic

    obs = spaces.Box(-1.0, 1.0, (3, 4), dtype=np.float32)
    act = spaces.Box(-1.0, 1.0, (4,), dtype=np.float32)
    with pytest.raises(ValueError, match="exploration"):
        PortfolioActorCritic(obs, act, PPOConfig(exploration=GSDE))


def test_gsde_resume_in_fresh_process_is_bit_identical(tmp_path) -> None:
    """A gSDE run (sample_freq not dividing n_steps) continued from a checkpoint in a fresh
    process ends bit-identical to the straight run: the noise matrices are drawn at each
    rollout's start from torch's generator, whose state the checkpoint holds."""
    from test_resume import run_script
    from tradingbot.checkpoint import load_checkpoint

    hyper = 'dict(HYPER, exploration={"mode": "gsde", "sample_freq": 5})'
    run_script(f"""
        model = DistributionalPPO("MlpLstmPolicy", env, seed=0, **{hyper})
        model.learn(256)
        model.save(r"{tmp_path}/half")
        model.learn(256, reset_num_timesteps=False)
        model.save(r"{tmp_path}/straight")
    """)
    run_script(f"""
        model = DistributionalPPO.load(r"{tmp_path}/half", env=env)
        assert model.config.exploration.mode == "gsde"
        model.learn(256, reset_num_timesteps=False)
        model.save(r"{tmp_path}/resumed")
    """)
    straight, _ = load_checkpoint(tmp_path / "straight.safetensors")
    resumed, _ = load_checkpoint(tmp_path / "resumed.safetensors")
    half, _ = load_checkpoint(tmp_path / "half.safetensors")
    assert straight["policy.log_std_logit"].shape == (16, 1)
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert th.equal(straight[key], resumed[key]), key
    assert not th.equal(half["policy.log_std_logit"], straight["policy.log_std_logit"])
