"""Known-answer tests for the variance gradient scaler (expected values written out by hand)."""

from __future__ import annotations

import math

import pytest
import torch

from tradingbot.algo.fast.flat import FlatGradients, clip_scales
from tradingbot.optim import VarianceGradientScaler

PATHS = ["per_tensor", "training"]


def _param(values: list[float]) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.tensor(values, dtype=torch.float64))


def _set_grads(params: list[torch.nn.Parameter], grads: list[list[float]]) -> None:
    for p, g in zip(params, grads, strict=True):
        p.grad = torch.tensor(g, dtype=torch.float64)


def _scale(scaler: VarianceGradientScaler) -> float:
    """One scaler step on the parameters' own ``.grad`` tensors: ``update`` with their
    concatenation, then each gradient multiplied by the factor."""
    grads = [p.grad for p in scaler.params]
    factor = scaler.update(torch.cat([g.reshape(-1) for g in grads]))
    for g in grads:
        g.mul_(factor)
    return factor


class _Stepper:
    """One scaler step on per-tensor gradients (:func:`_scale`) or by the path training takes
    (``algo.update.apply_step``): gradients in FlatGradients' flat buffer, ``update(flat)``,
    then the factor applied through ``clip_scales`` (no norm clip here) and
    ``FlatGradients.scale_``."""

    def __init__(self, path: str, scaler: VarianceGradientScaler, params: list) -> None:
        self.path, self.scaler, self.params = path, scaler, params
        if path == "training":
            self.gradients = FlatGradients(params, [sum(p.numel() for p in params)])

    def __call__(self, grads: list[list[float]]) -> float:
        if self.path == "per_tensor":
            _set_grads(self.params, grads)
            return _scale(self.scaler)
        self.gradients.zero_()
        for p, g in zip(self.params, grads, strict=True):
            p.grad.copy_(torch.tensor(g, dtype=torch.float64))
        factor = self.scaler.update(self.gradients.flat)
        scales, _ = clip_scales(self.gradients.square_norms().tolist(), math.inf, factor)
        self.gradients.scale_(scales)
        return factor


def test_before_the_first_step() -> None:
    scaler = VarianceGradientScaler([_param([0.0])], grad_norm_beta=0.9)
    assert scaler.last_factor == 1.0 and math.isnan(scaler.last_ratio)
    assert scaler.step_count == 0 and math.isnan(scaler.grad_norm_ema)


@pytest.mark.parametrize("path", PATHS)
def test_three_steps_by_hand(path: str) -> None:
    beta, alpha, eps = 0.5, 2.0, 1e-8
    p = _param([0.0, 0.0])
    scaler = VarianceGradientScaler([p], beta=beta, alpha=alpha, eps=eps, warmup=1, min_factor=0.1)
    step = _Stepper(path, scaler, [p])

    # Step 1, g = [1, 2]: m = 0.5*[1, 2] = [0.5, 1]; q = 0.5*[1, 4] = [0.5, 2];
    # bias correction 1 - 0.5 = 0.5: m_hat = [1, 2], q_hat = [1, 4]; variance [0, 0] -> ratio 0.
    # Step 1 <= warmup, so the factor is 1 whatever the ratio.
    assert step([[1.0, 2.0]]) == 1.0
    assert scaler.last_ratio == 0.0
    assert torch.equal(p.grad, torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert torch.equal(scaler.exp_avg[0], torch.tensor([0.5, 1.0], dtype=torch.float64))
    assert torch.equal(scaler.exp_avg_sq[0], torch.tensor([0.5, 2.0], dtype=torch.float64))

    # Step 2, g = [3, 0]: m = 0.5*[0.5, 1] + 0.5*[3, 0] = [1.75, 0.5];
    # q = 0.5*[0.5, 2] + 0.5*[9, 0] = [4.75, 1]; bias correction 1 - 0.25 = 0.75:
    # m_hat = [7/3, 2/3], q_hat = [19/3, 4/3]; variance = [19/3 - 49/9, 4/3 - 4/9] = [8/9, 8/9];
    # mean variance 8/9, mean m_hat^2 = (49/9 + 4/9)/2 = 53/18.
    ratio2 = (8 / 9) / (53 / 18 + eps)
    factor2 = 1.0 / (1.0 + alpha * ratio2)  # ~ 53/85, inside [0.1, 1]
    assert step([[3.0, 0.0]]) == pytest.approx(factor2, rel=1e-12)
    assert scaler.last_ratio == pytest.approx(ratio2, rel=1e-12)
    assert scaler.last_factor == pytest.approx(factor2, rel=1e-12)
    torch.testing.assert_close(scaler.exp_avg[0], torch.tensor([1.75, 0.5], dtype=torch.float64))
    torch.testing.assert_close(scaler.exp_avg_sq[0], torch.tensor([4.75, 1.0], dtype=torch.float64))
    # The statistics saw the raw gradient; the gradient itself is scaled.
    torch.testing.assert_close(p.grad, torch.tensor([3.0 * factor2, 0.0], dtype=torch.float64))

    # Step 3, g = [-1, 2]: m = 0.5*[1.75, 0.5] + 0.5*[-1, 2] = [0.375, 1.25];
    # q = 0.5*[4.75, 1] + 0.5*[1, 4] = [2.875, 2.5]; bias correction 1 - 0.125 = 0.875:
    # m_hat = [3/7, 10/7], q_hat = [23/7, 20/7]; variance = [23/7 - 9/49, 20/7 - 100/49]
    # = [152/49, 40/49], mean 96/49; mean m_hat^2 = (9/49 + 100/49)/2 = 109/98.
    ratio3 = (96 / 49) / (109 / 98 + eps)
    factor3 = 1.0 / (1.0 + alpha * ratio3)  # ~ 109/493 = 0.221 > min_factor
    assert step([[-1.0, 2.0]]) == pytest.approx(factor3, rel=1e-12)
    assert scaler.last_ratio == pytest.approx(ratio3, rel=1e-12)
    torch.testing.assert_close(scaler.exp_avg[0], torch.tensor([0.375, 1.25], dtype=torch.float64))
    torch.testing.assert_close(
        scaler.exp_avg_sq[0], torch.tensor([2.875, 2.5], dtype=torch.float64)
    )
    torch.testing.assert_close(p.grad, torch.tensor([-factor3, 2.0 * factor3], dtype=torch.float64))
    assert scaler.step_count == 3


def test_percentile_aggregate_and_min_factor() -> None:
    # Two one-element tensors, beta = 0.5, two steps; bias correction at step 2 is 0.75.
    # tensor a: g = 1, then 3: m = 0.5*0.5 + 0.5*3 = 1.75, q = 0.5*0.5 + 0.5*9 = 4.75,
    #   m_hat = 7/3, q_hat = 19/3, variance 19/3 - 49/9 = 8/9, ratio_a = (8/9) / (49/9 + eps).
    # tensor b: g = 1, then -1: m = 0.25 - 0.5 = -0.25, q = 0.25 + 0.5 = 0.75,
    #   m_hat = -1/3, q_hat = 1, variance 1 - 1/9 = 8/9, ratio_b = (8/9) / (1/9 + eps).
    eps, alpha = 1e-8, 1.0
    a, b = _param([0.0]), _param([0.0])
    scaler = VarianceGradientScaler(
        [a, b],
        beta=0.5,
        alpha=alpha,
        eps=eps,
        warmup=0,
        min_factor=0.3,
        aggregate="percentile",
        percentile=30.0,
    )
    _set_grads([a, b], [[1.0], [1.0]])
    assert _scale(scaler) == 1.0  # both variances are 0 after one step
    _set_grads([a, b], [[3.0], [-1.0]])
    factor = _scale(scaler)
    ratio_a, ratio_b = (8 / 9) / (49 / 9 + eps), (8 / 9) / (1 / 9 + eps)
    # Linear interpolation between the two sorted values at 30 %: ~ 0.163 + 0.3 * 7.84 = 2.514.
    expected_ratio = ratio_a + 0.3 * (ratio_b - ratio_a)
    assert scaler.last_ratio == pytest.approx(expected_ratio, rel=1e-9)
    # 1 / (1 + 2.514) = 0.285 is below min_factor, so the clamp gives 0.3.
    assert 1.0 / (1.0 + alpha * expected_ratio) < 0.3
    assert factor == 0.3
    torch.testing.assert_close(a.grad, torch.tensor([0.9], dtype=torch.float64))
    torch.testing.assert_close(b.grad, torch.tensor([-0.3], dtype=torch.float64))


@pytest.mark.parametrize("path", PATHS)
def test_mean_aggregate_of_two_tensors(path: str) -> None:
    # Same statistics as above; the mean of the two ratios, no clamp.
    eps, alpha = 1e-8, 0.5
    a, b = _param([0.0]), _param([0.0])
    scaler = VarianceGradientScaler(
        [a, b], beta=0.5, alpha=alpha, eps=eps, warmup=0, min_factor=0.01
    )
    step = _Stepper(path, scaler, [a, b])
    step([[1.0], [1.0]])
    factor = step([[3.0], [-1.0]])
    ratio = ((8 / 9) / (49 / 9 + eps) + (8 / 9) / (1 / 9 + eps)) / 2
    assert scaler.last_ratio == pytest.approx(ratio, rel=1e-9)
    assert factor == pytest.approx(1.0 / (1.0 + alpha * ratio), rel=1e-9)
    torch.testing.assert_close(a.grad, torch.tensor([3.0 * factor], dtype=torch.float64))
    torch.testing.assert_close(b.grad, torch.tensor([-factor], dtype=torch.float64))


@pytest.mark.parametrize("path", PATHS)
def test_max_ratio_bounds_each_tensors_ratio_before_the_mean(path: str) -> None:
    # The same two tensors: ratio_a = (8/9) / (49/9 + eps) ~ 0.163, ratio_b ~ 8; bounded at 2
    # the mean is (0.163 + 2) / 2 (unbounded it would be ~ 4.08).
    eps, alpha = 1e-8, 0.5
    a, b = _param([0.0]), _param([0.0])
    scaler = VarianceGradientScaler(
        [a, b], beta=0.5, alpha=alpha, eps=eps, warmup=0, min_factor=0.01, max_ratio=2.0
    )
    step = _Stepper(path, scaler, [a, b])
    step([[1.0], [1.0]])
    factor = step([[3.0], [-1.0]])
    ratio = ((8 / 9) / (49 / 9 + eps) + 2.0) / 2
    assert scaler.last_ratio == pytest.approx(ratio, rel=1e-9)
    assert factor == pytest.approx(1.0 / (1.0 + alpha * ratio), rel=1e-9)


@pytest.mark.parametrize("path", PATHS)
def test_gradient_norm_ema(path: str) -> None:
    # beta 0.5: norms 5 ([3, 4]) then 13 ([5, 12]): ema 2.5 -> 5 / 0.5 = 5, then
    # 1.25 + 6.5 = 7.75 -> 7.75 / 0.75. A non-finite step does not enter it.
    p = _param([0.0, 0.0])
    scaler = VarianceGradientScaler([p], beta=0.9, warmup=0, grad_norm_beta=0.5)
    assert math.isnan(scaler.grad_norm_ema)
    step = _Stepper(path, scaler, [p])
    step([[3.0, 4.0]])
    assert scaler.grad_norm_ema == pytest.approx(5.0, rel=1e-12)
    step([[5.0, 12.0]])
    assert scaler.grad_norm_ema == pytest.approx(7.75 / 0.75, rel=1e-12)
    restored = VarianceGradientScaler([p], beta=0.9, warmup=0, grad_norm_beta=0.5)
    restored.load_state_dict(scaler.state_dict())
    assert restored.grad_norm_ema == scaler.grad_norm_ema
    # A state saved without the metric (older checkpoints) loads with the EMA reset.
    plain = VarianceGradientScaler([p], beta=0.9, warmup=0)
    restored.load_state_dict(plain.state_dict())
    assert math.isnan(restored.grad_norm_ema)
    _set_grads([p], [[6.0, 8.0]])
    _scale(restored)
    assert restored.grad_norm_ema == pytest.approx(10.0, rel=1e-12)


@pytest.mark.parametrize("path", PATHS)
def test_sign_flips_that_cancel_across_elements_are_high_variance(path: str) -> None:
    # The tensor's mean gradient is always 0, so the variance of the mean would be 0; the
    # per-element statistics must still see each element flip between +1 and -1.
    p = _param([0.0, 0.0])
    warmup = 4
    scaler = VarianceGradientScaler([p], beta=0.9, alpha=1.0, warmup=warmup, min_factor=0.01)
    step = _Stepper(path, scaler, [p])
    for t in range(1, 21):
        sign = 1.0 if t % 2 else -1.0
        factor = step([[sign, -sign]])
        if t <= warmup:
            assert factor == 1.0
            torch.testing.assert_close(p.grad, torch.tensor([sign, -sign], dtype=torch.float64))
        else:
            # E[g^2] = 1 for both elements, E[g] tends to +-(1-beta)/(1+beta) -> ratio ~ 1/0.0028.
            assert scaler.last_ratio > 10.0
            expected = max(1.0 / (1.0 + scaler.last_ratio), 0.01)
            assert factor == pytest.approx(expected, rel=1e-12)
            assert factor < 0.1
            torch.testing.assert_close(
                p.grad, torch.tensor([sign * factor, -sign * factor], dtype=torch.float64)
            )


def test_constant_gradients_give_factor_one() -> None:
    # Values that are not binary fractions make E[g^2] - E[g]^2 round to tiny negative numbers
    # (~ -4e-15 here); the variance is clamped at 0, so the ratio is never negative.
    p = _param([0.1, 0.3, -0.7, 1.1, 2.9])
    scaler = VarianceGradientScaler([p], beta=0.9, alpha=10.0, warmup=0)
    for _ in range(25):
        _set_grads([p], [[0.1, 0.3, -0.7, 1.1, 2.9]])
        factor = _scale(scaler)
        assert 0.0 <= scaler.last_ratio < 1e-12
        assert factor == pytest.approx(1.0, abs=1e-11)
        assert factor <= 1.0


def _assert_state_equal(a: dict[str, object], b: dict[str, object]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        elif isinstance(a[key], float) and math.isnan(a[key]):
            assert math.isnan(b[key]), key
        else:
            assert a[key] == b[key], key


def test_state_round_trip_continues_identically() -> None:
    torch.manual_seed(0)
    grads = [
        [torch.randn(3, 2, dtype=torch.float64) * (1 + t), torch.randn(4, dtype=torch.float64)]
        for t in range(8)
    ]
    shapes = [(3, 2), (4,)]
    params_a = [torch.nn.Parameter(torch.zeros(s, dtype=torch.float64)) for s in shapes]
    params_b = [torch.nn.Parameter(torch.zeros(s, dtype=torch.float64)) for s in shapes]
    kwargs = dict(
        beta=0.8, alpha=3.0, warmup=2, min_factor=0.05, aggregate="percentile", percentile=75.0
    )
    scaler_a = VarianceGradientScaler(params_a, **kwargs)
    for g in grads[:4]:
        for p, gi in zip(params_a, g, strict=True):
            p.grad = gi.clone()
        _scale(scaler_a)

    state = scaler_a.state_dict()
    assert all(isinstance(v, (torch.Tensor, int, float)) for v in state.values())
    scaler_b = VarianceGradientScaler(params_b, **kwargs)
    scaler_b.load_state_dict(state)
    # The loaded state is a copy: continuing A does not alter B.
    assert all(
        v is not state[k] for k, v in scaler_b.state_dict().items() if isinstance(v, torch.Tensor)
    )

    continued = []
    for g in grads[4:]:
        for pa, pb, gi in zip(params_a, params_b, g, strict=True):
            pa.grad, pb.grad = gi.clone(), gi.clone()
        factor = _scale(scaler_a)
        assert _scale(scaler_b) == factor
        continued.append(factor)
        for pa, pb in zip(params_a, params_b, strict=True):
            assert torch.equal(pa.grad, pb.grad)
    _assert_state_equal(scaler_a.state_dict(), scaler_b.state_dict())

    # A fresh scaler on the same gradients differs: the round trip is what makes them equal.
    scaler_c = VarianceGradientScaler(params_b, **kwargs)
    fresh = []
    for g in grads[4:]:
        for p, gi in zip(params_b, g, strict=True):
            p.grad = gi.clone()
        fresh.append(_scale(scaler_c))
    assert fresh != continued


def test_load_rejects_mismatched_state() -> None:
    scaler = VarianceGradientScaler([_param([0.0, 0.0])])
    state = scaler.state_dict()
    state["exp_avg.0"] = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ValueError):
        scaler.load_state_dict(state)
    with pytest.raises(ValueError):
        scaler.load_state_dict({"step_count": 0})
