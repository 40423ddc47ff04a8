"""State-adversarial robust training (tradingbot.algo.robust) and the backtest attack
(tradingbot.evaluate.attack): the ball constraint, PGD against random noise, the regularizer's
gradient, the LSTM state handling, bit-identity when off, the schedule, PBT and the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch as th
from pydantic import ValidationError
from typer.testing import CliRunner

from conftest import TINY_MODEL, small_model, training_snapshot
from tradingbot.algo import robust
from tradingbot.algo import train_steps as train_steps_module
from tradingbot.algo import update as update_module
from tradingbot.algo.config import PPOConfig, RobustConfig
from tradingbot.algo.ppo import DistributionalPPO
from tradingbot.algo.robust import (
    actor_kl,
    attacked_chunks,
    pgd_perturb,
    random_perturbation,
    robust_regularizer,
    robust_step,
    scheduled_epsilon,
    sequence_dist_params,
)
from tradingbot.cli import app
from tradingbot.config_loading import load_config
from tradingbot.evaluate.attack import AttackedPredictor, ObservationAttack
from tradingbot.pbt.member import apply_hyperparameters, resolve_mutations
from tradingbot.train import train

ROBUST = {"enabled": True, "epsilon": 0.3, "kappa": 1.0, "perturb_last": True}


def sharpen(model: DistributionalPPO) -> None:
    """Make the freshly initialized actor sensitive to its inputs (its head starts at gain
    0.01, so every KL would be ~1e-8) and its Gaussian narrow."""
    with th.no_grad():
        model.policy.actor_head.weight.mul_(100.0)
        if not model.policy.discrete:
            model.policy.log_std_logit.fill_(-2.0)


def chunks_with_resets(model: DistributionalPPO):
    """The model's rollout as chunks, with episode starts inside some chunks."""
    model.learn(64)
    chunks = model.rollout_buffer.to_chunks(model.config.seq_len)
    starts = chunks.episode_starts.clone()
    starts[0, 5] = 1.0
    starts[2, 9] = 1.0
    return chunks, starts


# --------------------------------------------------------------------------------------------
# The ball


def test_pgd_perturbations_stay_within_epsilon_mask_and_box() -> None:
    model = small_model()
    sharpen(model)
    chunks, starts = chunks_with_resets(model)
    policy = model.policy
    obs = chunks.observations
    clean = sequence_dist_params(policy, obs, starts, chunks.initial_states).detach()
    epsilon = 0.25
    mask = th.tensor([1.0, 1.0, 0.0])
    low, high = th.full((3,), -1.0), th.full((3,), 1.0)

    def objective(x: th.Tensor) -> th.Tensor:
        return actor_kl(
            clean, sequence_dist_params(policy, x, starts, chunks.initial_states), False
        )

    perturbed, _, _ = pgd_perturb(objective, obs, epsilon, 7, None, mask, low, high)
    delta = perturbed - obs
    assert delta.abs().max() <= epsilon + 1e-6
    assert delta.abs().max() > 0.5 * epsilon  # it did move
    assert th.equal(perturbed[..., 2], obs[..., 2])  # masked entry untouched
    # Inside the box wherever the clean observation is (an entry already outside only moves
    # towards it, and never by more than epsilon).
    inside = (obs >= low) & (obs <= high)
    assert ((perturbed >= low - 1e-6) & (perturbed <= high + 1e-6))[inside].all()
    noise = random_perturbation(obs, epsilon, mask)
    assert noise.abs().max() <= epsilon and th.equal(noise[..., 2], th.zeros_like(noise[..., 2]))


def test_every_observation_perturbed_in_training_is_within_epsilon(monkeypatch) -> None:
    seen: list[tuple[th.Tensor, th.Tensor]] = []
    original = robust.pgd_perturb

    def recording(objective, obs, *args, **kwargs):
        out = original(objective, obs, *args, **kwargs)
        seen.append((obs.clone(), out[0].clone()))
        return out

    monkeypatch.setattr(robust, "pgd_perturb", recording)
    model = small_model(robust={**ROBUST, "epsilon": 0.2, "perturb_last": False, "fraction": 0.5})
    model.learn(128)
    assert len(seen) == 2 * 2  # 2 updates x 2 epochs x 1 minibatch (of 4 chunks)
    for clean, perturbed in seen:
        assert clean.shape[0] == 2  # half of each minibatch's 4 chunks
        assert (perturbed - clean).abs().max() <= 0.2 + 1e-6
        assert th.equal(perturbed[..., -1], clean[..., -1])  # the last entry is not perturbed
    values = model.logger.name_to_value
    assert values["train/robust_epsilon"] == 0.2
    for key in ("robust_kl_random", "robust_kl_pgd", "robust_loss"):
        assert np.isfinite(values[f"train/{key}"])


# --------------------------------------------------------------------------------------------
# The attack


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
def test_pgd_increases_the_kl_over_random_noise_of_the_same_size(env_id: str) -> None:
    model = small_model(env_id)
    sharpen(model)
    chunks, starts = chunks_with_resets(model)
    policy = model.policy
    clean = sequence_dist_params(policy, chunks.observations, starts, chunks.initial_states)

    def objective(x: th.Tensor) -> th.Tensor:
        params = sequence_dist_params(policy, x, starts, chunks.initial_states)
        return actor_kl(clean, params, policy.discrete)

    th.manual_seed(0)
    epsilon = 0.1
    _, kl_start, kl_pgd = pgd_perturb(objective, chunks.observations, epsilon, 10)
    with th.no_grad():
        obs = chunks.observations
        random_kls = [
            float(objective(obs + random_perturbation(obs, epsilon)).mean()) for _ in range(5)
        ]
    assert kl_pgd is not None
    assert float(kl_pgd) > 2.0 * max(random_kls)
    assert float(kl_pgd) > float(kl_start)


def test_backtest_attack_stays_in_the_ball_and_beats_random() -> None:
    model = small_model()
    sharpen(model)
    rng = np.random.default_rng(0)
    pgd = ObservationAttack(model, 0.1, kind="pgd", steps=10)
    noise = ObservationAttack(model, 0.1, kind="random")
    state = None
    start = np.ones(2, dtype=bool)
    for _ in range(20):
        obs = rng.normal(size=(2, 3)).astype(np.float32)
        for attack in (pgd, noise):
            perturbed = attack.perturb(obs, state, start)
            assert perturbed.shape == obs.shape and perturbed.dtype == obs.dtype
            assert np.abs(perturbed - obs).max() <= 0.1 + 1e-6
            assert np.array_equal(perturbed[:, -1], obs[:, -1])  # the position entry
        _, state = model.predict(obs, state, start, deterministic=True)
        start = np.zeros(2, dtype=bool)
    assert np.mean(pgd.kls) > 2.0 * np.mean(noise.kls)
    # The wrapper acts on the perturbed observation.
    agent = AttackedPredictor(model, ObservationAttack(model, 0.5, kind="pgd"))
    obs = rng.normal(size=(2, 3)).astype(np.float32)
    attacked, _ = agent.predict(obs, None, np.ones(2, dtype=bool), deterministic=True)
    clean, _ = model.predict(obs, None, np.ones(2, dtype=bool), deterministic=True)
    assert not np.allclose(attacked, clean)
    assert np.array_equal(ObservationAttack(model, 0.0).perturb(obs), obs)


# --------------------------------------------------------------------------------------------
# The regularizer


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
def test_regularizer_has_a_nonzero_gradient_for_the_actor_only(env_id: str) -> None:
    model = small_model(env_id, robust={**ROBUST, "fraction": 0.5})
    sharpen(model)
    chunks, _ = chunks_with_resets(model)
    policy = model.policy
    batch = chunks.select(th.arange(4))
    evaluation = policy.evaluate_sequences(
        batch.observations, batch.episode_starts, batch.initial_states, batch.raw_actions
    )
    step = robust_step(model.config.robust, 1.0, model.observation_space)
    model.gradients.zero_()
    regularizer, metrics = robust_regularizer(policy, batch, evaluation.dist_params, step)
    assert regularizer.requires_grad and float(regularizer.detach()) > 0
    regularizer.backward()
    assert policy.actor_head.weight.grad is not None
    assert policy.actor_head.weight.grad.abs().max() > 0
    assert policy.actor_lstm.weight_ih_l0.grad.abs().max() > 0
    critic_lstm = policy.critic_lstm.parameters()  # untouched
    assert all(p.grad is None or not p.grad.any() for p in critic_lstm)
    assert all(p.grad is None or not p.grad.any() for p in policy.critic_head.parameters())
    if not policy.discrete:  # the std is the detached target's: no gradient to it
        assert policy.log_std_logit.grad is None or not policy.log_std_logit.grad.any()
    assert float(metrics["robust_kl_pgd"]) == pytest.approx(float(regularizer.detach()))
    assert float(metrics["robust_kl_pgd"]) > float(metrics["robust_kl_random"])
    assert float(metrics["robust_loss"]) == pytest.approx(float(regularizer.detach()))  # kappa 1


def test_clean_target_matches_training_evaluation_and_resets_cut_the_memory() -> None:
    """The attack replays each chunk from its stored LSTM state, with inner episode starts: a
    zero perturbation reproduces training's distribution exactly, a perturbation at step 0
    reaches later steps through the memory, and stops at the next episode start."""
    model = small_model()
    sharpen(model)
    chunks, starts = chunks_with_resets(model)
    policy = model.policy
    evaluation = policy.evaluate_sequences(
        chunks.observations, starts, chunks.initial_states, chunks.raw_actions
    )
    params = sequence_dist_params(policy, chunks.observations, starts, chunks.initial_states)
    assert th.equal(params, evaluation.dist_params)
    assert not actor_kl(evaluation.dist_params, params, False).any()

    obs = chunks.observations.clone()
    obs[0, 0, :2] += 0.5  # chunk 0 has an episode start at step 5
    moved = sequence_dist_params(policy, obs, starts, chunks.initial_states)
    n = chunks.observations.shape[1]
    kl = actor_kl(params, moved, False).reshape(-1, n)
    assert (kl[0, 1:5] > 0).all()  # the memory carries the perturbation ...
    assert not kl[0, 5:].any()  # ... until the episode starts again
    assert not kl[1:].any()  # other chunks are independent


def test_robust_training_changes_the_update_and_logs_the_attack() -> None:
    plain = small_model()
    robust_model = small_model(robust=ROBUST)
    plain.learn(64)
    robust_model.learn(64)
    assert any(
        not th.equal(a, b)
        for a, b in zip(plain.policy.parameters(), robust_model.policy.parameters(), strict=True)
    )
    values = robust_model.logger.name_to_value
    assert values["train/robust_kl_pgd"] > values["train/robust_kl_random"] >= 0.0


# --------------------------------------------------------------------------------------------
# Off means off


def test_disabled_robust_is_bit_identical_to_the_plain_update(monkeypatch) -> None:
    """With ``robust.enabled = False`` no robust code runs (patched to fail here) and no random
    number is drawn: parameters, optimizer state and the RNG equal those of a default model."""

    def fail(*args, **kwargs):
        raise AssertionError("robust code ran with robust disabled")

    plain = small_model()
    plain.learn(128)
    plain_rng = th.get_rng_state()

    monkeypatch.setattr(update_module, "robust_regularizer", fail)
    monkeypatch.setattr(train_steps_module, "robust_step", fail)
    off = small_model(
        robust={"enabled": False, "epsilon": 0.5, "kappa": 3.0, "fraction": 1.0, "pgd_steps": 2}
    )
    off.learn(128)
    assert th.equal(th.get_rng_state(), plain_rng)
    a, b = training_snapshot(plain), training_snapshot(off)
    assert a.keys() == b.keys()
    for key in a:
        assert th.equal(a[key], b[key]), key
    assert not any("robust" in key for key in off.logger.name_to_value)


def test_zero_epsilon_skips_the_attack(monkeypatch) -> None:
    """At the start of a warm-up epsilon is 0: no attack runs (it could not move anything)."""

    def fail(*args, **kwargs):
        raise AssertionError("attack ran at epsilon 0")

    model = small_model(robust={**ROBUST, "warmup_fraction": 0.5})
    chunks, _ = chunks_with_resets(model)
    step = robust_step(model.config.robust, 1.0, model.observation_space)
    assert step.epsilon == 0.0
    monkeypatch.setattr(update_module, "robust_regularizer", fail)
    ctx = update_module.UpdateContext(
        ret_mean=0.0, ret_std=1.0, ent_coef=0.0, clip_range=0.2, robust=step
    )
    metrics = update_module.accumulate_gradients(model.learner, chunks.select(th.arange(4)), ctx)
    assert "robust_kl_pgd" not in metrics


# --------------------------------------------------------------------------------------------
# Schedule, config, PBT


def test_epsilon_warmup_schedule_and_defaults() -> None:
    assert scheduled_epsilon(0.2, 0.0, 1.0) == 0.2
    assert scheduled_epsilon(0.2, 0.5, 1.0) == 0.0
    assert scheduled_epsilon(0.2, 0.5, 0.75) == pytest.approx(0.1)
    assert scheduled_epsilon(0.2, 0.5, 0.5) == pytest.approx(0.2)
    assert scheduled_epsilon(0.2, 0.5, 0.0) == pytest.approx(0.2)
    cfg = RobustConfig(enabled=True, epsilon=0.2, pgd_steps=4)
    step = robust_step(cfg, 1.0, small_model().observation_space)
    assert step.step_size == pytest.approx(2.5 * 0.2 / 4)
    assert step.mask.tolist() == [1.0, 1.0, 0.0]  # the last entry is excluded by default
    assert attacked_chunks(8, 0.25) == 2 and attacked_chunks(3, 0.1) == 1
    assert attacked_chunks(4, 1.0) == 4
    assert PPOConfig().robust.enabled is False
    with pytest.raises(ValidationError):
        RobustConfig(fraction=0.0)
    with pytest.raises(ValidationError):
        RobustConfig(epsilon=-0.1)


def test_warmup_reaches_training(monkeypatch) -> None:
    epsilons: list[float] = []
    original = train_steps_module.robust_step

    def recording(*args, **kwargs):
        step = original(*args, **kwargs)
        epsilons.append(step.epsilon)
        return step

    monkeypatch.setattr(train_steps_module, "robust_step", recording)
    model = small_model(robust={**ROBUST, "epsilon": 0.2, "warmup_fraction": 1.0})
    model.learn(256)  # four updates, at progress 1/4, 2/4, 3/4 and 1
    assert epsilons == pytest.approx([0.05, 0.1, 0.15, 0.2])
    assert model.logger.name_to_value["train/robust_epsilon"] == pytest.approx(0.2)


def test_epsilon_and_kappa_are_pbt_mutable() -> None:
    model = small_model(robust=ROBUST)
    defaults = load_config().pbt.mutations
    resolved = resolve_mutations(defaults, model.config)
    assert {"algo.robust.epsilon", "algo.robust.kappa"} <= set(resolved)
    apply_hyperparameters(model, {"algo.robust.epsilon": 0.05, "algo.robust.kappa": 0.5})
    assert model.config.robust.epsilon == 0.05 and model.config.robust.kappa == 0.5
    model.learn(64)
    assert model.logger.name_to_value["train/robust_epsilon"] == 0.05


def test_robust_config_survives_save_and_load(tmp_path) -> None:
    model = small_model(robust=ROBUST)
    model.learn(64)
    loaded = DistributionalPPO.load(model.save(tmp_path / "model"))
    assert loaded.config.robust == model.config.robust


# --------------------------------------------------------------------------------------------
# The backtest command

TINY = [
    "data.source=synthetic",
    *TINY_MODEL,
    "algo.robust.enabled=true",
    "algo.robust.pgd_steps=2",
    "run.total_timesteps=256",
    "run.name=tiny-robust",
]


def test_backtest_command_with_a_pgd_attack(tmp_path) -> None:
    run_dir = train(load_config(overrides=[*TINY, f"run.out_dir={tmp_path}"])).run_dir
    result = CliRunner().invoke(
        app,
        ["backtest", str(run_dir), "--attack", "pgd", "--epsilon", "0.2", "--attack-steps", "3"],
    )
    assert result.exit_code == 0, result.output
    out = run_dir / "backtest" / "test_pgd_eps0.2"
    metrics = pd.read_csv(out / "metrics.csv")
    assert {"agent", "agent_pgd", "buy_and_hold", "flat"} <= set(metrics["policy"])
    assert "sharpe" in metrics.columns
    bars = pd.read_csv(out / f"bars_{metrics['instrument'][0]}_agent_pgd.csv")
    assert (bars["attack_kl"] >= 0).all()
    bad = CliRunner().invoke(app, ["backtest", str(run_dir), "--attack", "fgsm"])
    assert bad.exit_code == 1 and "pgd or random" in bad.output
