"""The hidden activation (``PPOConfig.activation``) and the initialization
(``PPOConfig.ortho_init``) of the networks after the LSTMs, in every path: the MLP trunk and the
quantile heads against hand-written chains, the fused rollout step against the modules, the
init against PyTorch's default and the orthogonal one, and a checkpoint round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch as th
from scipy import stats
from torch import nn
from torch.nn import functional as F

from conftest import BOX_ACTIONS, OBS_SPACE, small_model
from tradingbot.algo.config import PPOConfig
from tradingbot.algo.heads import TwinQuantileHead, mlp
from tradingbot.algo.policy import LSTMStates, RecurrentActorCritic
from tradingbot.algo.ppo import DistributionalPPO
from tradingbot.errors import ConfigError


def _relu(x: th.Tensor) -> th.Tensor:
    return th.where(x > 0, x, th.zeros_like(x))


def _tanh(x: th.Tensor) -> th.Tensor:
    return 1.0 - 2.0 / (th.exp(2.0 * x) + 1.0)


REFERENCE = {"relu": _relu, "tanh": _tanh}


def _randomize(module: nn.Module, seed: int) -> None:
    """Parameters of no special structure (nonzero biases), so a bias left out shows."""
    gen = th.Generator().manual_seed(seed)
    with th.no_grad():
        for param in module.parameters():
            param.copy_(th.randn(param.shape, generator=gen) * 0.7)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_mlp_equals_a_hand_written_chain(activation: str) -> None:
    trunk = mlp(5, [16, 12], activation, True)
    _randomize(trunk, 0)
    x = th.randn(40, 5, generator=th.Generator().manual_seed(1))
    act = REFERENCE[activation]
    w0, b0, w1, b1 = (p.detach() for p in trunk.parameters())
    pre_first = x @ w0.T + b0
    pre_second = act(pre_first) @ w1.T + b1
    expected = act(pre_second)
    assert th.allclose(trunk(x), expected, atol=1e-6)
    # Both layers' pre-activations have negative entries, so relu differs from the identity
    # at each (an activation left out of one layer would show).
    assert (pre_first < -0.1).any() and (pre_second < -0.1).any()
    if activation == "relu":  # relu is not tanh here: the trunk's outputs exceed 1
        assert expected.max() > 1.5


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_quantile_heads_equal_a_per_critic_loop(activation: str) -> None:
    n_critics, sizes, n_quantiles = 2, [16, 12], 5
    head = TwinQuantileHead(6, sizes, n_critics, n_quantiles, activation, False)
    _randomize(head, 2)
    x = th.randn(30, 6, generator=th.Generator().manual_seed(3))
    act = REFERENCE[activation]
    out = head(x)
    assert out.shape == (30, n_critics, n_quantiles)
    first_w, first_b = head.first.weight.detach(), head.first.bias.detach()
    lasts = []
    for k in range(n_critics):
        rows = slice(k * sizes[0], (k + 1) * sizes[0])
        h = act(x @ first_w[rows].T + first_b[rows])
        h = act(h @ head.weights[0][k].detach() + head.biases[0][k].detach())
        last = h @ head.weights[1][k].detach() + head.biases[1][k].detach()  # not activated
        lasts.append(last)
        expected = th.cumsum(th.cat([last[:, :1], F.softplus(last[:, 1:])], dim=1), dim=1)
        assert th.allclose(out[:, k], expected, atol=1e-5), k
    # The first quantile is the last layer's raw output: negative values there would be lost
    # to an activated output layer.
    assert (th.stack(lasts)[..., 0] < -0.1).any()
    # Different critics, different outputs (a critic reading another's block would show).
    assert (out[:, 0] - out[:, 1]).abs().max() > 0.1


@pytest.mark.parametrize("mode", ["independent", "gsde"])
def test_fused_rollout_step_equals_the_modules_with_relu(mode: str) -> None:
    """Actions, values, log-probs and LSTM states of the fused rollout step (``policy.step``)
    equal those of the modules (nn.LSTM, the MLP with nn.ReLU, the heads), with resets."""
    th.manual_seed(0)
    config = PPOConfig(
        lstm_hidden_size=8, net_arch=[16, 12], n_quantiles=5, activation="relu",
        ortho_init=False, exploration={"mode": mode, "sample_freq": 4},
    )  # fmt: skip
    policy = RecurrentActorCritic(OBS_SPACE, BOX_ACTIONS, config)
    assert any(isinstance(m, nn.ReLU) for m in policy.actor_mlp)
    n_envs, n_steps, n = 3, 6, policy.hidden_size
    gen = th.Generator().manual_seed(4)
    obs = th.randn(n_steps, n_envs, 3, generator=gen)
    starts = (th.rand(n_steps, n_envs, generator=gen) < 0.3).float()
    states = LSTMStates(*th.randn(2, n_envs, policy.state_size, generator=gen))
    h, c = states
    for t in range(n_steps):
        step = policy.step(obs[t], states, starts[t], deterministic=True)
        # The modules, step by step.
        keep = (starts[t] == 0).unsqueeze(-1)
        h, c = th.where(keep, h, 0.0), th.where(keep, c, 0.0)
        outs, hs, cs = [], [], []
        with th.no_grad():
            for k, lstm in enumerate(policy.lstms):
                cols = slice(k * n, (k + 1) * n)
                state = (h[None, :, cols].contiguous(), c[None, :, cols].contiguous())
                out, (h_k, c_k) = lstm(obs[t][:, None], state)
                outs.append(out[:, 0])
                hs.append(h_k[0])
                cs.append(c_k[0])
            h, c = th.cat(hs, dim=1), th.cat(cs, dim=1)
            features = policy.actor_mlp(outs[0])
            mean = policy.actor_head(features)
            quantiles = policy.critic_head(outs[-1])
            log_std = policy.log_std()
            if mode == "gsde":
                std = th.sqrt(features.square() @ th.exp(log_std).square() + 1e-6)
            else:
                std = th.exp(log_std).expand_as(mean)
        assert th.allclose(step.states.h, h, atol=1e-6) and th.allclose(step.states.c, c, atol=1e-6)
        expected_action = policy.action_center + policy.action_half_range * th.tanh(mean)
        assert th.allclose(step.action, expected_action, atol=1e-6)
        assert th.allclose(step.quantiles, quantiles, atol=1e-5)
        assert th.allclose(step.value, quantiles.mean(-1).min(-1).values, atol=1e-5)
        assert th.allclose(step.dist_params, th.cat([mean, std], dim=-1), atol=1e-5)
        # The deterministic action's log-prob: the Gaussian's at its mean, with the tanh's
        # change of variables.
        u = mean.double()
        log_prob = (-th.log(std.double()) - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob -= th.log(policy.action_half_range.double() * (1 - th.tanh(u) ** 2)).sum(-1)
        assert th.allclose(step.log_prob.double(), log_prob, atol=1e-4)
        states = step.states
    # The relu clipped some features (where tanh would give negative ones): what gSDE's std
    # and the head read.
    assert (features == 0).any()


def _gram_is_scaled_identity(weight: th.Tensor, gain: float) -> bool:
    """``W W^T`` (or ``W^T W``, whichever is the smaller) equals ``gain^2 I``."""
    w = weight.detach() / gain
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    return th.allclose(gram, th.eye(gram.shape[0]), atol=1e-4)


def _is_default_uniform(values: th.Tensor, fan_in: int) -> bool:
    """Drawn uniformly in +-1/sqrt(fan_in): within the bound, reaching near it, and a
    Kolmogorov-Smirnov test against that uniform law not rejected."""
    bound = 1.0 / math.sqrt(fan_in)
    x = values.detach().reshape(-1).double().numpy()
    in_bound = np.abs(x).max() <= bound and np.abs(x).max() > 0.9 * bound
    return bool(in_bound and stats.kstest(x, stats.uniform(-bound, 2 * bound).cdf).pvalue > 0.01)


def test_ortho_init_false_keeps_pytorch_default_init() -> None:
    th.manual_seed(0)
    config = PPOConfig(lstm_hidden_size=64, net_arch=[48], n_quantiles=7, ortho_init=False)
    policy = RecurrentActorCritic(OBS_SPACE, BOX_ACTIONS, config)
    head = policy.critic_head
    trunk = policy.actor_mlp[0]
    layers = [  # (weight, bias, fan_in); the quantile head's later weights are (in, out)
        (trunk.weight, trunk.bias, 64),
        (policy.actor_head.weight, policy.actor_head.bias, 48),
        (head.first.weight, head.first.bias, 64),
        (head.weights[0], head.biases[0][..., 0], 48),  # the gaps' biases are checked below
    ]
    for weight, bias, fan_in in layers:
        assert _is_default_uniform(weight, fan_in), weight.shape
        assert (
            _is_default_uniform(bias, fan_in)
            if bias.numel() > 20
            else (bias.abs().max() <= 1 / math.sqrt(fan_in) and bias.abs().min() > 0)
        )
        for matrix in weight.reshape(-1, *weight.shape[-2:]):
            assert not _gram_is_scaled_identity(matrix, math.sqrt(2))
            assert not _gram_is_scaled_identity(matrix, 1.0)
    # The quantile gaps keep their initial spread: 4 normalized units over the quantiles.
    gap = 4.0 / 6
    assert th.allclose(F.softplus(head.biases[0][..., 1:]), th.full((2, 1, 6), gap))
    # Hence the initial quantiles are increasing.
    quantiles = head(th.randn(10, 64))
    assert (quantiles.diff(dim=-1) > 0).all()
    # The LSTMs keep their own init either way (uniform in +-1/sqrt(2 * 64)).
    for param in policy.actor_lstm.parameters():
        assert _is_default_uniform(param, 2 * 64)


def test_ortho_init_true_keeps_orthogonal_weights() -> None:
    th.manual_seed(0)
    config = PPOConfig(lstm_hidden_size=64, net_arch=[48], n_quantiles=7)
    policy = RecurrentActorCritic(OBS_SPACE, BOX_ACTIONS, config)
    head = policy.critic_head
    assert _gram_is_scaled_identity(policy.actor_mlp[0].weight, math.sqrt(2))
    assert _gram_is_scaled_identity(policy.actor_head.weight, 0.01)
    assert _gram_is_scaled_identity(head.first.weight, math.sqrt(2))
    for k in range(2):
        assert _gram_is_scaled_identity(head.weights[0][k], 1.0)
    assert not _is_default_uniform(policy.actor_mlp[0].weight, 64)
    for bias in (policy.actor_mlp[0].bias, policy.actor_head.bias, head.first.bias):
        assert (bias == 0).all()
    assert (head.biases[0][..., 0] == 0).all()


def test_checkpoint_round_trip_with_relu_and_default_init(tmp_path) -> None:
    model = small_model(activation="relu", ortho_init=False, net_arch=[8, 8])
    model.learn(64)
    model.save(tmp_path / "model")
    loaded = DistributionalPPO.load(tmp_path / "model")
    assert loaded.config.activation == "relu" and not loaded.config.ortho_init
    assert sum(isinstance(m, nn.ReLU) for m in loaded.policy.actor_mlp) == 2
    obs = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32) * 3
    state, loaded_state = None, None
    starts = np.ones(2, dtype=bool)
    for _ in range(4):
        action, state = model.predict(obs, state, starts, deterministic=True)
        loaded_action, loaded_state = loaded.predict(obs, loaded_state, starts, deterministic=True)
        np.testing.assert_array_equal(action, loaded_action)
        starts = np.zeros(2, dtype=bool)
    # The same parameters under tanh predict otherwise: the activation is what was compared.
    tanh_policy = RecurrentActorCritic(
        loaded.observation_space, loaded.action_space, loaded.config.model_copy(
            update={"activation": "tanh"})
    )  # fmt: skip
    tanh_policy.load_state_dict(loaded.policy.state_dict())
    step = tanh_policy.step(
        th.as_tensor(obs), tanh_policy.initial_state(2), th.ones(2), deterministic=True
    )
    relu_step = loaded.policy.step(
        th.as_tensor(obs), loaded.policy.initial_state(2), th.ones(2), deterministic=True
    )
    assert (step.action - relu_step.action).abs().max() > 1e-4


@pytest.mark.parametrize("key, value", [("activation", "relu"), ("ortho_init", False)])
def test_portfolio_policy_refuses_network_options(key: str, value: object) -> None:
    from gymnasium import spaces

    from tradingbot.algo.portfolio_policy import PortfolioActorCritic

    config = PPOConfig(lstm_hidden_size=8, net_arch=[8], n_quantiles=5, **{key: value})
    obs_space = spaces.Box(-np.inf, np.inf, shape=(3, 4), dtype=np.float32)
    act_space = spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
    with pytest.raises(ConfigError, match=f"algo.{key}"):
        PortfolioActorCritic(obs_space, act_space, config)
