"""Tests of DistributionalPPO through its public, Stable-Baselines3-style API."""

from __future__ import annotations

import pickle
import time

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from pydantic import ValidationError
from scipy.stats import norm
from stable_baselines3.common.callbacks import (
    CheckpointCallback,
    EvalCallback,
)
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import VecNormalize

from tradingbot.algo.config import PPOConfig
from tradingbot.algo.ppo import DistributionalPPO
from tradingbot.algo.presets import ALL_RISK_AND_STABILITY, GRAD_SCALER_ON
from tradingbot.checkpoint import read_manifest

SMALL = {"n_steps": 32, "batch_size": 64, "n_epochs": 2, "seq_len": 16, "lstm_hidden_size": 16}


class HideVelocity(gym.ObservationWrapper):
    """CartPole without the velocities (indices 1 and 3): solvable only with memory."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        low, high = env.observation_space.low, env.observation_space.high
        self.observation_space = gym.spaces.Box(low[[0, 2]], high[[0, 2]], dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[[0, 2]]


class NormalRewardBandit(gym.Env):
    """One state, one-step episodes, reward ~ N(1, 2^2) whatever the action."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action):
        reward = float(self.np_random.normal(1.0, 2.0))
        return np.zeros(2, dtype=np.float32), reward, True, False, {}


def test_config_validation_names_both_numbers() -> None:
    with pytest.raises(ValidationError, match=r"batch_size \(100\).*seq_len \(16\)"):
        PPOConfig(batch_size=100, seq_len=16)
    with pytest.raises(ValidationError, match=r"n_steps \(40\).*seq_len \(16\)"):
        PPOConfig(n_steps=40, batch_size=64, seq_len=16)
    with pytest.raises(ValidationError, match="extra"):
        PPOConfig(not_a_hyperparameter=1)
    env = make_vec_env("CartPole-v1", n_envs=2)
    with pytest.raises(TypeError, match="not both"):
        DistributionalPPO("MlpLstmPolicy", env, config=PPOConfig(**SMALL), gamma=0.9)
    model = DistributionalPPO("MlpLstmPolicy", env, **SMALL)
    assert model.config == PPOConfig(**SMALL)


def test_return_statistics_are_updated_before_normalizing_targets() -> None:
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = DistributionalPPO("MlpLstmPolicy", env, seed=0, **SMALL)
    model.learn(64)  # exactly one rollout and one update
    returns = model.rollout_buffer.returns.reshape(-1).double()
    # The statistics start at mean 0, var 1 with weight 1e-4: after one update they are this
    # rollout's mean and variance (to 1e-4 relative), i.e. they were used without lag.
    assert float(model.return_rms.mean) == pytest.approx(float(returns.mean()), rel=1e-3)
    assert float(model.return_rms.var) == pytest.approx(
        float(returns.var(unbiased=False)), rel=1e-3
    )


def test_critic_quantiles_in_return_units_through_the_algorithm() -> None:
    """Through rollouts, GAE, return normalization and de-normalization, the critic of a
    one-step bandit with reward N(1, 2^2) predicts norm.ppf(taus, 1, 2)."""
    th.set_num_threads(1)
    env = make_vec_env(NormalRewardBandit, n_envs=8, seed=0)
    model = DistributionalPPO(
        "MlpLstmPolicy",
        env,
        seed=0,
        n_steps=64,
        batch_size=512,
        seq_len=16,
        n_epochs=8,
        n_quantiles=8,
        huber_kappa=0.05,  # small kappa: minimizers within 0.02 of the quantiles here
        learning_rate=3e-3,
        lstm_hidden_size=16,
        net_arch=[32],
    )
    model.learn(64 * 8 * 30)
    obs = th.zeros(1, 2)
    step = model.policy.step(obs, model.policy.initial_state(1), th.ones(1))
    mean, std = model.return_scale()
    quantiles = (step.quantiles[0] * std + mean).numpy()
    expected = norm.ppf(model.policy.taus.numpy().astype(np.float64), loc=1.0, scale=2.0)
    # 0.3: sampling noise of 512-sample rollouts and of the return statistics.
    assert np.abs(quantiles - expected).max() < 0.3, (quantiles, expected)


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
def test_save_load_round_trip_without_pickle(env_id: str, tmp_path, monkeypatch) -> None:
    env = make_vec_env(env_id, n_envs=2, seed=0)
    model = DistributionalPPO("MlpLstmPolicy", env, seed=0, **SMALL)
    model.learn(128)
    written = model.save(tmp_path / "model")
    assert written == tmp_path / "model.safetensors"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
    manifest = read_manifest(written)
    assert manifest.format_version == 1 and manifest.kind == "DistributionalPPO"
    assert manifest.hyperparameters == model.config.model_dump(mode="json")

    def refuse(*args, **kwargs):
        raise AssertionError("loading must not unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(th, "load", refuse)
    loaded = DistributionalPPO.load(tmp_path / "model")
    monkeypatch.undo()

    obs = env.reset()
    state, loaded_state = None, None
    starts = np.ones(2, dtype=bool)
    for _ in range(5):
        action, state = model.predict(obs, state, starts, deterministic=True)
        loaded_action, loaded_state = loaded.predict(obs, loaded_state, starts, deterministic=True)
        np.testing.assert_array_equal(action, loaded_action)
        for s, ls in zip(state, loaded_state, strict=True):
            np.testing.assert_array_equal(s, ls)
        obs, _, starts, _ = env.step(action)
    assert loaded.num_timesteps == model.num_timesteps
    assert float(loaded.return_rms.mean) == float(model.return_rms.mean)
    saved_state = model.optimizer.state_dict()["state"]
    loaded_state_dict = loaded.optimizer.state_dict()["state"]
    assert saved_state.keys() == loaded_state_dict.keys()
    for index, param_state in saved_state.items():
        for key, value in param_state.items():
            assert th.equal(value, loaded_state_dict[index][key])
    # Loaded with an env, training continues.
    DistributionalPPO.load(tmp_path / "model", env=env).learn(64)


def test_learn_with_vecnormalize_eval_and_checkpoint_callbacks(tmp_path) -> None:
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0), gamma=0.99)
    eval_env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1, seed=1), training=False)
    eval_callback = EvalCallback(
        eval_env, n_eval_episodes=2, eval_freq=64, log_path=str(tmp_path / "eval"), verbose=0
    )
    checkpoints = CheckpointCallback(save_freq=128, save_path=str(tmp_path / "ckpt"))
    model = DistributionalPPO("MlpLstmPolicy", env, seed=0, **SMALL)
    model.set_logger(configure(str(tmp_path / "logs"), ["csv"]))
    model.learn(512, callback=[eval_callback, checkpoints])  # 256 steps per env: one episode

    assert len(eval_callback.evaluations_results) == 512 // 2 // 64
    assert np.isfinite(eval_callback.last_mean_reward)
    # CheckpointCallback counts calls (2 envs per call) and asks for "<name>.zip".
    saved = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert saved == ["rl_model_256_steps.safetensors", "rl_model_512_steps.safetensors"]
    restored = DistributionalPPO.load(tmp_path / "ckpt" / "rl_model_256_steps.zip")
    assert restored.num_timesteps == 256
    header = (tmp_path / "logs" / "progress.csv").read_text().splitlines()[0].split(",")
    for key in [
        "train/policy_loss",
        "train/value_loss",
        "train/entropy_loss",
        "train/approx_kl",
        "train/clip_fraction",
        "train/explained_variance",
        "train/std",
        "train/learning_rate",
        "train/n_updates",
        "time/fps",
        "rollout/ep_rew_mean",
    ]:
        assert key in header, key


def test_tensorboard_log(tmp_path) -> None:
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = DistributionalPPO("MlpLstmPolicy", env, tensorboard_log=str(tmp_path), **SMALL)
    model.learn(128, tb_log_name="run")
    assert list((tmp_path / "run_1").glob("events.out.tfevents.*"))


# Every risk and stability option of the algorithm config at once (tradingbot.algo.presets, the
# set whose speed benchmarks/throughput.py measures) plus the variance gradient scaler and
# gradient accumulation: none of them may break learning.
ALL_OPTIONS: dict[str, object] = {
    **ALL_RISK_AND_STABILITY,
    **GRAD_SCALER_ON,
    "n_microbatches": 2,
}


# Every option on, seed 0 ends at 240 since the clip bounds the raw gradient (b52378d; 476
# before, by the draw): its final policy scores 500 under the observation statistics of
# 50-70k steps, 240 under the final ones (docs/benchmarks.md, issue 24, third round). A known
# failure of issue 24's goal, kept visible: strict, so a pass is reported too.
SEED0_ALL_OPTIONS = pytest.param(
    "ours_all",
    0,
    marks=pytest.mark.xfail(
        strict=True, reason="issue 24: frozen policy under drifting VecNormalize statistics"
    ),
    id="all_options-0",
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("algo", "seed"),
    [
        pytest.param("ours", 0, id="defaults-0"),
        pytest.param("ours", 1, id="defaults-1"),
        SEED0_ALL_OPTIONS,
        pytest.param("ours_all", 1, id="all_options-1"),
    ],
)
def test_memory_task_cartpole_without_velocities(algo: str, seed: int) -> None:
    """CartPole-v1 with the velocities hidden needs the LSTM: a memoryless policy sees only
    positions and angles. The run of ``benchmarks/memory_tasks.py`` (8 envs; those of
    rl-baselines3-zoo's CartPoleNoVel-v1 where they exist: VecNormalize, n_steps 32, batch 256,
    seq_len 32, 20 epochs, lr 1e-3 and clip range 0.2 decaying linearly to 0, gamma 0.98,
    gae_lambda 0.8, ent_coef 0, LSTM 64), with the defaults and with every risk and stability
    option on (``ALL_OPTIONS``, the benchmark's set). The *final* model, after 100k env steps, must
    score a mean >= 450 over 20 deterministic episodes: a policy that learns the task and then
    degrades fails (the best evaluation along the way is not what is judged)."""
    th.set_num_threads(1)
    options = ALL_OPTIONS if algo == "ours_all" else {}
    env = VecNormalize(
        make_vec_env("CartPole-v1", n_envs=8, seed=seed, wrapper_class=HideVelocity), gamma=0.98
    )
    model = DistributionalPPO(
        "MlpLstmPolicy",
        env,
        seed=seed,
        n_steps=32,
        batch_size=256,
        seq_len=32,
        n_epochs=20,
        learning_rate=1e-3,
        learning_rate_final=0.0,
        clip_range=0.2,
        clip_range_final=0.0,
        gamma=0.98,
        gae_lambda=0.8,
        ent_coef=0.0,
        lstm_hidden_size=64,
        **options,
    )
    start = time.time()
    model.learn(100_000)
    eval_env = VecNormalize(
        make_vec_env("CartPole-v1", n_envs=1, seed=1000 + seed, wrapper_class=HideVelocity),
        training=False,
        norm_reward=False,
    )
    eval_env.obs_rms = env.obs_rms
    rewards, _ = evaluate_policy(
        model, eval_env, n_eval_episodes=20, deterministic=True, return_episode_rewards=True
    )
    reward = float(np.mean(rewards))
    print(f"memory task {algo} seed {seed}: final {reward:.0f} in {time.time() - start:.0f}s")
    assert model.num_timesteps <= 100_000 + 256
    assert reward >= 450
