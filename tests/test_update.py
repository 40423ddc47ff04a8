"""The gradient step of DistributionalPPO: microbatches, non-finite skipping, KL early stop and
penalty, entropy schedule, AWR, value clipping and DSAC-T through train(), LSTM norms."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from pydantic import ValidationError
from stable_baselines3.common.env_util import make_vec_env

from conftest import SMALL_PPO, assert_same_state, small_model, training_snapshot
from tradingbot.algo.config import PPOConfig
from tradingbot.algo.fast.flat import clip_scales
from tradingbot.algo.losses import dsac_t_weights, quantile_spread
from tradingbot.algo.ppo import DistributionalPPO
from tradingbot.algo.robust import robust_step
from tradingbot.algo.schedules import (
    adapt_clip_range,
    adapt_kl_beta,
    decay_awr_coef,
    entropy_coef,
    linear_schedule,
    update_entropy_boost,
    warmup_coef,
)
from tradingbot.algo.update import UpdateContext, accumulate_gradients, minibatch_loss


# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("normalization", ["minibatch", "rollout", "none"])
def test_microbatches_give_the_whole_minibatch_gradient(normalization: str) -> None:
    model = small_model(
        batch_size=64, n_microbatches=4, seq_len=8, advantage_normalization=normalization,
        value_clip={"mode": "per_quantile"}, clip_range_vf=0.1, critic_adjust={"mode": "dsac_t"},
        awr={"enabled": True}, kl_penalty=True, target_kl=0.01, ent_coef=0.01,
    )  # fmt: skip
    model.learn(64)  # one rollout and update: the buffer is full, parameters moved
    buffer = model.rollout_buffer
    chunks = buffer.to_chunks(8)
    adv = buffer.advantages
    ctx = UpdateContext(
        ret_mean=0.3, ret_std=2.0, ent_coef=0.01, clip_range=0.2,
        adv_stats=(float(adv.mean()), float(adv.std())), sigma_bar=0.5, kl_beta=0.7,
        awr_coef=0.1,
    )  # fmt: skip
    indices = th.arange(8)

    def gradients(n_micro: int) -> list[th.Tensor]:
        accumulate_gradients(model.learner, chunks.select(indices), ctx, n_micro)
        return [p.grad.clone() for p in model.policy.parameters() if p.grad is not None]

    whole, split = gradients(1), gradients(4)
    assert len(whole) == len(split) > 0
    # float32 sums in another order: 1e-6 absolute, and 1e-6 relative for large entries (the
    # unnormalized-advantage gradient of log-std is ~16, where one float32 ulp is ~1e-6).
    for g_whole, g_split in zip(whole, split, strict=True):
        assert th.allclose(g_whole, g_split, atol=1e-6, rtol=1e-6), (g_whole - g_split).abs().max()
    assert any(g.abs().max() > 1e-3 for g in whole)
    # train() does split: 4 evaluations per minibatch step instead of 1, plus one over the
    # rollout for the KL after the update (kl_penalty).
    # (Counted at evaluate_features, the part after the LSTMs, which both paths call.)
    calls = {"n": 0}
    evaluate = model.policy.evaluate_features

    def counting(*args, **kwargs):
        calls["n"] += 1
        return evaluate(*args, **kwargs)

    model.policy.evaluate_features = counting  # type: ignore[method-assign]
    n_before = model.n_updates
    model.train()
    assert calls["n"] - 1 == 4 * (model.n_updates - n_before) > 0


def test_microbatches_give_the_whole_minibatch_gradient_with_robust_training() -> None:
    """8 chunks at fraction 0.25: the whole minibatch attacks its first 2 chunks; split into 4
    microbatches, the first microbatch holds both, the others attack none (before: each
    attacked ceil(0.25 * 2) = 1 chunk of its own, 4 in all, gradients 7e-4 apart). The random
    starts come from the same global generator in the same order."""
    robust = {"enabled": True, "kappa": 10.0, "epsilon": 0.5}
    model = small_model(batch_size=64, n_microbatches=4, seq_len=8, robust=robust)
    model.learn(64)
    chunks = model.rollout_buffer.to_chunks(8)
    step = robust_step(model.config.robust, 1.0, model.observation_space)
    ctx = UpdateContext(ret_mean=0.3, ret_std=2.0, ent_coef=0.0, clip_range=0.2, robust=step)

    def gradients(n_micro: int) -> tuple[th.Tensor, dict[str, th.Tensor]]:
        th.manual_seed(123)
        metrics = accumulate_gradients(model.learner, chunks.select(th.arange(8)), ctx, n_micro)
        return model.gradients.flat.clone(), metrics

    (whole, whole_metrics), (split, split_metrics) = gradients(1), gradients(4)
    assert whole.abs().max() > 1e-3
    assert th.allclose(whole, split, atol=1e-6, rtol=1e-6), (whole - split).abs().max()
    for key in ("robust_kl_pgd", "robust_kl_random", "robust_loss"):
        assert float(whole_metrics[key]) > 0
        assert float(split_metrics[key]) == pytest.approx(float(whole_metrics[key]), rel=1e-5)
    # The robust term matters here: without it the gradient differs.
    th.manual_seed(123)
    plain = dataclasses.replace(ctx, robust=None)
    accumulate_gradients(model.learner, chunks.select(th.arange(8)), plain, 1)
    assert (model.gradients.flat - whole).abs().max() > 1e-4


def test_microbatches_must_divide_the_minibatch_chunks() -> None:
    with pytest.raises(ValidationError, match=r"batch_size \(48\).*n_microbatches \(5\)"):
        PPOConfig(batch_size=48, seq_len=16, n_microbatches=5)
    PPOConfig(batch_size=48, seq_len=16, n_microbatches=3)


# --------------------------------------------------------------------------------------------
class NaNRewardAt(gym.Wrapper):
    """Reward NaN on the ``at``-th step (counted from 0) of this env."""

    def __init__(self, env: gym.Env, at: int) -> None:
        super().__init__(env)
        self.at, self.count = at, 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.count += 1
        if self.count - 1 == self.at:
            reward = float("nan")
        return obs, reward, terminated, truncated, info


def test_nan_reward_skips_the_step_and_keeps_all_state() -> None:
    th.set_num_threads(1)
    env = make_vec_env(
        "Pendulum-v1", n_envs=1, seed=0, wrapper_class=NaNRewardAt, wrapper_kwargs={"at": 40}
    )
    # One minibatch per update, one epoch, DSAC-T, KL penalty and the scaler all active.
    model = DistributionalPPO(
        "MlpLstmPolicy", env, **{**SMALL_PPO, "batch_size": 32, "n_epochs": 1},
        critic_adjust={"mode": "dsac_t"}, kl_penalty=True, target_kl=0.05,
        grad_scaler={"enabled": True, "warmup": 0},
    )  # fmt: skip
    before: list[dict[str, th.Tensor]] = []
    after: list[dict[str, th.Tensor]] = []
    skipped: list[int] = []
    original_train = model.train

    def recording_train() -> None:
        before.append(training_snapshot(model))
        original_train()
        after.append(training_snapshot(model))
        skipped.append(model.train_state.skipped_steps)

    model.train = recording_train  # type: ignore[method-assign]
    model.learn(32 * 4)
    # Update 1 (steps 32..63) holds the NaN reward: skipped, nothing changed.
    assert skipped == [0, 1, 1, 1]
    assert_same_state(before[1], after[1])
    assert model.logger.name_to_value["train/skipped_steps"] == 1
    # The other updates moved the parameters and stayed finite.
    for i in (0, 2, 3):
        assert not th.equal(
            before[i]["policy.actor_lstm.weight_ih_l0"], after[i]["policy.actor_lstm.weight_ih_l0"]
        )
    for p in model.policy.parameters():
        assert th.isfinite(p).all()
    assert np.isfinite(model.train_state.sigma_bar) and np.isfinite(float(model.return_rms.mean))


def test_nan_gradient_skips_the_step() -> None:
    model = small_model(n_epochs=1, batch_size=64, grad_scaler={"enabled": True, "warmup": 0})
    model.learn(64)
    param = model.policy.critic_head.first.weight
    calls = {"n": 0}

    def poison(grad: th.Tensor) -> th.Tensor:
        calls["n"] += 1
        return grad * float("nan") if calls["n"] == 1 else grad

    handle = param.register_hook(poison)
    # Training on the same rollout again updates the return statistics (once per rollout)
    # before the step; everything else must stay as it was.
    state = {k: v for k, v in training_snapshot(model).items() if not k.startswith("rms.")}
    model.train()  # one minibatch: its gradient is NaN
    assert_same_state(
        state, {k: v for k, v in training_snapshot(model).items() if not k.startswith("rms.")}
    )
    assert model.train_state.skipped_steps == 1
    assert model.logger.name_to_value["train/skipped_steps"] == 1
    model.train()
    handle.remove()
    assert model.train_state.skipped_steps == 1
    assert not th.equal(state["policy.critic_head.first.weight"], param)
    assert all(th.isfinite(p).all() for p in model.policy.parameters())


def test_predictions_after_training_use_the_trained_weights() -> None:
    """The algorithm re-derives the inference weights after each update: without it predict()
    would act with the policy of the last rollout's start."""
    model = small_model(n_epochs=2, batch_size=32)
    model.learn(64 * 2)
    assert model.config.optimizer == "adam"
    kept = model.policy.rollout_weights()
    fresh = model.policy.refresh_rollout_weights()
    pairs = [(kept.lstm_weight_ih, fresh.lstm_weight_ih), (kept.lstm_bias, fresh.lstm_bias)]
    pairs += zip(kept.lstm_weight_hh, fresh.lstm_weight_hh, strict=True)
    pairs += [(a, b) for layer_a, layer_b in zip(kept.layers, fresh.layers, strict=True)
              for a, b in zip(layer_a, layer_b, strict=True)]  # fmt: skip
    for a, b in pairs:
        assert th.equal(a, b)


# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("estimator", ["k3", "exact"])
def test_kl_early_stop_stops_the_epoch_loop(estimator: str) -> None:
    model = small_model(n_epochs=5, batch_size=32)
    model.learn(64)
    n_before = model.n_updates
    model.train()
    assert model.n_updates - n_before == 2 * 5  # 2 minibatches x 5 epochs, no stop
    model = small_model(n_epochs=5, batch_size=32, target_kl=1e-9, kl_early_stop=estimator)
    model.learn(64)
    # First minibatch: policy unchanged, KL 0 -> step; second: KL > 1.5e-9 -> stop.
    assert model.n_updates == 1
    assert model.logger.name_to_value["train/early_stopped"] == 1
    assert model.logger.name_to_value["train/kl_exact"] >= 0
    assert model.logger.name_to_value["train/approx_kl"] >= 0


def test_adaptive_kl_beta_rule_and_through_train() -> None:
    assert adapt_kl_beta(1.0, kl=0.1, target=0.01) == 2.0
    assert adapt_kl_beta(1.0, kl=0.001, target=0.01) == 0.5
    assert adapt_kl_beta(1.0, kl=0.01, target=0.01) == 1.0
    assert adapt_kl_beta(1.0, kl=float("nan"), target=0.01) == 1.0
    model = small_model(kl_penalty=True, target_kl=1e-9, kl_beta_init=1.0, learning_rate=1e-2)
    model.learn(64)
    assert model.train_state.kl_beta == 2.0
    assert model.logger.name_to_value["train/kl_beta"] == 2.0
    model = small_model(kl_penalty=True, target_kl=10.0, kl_beta_init=1.0)
    model.learn(64)
    assert model.train_state.kl_beta == 0.5


def test_entropy_schedule_known_values() -> None:
    assert entropy_coef(0.1, 0.01, progress_remaining=1.0) == pytest.approx(0.1)
    assert entropy_coef(0.1, 0.01, progress_remaining=0.5) == pytest.approx(0.055)
    assert entropy_coef(0.1, 0.01, progress_remaining=0.0) == pytest.approx(0.01)
    assert entropy_coef(0.1, 0.01, 0.5, boost=2.0) == pytest.approx(0.11)
    assert entropy_coef(0.1, 0.0, 0.1, boost=1.0, minimum=0.02) == pytest.approx(0.02)
    assert entropy_coef(0.1, None, 0.1) == pytest.approx(0.1)
    assert update_entropy_boost(1.0, 0.1, threshold=0.5, factor=1.5, max_boost=2.0) == 1.5
    assert update_entropy_boost(1.5, 0.1, threshold=0.5, factor=1.5, max_boost=2.0) == 2.0
    assert update_entropy_boost(2.0, 0.9, threshold=0.5, factor=1.5, max_boost=2.0) == 1.0
    assert update_entropy_boost(1.5, float("nan"), 0.5, 1.5, 2.0) == 1.5


def test_entropy_schedule_through_train() -> None:
    # 2 updates of 64 steps over 128: progress_remaining 0.5 then 0.0 at the updates.
    ent = {"final": 0.0, "boost_factor": 2.0, "boost_max": 3.0, "ev_threshold": 2.0}
    model = small_model(ent_coef=0.1, entropy=ent)
    logged = []
    original_train = model.train

    def recording_train() -> None:
        original_train()
        logged.append(
            (model.logger.name_to_value["train/ent_coef"], model.train_state.entropy_boost)
        )

    model.train = recording_train  # type: ignore[method-assign]
    model.learn(128)
    # EV < 2 always: boost 2, then 3 (bounded); coef = 0.1 * progress * boost.
    assert logged[0] == (pytest.approx(0.1 * 0.5 * 2.0), 2.0)
    assert logged[1] == (pytest.approx(0.0), 3.0)


def test_learning_rate_and_clip_range_decay_linearly_through_train() -> None:
    assert linear_schedule(1e-3, 1e-4, progress_remaining=0.5) == pytest.approx(5.5e-4)
    assert linear_schedule(1e-3, None, progress_remaining=0.0) == 1e-3
    model = small_model(learning_rate=1e-3, learning_rate_final=1e-4, clip_range=0.3,
                     clip_range_final=0.1)  # fmt: skip
    logged = []
    original_train = model.train

    def recording_train() -> None:
        original_train()
        logged.append(
            (model.optimizer.param_groups[0]["lr"], model.logger.name_to_value["train/clip_range"])
        )

    model.train = recording_train  # type: ignore[method-assign]
    model.learn(128)  # updates at progress_remaining 0.5 and 0.0
    assert logged[0] == (pytest.approx(5.5e-4), pytest.approx(0.2))
    assert logged[1] == (pytest.approx(1e-4), pytest.approx(0.1))
    # The clip range in the loss is the scheduled one: a tiny final clip range clips more.
    tight = small_model(clip_range=0.3, clip_range_final=1e-4)
    tight.learn(128)
    loose = small_model(clip_range=0.3)
    loose.learn(128)
    tight_fraction = tight.logger.name_to_value["train/clip_fraction"]
    assert tight_fraction > loose.logger.name_to_value["train/clip_fraction"]


def test_awr_term_is_logged_and_its_coefficient_decays() -> None:
    assert decay_awr_coef(0.1, ratio=2.0, max_ratio=1.0, decay=0.5) == 0.05
    assert decay_awr_coef(0.1, ratio=0.5, max_ratio=1.0, decay=0.5) == 0.1
    model = small_model(awr={"enabled": True, "coef": 100.0, "max_ratio": 0.01, "decay": 0.5})
    model.learn(64)
    assert model.logger.name_to_value["train/bc_ppo_ratio"] > 0.01
    assert model.train_state.awr_coef == 50.0
    kept = small_model(awr={"enabled": True, "coef": 100.0, "max_ratio": 1e3, "decay": 0.5})
    kept.learn(64)
    assert kept.train_state.awr_coef == 100.0
    plain = small_model()
    plain.learn(64)
    assert "train/bc_ppo_ratio" not in plain.logger.name_to_value


def test_awr_ratio_is_the_minibatch_ratio_whatever_the_microbatches() -> None:
    """bc_ppo_ratio = coef * |mean(w log pi)| / mean |min(r A, clip(r) A)| over the whole
    minibatch, written out here from the policy's log-probabilities; the same with 1 and 4
    microbatches (before: 1.50 with one, 0.0002 with four, from |policy loss| ~ 2e-4 and the
    mean of per-microbatch ratios)."""
    model = small_model(batch_size=64, seq_len=8, awr={"enabled": True})
    model.learn(64)
    batch = model.rollout_buffer.to_chunks(8).select(th.arange(8))
    coef, beta, clip = 0.1, model.config.awr.beta, 0.2
    ctx = UpdateContext(ret_mean=0.0, ret_std=1.0, ent_coef=0.0, clip_range=clip, awr_coef=coef)
    ratios = [
        float(accumulate_gradients(model.learner, batch, ctx, n)["bc_ppo_ratio"]) for n in (1, 4)
    ]
    with th.no_grad():
        log_prob = model.policy.evaluate_sequences(
            batch.observations, batch.episode_starts, batch.initial_states, batch.raw_actions
        ).log_prob
    raw = batch.advantages.reshape(-1)
    adv = (raw - raw.mean()) / (raw.std() + 1e-8)
    r = th.exp(log_prob - batch.old_log_probs.reshape(-1))
    terms = th.min(r * adv, r.clamp(1 - clip, 1 + clip) * adv)
    weights = th.exp((raw / beta).clamp(max=np.log(model.config.awr.max_weight)))
    expected = coef * float((weights * log_prob).mean().abs()) / float(terms.abs().mean())
    assert float(terms.mean().abs()) < 0.2 * float(terms.abs().mean())  # the ~0 policy loss
    assert ratios[0] == pytest.approx(expected, rel=1e-4)
    assert ratios[1] == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(
    "options",
    [
        {"value_clip": {"mode": "mean_shift"}, "clip_range_vf": 0.05},
        {"value_clip": {"mode": "per_quantile"}, "clip_range_vf": 0.05},
        {"critic_adjust": {"mode": "dsac_t", "target_clip": True}},
        {"dual_clip": 3.0},
    ],
)
def test_options_change_the_update(options: dict) -> None:
    """Each option changes the parameters after one update compared with the plain run."""
    plain, other = small_model(), small_model(**options)
    plain.learn(64)
    other.learn(64)
    differ = [
        not th.equal(a, b)
        for a, b in zip(plain.policy.parameters(), other.policy.parameters(), strict=True)
    ]
    assert any(differ)
    if "critic_adjust" in options:
        assert np.isfinite(other.logger.name_to_value["train/sigma_bar"])
        assert other.logger.name_to_value["train/critic_weight"] > 0


def test_logged_critic_weight_is_the_dsac_t_weights_mean_with_awr_on() -> None:
    """critic_weight is the mean of DSAC-T's weights of the minibatch's quantiles, also when
    AWR (whose per-sample weights are another tensor of the same loss) is on."""
    model = small_model(critic_adjust={"mode": "dsac_t"}, awr={"enabled": True})
    model.learn(64)
    batch = model.rollout_buffer.to_chunks(16).select(th.arange(2))
    sigma_bar, eps = 0.5, model.config.critic_adjust.eps
    ctx = UpdateContext(
        ret_mean=0.0, ret_std=1.0, ent_coef=0.0, clip_range=0.2, sigma_bar=sigma_bar, awr_coef=0.1
    )
    _, metrics = minibatch_loss(model.learner, batch, ctx, 0.0, 1.0)
    with th.no_grad():
        quantiles = model.policy.evaluate_sequences(
            batch.observations, batch.episode_starts, batch.initial_states, batch.raw_actions
        ).quantiles
    expected = dsac_t_weights(quantile_spread(quantiles), sigma_bar, eps).mean()
    assert th.allclose(metrics["critic_weight"], expected)
    assert "bc_loss" in metrics


def test_value_clip_config_requires_its_range() -> None:
    with pytest.raises(ValidationError, match="needs clip_range_vf"):
        PPOConfig(value_clip={"mode": "mean_shift"})
    with pytest.raises(ValidationError, match=r"value_clip\.mode is 'none'"):
        PPOConfig(clip_range_vf=0.2)


def test_lstm_hidden_state_norms_are_logged() -> None:
    model = small_model()
    model.learn(64)
    h = model.rollout_buffer.lstm_states[:, 0]
    values = model.logger.name_to_value
    assert values["train/lstm_h_norm_actor"] == pytest.approx(float(h[..., :8].norm(dim=-1).mean()))
    assert values["train/lstm_h_norm_critic"] == pytest.approx(
        float(h[..., 8:].norm(dim=-1).mean())
    )
    assert values["train/lstm_h_norm_actor"] > 0


# --------------------------------------------------------------------------------------------
# KL after the update, KL penalty without early stopping, gradient clipping modes, adaptive
# clip range, value-loss coefficient warm-up.
def _rollout_kl_by_torch(model: DistributionalPPO) -> float:
    """KL(old || current) of the tanh-squashed Gaussians' pre-squash Normals, by
    torch.distributions, over the rollout in the buffer."""
    chunks = model.rollout_buffer.to_chunks(model.config.seq_len)
    with th.no_grad():
        new = model.policy.evaluate_sequences(
            chunks.observations, chunks.episode_starts, chunks.initial_states, chunks.raw_actions
        ).dist_params
    old = chunks.old_dist_params.reshape(new.shape)
    dim = new.shape[-1] // 2
    kl = th.distributions.kl_divergence(
        th.distributions.Normal(old[:, :dim], old[:, dim:]),
        th.distributions.Normal(new[:, :dim], new[:, dim:]),
    )
    return float(kl.sum(-1).mean())


@pytest.mark.parametrize(("target", "beta"), [(1e-9, 2.0), (10.0, 0.5)])
def test_kl_beta_adapts_to_the_kl_measured_after_the_update(target: float, beta: float) -> None:
    # kl_penalty_target without target_kl: the penalty without early stopping.
    model = small_model(kl_penalty=True, kl_penalty_target=target, kl_beta_init=1.0)
    model.learn(64)
    logged = model.logger.name_to_value
    assert logged["train/kl_after_update"] == pytest.approx(_rollout_kl_by_torch(model), rel=1e-4)
    assert logged["train/kl_after_update"] > 1e-6
    assert model.train_state.kl_beta == beta
    assert logged["train/early_stopped"] == 0
    assert model.n_updates == 2  # 1 minibatch x 2 epochs: no early stop at KL > 1.5e-9


def test_kl_penalty_needs_a_target() -> None:
    with pytest.raises(ValidationError, match="kl_penalty needs kl_penalty_target or target_kl"):
        PPOConfig(kl_penalty=True)
    PPOConfig(kl_penalty=True, kl_penalty_target=0.01)


def test_global_clip_matches_torch_clip_grad_norm() -> None:
    assert clip_scales([9.0, 16.0], 1.0, mode="global")[0] == pytest.approx([1 / (5 + 1e-6)] * 2)
    assert clip_scales([9.0, 16.0], 1.0)[0] == pytest.approx([1 / (3 + 1e-6), 1 / (4 + 1e-6)])
    assert clip_scales([9.0, 16.0], 10.0, factor=0.5, mode="global")[0] == [0.5, 0.5]
    # The clip bounds the raw gradient, then the scaler's factor multiplies: norm 4 clipped to
    # 1, times 0.1 (scaling first, norm 0.4, would escape the clip: multiplier 0.1); the
    # logged norms are the raw ones.
    scales, norms = clip_scales([16.0, 0.25], 1.0, factor=0.1)
    assert scales == pytest.approx([0.1 / (4 + 1e-6), 0.1]) and norms == [4.0, 0.5]
    assert clip_scales([9.0, 16.0], 1.0, factor=0.1, mode="global")[0] == pytest.approx(
        [0.1 / (5 + 1e-6)] * 2
    )
    model = small_model(grad_clip="global", max_grad_norm=0.05)
    model.learn(64)
    chunks = model.rollout_buffer.to_chunks(16)
    ctx = UpdateContext(ret_mean=0.0, ret_std=1.0, ent_coef=0.0, clip_range=0.2)
    accumulate_gradients(model.learner, chunks, ctx)
    reference = [th.nn.Parameter(th.zeros_like(p)) for p in model.policy.parameters()]
    for ref, p in zip(reference, model.policy.parameters(), strict=True):
        ref.grad = p.grad.clone()
    th.nn.utils.clip_grad_norm_(reference, 0.05)
    scales, _ = clip_scales(model.gradients.square_norms().tolist(), 0.05, mode="global")
    assert scales[0] < 0.5  # it does clip
    model.gradients.scale_(scales)
    for p, ref in zip(model.policy.parameters(), reference, strict=True):
        assert th.allclose(p.grad, ref.grad, rtol=1e-5, atol=1e-8)
    logged = model.logger.name_to_value
    expected = np.hypot(logged["train/actor_grad_norm"], logged["train/critic_grad_norm"])
    assert logged["train/grad_norm"] == pytest.approx(expected, rel=1e-9)


def test_adaptive_clip_range_rule_and_through_train() -> None:
    assert adapt_clip_range(0.2, kl=0.1, target=0.01, factor=2.0, low=0.02, high=0.5) == 0.1
    assert adapt_clip_range(0.2, kl=0.001, target=0.01, factor=2.0, low=0.02, high=0.5) == 0.4
    assert adapt_clip_range(0.2, kl=0.01, target=0.01, factor=2.0, low=0.02, high=0.5) == 0.2
    assert adapt_clip_range(0.03, kl=1.0, target=0.01, factor=2.0, low=0.02, high=0.5) == 0.02
    assert adapt_clip_range(0.4, kl=0.0, target=0.01, factor=2.0, low=0.02, high=0.5) == 0.5
    assert adapt_clip_range(0.2, kl=float("nan"), target=0.01, factor=2, low=0, high=1) == 0.2
    # A tiny target: every update's KL exceeds it, the clip range shrinks by 1.5 per update.
    model = small_model(clip_range=0.3, clip_adapt={"enabled": True, "target_kl": 1e-9})
    logged = []
    original_train = model.train

    def recording_train() -> None:
        original_train()
        logged.append(model.logger.name_to_value["train/clip_range"])

    model.train = recording_train  # type: ignore[method-assign]
    model.learn(128)
    assert logged == [pytest.approx(0.3), pytest.approx(0.2)]
    assert model.train_state.clip_range == pytest.approx(0.3 / 1.5**2)
    with pytest.raises(ValidationError, match="clip_range_final"):
        PPOConfig(clip_range_final=0.1, clip_adapt={"enabled": True})


def test_value_coefficient_warmup() -> None:
    assert warmup_coef(0.5, 0.1, warmup=0.5, progress_remaining=1.0) == pytest.approx(0.1)
    assert warmup_coef(0.5, 0.1, warmup=0.5, progress_remaining=0.75) == pytest.approx(0.3)
    assert warmup_coef(0.5, 0.1, warmup=0.5, progress_remaining=0.2) == pytest.approx(0.5)
    assert warmup_coef(0.5, 0.1, warmup=0.0, progress_remaining=1.0) == 0.5
    # Updates at progress_remaining 0.5 and 0: coef 0 + 0.5 * 0.5 / 1, then 0.5.
    model = small_model(vf_coef=0.5, vf_coef_initial=0.0, vf_coef_warmup=1.0)
    logged = []
    original_train = model.train

    def recording_train() -> None:
        original_train()
        logged.append(model.logger.name_to_value["train/vf_coef"])

    model.train = recording_train  # type: ignore[method-assign]
    model.learn(128)
    assert logged == [pytest.approx(0.25), pytest.approx(0.5)]


def test_value_coefficient_reaches_the_loss() -> None:
    model = small_model()
    model.learn(64)
    batch = model.rollout_buffer.to_chunks(16)
    base = dict(ret_mean=0.0, ret_std=1.0, ent_coef=0.0, clip_range=0.2)
    _, m1 = minibatch_loss(model.learner, batch, UpdateContext(**base, vf_coef=1.0), 0.0, 1.0)
    _, m0 = minibatch_loss(model.learner, batch, UpdateContext(**base, vf_coef=0.0), 0.0, 1.0)
    assert float(m0["loss"]) == pytest.approx(float(m0["policy_loss"]), rel=1e-6)
    expected = float(m1["policy_loss"] + m1["value_loss"])
    assert float(m1["loss"]) == pytest.approx(expected, rel=1e-6)


def test_seed_options_reach_training() -> None:
    """The DSAC-T weight clamp bounds the logged weights; the scaler's ratio bound and norm
    EMA are built from the config and logged."""
    model = small_model(
        critic_adjust={"mode": "dsac_t", "weight_clamp": [0.9, 1.1]},
        grad_scaler={"enabled": True, "max_ratio": 5.0, "grad_norm_beta": 0.9, "warmup": 0},
    )
    model.learn(64)
    logged = model.logger.name_to_value
    assert 0.9 <= logged["train/critic_weight"] <= 1.1
    scaler = model.train_state.scaler
    assert scaler is not None and scaler.max_ratio == 5.0
    assert logged["train/scaler_ratio"] <= 5.0
    assert logged["train/scaler_grad_norm_ema"] > 0
    assert "train/scaler_grad_norm_ema" not in small_model().learn(64).logger.name_to_value
