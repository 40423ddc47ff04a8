"""Known-answer tests of the pure math in tradingbot.algo.losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib.common.utils import quantile_huber_loss as sb3_quantile_huber_loss
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.utils import explained_variance as sb3_explained_variance
from torch.distributions import Normal, kl_divergence

from tradingbot.algo.losses import (
    compute_gae,
    explained_variance,
    gaussian_kl,
    k3_kl,
    midpoint_taus,
    quantile_huber_loss,
    quantile_huber_loss_per_sample,
)


def test_midpoint_taus() -> None:
    assert th.allclose(midpoint_taus(4), th.tensor([0.125, 0.375, 0.625, 0.875]))


@pytest.mark.parametrize(("batch", "n_pred", "n_target"), [(1, 1, 1), (7, 32, 1), (16, 8, 5)])
def test_quantile_huber_loss_matches_sb3_contrib(batch: int, n_pred: int, n_target: int) -> None:
    gen = th.Generator().manual_seed(batch * 100 + n_pred)
    # Scale 3 puts many pairs beyond the Huber threshold, so both branches are exercised.
    pred = 3 * th.randn(batch, n_pred, generator=gen)
    target = 3 * th.randn(batch, n_target, generator=gen)
    taus = midpoint_taus(n_pred)
    expected = sb3_quantile_huber_loss(pred, target, cum_prob=taus.view(1, -1, 1))
    assert th.allclose(quantile_huber_loss(pred, target, taus), expected, rtol=1e-6, atol=1e-6)
    # sb3-contrib's default cum_prob is the same midpoint grid
    assert th.allclose(
        quantile_huber_loss(pred, target, taus), sb3_quantile_huber_loss(pred, target)
    )


@pytest.mark.parametrize("kappa", [0.1, 0.5, 2.0, 7.0])
def test_quantile_huber_loss_kappa_by_scaling(kappa: float) -> None:
    # huber_kappa(u) / kappa = kappa * huber_1(u / kappa) and the indicator is scale free, so the
    # kappa loss equals kappa times sb3-contrib's (kappa = 1) loss on inputs divided by kappa.
    gen = th.Generator().manual_seed(int(kappa * 10))
    pred, target = 2 * th.randn(9, 16, generator=gen), 2 * th.randn(9, 3, generator=gen)
    expected = kappa * sb3_quantile_huber_loss(pred / kappa, target / kappa)
    actual = quantile_huber_loss(pred, target, midpoint_taus(16), kappa=kappa)
    assert th.allclose(actual, expected, rtol=1e-5, atol=1e-6)


def test_quantile_huber_loss_per_sample_and_one_dim_target() -> None:
    gen = th.Generator().manual_seed(3)
    pred, target = th.randn(6, 10, generator=gen), th.randn(6, generator=gen)
    taus = midpoint_taus(10)
    per_sample = quantile_huber_loss(pred, target, taus, reduce=False)
    assert per_sample.shape == (6,)
    for i in range(6):
        expected = sb3_quantile_huber_loss(pred[i : i + 1], target[i : i + 1, None])
        assert th.allclose(per_sample[i], expected, atol=1e-6)
    assert th.allclose(per_sample.mean(), quantile_huber_loss(pred, target, taus))
    assert th.equal(per_sample, quantile_huber_loss_per_sample(pred, target, taus))


def test_quantile_huber_loss_hand_computed() -> None:
    # One prediction q = 0 at tau = 0.25, target 2, kappa 1: u = 2 > 0 so weight = 0.25 and
    # huber = 2 - 0.5 = 1.5 -> 0.375. Target -0.5: weight 0.75, huber 0.125 -> 0.09375.
    pred, taus = th.zeros(2, 1), th.tensor([0.25])
    losses = quantile_huber_loss(pred, th.tensor([2.0, -0.5]), taus, reduce=False)
    assert th.allclose(losses, th.tensor([0.375, 0.09375]))


def _sb3_gae(rewards, values, starts, last_values, last_dones, gamma, lam):
    n_steps, n_envs = rewards.shape
    buffer = RolloutBuffer(
        n_steps,
        spaces.Box(-1, 1, (1,)),
        spaces.Discrete(2),
        gamma=gamma,
        gae_lambda=lam,
        n_envs=n_envs,
    )
    for t in range(n_steps):
        buffer.add(
            np.zeros((n_envs, 1), dtype=np.float32),
            np.zeros((n_envs, 1)),
            rewards[t],
            starts[t],
            th.as_tensor(values[t]),
            th.zeros(n_envs),
        )
    buffer.compute_returns_and_advantage(th.as_tensor(last_values), last_dones)
    return buffer.advantages, buffer.returns


@pytest.mark.parametrize(("gamma", "lam"), [(0.99, 0.95), (0.9, 1.0), (0.5, 0.0)])
def test_gae_matches_sb3_rollout_buffer(gamma: float, lam: float) -> None:
    rng = np.random.default_rng(0)
    n_steps, n_envs = 37, 5
    rewards = rng.normal(size=(n_steps, n_envs)).astype(np.float32)
    values = rng.normal(size=(n_steps, n_envs)).astype(np.float32)
    starts = (rng.random((n_steps, n_envs)) < 0.15).astype(np.float32)
    starts[0] = 1.0
    last_values = rng.normal(size=n_envs).astype(np.float32)
    last_dones = np.array([True, False, True, False, False])

    expected_adv, expected_ret = _sb3_gae(
        rewards, values, starts, last_values, last_dones, gamma, lam
    )
    adv, ret = compute_gae(
        th.as_tensor(rewards),
        th.as_tensor(values),
        th.as_tensor(starts),
        th.as_tensor(last_values),
        th.as_tensor(last_dones),
        gamma,
        lam,
    )
    np.testing.assert_allclose(adv.numpy(), expected_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret.numpy(), expected_ret, rtol=1e-5, atol=1e-5)


def test_gae_time_limit_bootstrap_by_hand() -> None:
    # One env, 3 steps: the episode is truncated after step 1 (obs 2 starts a new episode).
    # V(terminal obs of step 1) = 10 is bootstrapped: r1' = r1 + gamma * 10.
    gamma, lam = 0.9, 0.5
    rewards = th.tensor([[1.0], [2.0], [3.0]])
    values = th.tensor([[4.0], [5.0], [6.0]])
    starts = th.tensor([[1.0], [0.0], [1.0]])
    terminal_values = th.tensor([[0.0], [10.0], [0.0]])
    last_values, last_dones = th.tensor([7.0]), th.tensor([0.0])
    adv, ret = compute_gae(
        rewards,
        values,
        starts,
        last_values,
        last_dones,
        gamma,
        lam,
        terminal_values=terminal_values,
    )
    delta2 = 3.0 + 0.9 * 7.0 - 6.0
    delta1 = 2.0 + 0.9 * 10.0 - 5.0  # no bootstrap from the next episode's value
    delta0 = 1.0 + 0.9 * 5.0 - 4.0
    expected = th.tensor([[delta0 + 0.9 * 0.5 * delta1], [delta1], [delta2]])
    assert th.allclose(adv, expected)
    assert th.allclose(ret, expected + values)


def test_gaussian_kl_matches_torch() -> None:
    gen = th.Generator().manual_seed(1)
    mu0, mu1 = th.randn(10, 3, generator=gen), th.randn(10, 3, generator=gen)
    std0, std1 = th.rand(10, 3, generator=gen) + 0.1, th.rand(10, 3, generator=gen) + 0.1
    expected = kl_divergence(Normal(mu0, std0), Normal(mu1, std1)).sum(-1)
    assert th.allclose(gaussian_kl(mu0, std0, mu1, std1), expected, rtol=1e-5, atol=1e-6)
    assert th.allclose(gaussian_kl(mu0, std0, mu0, std0), th.zeros(10), atol=1e-6)


def test_k3_kl_estimates_kl() -> None:
    # Samples from p = N(0, 1); q = N(0.3, 1.2). k3 on log q/p is an unbiased estimate of KL(p||q).
    gen = th.Generator().manual_seed(0)
    x = th.randn(400_000, generator=gen, dtype=th.float64)
    p, q = (
        Normal(th.tensor(0.0, dtype=th.float64), 1.0),
        Normal(th.tensor(0.3, dtype=th.float64), 1.2),
    )
    estimate = float(k3_kl(q.log_prob(x) - p.log_prob(x)))
    exact = float(kl_divergence(p, q))
    assert estimate == pytest.approx(exact, rel=0.02)
    # Hand value: log ratio 0 -> 0; log ratio log 2 -> (2 - 1) - log 2.
    assert float(k3_kl(th.tensor([0.0, math.log(2.0)]))) == pytest.approx((1 - math.log(2)) / 2)


def test_explained_variance_matches_sb3() -> None:
    rng = np.random.default_rng(2)
    y_true = rng.normal(size=100)
    y_pred = y_true + 0.5 * rng.normal(size=100)
    expected = sb3_explained_variance(y_pred, y_true)
    assert explained_variance(th.as_tensor(y_pred), th.as_tensor(y_true)) == pytest.approx(expected)
    assert math.isnan(explained_variance(th.zeros(3), th.ones(3)))
