"""Known-answer tests for UPGD and AdaptiveUPGD.

Expected values come from the paper's update written out with Python floats (``math``), from
torch.optim.Adam, or from arithmetic in the comments; never from the optimizers under test.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from tradingbot.optim import UPGD, AdaptiveUPGD
from tradingbot.optim.upgd import local_scaled_utility

F64 = torch.float64


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# --------------------------------------------------------------------------------------------
# A transcription of the reference repository's update rules (mohmdelsayed/upgd,
# core/optim/weight_upgd/first_order.py: FirstOrderGlobalUPGD, FirstOrderLocalUPGD and their
# Nonprotecting variants; README.md: UPGD with the step 2 lr), written independently of
# tradingbot.optim.upgd. It keeps the reference's operations: utility EMA without bias
# correction, the global maximum over the uncorrected EMAs, the gate sigmoid of the corrected
# utility divided by that maximum (global) or F.normalize(corrected utility, dim=-1) (local),
# decay 1 - lr wd and a step of ``step_factor * lr``.


def _reference_upgd(
    params: list[torch.Tensor],
    grad_fn,
    steps: int,
    lr: float,
    wd: float,
    beta: float,
    sigma: float,
    protect: bool,
    scope: str,
    seed: int,
    step_factor: float = 1.0,
    corrected_max: bool = False,
) -> list[list[torch.Tensor]]:
    """Weights after each of ``steps`` reference steps; noise drawn per tensor, in order, from a
    generator seeded with ``seed``. ``corrected_max`` takes the global maximum over the
    bias-corrected utilities (the project's documented choice) instead of the raw EMAs."""
    gen = torch.Generator().manual_seed(seed)
    params = [p.clone() for p in params]
    emas = [torch.zeros_like(p) for p in params]
    history = []
    for t in range(1, steps + 1):
        grads = grad_fn(params)
        for ema, g, p in zip(emas, grads, params, strict=True):
            ema.mul_(beta).add_(-g * p, alpha=1 - beta)
        correction = 1 - beta**t
        global_max = max(float(e.max()) for e in emas)
        if corrected_max:
            global_max = global_max / correction
        new_params = []
        for ema, g, p in zip(emas, grads, params, strict=True):
            noise = torch.randn(p.shape, generator=gen, dtype=p.dtype) * sigma
            if scope == "global":
                s = torch.sigmoid((ema / correction) / global_max)
            else:
                s = torch.sigmoid(torch.nn.functional.normalize(ema / correction, dim=-1))
            step = (g + noise) * (1 - s) if protect else g + noise * (1 - s)
            new_params.append(p * (1 - lr * wd) - step_factor * lr * step)
        params = new_params
        history.append(params)
    return history


_X = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.3, -0.7], [-0.2, 0.8, 1.1]], dtype=F64)
_Y = torch.tensor([[1.0, -2.0], [0.5, 0.7], [-1.2, 0.4]], dtype=F64)
_W0 = torch.tensor([[0.3, -0.8, 0.5], [-0.4, 0.9, 0.2]], dtype=F64)
_B0 = torch.tensor([-0.1, 0.6], dtype=F64)


def _grads(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Gradients of the least-squares loss 0.5 * mean ||x W^T + b - y||^2 over the rows of _X:
    with r = x W^T + b - y, dW = r^T x / n and db = mean(r)."""
    w, b = params
    r = _X @ w.T + b - _Y
    return [r.T @ _X / len(_X), r.mean(dim=0)]


def _run_project(cls: type, kwargs: dict, steps: int, seed: int) -> list[list[torch.Tensor]]:
    w, b = nn.Parameter(_W0.clone()), nn.Parameter(_B0.clone())
    opt = cls([w, b], generator=torch.Generator().manual_seed(seed), **kwargs)
    history = []
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (_X @ w.T + b - _Y).square().sum(dim=1).mean()).backward()
        opt.step()
        history.append([w.detach().clone(), b.detach().clone()])
    return history


def _assert_histories_equal(got: list, expected: list) -> None:
    for got_step, expected_step in zip(got, expected, strict=True):
        for g, e in zip(got_step, expected_step, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-14)


def test_reference_transcription_has_mixed_utilities() -> None:
    # Preconditions of the comparisons below: positive and negative utilities in both tensors
    # (so the global maximum is > 0 and local rows mix signs), several elements per row.
    u = [-g * p for g, p in zip(_grads([_W0, _B0]), [_W0, _B0], strict=True)]
    for tensor in u:
        assert (tensor > 0).any() and (tensor < 0).any()
    assert float(max(t.max() for t in u)) > 0


def test_upgd_first_step_by_hand() -> None:
    # w = [1, -0.5], g = [1, 2]; u = -g w = [-1, 1]; beta = 0.9: ema = [-0.1, 0.1], bias
    # correction 0.1 -> u_hat = [-1, 1]; global max 1 -> s = [sigmoid(-1), sigmoid(1)].
    # w1 <- 1 * (1 - 0.1 * 0.01) - 0.1 * 1 * (1 - sigmoid(-1)) = 0.999 - 0.1 * 0.7310586
    # w2 <- -0.5 * 0.999 - 0.1 * 2 * (1 - sigmoid(1)) = -0.4995 - 0.2 * 0.2689414
    w1 = nn.Parameter(torch.tensor([1.0], dtype=F64))
    w2 = nn.Parameter(torch.tensor([-0.5], dtype=F64))
    opt = UPGD([w1, w2], lr=0.1, weight_decay=0.01, beta_utility=0.9, sigma=0.0)
    (0.5 * w1.square().sum() + 2.0 * w2.sum()).backward()
    opt.step()
    assert float(w1.detach()) == pytest.approx(0.999 - 0.1 * 0.7310585786300049, rel=1e-12)
    assert float(w2.detach()) == pytest.approx(-0.4995 - 0.2 * 0.2689414213699951, rel=1e-12)


@pytest.mark.parametrize("protect", [True, False])
@pytest.mark.parametrize("scope", ["global", "local"])
@pytest.mark.parametrize("sigma", [0.0, 0.3])
def test_upgd_matches_reference_update(protect: bool, scope: str, sigma: float) -> None:
    # beta_utility = 0: no bias correction, so the project's maximum over corrected utilities
    # and the reference's over raw EMAs coincide; weight decay > 0; a 2x3 matrix and a bias.
    kwargs = dict(lr=0.1, weight_decay=0.05, beta_utility=0.0, sigma=sigma)
    got = _run_project(UPGD, dict(kwargs, protect=protect, scope=scope), 4, seed=11)
    expected = _reference_upgd(
        [_W0, _B0], _grads, 4, 0.1, 0.05, 0.0, sigma, protect, scope, seed=11
    )
    _assert_histories_equal(got, expected)


@pytest.mark.parametrize("protect", [True, False])
def test_local_upgd_matches_reference_with_bias_correction(protect: bool) -> None:
    # Row normalization does not see the bias correction, so beta > 0 matches exactly too.
    kwargs = dict(lr=0.1, weight_decay=0.05, beta_utility=0.9, sigma=0.3)
    got = _run_project(UPGD, dict(kwargs, protect=protect, scope="local"), 4, seed=3)
    expected = _reference_upgd([_W0, _B0], _grads, 4, 0.1, 0.05, 0.9, 0.3, protect, "local", 3)
    _assert_histories_equal(got, expected)


def test_global_upgd_normalizes_by_the_corrected_maximum() -> None:
    # beta > 0: the documented deviation (maximum over the bias-corrected utilities) is the
    # only one; the reference's own maximum gives another trajectory.
    kwargs = dict(lr=0.1, weight_decay=0.05, beta_utility=0.9, sigma=0.3)
    got = _run_project(UPGD, kwargs, 4, seed=5)
    args = ([_W0, _B0], _grads, 4, 0.1, 0.05, 0.9, 0.3, True, "global", 5)
    _assert_histories_equal(got, _reference_upgd(*args, corrected_max=True))
    with pytest.raises(AssertionError):
        _assert_histories_equal(got, _reference_upgd(*args))


def test_readme_upgd_is_reproduced_by_twice_lr_and_half_weight_decay() -> None:
    # The reference README's UPGD steps with 2 lr and decays with 1 - lr wd.
    lr, wd = 0.05, 0.1
    expected = _reference_upgd(
        [_W0, _B0], _grads, 3, lr, wd, 0.0, 0.2, True, "global", 7, step_factor=2.0
    )
    got = _run_project(
        UPGD, dict(lr=2 * lr, weight_decay=wd / 2, sigma=0.2, beta_utility=0.0), 3, 7
    )
    _assert_histories_equal(got, expected)
    # Doubling lr alone doubles the decay too.
    doubled = _run_project(
        UPGD, dict(lr=2 * lr, weight_decay=wd, sigma=0.2, beta_utility=0.0), 3, 7
    )
    assert float((doubled[0][0] - expected[0][0]).abs().max()) > 1e-3


def test_local_gates_are_sigmoid_of_l2_normalized_rows() -> None:
    # Row [3, 1, -2] has norm sqrt(14): gates sigmoid([3, 1, -2] / 3.7417) = [0.690, 0.566,
    # 0.369] (dividing by the maximum 3 would give [0.731, 0.583, 0.339]); row [0, 0, 0] -> 0.5.
    u = torch.tensor([[3.0, 1.0, -2.0], [0.0, 0.0, 0.0]], dtype=F64)
    norm = math.sqrt(14.0)
    expected = [[_sigmoid(3 / norm), _sigmoid(1 / norm), _sigmoid(-2 / norm)], [0.5] * 3]
    torch.testing.assert_close(local_scaled_utility(u), torch.tensor(expected, dtype=F64))
    assert _sigmoid(3 / norm) == pytest.approx(0.690, abs=5e-4)
    # A 0-dim tensor is a row of one element: sigmoid(sign(u)).
    assert float(local_scaled_utility(torch.tensor(-0.3, dtype=F64))) == pytest.approx(
        _sigmoid(-1.0), rel=1e-12
    )


def test_upgd_variants_differ() -> None:
    # The flags change the trajectory (without noise the non-protecting variant is plain SGD
    # whatever the scope, so three distinct results out of four).
    runs = {}
    for protect in (True, False):
        for scope in ("global", "local"):
            kwargs = dict(lr=0.1, beta_utility=0.9, sigma=0.0, protect=protect, scope=scope)
            w = _run_project(UPGD, kwargs, 2, seed=0)[-1][0]
            runs[protect, scope] = tuple(w.reshape(-1).tolist())
    assert len(set(runs.values())) == 3
    assert runs[False, "global"] == runs[False, "local"]


def test_non_positive_max_utility_gives_half_gates() -> None:
    # w = [1, 0.5], g = [1, 2]: u = [-1, -1], max <= 0 -> s = 0.5 for every weight (the
    # reference would divide by -1 and get sigmoid(1)). w <- w - lr * g * 0.5.
    w1 = nn.Parameter(torch.tensor([1.0], dtype=F64))
    w2 = nn.Parameter(torch.tensor([0.5], dtype=F64))
    opt = UPGD([w1, w2], lr=0.1, beta_utility=0.0, sigma=0.0)
    (0.5 * w1.square().sum() + 2.0 * w2.sum()).backward()
    opt.step()
    assert float(w1.detach()) == pytest.approx(1.0 - 0.1 * 1.0 * 0.5, rel=1e-12)
    assert float(w2.detach()) == pytest.approx(0.5 - 0.1 * 2.0 * 0.5, rel=1e-12)
    assert opt.last_stats["mean_utility"] == 0.5
    assert opt.last_stats["max_utility"] == pytest.approx(-1.0)


@pytest.mark.parametrize("cls", [UPGD, AdaptiveUPGD])
def test_zero_max_utility_is_finite(cls: type) -> None:
    # All weights zero -> all utilities exactly 0 (the reference computes 0 / 0 = NaN).
    w = nn.Parameter(torch.zeros(3, dtype=F64))
    opt = cls([w], lr=0.1, sigma=0.0)
    w.grad = torch.tensor([1.0, -2.0, 4.0], dtype=F64)
    opt.step()
    assert torch.isfinite(w).all()
    assert opt.last_stats["mean_utility"] == 0.5
    if cls is UPGD:
        torch.testing.assert_close(w.detach(), -0.1 * 0.5 * w.grad)
    else:  # first Adam step: m_hat / (sqrt(v_hat) + eps) = g / (|g| + 1e-8)
        torch.testing.assert_close(w.detach(), -0.1 * 0.5 * w.grad / (w.grad.abs() + 1e-8))


def _positive_mlp() -> nn.Sequential:
    """ReLU MLP with positive weights and biases: with positive inputs and target 0 every
    gradient has the sign of its weight, so every utility -g w is <= 0."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)).to(F64)
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(0.5, 1.0)
    return net


def _train(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    target: torch.Tensor,
    steps: int,
    check=None,
) -> None:
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (net(x) - target).square().mean()).backward()
        opt.step()
        if check is not None:
            check(opt)


def test_adaptive_upgd_equals_adam_with_half_lr_when_no_utility_is_positive() -> None:
    lr, steps = 0.01, 6
    torch.manual_seed(1)
    x = torch.rand(8, 3, dtype=F64)
    target = torch.zeros(8, 2, dtype=F64)
    net_a, net_b = _positive_mlp(), _positive_mlp()
    upgd = AdaptiveUPGD(net_a.parameters(), lr=lr, beta_utility=0.9, sigma=0.0)
    adam = torch.optim.Adam(net_b.parameters(), lr=lr * 0.5, foreach=False)

    def check(opt: AdaptiveUPGD) -> None:
        # Preconditions of the comparison: no positive utility, so every gate is exactly 0.5.
        assert opt.last_stats["max_utility"] <= 0.0
        assert opt.last_stats["mean_utility"] == 0.5

    _train(net_a, upgd, x, target, steps, check)
    _train(net_b, adam, x, target, steps)
    moved = sum(
        float((pa - pb).abs().sum().detach())
        for pa, pb in zip(net_a.parameters(), _positive_mlp().parameters(), strict=True)
    )
    assert moved > 0.01
    for pa, pb in zip(net_a.parameters(), net_b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-12, atol=1e-14)


def test_adaptive_upgd_local_equals_adam_with_sigmoid_one_gate() -> None:
    # Scalar parameters a, b with y = a * b * x undershooting the target: g_a = (y - t) b x < 0,
    # so u = -g a > 0 for every scalar; with scope="local" each tensor's max is its own utility,
    # so s = sigmoid(1) everywhere and AdaptiveUPGD(lr) = Adam(lr * (1 - sigmoid(1))).
    lr, steps = 0.01, 6
    gate = 1.0 - _sigmoid(1.0)

    def make() -> nn.ParameterList:
        return nn.ParameterList([nn.Parameter(torch.tensor(v, dtype=F64)) for v in (0.7, 1.3)])

    x = torch.tensor([0.5, 1.0, 2.0], dtype=F64)
    target = 10.0 * x
    params_a, params_b = make(), make()
    upgd = AdaptiveUPGD(params_a.parameters(), lr=lr, beta_utility=0.5, sigma=0.0, scope="local")
    adam = torch.optim.Adam(params_b.parameters(), lr=lr * gate, foreach=False)
    for _ in range(steps):
        for params, opt in ((params_a, upgd), (params_b, adam)):
            opt.zero_grad()
            (0.5 * (params[0] * params[1] * x - target).square().mean()).backward()
            opt.step()
        assert upgd.last_stats["mean_utility"] == pytest.approx(_sigmoid(1.0), rel=1e-12)
    for pa, pb in zip(params_a, params_b, strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-12, atol=1e-14)
    assert float(params_a[0].detach()) > 0.7 + 0.01  # it did move


def _one_noisy_step(grad: torch.Tensor, seed: int, **kwargs) -> tuple[torch.Tensor, float]:
    """One AdaptiveUPGD step from w = 0 (all utilities 0 -> gate 0.5); returns the noise."""
    lr = 0.1
    w = nn.Parameter(torch.zeros_like(grad))
    opt = AdaptiveUPGD(
        [w],
        lr=lr,
        eps=0.0,
        sigma=0.5,
        adaptive_noise=True,
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    )
    w.grad = grad.clone()
    opt.step()
    # w = -lr * (d + noise) * 0.5 with d = m_hat / sqrt(v_hat) = sign(g) on the first step.
    noise = -w.detach() / (lr * 0.5) - torch.sign(grad)
    return noise, opt.last_stats["noise_std"]


def test_adaptive_noise_to_update_ratio_does_not_follow_the_gradient_scale() -> None:
    # First step with eps = 0: Adam's direction is sign(g), RMS 1 for g = [3, -4, 12], whatever
    # the gradients' scale; the noise is sigma * 1 * z at x1 and at x0.01 alike (the old rule,
    # sigma * ||g||, gave 6.5 z and 0.065 z).
    grad = torch.tensor([3.0, -4.0, 12.0], dtype=F64)
    sigma, seed = 0.5, 7
    z = torch.randn(3, generator=torch.Generator().manual_seed(seed), dtype=F64)
    noise, std = _one_noisy_step(grad, seed)
    noise_small, std_small = _one_noisy_step(0.01 * grad, seed)
    assert std == pytest.approx(sigma, rel=1e-12)
    assert std_small == pytest.approx(sigma, rel=1e-12)
    torch.testing.assert_close(noise, sigma * z, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(noise_small, noise, rtol=1e-9, atol=1e-12)


def test_adaptive_noise_follows_the_direction_rms() -> None:
    # betas = (0, 0), eps = 1: d = g / (|g| + 1). Step 1, g = [1, -3]: d = [0.5, -0.75],
    # RMS sqrt((0.25 + 0.5625) / 2); step 2, g = [1, 1]: d = [0.5, 0.5], RMS 0.5. With
    # beta_noise = 0.5: ema = 0.5 r1, then 0.25 r1 + 0.25; corrections 0.5, 0.75.
    sigma = 0.2
    r1 = math.sqrt((0.25 + 0.5625) / 2)
    expected = [r1, (0.25 * r1 + 0.25) / 0.75]
    w = nn.Parameter(torch.zeros(2, dtype=F64))
    opt = AdaptiveUPGD(
        [w],
        lr=0.01,
        betas=(0.0, 0.0),
        eps=1.0,
        sigma=sigma,
        adaptive_noise=True,
        beta_noise=0.5,
        min_noise_std=1e-9,
        generator=torch.Generator().manual_seed(0),
    )
    for g, r_hat in zip(([1.0, -3.0], [1.0, 1.0]), expected, strict=True):
        w.grad = torch.tensor(g, dtype=F64)
        opt.step()
        assert opt.last_stats["noise_std"] == pytest.approx(sigma * r_hat, rel=1e-12)
    assert opt.param_groups[0]["direction_rms_steps"] == 2


def test_adaptive_noise_floor_is_on_the_noise() -> None:
    # A zero gradient (eps > 0): direction 0, RMS 0 -> the noise std is min_noise_std itself,
    # not sigma * min_noise_std.
    w = nn.Parameter(torch.zeros(2, dtype=F64))
    opt = AdaptiveUPGD(
        [w],
        lr=0.1,
        sigma=0.5,
        adaptive_noise=True,
        min_noise_std=0.01,
        generator=torch.Generator().manual_seed(3),
    )
    w.grad = torch.zeros(2, dtype=F64)
    opt.step()
    assert opt.last_stats["noise_std"] == pytest.approx(0.01, rel=1e-12)
    z = torch.randn(2, generator=torch.Generator().manual_seed(3), dtype=F64)
    # w = -lr * (0 + 0.01 z) * (1 - 0.5)
    torch.testing.assert_close(w.detach(), -0.1 * 0.01 * z * 0.5, rtol=1e-9, atol=1e-15)


def test_adaptive_noise_with_zero_sigma_draws_nothing() -> None:
    w = nn.Parameter(torch.zeros(2, dtype=F64))
    opt = AdaptiveUPGD([w], lr=0.1, sigma=0.0, adaptive_noise=True, min_noise_std=0.01)
    w.grad = torch.tensor([1.0, -1.0], dtype=F64)
    opt.step()
    assert opt.last_stats["noise_std"] == 0.0


def test_fixed_noise_does_not_follow_the_direction() -> None:
    # eps = 1, g = [1, 1]: Adam's direction is [0.5, 0.5] (RMS 0.5); without adaptive_noise the
    # noise std stays sigma: w = -lr * (0.5 + sigma z) * (1 - 0.5) from w = 0.
    w = nn.Parameter(torch.zeros(2, dtype=F64))
    opt = AdaptiveUPGD(
        [w], lr=0.1, eps=1.0, sigma=0.3, min_noise_std=0.0,
        generator=torch.Generator().manual_seed(4),
    )  # fmt: skip
    w.grad = torch.ones(2, dtype=F64)
    opt.step()
    assert opt.last_stats["noise_std"] == 0.3
    z = torch.randn(2, generator=torch.Generator().manual_seed(4), dtype=F64)
    torch.testing.assert_close(w.detach(), -0.1 * (0.5 + 0.3 * z) * 0.5, rtol=1e-12, atol=0.0)


@pytest.mark.parametrize("cls", [UPGD, AdaptiveUPGD])
def test_zero_sigma_draws_no_noise(cls: type) -> None:
    # sigma = 0: the generator (and the global RNG) are not advanced.
    w = nn.Parameter(torch.ones(3, dtype=F64))
    gen = torch.Generator().manual_seed(2)
    state = gen.get_state()
    global_state = torch.get_rng_state()
    for opt in (cls([w], lr=0.1, sigma=0.0, generator=gen), cls([w], lr=0.1, sigma=0.0)):
        w.grad = torch.ones(3, dtype=F64)
        opt.step()
    assert torch.equal(gen.get_state(), state)
    assert torch.equal(torch.get_rng_state(), global_state)


@pytest.mark.parametrize("cls", [UPGD, AdaptiveUPGD])
def test_parameters_without_gradient_or_elements_are_skipped(cls: type) -> None:
    # w has a gradient, frozen has none, empty has no elements: only w moves, no error. w = 1,
    # g = 1 (u = -1, max <= 0 -> gate 0.5): UPGD moves it by -lr g 0.5, AdaptiveUPGD by
    # -lr sign(g) 0.5 (eps = 0).
    w = nn.Parameter(torch.ones(2, dtype=F64))
    frozen = nn.Parameter(torch.full((2,), 3.0, dtype=F64))
    empty = nn.Parameter(torch.zeros(0, dtype=F64))
    kwargs = {"eps": 0.0} if cls is AdaptiveUPGD else {}
    opt = cls([w, frozen, empty], lr=0.1, sigma=0.0, **kwargs)
    w.grad = torch.ones(2, dtype=F64)
    empty.grad = torch.zeros(0, dtype=F64)
    opt.step()
    torch.testing.assert_close(w.detach(), torch.full((2,), 0.95, dtype=F64))
    assert torch.equal(frozen.detach(), torch.full((2,), 3.0, dtype=F64))
    assert frozen not in opt.state and empty not in opt.state


def test_adaptive_upgd_weight_decay_by_hand() -> None:
    # w = [1, 2], g = [1, 1]: u = [-1, -2], max <= 0 -> gates 0.5; eps = 0: d = [1, 1].
    # w <- w (1 - lr wd) - lr d 0.5 with lr = 0.1, wd = 0.5: [0.95 - 0.05, 1.9 - 0.05].
    w = nn.Parameter(torch.tensor([1.0, 2.0], dtype=F64))
    opt = AdaptiveUPGD([w], lr=0.1, eps=0.0, sigma=0.0, weight_decay=0.5)
    w.grad = torch.ones(2, dtype=F64)
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([0.9, 1.85], dtype=F64))


def test_adaptive_upgd_non_protecting_noise_by_hand() -> None:
    # First step from w = 0 (gates 0.5), eps = 0: d = sign(g); protect=False gates only the
    # noise: w = -lr * (d + sigma z (1 - 0.5)).
    w = nn.Parameter(torch.zeros(3, dtype=F64))
    opt = AdaptiveUPGD([w], lr=0.1, eps=0.0, sigma=0.4, protect=False,
                       generator=torch.Generator().manual_seed(8))  # fmt: skip
    w.grad = torch.tensor([2.0, -1.0, 0.5], dtype=F64)
    opt.step()
    z = torch.randn(3, generator=torch.Generator().manual_seed(8), dtype=F64)
    expected = -0.1 * (torch.sign(w.grad) + 0.4 * z * 0.5)
    torch.testing.assert_close(w.detach(), expected, rtol=1e-12, atol=0.0)


def test_adaptive_noise_state_saved_before_the_rms_keys_restarts_the_ema() -> None:
    # A param group without direction_rms_* (a state from before they existed): the EMA starts
    # afresh, so after one step r_hat is that step's RMS (eps = 0: sign(g), RMS 1).
    w = nn.Parameter(torch.zeros(2, dtype=F64))
    opt = AdaptiveUPGD([w], lr=0.1, eps=0.0, sigma=0.2, adaptive_noise=True, beta_noise=0.5)
    del opt.param_groups[0]["direction_rms_ema"], opt.param_groups[0]["direction_rms_steps"]
    w.grad = torch.tensor([2.0, -3.0], dtype=F64)
    opt.step()
    assert opt.last_stats["noise_std"] == pytest.approx(0.2, rel=1e-12)
    assert opt.param_groups[0]["direction_rms_steps"] == 1


def test_fixed_noise_std_reported() -> None:
    w = nn.Parameter(torch.ones(2))
    opt = AdaptiveUPGD([w], sigma=0.03)
    w.grad = torch.ones(2)
    opt.step()
    assert opt.last_stats["noise_std"] == pytest.approx(0.03)
    opt_u = UPGD([w], sigma=0.02)
    opt_u.step()
    assert opt_u.last_stats["noise_std"] == pytest.approx(0.02)


def _make_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (UPGD, dict(lr=0.05, sigma=0.01, beta_utility=0.9, weight_decay=0.01)),
        (
            AdaptiveUPGD,
            dict(
                lr=0.01,
                sigma=0.1,
                beta_utility=0.9,
                adaptive_noise=True,
                beta_noise=0.9,
                weight_decay=0.01,
            ),
        ),
    ],
)
def test_state_dict_round_trip_is_bit_identical(cls: type, kwargs: dict) -> None:
    torch.manual_seed(5)
    batches = [(torch.randn(16, 4), torch.randint(0, 3, (16,))) for _ in range(8)]
    loss_fn = nn.CrossEntropyLoss()

    def train(net: nn.Module, opt: torch.optim.Optimizer, data: list) -> None:
        for x, y in data:
            opt.zero_grad()
            loss_fn(net(x), y).backward()
            opt.step()

    net_a = _make_net(0)
    opt_a = cls(net_a.parameters(), generator=torch.Generator().manual_seed(9), **kwargs)
    train(net_a, opt_a, batches[:4])

    net_b = copy.deepcopy(net_a)
    gen_b = torch.Generator()
    gen_b.set_state(opt_a.generator.get_state())
    opt_b = cls(net_b.parameters(), generator=gen_b, **kwargs)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    if cls is AdaptiveUPGD:
        assert opt_b.param_groups[0]["direction_rms_steps"] == 4

    # A fresh optimizer (same generator state) continues differently: the state matters.
    net_c = copy.deepcopy(net_a)
    gen_c = torch.Generator()
    gen_c.set_state(opt_a.generator.get_state())
    opt_c = cls(net_c.parameters(), generator=gen_c, **kwargs)

    train(net_a, opt_a, batches[4:])
    train(net_b, opt_b, batches[4:])
    train(net_c, opt_c, batches[4:])
    for pa, pb in zip(net_a.parameters(), net_b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert opt_a.last_stats == opt_b.last_stats
    assert any(
        not torch.equal(pa, pc)
        for pa, pc in zip(net_a.parameters(), net_c.parameters(), strict=True)
    )


def test_invalid_arguments() -> None:
    w = [nn.Parameter(torch.zeros(1))]
    with pytest.raises(ValueError):
        UPGD(w, scope="layer")
    with pytest.raises(ValueError):
        UPGD(w, beta_utility=1.0)
    with pytest.raises(ValueError):
        AdaptiveUPGD(w, sigma=-1.0)


def test_utility_is_bias_corrected() -> None:
    # One step with beta = 0.9: ema = 0.1 * u, bias correction 1 - 0.9 = 0.1, so u_hat = u.
    # w = [2, -1], g = [-3, 0.5]: u = -g w = [6, 0.5]; the max u_hat is 6 (0.6 uncorrected).
    w = nn.Parameter(torch.tensor([2.0, -1.0], dtype=F64))
    opt = UPGD([w], lr=0.1, beta_utility=0.9, sigma=0.0)
    w.grad = torch.tensor([-3.0, 0.5], dtype=F64)
    opt.step()
    assert opt.last_stats["max_utility"] == pytest.approx(6.0, rel=1e-12)
    # s = [sigmoid(1), sigmoid(0.5 / 6)]
    expected_mean = (_sigmoid(1.0) + _sigmoid(0.5 / 6.0)) / 2
    assert opt.last_stats["mean_utility"] == pytest.approx(expected_mean, rel=1e-12)
