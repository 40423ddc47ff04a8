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
from torch.distributions import Categorical, Normal, kl_divergence

from tradingbot.algo.losses import (
    categorical_kl,
    clip_quantiles,
    clipped_surrogate,
    compute_gae,
    critic_loss_per_sample,
    dsac_t_weights,
    explained_variance,
    gaussian_kl,
    k3_kl,
    midpoint_taus,
    quantile_huber_loss_per_sample,
    quantile_spread,
)
from tradingbot.algo.update import exact_kl


def test_midpoint_taus() -> None:
    assert th.allclose(midpoint_taus(4), th.tensor([0.125, 0.375, 0.625, 0.875]))


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


def test_gae_of_a_one_step_rollout() -> None:
    # T = 1: A = r + gamma * V(next) * (1 - done) - V = 1 + 0.9 * 7 - 4 (env 0), 2 - 5 (env 1).
    adv, ret = compute_gae(
        th.tensor([[1.0, 2.0]]), th.tensor([[4.0, 5.0]]), th.zeros(1, 2),
        th.tensor([7.0, 8.0]), th.tensor([0.0, 1.0]), 0.9, 0.95,
    )  # fmt: skip
    assert th.allclose(adv, th.tensor([[1.0 + 0.9 * 7.0 - 4.0, 2.0 - 5.0]]))
    assert th.allclose(ret, adv + th.tensor([[4.0, 5.0]]))


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
    assert math.isnan(explained_variance(th.tensor([0.0, 1.0, 2.0]), th.ones(3)))
    # y_true [0, 1, 2] (variance 1), errors [0, 0, 1] (variance 1/3): EV = 2/3.
    ev = explained_variance(th.tensor([0.0, 1.0, 1.0]), th.tensor([0.0, 1.0, 2.0]))
    assert ev == pytest.approx(2.0 / 3.0)


def test_gae_does_not_leak_non_finite_rewards_across_episode_ends() -> None:
    rewards = th.tensor([[1.0], [float("nan")], [1.0]])
    starts = th.tensor([[1.0], [1.0], [0.0]])  # episode ends after step 0
    adv, _ = compute_gae(rewards, th.zeros(3, 1), starts, th.zeros(1), th.ones(1), 0.9, 0.95)
    assert th.isfinite(adv[0]).all() and th.isnan(adv[1]).all() and th.isfinite(adv[2]).all()


def test_exact_kl_equals_torch_kl_divergence() -> None:
    gen = th.Generator().manual_seed(3)
    mu0, mu1 = th.randn(6, 2, generator=gen), th.randn(6, 2, generator=gen)
    std0, std1 = th.rand(6, 2, generator=gen) + 0.2, th.rand(6, 2, generator=gen) + 0.2
    expected = kl_divergence(Normal(mu0, std0), Normal(mu1, std1)).sum(-1)
    got = exact_kl(th.cat([mu0, std0], -1), th.cat([mu1, std1], -1), discrete=False)
    assert th.allclose(got, expected, rtol=1e-5, atol=1e-6)
    logits0, logits1 = th.randn(6, 4, generator=gen), th.randn(6, 4, generator=gen)
    expected = kl_divergence(Categorical(logits=logits0), Categorical(logits=logits1))
    assert th.allclose(categorical_kl(logits0, logits1), expected, atol=1e-6)
    assert th.allclose(exact_kl(logits0, logits1, discrete=True), expected, atol=1e-6)
    # Leading dims (time, env): the KL is over the last dim only.
    logits0, logits1 = th.randn(2, 3, 4, generator=gen), th.randn(2, 3, 4, generator=gen)
    expected = kl_divergence(Categorical(logits=logits0), Categorical(logits=logits1))
    assert th.allclose(categorical_kl(logits0, logits1), expected, atol=1e-6)
    mu0, mu1 = th.randn(2, 3, 2, generator=gen), th.randn(2, 3, 2, generator=gen)
    std0, std1 = th.rand(2, 3, 2, generator=gen) + 0.2, th.rand(2, 3, 2, generator=gen) + 0.2
    expected = kl_divergence(Normal(mu0, std0), Normal(mu1, std1)).sum(-1)
    assert th.allclose(gaussian_kl(mu0, std0, mu1, std1), expected, rtol=1e-5, atol=1e-6)


def test_k3_known_values_and_non_negative() -> None:
    # log r = [log 2, log 0.5, 0]: (r - 1) - log r = [1 - log 2, -0.5 + log 2, 0], mean 1/6.
    log_ratio = th.tensor([math.log(2.0), math.log(0.5), 0.0], dtype=th.float64)
    assert float(k3_kl(log_ratio)) == pytest.approx(1.0 / 6.0, rel=1e-12)
    # Each single sample on a grid: >= 0, and 0 only at log r = 0.
    grid = th.arange(-500, 501, dtype=th.float64) / 50.0
    values = th.stack([k3_kl(x.reshape(1)) for x in grid])
    assert (values >= 0).all()
    assert int((values == 0).sum()) == 1 and float(values[500]) == 0.0


def test_clipped_surrogate_and_dual_clip_by_hand() -> None:
    adv = th.tensor([1.0, 1.0, -1.0, -1.0, -1.0])
    ratio = th.tensor([1.5, 0.5, 1.5, 5.0, 0.5])
    plain = clipped_surrogate(adv, ratio, 0.2)
    assert th.allclose(plain, th.tensor([1.2, 0.5, -1.5, -5.0, -0.8]))
    dual = clipped_surrogate(adv, ratio, 0.2, dual_clip=3.0)
    # Negative advantages: bounded below at 3 * A = -3.
    assert th.allclose(dual, th.tensor([1.2, 0.5, -1.5, -3.0, -0.8]))
    # A = -2, r = 5: bound 3 * -2 = -6 (not -10); A = 0.5, r = 1.5: positive, no bound, 0.6.
    more = clipped_surrogate(th.tensor([-2.0, 0.5]), th.tensor([5.0, 1.5]), 0.2, dual_clip=3.0)
    assert th.allclose(more, th.tensor([-6.0, 0.6]))


def test_mean_shift_clipping_keeps_shape_and_bounds_the_mean() -> None:
    gen = th.Generator().manual_seed(4)
    old = th.sort(th.randn(20, 2, 8, generator=gen), dim=-1).values
    new = th.sort(old + 2.0 * th.randn(20, 2, 8, generator=gen), dim=-1).values
    clipped = clip_quantiles(new, old, "mean_shift", 0.3)
    shape_new = new - new.mean(-1, keepdim=True)
    shape_clipped = clipped - clipped.mean(-1, keepdim=True)
    assert th.allclose(shape_new, shape_clipped, atol=1e-5)
    change = clipped.mean(-1) - old.mean(-1)
    assert (change.abs() <= 0.3 + 1e-5).all()
    raw_change = new.mean(-1) - old.mean(-1)
    assert th.allclose(change, raw_change.clamp(-0.3, 0.3), atol=1e-5)


def test_per_quantile_clipping_clamps_each_quantile() -> None:
    old = th.tensor([[0.0, 1.0, 2.0]])
    new = th.tensor([[1.0, 1.1, 0.0]])
    clipped = clip_quantiles(new, old, "per_quantile", 0.5)
    assert th.allclose(clipped, th.tensor([[0.5, 1.1, 1.5]]))
    assert th.equal(clip_quantiles(new, old, "none", 0.5), new)


def test_value_clip_loss_is_mean_of_per_sample_max() -> None:
    taus = midpoint_taus(4)
    gen = th.Generator().manual_seed(5)
    old = th.sort(th.randn(16, 2, 4, generator=gen), dim=-1).values
    new = th.sort(old + th.randn(16, 2, 4, generator=gen), dim=-1).values
    target = 2.0 * th.randn(16, generator=gen)
    for mode in ["mean_shift", "per_quantile"]:
        new_q = new.clone().requires_grad_(True)
        per_sample = critic_loss_per_sample(
            new_q, target, taus, 1.0, old_quantiles=old, clip_mode=mode, clip_range=0.2
        )
        reference_q = new.clone().requires_grad_(True)
        clipped = clip_quantiles(reference_q, old, mode, 0.2)
        unclipped_loss = th.stack(
            [quantile_huber_loss_per_sample(reference_q[:, k], target, taus) for k in range(2)], 1
        )
        clipped_loss = th.stack(
            [quantile_huber_loss_per_sample(clipped[:, k], target, taus) for k in range(2)], 1
        )
        expected = th.max(unclipped_loss, clipped_loss)
        assert th.allclose(per_sample, expected)
        # ... and its gradient, through the clipped branch too (mean_shift computes it from
        # shifted targets instead of shifted quantiles).
        per_sample.sum().backward()
        expected.sum().backward()
        assert th.allclose(new_q.grad, reference_q.grad, atol=1e-6)
        unclipped_loss, clipped_loss = unclipped_loss.detach(), clipped_loss.detach()
        # mean(max(., .)) differs from max(mean, mean) on this data.
        max_of_means = th.max(unclipped_loss.mean(), clipped_loss.mean())
        assert per_sample.mean() > max_of_means + 1e-4
    plain = critic_loss_per_sample(new, target, taus, 1.0)
    assert th.allclose(plain, unclipped_loss)


def test_dsac_t_gradient_is_weight_times_plain_gradient() -> None:
    taus = midpoint_taus(5)
    gen = th.Generator().manual_seed(6)
    base = th.sort(th.randn(8, 2, 5, generator=gen, dtype=th.float64), dim=-1).values
    base = base * th.linspace(0.2, 3.0, 8, dtype=th.float64).view(8, 1, 1)  # varied spreads
    target = th.randn(8, generator=gen, dtype=th.float64)
    sigma_bar, eps = 0.7, 1e-2

    plain_q = base.clone().requires_grad_(True)
    critic_loss_per_sample(plain_q, target, taus.double(), 1.0).sum().backward()
    adjusted_q = base.clone().requires_grad_(True)
    critic_loss_per_sample(
        adjusted_q, target, taus.double(), 1.0, sigma_bar=sigma_bar, eps=eps
    ).sum().backward()

    sigma = base.std(dim=-1, unbiased=False)
    weight = (sigma_bar**2 + eps) / (sigma**2 + eps)
    assert th.allclose(dsac_t_weights(quantile_spread(base), sigma_bar, eps), weight)
    own_weights = critic_loss_per_sample(
        base, target, taus.double(), 1.0, sigma_bar=sigma_bar, eps=eps
    )
    given = dsac_t_weights(quantile_spread(base), sigma_bar, eps)
    given_weights = critic_loss_per_sample(
        base, target, taus.double(), 1.0, sigma_bar=sigma_bar, eps=eps, weights=given
    )
    assert th.equal(given_weights, own_weights)
    # Weights given by the caller are the ones used: all ones leave the plain loss.
    unit_weights = critic_loss_per_sample(
        base, target, taus.double(), 1.0, sigma_bar=sigma_bar, eps=eps, weights=th.ones_like(given)
    )
    assert th.equal(unit_weights, critic_loss_per_sample(base, target, taus.double(), 1.0))
    assert not th.allclose(weight, th.ones_like(weight))
    assert th.allclose(adjusted_q.grad, weight.unsqueeze(-1) * plain_q.grad)
    # Mode none (no sigma_bar): the plain quantile Huber gradient.
    reference_q = base.clone().requires_grad_(True)
    th.stack(
        [quantile_huber_loss_per_sample(reference_q[:, k], target, taus.double()) for k in range(2)]
    ).sum().backward()
    assert th.allclose(plain_q.grad, reference_q.grad)


def test_dsac_t_target_clipping_is_around_each_critics_mean() -> None:
    # Two critics with non-zero, different means: 5 (quantiles [4, 6]) and -2 ([-3, -1]), both
    # spreads 1. sigma_bar = 0.5, xi = 3: targets clipped to [3.5, 6.5] and [-3.5, -0.5].
    # Expected: sb3-contrib's quantile Huber loss at the clipped target times DSAC-T's weight
    # (0.25 + eps) / (1 + eps).
    taus = midpoint_taus(2, dtype=th.float64)
    q = th.tensor([[[4.0, 6.0], [-3.0, -1.0]]] * 3, dtype=th.float64)
    target = th.tensor([100.0, -100.0, 0.0], dtype=th.float64)
    sigma_bar, eps = 0.5, 1e-2
    got = critic_loss_per_sample(q, target, taus, 1.0, sigma_bar=sigma_bar, eps=eps,
                                 target_clip_xi=3.0)  # fmt: skip
    clipped = th.tensor([[6.5, -0.5], [3.5, -3.5], [3.5, -0.5]], dtype=th.float64)
    weight = (sigma_bar**2 + eps) / (1.0 + eps)
    for i in range(3):
        for k in range(2):
            expected = sb3_quantile_huber_loss(
                q[i, k].view(1, 2), clipped[i, k].view(1, 1), cum_prob=taus.view(1, -1, 1)
            )
            assert float(got[i, k]) == pytest.approx(weight * float(expected), rel=1e-12)
    # Inside the band the target is unchanged.
    inside = critic_loss_per_sample(q[:1], th.tensor([5.5], dtype=th.float64), taus, 1.0,
                                    sigma_bar=sigma_bar, eps=eps, target_clip_xi=3.0)  # fmt: skip
    plain = critic_loss_per_sample(q[:1], th.tensor([5.5], dtype=th.float64), taus, 1.0,
                                   sigma_bar=sigma_bar, eps=eps)  # fmt: skip
    assert float(inside[0, 0]) == float(plain[0, 0])


def test_dsac_t_weight_clamp() -> None:
    # sigma_bar = 1, eps = 0.01: spreads 0, 1, 10 give 1.01 / 0.01 = 101, 1, 1.01 / 100.01;
    # clamped to [0.1, 10]: 10, 1, 0.1.
    spread = th.tensor([0.0, 1.0, 10.0], dtype=th.float64)
    free = dsac_t_weights(spread, 1.0, 0.01)
    assert free.tolist() == pytest.approx([101.0, 1.0, 1.01 / 100.01], rel=1e-12)
    clamped = dsac_t_weights(spread, 1.0, 0.01, clamp=(0.1, 10.0))
    assert clamped.tolist() == pytest.approx([10.0, 1.0, 0.1], rel=1e-12)
    # The loss uses the clamped weights: a collapsed critic (spread 0) gets weight 10.
    taus = midpoint_taus(2, dtype=th.float64)
    q = th.tensor([[[0.5, 0.5]]], dtype=th.float64)
    target = th.tensor([2.0], dtype=th.float64)
    plain = critic_loss_per_sample(q, target, taus, 1.0)
    got = critic_loss_per_sample(q, target, taus, 1.0, sigma_bar=1.0, eps=0.01,
                                 weight_clamp=(0.1, 10.0))  # fmt: skip
    assert float(got) == pytest.approx(10.0 * float(plain), rel=1e-12)
