"""The quantile Huber loss with its gradient written out (tradingbot.algo.fast.quantile_huber)
against sb3-contrib's quantile_huber_loss and plain autograd."""

from __future__ import annotations

import pytest
import torch as th
from sb3_contrib.common.utils import quantile_huber_loss as sb3_quantile_huber_loss

from tradingbot.algo.fast.quantile_huber import quantile_huber_loss_per_sample
from tradingbot.algo.losses import midpoint_taus, quantile_huber_loss


@pytest.mark.parametrize(
    ("batch", "n_pred", "n_target"), [(1, 1, 1), (7, 32, 1), (16, 8, 5), (5, 2, 2), (3, 4, 2)]
)
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


def _quantile_huber_by_autograd(pred, target, taus, kappa):
    """The loss written as plain tensor ops, differentiated by autograd (the reference)."""
    u = target.unsqueeze(-2) - pred.unsqueeze(-1)
    weight = (taus.view(-1, 1) - (u.detach() < 0).to(u.dtype)).abs()
    huber = th.where(u.abs() <= kappa, 0.5 * u.square(), kappa * (u.abs() - 0.5 * kappa))
    return (weight * huber / kappa).sum(dim=-2).mean(dim=-1)


@pytest.mark.parametrize(
    ("pred_shape", "n_target", "kappa"),
    [((7, 32), 1, 1.0), ((16, 8), 5, 1.0), ((4, 2, 6), 1, 0.3), ((5, 9), 3, 2.5),
     ((3, 2, 5), 4, 1.5)],
)  # fmt: skip
def test_quantile_huber_loss_gradients(pred_shape, n_target: int, kappa: float) -> None:
    """The hand-written backward equals autograd through the formula (and sb3-contrib's loss
    at kappa = 1), for the predictions and the targets, and passes torch's gradcheck."""
    gen = th.Generator().manual_seed(n_target + len(pred_shape))
    pred = (3 * th.randn(*pred_shape, generator=gen, dtype=th.float64)).requires_grad_(True)
    target_shape = (*pred_shape[:-1], n_target)
    target = (3 * th.randn(*target_shape, generator=gen, dtype=th.float64)).requires_grad_(True)
    taus = midpoint_taus(pred_shape[-1], dtype=th.float64)
    upstream = th.randn(pred_shape[:-1], generator=gen, dtype=th.float64)
    values = quantile_huber_loss_per_sample(pred, target, taus, kappa)
    assert th.allclose(values, _quantile_huber_by_autograd(pred, target, taus, kappa))
    grads = th.autograd.grad(
        (quantile_huber_loss_per_sample(pred, target, taus, kappa) * upstream).sum(),
        (pred, target),
    )
    expected = th.autograd.grad(
        (_quantile_huber_by_autograd(pred, target, taus, kappa) * upstream).sum(), (pred, target)
    )
    for got, want in zip(grads, expected, strict=True):
        assert th.allclose(got, want, rtol=1e-12, atol=1e-12)
    if kappa == 1.0 and len(pred_shape) == 2:
        sb3 = th.autograd.grad(sb3_quantile_huber_loss(pred, target), (pred, target))
        mine = th.autograd.grad(quantile_huber_loss(pred, target, taus), (pred, target))
        for got, want in zip(mine, sb3, strict=True):
            assert th.allclose(got, want, rtol=1e-10, atol=1e-12)
    assert th.autograd.gradcheck(
        lambda p, t: quantile_huber_loss_per_sample(p, t, taus, kappa), (pred, target)
    )


def test_quantile_huber_loss_hand_computed() -> None:
    # One prediction q = 0 at tau = 0.25, target 2, kappa 1: u = 2 > 0 so weight = 0.25 and
    # huber = 2 - 0.5 = 1.5 -> 0.375. Target -0.5: weight 0.75, huber 0.125 -> 0.09375.
    pred, taus = th.zeros(2, 1), th.tensor([0.25])
    losses = quantile_huber_loss(pred, th.tensor([2.0, -0.5]), taus, reduce=False)
    assert th.allclose(losses, th.tensor([0.375, 0.09375]))
