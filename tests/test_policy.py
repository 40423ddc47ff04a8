"""Tests of the recurrent actor-critic and of the packed sequence evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from scipy.optimize import brentq
from scipy.stats import norm
from torch.distributions import Normal

from conftest import BOX_ACTIONS, make_policy, policy_losses
from tradingbot.algo.losses import quantile_huber_loss
from tradingbot.algo.policy import RecurrentActorCritic


def test_squashed_gaussian_log_prob_and_bounds() -> None:
    policy = make_policy(BOX_ACTIONS)
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
    policy = make_policy(BOX_ACTIONS, log_std_init=-0.5, log_std_min=-3.0, log_std_max=1.0)
    assert th.allclose(policy.log_std(), th.full((2,), -0.5), atol=1e-6)
    with th.no_grad():
        policy.log_std_logit.fill_(1e4)
    assert th.allclose(policy.log_std(), th.full((2,), 1.0))


def test_quantiles_are_monotone_and_value_is_min_of_means() -> None:
    policy = make_policy(spaces.Discrete(2))
    with th.no_grad():
        for p in policy.critic_head.parameters():
            p.normal_()
    quantiles = policy.critic_head(th.randn(50, 8))
    assert quantiles.shape == (50, 2, 5)
    assert bool((quantiles.diff(dim=-1) >= 0).all())
    expected = quantiles.mean(-1).min(-1).values
    assert th.allclose(policy.value_from_quantiles(quantiles), expected)
    policy_mean = make_policy(spaces.Discrete(2), critic_value="mean")
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
    policy = make_policy(spaces.Discrete(2))
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


def _grads(policy: RecurrentActorCritic) -> list[th.Tensor]:
    return [th.zeros_like(p) if p.grad is None else p.grad.clone() for p in policy.parameters()]


def test_actor_and_critic_lstms_stay_independent() -> None:
    """The actor's loss reaches the actor LSTM only, the critic's the critic LSTM only."""
    policy = make_policy(BOX_ACTIONS)
    for which, (own, other) in enumerate(
        [(policy.actor_lstm, policy.critic_lstm), (policy.critic_lstm, policy.actor_lstm)]
    ):
        policy.zero_grad()
        policy_losses(policy, 0)[which].backward()
        assert all(p.grad is not None and bool((p.grad != 0).any()) for p in own.parameters())
        assert all(p.grad is None or not p.grad.any() for p in other.parameters())
