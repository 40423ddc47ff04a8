"""PPOConfig's optimizer and gradient-scaler choices reach DistributionalPPO's update."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th

from conftest import small_model
from tradingbot.algo.ppo import DistributionalPPO
from tradingbot.optim import UPGD, AdaptiveUPGD, VarianceGradientScaler


def pendulum(**overrides) -> DistributionalPPO:
    """The small model with one 32-step minibatch per epoch."""
    return small_model(**{"batch_size": 32, **overrides})


@pytest.mark.parametrize(
    ("name", "cls"),
    [("adam", th.optim.Adam), ("upgd", UPGD), ("adaptive_upgd", AdaptiveUPGD)],
)
def test_optimizer_choice_constructs_it_and_trains(name: str, cls: type) -> None:
    upgd = {"sigma": 0.01, "beta_utility": 0.9, "weight_decay": 0.001, "adaptive_noise": True}
    model = pendulum(optimizer=name, learning_rate=1e-3, upgd=upgd)
    assert type(model.optimizer) is cls
    assert model.optimizer.param_groups[0]["lr"] == 1e-3
    if name != "adam":
        assert model.optimizer.param_groups[0]["sigma"] == 0.01
        assert model.optimizer.param_groups[0]["weight_decay"] == 0.001
    if name == "adaptive_upgd":
        assert model.optimizer.param_groups[0]["adaptive_noise"] is True
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(64 * 3)
    assert model.n_updates == 3 * 2 * 2
    assert all(th.isfinite(p).all() for p in model.policy.parameters())
    assert any(not th.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True))
    logged = model.logger.name_to_value
    if name == "adam":
        assert "train/upgd_noise_std" not in logged
    else:
        assert np.isfinite(logged["train/upgd_mean_utility"])
        assert logged["train/upgd_noise_std"] > 0


def test_scaler_then_per_network_clip_reach_the_optimizer(monkeypatch) -> None:
    """The gradient the optimizer steps on is the accumulated one clipped per network, as
    torch's clip_grad_norm_ clips each network's part alone, then times the scaler's factor:
    the clip bounds the raw gradient (clipping after the factor let a factor of 0.2 raise the
    effective bound fivefold)."""
    import tradingbot.algo.update as update_module

    model = pendulum(grad_scaler={"enabled": True, "warmup": 0, "alpha": 100.0, "min_factor": 0.2})
    scaler = model.train_state.scaler
    assert isinstance(scaler, VarianceGradientScaler)
    real_apply_step = update_module.apply_step
    steps: list[tuple[th.Tensor, th.Tensor, float]] = []

    def recording_apply_step(algo, square_norms):
        raw = algo.gradients.flat.clone()
        parts = raw.split(algo.policy.network_sizes())
        assert square_norms == pytest.approx([float(p.square().sum()) for p in parts], rel=1e-5)
        original_step = algo.optimizer.step

        def step_recording_the_gradient(*args, **kwargs):
            steps.append((raw, algo.gradients.flat.clone(), scaler.last_factor))
            return original_step(*args, **kwargs)

        algo.optimizer.step = step_recording_the_gradient
        try:
            return real_apply_step(algo, square_norms)
        finally:
            algo.optimizer.step = original_step

    monkeypatch.setattr(update_module, "apply_step", recording_apply_step)
    model.learn(64 * 2)
    assert len(steps) == model.n_updates > 0
    sizes = model.policy.network_sizes()
    max_norm = model.config.max_grad_norm
    # Steps where the order matters (the raw norm is clipped and the factor is below 1): the
    # old order (factor, then clip) would step on a different gradient there.
    deciding = 0
    for raw, stepped, factor in steps:
        expected = []
        for part in raw.split(sizes):
            deciding += bool(float(part.norm()) > max_norm and factor < 0.99)
            network = th.zeros_like(part, requires_grad=True)
            network.grad = part.clone()
            th.nn.utils.clip_grad_norm_([network], max_norm)
            expected.append(network.grad * factor)
        th.testing.assert_close(stepped, th.cat(expected), rtol=1e-5, atol=1e-8)
    assert deciding > 0
    factors = [factor for _, _, factor in steps]
    # The first step has no variance (one sample); later ones are scaled down.
    assert factors[0] == pytest.approx(1.0, abs=1e-4) and min(factors) < 0.9
    logged = model.logger.name_to_value
    assert logged["train/scaler_factor"] < 1.0 and np.isfinite(logged["train/scaler_ratio"])
    assert model.train_state.state_dict()["scaler.step_count"] == model.n_updates


def test_scaler_disabled_leaves_gradients_alone() -> None:
    model = pendulum()
    assert model.train_state.scaler is None
    model.learn(64)
    assert "train/scaler_factor" not in model.logger.name_to_value


def test_train_state_round_trips() -> None:
    model = pendulum(grad_scaler={"enabled": True, "warmup": 0})
    model.learn(64)
    model.train_state.sigma_bar, model.train_state.kl_beta = 0.25, 4.0
    state = model.train_state.state_dict()
    other = pendulum(grad_scaler={"enabled": True, "warmup": 0})
    other.train_state.load_state_dict(state)
    for key, value in other.train_state.state_dict().items():
        assert th.equal(value, state[key]) or (value.isnan().all() and state[key].isnan().all())
    assert other.train_state.kl_beta == 4.0
    assert other.train_state.scaler.step_count == model.n_updates == 4


def test_train_state_is_saved_and_restored(tmp_path) -> None:
    model = pendulum(grad_scaler={"enabled": True, "warmup": 0}, critic_adjust={"mode": "dsac_t"})
    model.learn(64)
    model.train_state.kl_beta, model.train_state.skipped_steps = 8.0, 3
    model.save(tmp_path / "m")
    loaded = DistributionalPPO.load(tmp_path / "m")
    saved = model.train_state.state_dict()
    restored = loaded.train_state.state_dict()
    assert saved.keys() == restored.keys() and "scaler.exp_avg.0" in saved
    for key, value in saved.items():
        assert th.equal(value, restored[key]) or (
            value.isnan().all() and restored[key].isnan().all()
        )
    assert loaded.train_state.skipped_steps == 3 and np.isfinite(loaded.train_state.sigma_bar)
