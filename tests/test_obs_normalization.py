"""Observation normalization owned by the algorithm (``PPOConfig.observation_normalization``):
the input-layer compensation by hand, the policy's function of raw observations unchanged by a
statistics update, the statistics against numpy's moments of every raw observation seen, the
rollout buffer holding observations normalized with constant statistics, the Adam moments,
save/load, exact resume and the configurations that refuse it."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnvWrapper

from conftest import BOX_ACTIONS, OBS_SPACE, make_policy, small_model
from tradingbot.algo.config import PPOConfig
from tradingbot.algo.obs_normalization import (
    absorb_observations,
    compensated_input_layer,
    input_weight_moments,
)
from tradingbot.algo.policy import LSTMStates, RecurrentActorCritic
from tradingbot.algo.portfolio_policy import PortfolioActorCritic
from tradingbot.checkpoint import load_checkpoint
from tradingbot.errors import ConfigError

ON = {"observation_normalization": {"enabled": True}}


def test_compensated_input_layer_by_hand() -> None:
    """W = [1, 2], b = 0.5, (mu, s) = ([0, 1], [1, 2]) -> ([1, 1], [2, 4]): W' = W s'/s =
    [2, 4], b' = b + W (mu' - mu) / s = 0.5 + 1 * 1 / 1 + 2 * 0 / 2 = 1.5; at x = [3, 5] both
    give 1 * 3 / 1 + 2 * 4 / 2 + 0.5 = 2 * 2 / 2 + 4 * 4 / 4 + 1.5 = 7.5."""
    f64 = th.float64
    weight, bias = th.tensor([[1.0, 2.0]]), th.tensor([0.5])
    old = (th.tensor([0.0, 1.0], dtype=f64), th.tensor([1.0, 2.0], dtype=f64))
    new = (th.tensor([1.0, 1.0], dtype=f64), th.tensor([2.0, 4.0], dtype=f64))
    new_weight, new_bias = compensated_input_layer(weight, bias, old, new)
    assert new_weight.tolist() == [[2.0, 4.0]]
    assert new_bias.tolist() == [1.5]
    x = th.tensor([3.0, 5.0])
    assert float(weight @ ((x - old[0].float()) / old[1].float()) + bias) == 7.5
    assert float(new_weight @ ((x - new[0].float()) / new[1].float()) + new_bias) == 7.5


def test_compensated_input_layer_keeps_the_map_of_raw_inputs() -> None:
    """A non-square weight, distinct per-column means and stds: a per-row scaling, an inverted
    ratio or a sign error in the shift changes the map."""
    gen = th.Generator().manual_seed(0)
    weight, bias = th.randn(12, 3, generator=gen), th.randn(12, generator=gen)
    old = (th.tensor([0.1, -2.0, 0.5]).double(), th.tensor([0.5, 3.0, 1.2]).double())
    new = (th.tensor([1.0, 0.5, -0.5]).double(), th.tensor([2.0, 0.7, 1.1]).double())
    x = th.randn(50, 3, generator=gen) * 2
    before = ((x - old[0].float()) / old[1].float()) @ weight.t() + bias
    new_weight, new_bias = compensated_input_layer(weight, bias, old, new)
    after = ((x - new[0].float()) / new[1].float()) @ new_weight.t() + new_bias
    th.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_normalization_clips_at_the_bound() -> None:
    """VecNormalize's normalization: (x - mu) / sqrt(var + eps), clipped to [-clip, clip]
    (a large eps, so that sqrt(var) + eps would differ)."""
    section = {"enabled": True, "clip": 5.0, "epsilon": 0.5}
    policy = make_policy(BOX_ACTIONS, observation_normalization=section)
    normalizer = policy.obs_normalizer
    normalizer.mean.copy_(th.tensor([1.0, 0.0, -2.0]))
    normalizer.var.copy_(th.tensor([4.0, 1.0, 0.25]))
    out = normalizer(th.tensor([[101.0, -3.0, -1.0]]))
    expected = [5.0, -3.0 / 1.5**0.5, 1.0 / 0.75**0.5]
    th.testing.assert_close(out, th.tensor([expected]), rtol=1e-6, atol=0)


def _states(policy: RecurrentActorCritic, batch: int, gen: th.Generator) -> LSTMStates:
    return LSTMStates(*(0.5 * th.randn(2, batch, policy.state_size, generator=gen)))


@pytest.mark.parametrize("shared_lstm", [False, True], ids=["twin_lstms", "shared_lstm"])
@pytest.mark.parametrize("action_space", [BOX_ACTIONS, spaces.Discrete(3)], ids=["box", "discrete"])
def test_statistics_update_leaves_the_policy_of_raw_observations_unchanged(
    action_space: spaces.Space, shared_lstm: bool
) -> None:
    """After the statistics absorb a batch whose mean and spread differ from theirs (the clip
    binding nowhere), the action distribution (mean and std, or logits), the quantiles, the
    value and the new LSTM states on raw observations are what they were, while the normalized
    inputs moved by more than 0.5."""
    policy = make_policy(action_space, shared_lstm=shared_lstm, **ON)
    normalizer = policy.obs_normalizer
    assert normalizer is not None
    gen = th.Generator().manual_seed(1)
    scale, shift = th.tensor([1.0, 3.0, 0.3]), th.tensor([0.5, -1.0, 2.0])
    absorb_observations(normalizer, policy.lstms, th.randn(200, 3, generator=gen) * scale + shift)
    policy.refresh_rollout_weights()
    raw = th.randn(16, 3, generator=gen) * scale + shift
    states, starts = _states(policy, 16, gen), (th.rand(16, generator=gen) < 0.25).float()
    inputs_before = normalizer(raw)
    before = policy.step(raw, states, starts, deterministic=True)
    value_before = policy.predict_values(raw, states, starts)
    chunks = (th.zeros(4, 4), policy.initial_state(4), before.raw_action.view(4, 4, -1))
    ref = policy.evaluate_sequences(inputs_before.view(4, 4, 3), *chunks)

    moved = th.randn(300, 3, generator=gen) * scale * th.tensor([2.0, 0.5, 3.0]) + 2 * shift
    absorb_observations(normalizer, policy.lstms, moved)
    policy.refresh_rollout_weights()
    inputs_after = normalizer(raw)
    after = policy.step(raw, states, starts, deterministic=True)

    assert (inputs_after - inputs_before).abs().max() > 0.5
    assert inputs_before.abs().max() < normalizer.clip and inputs_after.abs().max() < 5
    for name in ("dist_params", "quantiles", "value", "action"):
        th.testing.assert_close(getattr(after, name), getattr(before, name), atol=2e-5, rtol=1e-5)
    th.testing.assert_close(after.states.h, before.states.h, atol=2e-5, rtol=1e-5)
    th.testing.assert_close(after.states.c, before.states.c, atol=2e-5, rtol=1e-5)
    th.testing.assert_close(
        policy.predict_values(raw, states, starts), value_before, atol=2e-5, rtol=1e-5
    )
    # The training path (nn.LSTM over stored normalized sequences) sees the same function.
    seq = policy.evaluate_sequences(inputs_after.view(4, 4, 3), *chunks)
    assert seq.log_prob.shape == ref.log_prob.shape
    th.testing.assert_close(seq.dist_params, ref.dist_params, atol=2e-5, rtol=1e-5)
    th.testing.assert_close(seq.quantiles, ref.quantiles, atol=2e-5, rtol=1e-5)
    th.testing.assert_close(seq.log_prob, ref.log_prob, atol=1e-4, rtol=1e-5)


def test_adam_moments_of_the_input_weights_scale_with_the_gradient() -> None:
    """The gradient of column j of W' is that of W times s_j / s'_j: exp_avg is multiplied by
    that ratio and exp_avg_sq by its square; the other parameters' moments stay."""
    model = small_model(**ON)
    model.learn(128)
    policy, state = model.policy, model.optimizer.state[model.gradients.param]
    old_m, old_v = state["exp_avg"].clone(), state["exp_avg_sq"].clone()
    normalizer = policy.obs_normalizer
    old_std = normalizer.std().float()
    moments = input_weight_moments(model.optimizer, model.gradients, policy.lstms)
    assert moments is not None and len(moments) == 2
    absorb_observations(normalizer, policy.lstms, th.randn(64, 3) * 5 + 3, moments)
    ratio = old_std / normalizer.std().float()
    assert (ratio - 1).abs().min() > 0.05
    offset, changed = 0, th.zeros_like(old_m, dtype=th.bool)
    for p in model.gradients.params:
        n = p.numel()
        if any(p is lstm.weight_ih_l0 for lstm in policy.lstms):
            m = state["exp_avg"][offset : offset + n].view_as(p)
            v = state["exp_avg_sq"][offset : offset + n].view_as(p)
            # Relative only: the second moments are ~1e-8, under any absolute tolerance.
            expected_m = old_m[offset : offset + n].view_as(p) * ratio
            expected_v = old_v[offset : offset + n].view_as(p) * ratio**2
            th.testing.assert_close(m, expected_m, rtol=1e-5, atol=0)
            th.testing.assert_close(v, expected_v, rtol=1e-5, atol=0)
            changed[offset : offset + n] = True
        offset += n
    assert th.equal(state["exp_avg"][~changed], old_m[~changed])
    assert th.equal(state["exp_avg_sq"][~changed], old_v[~changed])


class RecordObservations(VecEnvWrapper):
    """Keeps every observation the env hands out (reset and steps), in order."""

    def __init__(self, venv) -> None:
        super().__init__(venv)
        self.seen: list[np.ndarray] = []

    def reset(self) -> np.ndarray:
        obs = self.venv.reset()
        self.seen.append(np.array(obs, dtype=np.float64))
        return obs

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        self.seen.append(np.array(obs, dtype=np.float64))
        return obs, rewards, dones, infos


def test_statistics_are_the_moments_of_every_raw_observation_the_policy_read() -> None:
    """Three rollouts of 32 steps on 2 Pendulum envs: the policy reads the reset observation and
    the steps' observations but the last (the next rollout's first). The statistics are the
    parallel-formula merge of RunningMeanStd's start (mean 0, var 1, count 1e-4) with numpy's
    mean and variance of those 192 observations; within each rollout the buffer holds them
    normalized with the statistics of that rollout's start."""
    th.set_num_threads(1)
    env = RecordObservations(make_vec_env("Pendulum-v1", n_envs=2, seed=0))
    model = small_model(**ON)
    model.set_env(env)
    normalizer = model.policy.obs_normalizer
    checks = []

    from stable_baselines3.common.callbacks import BaseCallback

    class CheckBuffer(BaseCallback):
        def _on_rollout_start(self) -> None:
            self.start = (normalizer.mean.clone(), normalizer.std().clone(), len(env.seen))

        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            mean, std, first = self.start
            raw = th.as_tensor(np.stack(env.seen[first - 1 : first + 31]), dtype=th.float32)
            expected = ((raw - mean.float()) / std.float()).clamp(-10, 10)
            buffer = model.rollout_buffer.observations
            checks.append(float((buffer - expected).abs().max()))
            assert th.equal(normalizer.mean, mean)  # constant within the rollout

    model.learn(192, callback=CheckBuffer())
    assert len(checks) == 3 and max(checks) < 1e-6
    read = np.concatenate(env.seen[:96]).reshape(-1, 3)
    assert read.shape == (192, 3)
    n, eps = read.shape[0], 1e-4
    mean, var = read.mean(axis=0), read.var(axis=0)
    total = n + eps
    expected_mean = n * mean / total
    expected_var = (eps * 1.0 + n * var + mean**2 * eps * n / total) / total
    np.testing.assert_allclose(normalizer.mean.numpy(), expected_mean, rtol=1e-10)
    np.testing.assert_allclose(normalizer.var.numpy(), expected_var, rtol=1e-10)
    assert float(normalizer.count) == pytest.approx(total, rel=1e-12)


def test_save_load_round_trip_keeps_statistics_and_predictions(tmp_path) -> None:
    from tradingbot.algo.ppo import DistributionalPPO

    model = small_model(**ON)
    model.learn(128)
    model.save(tmp_path / "m")
    tensors, _ = load_checkpoint(tmp_path / "m.safetensors")
    assert th.equal(tensors["policy.obs_normalizer.mean"], model.policy.obs_normalizer.mean)
    loaded = DistributionalPPO.load(tmp_path / "m")
    for name in ("mean", "var", "count"):
        assert th.equal(
            getattr(loaded.policy.obs_normalizer, name), getattr(model.policy.obs_normalizer, name)
        )
    obs = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32) * 3
    a, state_a = model.predict(obs, deterministic=True)
    b, state_b = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(state_a[0], state_b[0])


def test_resume_in_fresh_process_with_observation_statistics_is_bit_identical(tmp_path):
    from test_resume import run_half_straight_resumed

    run_half_straight_resumed(tmp_path, 'HYPER["observation_normalization"] = {"enabled": True}')
    straight, _ = load_checkpoint(tmp_path / "straight.safetensors")
    resumed, _ = load_checkpoint(tmp_path / "resumed.safetensors")
    half, _ = load_checkpoint(tmp_path / "half.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert th.equal(straight[key], resumed[key]), key
    key = "policy.obs_normalizer.count"
    assert float(half[key]) < float(straight[key])


def test_off_by_default_adds_no_policy_state() -> None:
    policy = make_policy(BOX_ACTIONS)
    assert policy.obs_normalizer is None
    assert not any("obs_normalizer" in k for k in policy.state_dict())
    on = make_policy(BOX_ACTIONS, **ON)
    assert {k for k in on.state_dict() if "obs_normalizer" in k} == {
        "obs_normalizer.mean",
        "obs_normalizer.var",
        "obs_normalizer.count",
    }


def test_refused_with_robust_training_and_by_the_portfolio_policy() -> None:
    with pytest.raises(ValueError, match=r"observation_normalization\.enabled.*robust\.enabled"):
        PPOConfig(robust={"enabled": True}, **ON)
    obs = spaces.Box(-1.0, 1.0, (3, 4), dtype=np.float32)
    actions = spaces.Box(-1.0, 1.0, (4,), dtype=np.float32)
    with pytest.raises(ConfigError, match=r"algo\.observation_normalization\.enabled"):
        PortfolioActorCritic(obs, actions, PPOConfig(**ON))
    assert OBS_SPACE.shape == (3,)


def test_first_statistics_update_rewrites_nothing_without_compensate_initial() -> None:
    """``compensate_initial: false``: the first update of the statistics (from mean 0, var 1)
    sets them and leaves the input weights; the next one rewrites them."""
    from tradingbot.algo.train_steps import absorb_rollout_observations

    off = {"observation_normalization": {"enabled": True, "compensate_initial": False}}
    model = small_model(**off)
    policy = model.policy
    weights = [lstm.weight_ih_l0.clone() for lstm in policy.lstms]
    batch = [th.randn(2, 3) * 4 + 1 for _ in range(8)]
    absorb_rollout_observations(model.learner, batch)
    for lstm, before in zip(policy.lstms, weights, strict=True):
        assert th.equal(lstm.weight_ih_l0, before)
    np.testing.assert_allclose(
        policy.obs_normalizer.mean.numpy(), th.cat(batch).double().mean(0).numpy(), rtol=1e-4
    )
    absorb_rollout_observations(model.learner, [th.randn(2, 3) * 9 - 3 for _ in range(8)])
    assert not th.equal(policy.lstms[0].weight_ih_l0, weights[0])


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [("var", -1.0, "negative"), ("count", 0.0, "must be positive")],
)
def test_checkpoint_with_broken_statistics_is_refused(tmp_path, name, value, words) -> None:
    from hostile.tiny_run import rewrite
    from tradingbot.algo.ppo import DistributionalPPO
    from tradingbot.checkpoint import CheckpointError

    model = small_model(**ON)
    model.learn(64)
    model.save(tmp_path / "m")
    key = f"policy.obs_normalizer.{name}"

    def poison(tensors: dict[str, th.Tensor]) -> None:
        tensors[key] = th.full_like(tensors[key], value)

    rewrite(tmp_path / "m.safetensors", poison)
    with pytest.raises(CheckpointError, match=f"{key}.*{words}"):
        DistributionalPPO.load(tmp_path / "m")
