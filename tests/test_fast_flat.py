"""Flat parameters and gradients (tradingbot.algo.fast.flat) against per-parameter Adam and
torch's clip_grad_norm_."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th

from conftest import BOX_ACTIONS, make_policy, policy_losses
from tradingbot.algo.fast.flat import FlatGradients, clip_scales
from tradingbot.algo.policy import RecurrentActorCritic


def _grads(policy: RecurrentActorCritic) -> list[th.Tensor]:
    return [th.zeros_like(p) if p.grad is None else p.grad.clone() for p in policy.parameters()]


def test_flat_gradients_clip_each_network_alone() -> None:
    """Gradients of the actor and critic losses touch disjoint parameters (and LSTM rows), so
    the per-network norms of their sum are each loss's own, and clipping the sum per network
    equals clipping each loss's full gradient with torch's clip_grad_norm_."""
    policy = make_policy(BOX_ACTIONS)
    max_norm = 0.01
    expected_grads, expected_norms = [], []
    for which in range(2):
        policy.zero_grad()
        policy_losses(policy, 0)[which].backward()
        expected_norms.append(float(th.nn.utils.clip_grad_norm_(policy.parameters(), max_norm)))
        expected_grads.append(_grads(policy))
    gradients = FlatGradients(policy.parameters(), policy.network_sizes())
    policy.zero_grad()  # replaces the views with None: zero_ must re-attach them
    gradients.zero_()
    sum(policy_losses(policy, 0)).backward()
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
    reference = make_policy(BOX_ACTIONS)
    policy = make_policy(BOX_ACTIONS)
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
        sum(policy_losses(reference, seed)).backward()
        expected_opt.step()
        gradients.zero_()
        sum(policy_losses(policy, seed)).backward()
        flat_opt.step()
    for got, want in zip(policy.parameters(), reference.parameters(), strict=True):
        assert th.allclose(got, want, rtol=1e-6, atol=1e-7)
    assert not th.equal(policy.actor_head.weight, make_policy(BOX_ACTIONS).actor_head.weight)


def test_shared_lstm_counts_with_the_actor() -> None:
    policy = make_policy(BOX_ACTIONS, shared_lstm=True)
    gradients = FlatGradients(policy.parameters(), policy.network_sizes())
    sum(policy_losses(policy, 0)).backward()
    critic = {id(p) for p in policy.critic_head.parameters()}
    squares = [0.0, 0.0]
    for p in policy.parameters():
        squares[id(p) in critic] += float(p.grad.double().square().sum())
    assert gradients.square_norms().tolist() == pytest.approx(squares, rel=1e-5)
    assert float(policy.actor_lstm.weight_ih_l0.grad.abs().sum()) > 0
