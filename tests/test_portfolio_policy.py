"""The portfolio policy: permutation equivariance, any K, and training through DistributionalPPO."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from tradingbot.algo.config import PPOConfig
from tradingbot.algo.portfolio_policy import PortfolioActorCritic
from tradingbot.config import PortfolioConfig
from tradingbot.env.portfolio import actions_to_weights

N_INPUTS = 4


def make_policy(k: int, seed: int = 0, **overrides) -> PortfolioActorCritic:
    th.manual_seed(seed)
    obs_space = spaces.Box(-10, 10, shape=(k, N_INPUTS), dtype=np.float32)
    act_space = spaces.Box(-1, 1, shape=(k + 1,), dtype=np.float32)
    cfg = PPOConfig(lstm_hidden_size=16, net_arch=[16], n_quantiles=8, **overrides)
    policy = PortfolioActorCritic(obs_space, act_space, cfg, asset_embedding=8)
    with th.no_grad():  # larger head weights than the near-zero initialization: visible scores
        policy.actor_head.weight.mul_(100.0)
        policy.cash_head.weight.mul_(100.0)
    return policy


def rollout(policy: PortfolioActorCritic, obs: th.Tensor) -> tuple[list[th.Tensor], list]:
    """Deterministic steps over obs (T, B, K, F): per step the action mean and the value."""
    states = policy.initial_state(obs.shape[1])
    starts = th.zeros(obs.shape[1])
    means, values = [], []
    for t in range(obs.shape[0]):
        step = policy.step(obs[t].reshape(obs.shape[1], -1), states, starts, deterministic=True)
        means.append(step.dist_params[:, : policy.action_dim])
        values.append(step.value)
        states = step.states
    return means, values


@pytest.mark.parametrize("shared_lstm", [False, True])
def test_permuting_assets_permutes_the_action_mean(shared_lstm: bool) -> None:
    k = 5
    policy = make_policy(k, shared_lstm=shared_lstm)
    gen = th.Generator().manual_seed(1)
    obs = th.randn(4, 3, k, N_INPUTS, generator=gen)
    obs[..., -1] = th.rand(4, 3, k, generator=gen) / k  # weights column
    perm = th.tensor([3, 0, 4, 1, 2])
    means, values = rollout(policy, obs)
    means_p, values_p = rollout(policy, obs[:, :, perm])
    for t in range(4):
        # Assets follow the permutation; cash (the last entry) and the critic do not move.
        assert means_p[t][:, :k] == pytest.approx(means[t][:, perm], abs=1e-6)
        assert means_p[t][:, k] == pytest.approx(means[t][:, k], abs=1e-6)
        assert values_p[t] == pytest.approx(values[t], abs=1e-6)
        # Not trivially equivariant: the assets get different scores.
        assert means[t][:, :k].std(dim=1).min() > 1e-3
    weights = actions_to_weights(np.tanh(means[-1].numpy()), PortfolioConfig())
    weights_p = actions_to_weights(np.tanh(means_p[-1].numpy()), PortfolioConfig())
    assert weights_p == pytest.approx(weights[:, perm.numpy()], abs=1e-7)


def test_training_evaluation_is_equivariant_too() -> None:
    k = 4
    policy = make_policy(k)
    gen = th.Generator().manual_seed(2)
    obs = th.randn(2, 5, k * N_INPUTS, generator=gen)
    starts = th.zeros(2, 5)
    starts[1, 2] = 1.0  # an episode start inside a chunk
    states = policy.initial_state(2)
    actions = th.randn(2, 5, k + 1, generator=gen)
    perm = th.tensor([2, 3, 1, 0])
    obs_p = obs.view(2, 5, k, N_INPUTS)[:, :, perm].reshape(2, 5, -1)
    actions_p = th.cat([actions[..., :k][..., perm], actions[..., k:]], dim=-1)
    with th.no_grad():
        plain = policy.evaluate_sequences(obs, starts, states, actions)
        permuted = policy.evaluate_sequences(obs_p, starts, states, actions_p)
    assert permuted.log_prob == pytest.approx(plain.log_prob, abs=1e-5)
    assert permuted.quantiles == pytest.approx(plain.quantiles, abs=1e-6)
    # The training path computes what the rollout path computed.
    means, _ = rollout(policy, obs.view(2, 5, k, N_INPUTS).transpose(0, 1)[:, :1])
    assert plain.dist_params.view(2, 5, -1)[0, :2, : k + 1] == pytest.approx(
        th.cat(means[:2]), abs=1e-5
    )


def test_one_set_of_parameters_runs_on_any_number_of_assets() -> None:
    small, large = make_policy(3), make_policy(7, seed=5)
    large.load_state_dict(small.state_dict())  # nothing in the parameters depends on K
    obs = th.randn(1, 2, 7, N_INPUTS)
    means_large, _ = rollout(large, obs)
    assert means_large[0].shape == (2, 8)
    # Duplicating every asset once leaves the pooled mean and max, the cash weight (zero
    # weights) and hence each asset's score and the value unchanged.
    obs3 = th.randn(1, 2, 3, N_INPUTS)
    obs3[..., -1] = 0.0
    means3, values3 = rollout(small, obs3)
    obs6 = th.cat([obs3, obs3], dim=2)
    six = make_policy(6)
    six.load_state_dict(small.state_dict())
    means6, values6 = rollout(six, obs6)
    assert means6[0][:, :3] == pytest.approx(means3[0][:, :3], abs=1e-6)
    assert means6[0][:, 3:6] == pytest.approx(means3[0][:, :3], abs=1e-6)
    assert values6[0] == pytest.approx(values3[0], abs=1e-6)


@pytest.fixture(scope="module")
def synthetic_portfolio():
    from tradingbot.config import DataConfig, SyntheticConfig
    from tradingbot.data.portfolio import prepare_portfolio
    from tradingbot.data.sources import load_market

    cfg = DataConfig(source="synthetic", synthetic=SyntheticConfig(n_instruments=3, n_bars=400))
    return prepare_portfolio(load_market("synthetic", cfg.synthetic), cfg)


@pytest.mark.parametrize(
    "options",
    [
        {"risk": {"mode": "mean_cvar"}},
        {"optimizer": "adaptive_upgd", "grad_scaler": {"enabled": True}},
        {"robust": {"enabled": True}},
        {"shared_lstm": True, "twin_critics": False, "awr": {"enabled": True}},
    ],
)
def test_trains_with_every_option_and_reloads(synthetic_portfolio, tmp_path, options) -> None:
    from tradingbot.algo.portfolio_policy import portfolio_policy
    from tradingbot.algo.ppo import DistributionalPPO
    from tradingbot.config import EnvConfig
    from tradingbot.env.portfolio import PortfolioVecEnv

    env = PortfolioVecEnv(
        synthetic_portfolio, "train", EnvConfig(n_envs=4, episode_length=16),
        PortfolioConfig(rebalance_every=2, assets_per_episode=2), seed=0,
    )  # fmt: skip
    cfg = PPOConfig(
        n_steps=32, batch_size=64, seq_len=8, lstm_hidden_size=8, net_arch=[8], n_quantiles=4,
        seed=0, **options,
    )  # fmt: skip
    policy = portfolio_policy(4)
    model = DistributionalPPO(policy, env, config=cfg)
    model.learn(256)
    assert all(th.isfinite(p).all() for p in model.policy.parameters())
    path = model.save(tmp_path / "m")
    loaded = DistributionalPPO.load(path, policy=policy)
    obs = env.reset()
    expected, _ = model.predict(obs, deterministic=True)
    got, _ = loaded.predict(obs, deterministic=True)
    assert got == pytest.approx(expected)
    from tradingbot.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="policy"):  # the default policy does not fit it
        DistributionalPPO.load(path)
