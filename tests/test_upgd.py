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

F64 = torch.float64


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _paper_upgd(
    w: list[float],
    grad_fn,
    steps: int,
    lr: float,
    wd: float,
    beta: float,
    noises: list[list[float]],
    protect: bool,
    scope: str,
) -> list[list[float]]:
    """The paper's update for scalar weights, one list entry per step (weights after it)."""
    ema = [0.0] * len(w)
    history = []
    for t in range(1, steps + 1):
        g = grad_fn(w)
        ema = [beta * e + (1 - beta) * (-gi * wi) for e, gi, wi in zip(ema, g, w, strict=True)]
        u_hat = [e / (1 - beta**t) for e in ema]
        if scope == "global":
            maxes = [max(u_hat)] * len(w)
        else:  # every weight is its own tensor here, so its local max is itself
            maxes = list(u_hat)
        s = [_sigmoid(u / m) if m > 0 else 0.5 for u, m in zip(u_hat, maxes, strict=True)]
        n = noises[t - 1]
        if protect:
            step = [(gi + ni) * (1 - si) for gi, ni, si in zip(g, n, s, strict=True)]
        else:
            step = [gi + ni * (1 - si) for gi, ni, si in zip(g, n, s, strict=True)]
        w = [wi * (1 - lr * wd) - lr * d for wi, d in zip(w, step, strict=True)]
        history.append(w)
    return history


def _grad_fn(w: list[float]) -> list[float]:
    # loss = 0.5 * w1^2 + 2 * w2  ->  g = [w1, 2]
    return [w[0], 2.0]


def _run_upgd(
    opt_kwargs: dict, w0: list[float], steps: int, generator: torch.Generator | None
) -> list[list[float]]:
    w1 = nn.Parameter(torch.tensor([w0[0]], dtype=F64))
    w2 = nn.Parameter(torch.tensor([w0[1]], dtype=F64))
    opt = UPGD([w1, w2], generator=generator, **opt_kwargs)
    history = []
    for _ in range(steps):
        opt.zero_grad()
        loss = 0.5 * w1.square().sum() + 2.0 * w2.sum()
        loss.backward()
        opt.step()
        history.append([float(w1.detach()), float(w2.detach())])
    return history


def _noises(seed: int, steps: int, sigma: float) -> list[list[float]]:
    """The draws UPGD makes: one per parameter with a gradient, in order, per step."""
    gen = torch.Generator().manual_seed(seed)
    return [
        [sigma * float(torch.randn((1,), generator=gen, dtype=F64)) for _ in range(2)]
        for _ in range(steps)
    ]


def test_upgd_first_step_by_hand() -> None:
    # w = [1, -0.5], g = [1, 2]; u = -g w = [-1, 1]; beta = 0.9: ema = [-0.1, 0.1], bias
    # correction 0.1 -> u_hat = [-1, 1]; global max 1 -> s = [sigmoid(-1), sigmoid(1)].
    # w1 <- 1 * (1 - 0.1 * 0.01) - 0.1 * 1 * (1 - sigmoid(-1)) = 0.999 - 0.1 * 0.7310586
    # w2 <- -0.5 * 0.999 - 0.1 * 2 * (1 - sigmoid(1)) = -0.4995 - 0.2 * 0.2689414
    kwargs = dict(lr=0.1, weight_decay=0.01, beta_utility=0.9, sigma=0.0)
    (w,) = _run_upgd(kwargs, [1.0, -0.5], 1, None)
    assert w[0] == pytest.approx(0.999 - 0.1 * 0.7310585786300049, rel=1e-12)
    assert w[1] == pytest.approx(-0.4995 - 0.2 * 0.2689414213699951, rel=1e-12)


@pytest.mark.parametrize("protect", [True, False])
@pytest.mark.parametrize("scope", ["global", "local"])
@pytest.mark.parametrize("sigma", [0.0, 0.3])
def test_upgd_matches_paper_update(protect: bool, scope: str, sigma: float) -> None:
    steps, seed = 3, 1234
    kwargs = dict(
        lr=0.1, weight_decay=0.01, beta_utility=0.9, sigma=sigma, protect=protect, scope=scope
    )
    generator = torch.Generator().manual_seed(seed)
    got = _run_upgd(kwargs, [1.0, -0.5], steps, generator)
    noises = _noises(seed, steps, sigma)
    expected = _paper_upgd(
        [1.0, -0.5],
        _grad_fn,
        steps,
        lr=0.1,
        wd=0.01,
        beta=0.9,
        noises=noises,
        protect=protect,
        scope=scope,
    )
    for g_step, e_step in zip(got, expected, strict=True):
        assert g_step == pytest.approx(e_step, rel=1e-12, abs=1e-15)


def test_upgd_variants_differ() -> None:
    # The known-answer test above would pass for identical variants if the reference were
    # wrong the same way; check that the flags change the trajectory.
    runs = {}
    for protect in (True, False):
        for scope in ("global", "local"):
            kwargs = dict(lr=0.1, beta_utility=0.9, sigma=0.0, protect=protect, scope=scope)
            runs[protect, scope] = _run_upgd(kwargs, [1.0, -0.5], 2, None)[-1]
    assert len({tuple(v) for v in runs.values()}) == 3
    # Without noise, the non-protecting variant is plain SGD whatever the scope.
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


def test_adaptive_noise_scales_with_gradient_norm() -> None:
    grad = torch.tensor([3.0, -4.0, 12.0], dtype=F64)  # norm 13
    sigma, seed = 0.5, 7
    z = torch.randn(3, generator=torch.Generator().manual_seed(seed), dtype=F64)
    noise, std = _one_noisy_step(grad, seed, min_noise_std=1e-6)
    noise_small, std_small = _one_noisy_step(0.1 * grad, seed, min_noise_std=1e-6)
    # First step: the bias-corrected EMA of the norm is the norm itself, 13 (then 1.3).
    assert std == pytest.approx(sigma * 13.0, rel=1e-12)
    assert std_small == pytest.approx(sigma * 1.3, rel=1e-12)
    torch.testing.assert_close(noise, sigma * 13.0 * z, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(noise_small, 0.1 * noise, rtol=1e-9, atol=1e-12)


def test_adaptive_noise_floor() -> None:
    grad = torch.tensor([3e-4, -4e-4], dtype=F64)  # norm 5e-4 < floor 0.01
    z = torch.randn(2, generator=torch.Generator().manual_seed(3), dtype=F64)
    noise, std = _one_noisy_step(grad, 3, min_noise_std=0.01)
    assert std == pytest.approx(0.5 * 0.01, rel=1e-12)
    torch.testing.assert_close(noise, 0.5 * 0.01 * z, rtol=1e-9, atol=1e-12)


def test_adaptive_noise_std_tracks_norm_ema_over_steps() -> None:
    # The norm EMA depends only on the gradients: with norms 13, 13, 0 and beta_noise = 0.5,
    # ema = 6.5, 9.75, 4.875; bias corrections 0.5, 0.75, 0.875 -> n_hat = 13, 13, 5.571...
    sigma, beta_n = 0.2, 0.5
    base = torch.tensor([3.0, -4.0, 12.0], dtype=F64)
    for scale in (1.0, 0.1):
        w = nn.Parameter(torch.zeros(3, dtype=F64))
        opt = AdaptiveUPGD(
            [w],
            lr=0.01,
            sigma=sigma,
            adaptive_noise=True,
            beta_noise=beta_n,
            min_noise_std=1e-9,
            generator=torch.Generator().manual_seed(0),
        )
        expected = [13.0, 13.0, 4.875 / 0.875]
        for t, g in enumerate((base, base, torch.zeros(3, dtype=F64))):
            w.grad = scale * g
            opt.step()
            assert opt.last_stats["noise_std"] == pytest.approx(
                sigma * scale * expected[t], rel=1e-12
            )


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
        assert opt_b.param_groups[0]["grad_norm_steps"] == 4

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
