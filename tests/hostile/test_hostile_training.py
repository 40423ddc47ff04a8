"""Hostile and faulty training: NaN observations, non-finite steps, bad hyperparameters, and
resuming runs that were edited, finished or left half-written by a crash."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import VecEnvWrapper

from hostile.conftest import assert_user_error, run_cli
from hostile.tiny_run import TINY, train_tiny
from tradingbot.algo import DistributionalPPO
from tradingbot.algo.config import PPOConfig
from tradingbot.algo.fast.sequence import lstm_over_chunks, lstm_step_by_step
from tradingbot.algo.guard import StepUndo
from tradingbot.algo.policy import RecurrentActorCritic
from tradingbot.checkpoint import CheckpointError, load_checkpoint
from tradingbot.config import ConfigError, DataConfig, EnvConfig
from tradingbot.config_loading import load_config, validate_config
from tradingbot.data.market import load_prepared
from tradingbot.env import MarketVecEnv
from tradingbot.optim import AdaptiveUPGD
from tradingbot.train import CHECKPOINT_DIR, MODEL_FILE, list_checkpoints, resume, train

HYPER = dict(
    n_steps=32, batch_size=32, seq_len=16, n_epochs=1, n_quantiles=8, lstm_hidden_size=8,
    net_arch=[8],
)  # fmt: skip


class Inject(VecEnvWrapper):
    """Replaces, at the ``at``-th step, env 0's observation or reward by ``value``."""

    def __init__(self, venv: MarketVecEnv, at: int, what: str, value: float) -> None:
        super().__init__(venv)
        self.at, self.what, self.value, self.t = at, what, value, 0

    def reset(self) -> np.ndarray:
        return self.venv.reset()

    def step_wait(self):  # type: ignore[no-untyped-def]
        obs, reward, done, infos = self.venv.step_wait()
        self.t += 1
        if self.t == self.at:
            if self.what == "obs":
                obs = obs.copy()
                obs[0, 0] = self.value
            else:
                reward = reward.copy()
                reward[0] = self.value
        return obs, reward, done, infos


@pytest.fixture(scope="module")
def market():
    return load_prepared(DataConfig(source="synthetic"))


def skipped_per_update(model: DistributionalPPO, updates: int) -> list[int]:
    """Train one rollout (one update) at a time; the skipped optimizer steps of each."""
    counts = []
    for k in range(updates):
        before = model.train_state.skipped_steps
        model.learn(64, reset_num_timesteps=k == 0)
        counts.append(model.train_state.skipped_steps - before)
    return counts


# ------------------------------------------------------------------------- NaN input (item 3)
def test_one_nan_observation_costs_one_episode_not_the_run(market) -> None:
    # Env 0's episode runs steps 0-39 (episode_length 40); a NaN observation at step 10 poisons
    # it (the NaN action makes the position NaN too) until it ends at step 40, inside the
    # second rollout (steps 32-63). From the third update on nothing may be skipped: the LSTM
    # state of env 0 is reset at its next episode, not multiplied by 0 (NaN * 0 = NaN).
    env = Inject(
        MarketVecEnv(market, "train", EnvConfig(n_envs=2, episode_length=40), seed=0),
        at=10,
        what="obs",
        value=float("nan"),
    )
    model = DistributionalPPO("MlpLstmPolicy", env, seed=0, **HYPER)
    counts = skipped_per_update(model, 6)
    assert counts[0] >= 1 and counts[1] >= 1, counts  # the NaN did reach the loss
    assert counts[2:] == [0, 0, 0, 0], counts
    # 2 minibatches per update: 12 steps, of which only the skipped ones did not happen.
    assert model.n_updates == 12 - sum(counts)
    assert all(torch.isfinite(p).all() for p in model.policy.parameters())
    assert all(torch.isfinite(s).all() for s in model._last_lstm_states)


def test_episode_start_replaces_a_nan_state_in_both_lstm_paths() -> None:
    # Known answer: from a NaN state, a step that starts an episode gives exactly what it gives
    # from zeros, in the training path (sequence chunks, a reset on a chunk's first step and
    # one inside it) and in the rollout path.
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 4, batch_first=True)
    inputs = torch.randn(2, 5, 3)
    starts = torch.tensor([[1.0, 0, 0, 1, 0], [1.0, 0, 0, 0, 0]])
    nan = torch.full((2, 4), float("nan"))
    zeros = torch.zeros(2, 4)
    for run in (lstm_over_chunks, lstm_step_by_step):
        with torch.no_grad():
            out = run(lstm, inputs, starts, nan, nan)
            assert torch.equal(out, run(lstm, inputs, starts, zeros, zeros)), run.__name__
    policy = RecurrentActorCritic(
        gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-1, 1, (1,)), PPOConfig(**HYPER)
    )
    states = policy.initial_state(2)
    nan_states = type(states)(*(torch.full_like(s, float("nan")) for s in states))
    obs = torch.randn(2, 3)
    with torch.no_grad():
        from_nan = policy.step(obs, nan_states, torch.ones(2), deterministic=True)
        from_zero = policy.step(obs, states, torch.ones(2), deterministic=True)
    assert torch.equal(from_nan.value, from_zero.value)
    assert all(torch.equal(a, b) for a, b in zip(from_nan.states, from_zero.states, strict=True))


def test_extreme_reward_is_reported(market, caplog: pytest.LogCaptureFixture) -> None:
    # A reward of 1e30 at step 40 (second rollout) moves the return std from ~1e-2 to ~1e29.
    env = Inject(
        MarketVecEnv(market, "train", EnvConfig(n_envs=2, episode_length=50), seed=0),
        at=40,
        what="reward",
        value=1e30,
    )
    model = DistributionalPPO("MlpLstmPolicy", env, seed=0, **HYPER)
    with caplog.at_level(logging.WARNING, logger="tradingbot.algo.ppo"):
        model.learn(128)
    warnings = [r.getMessage() for r in caplog.records if "return std" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert "1e+30" in warnings[0]


# ------------------------------------------------------- non-finite parameters (item 4, 17)
def test_step_that_makes_parameters_non_finite_is_undone(market, tmp_path) -> None:
    # 1e300 is a finite float64 but an infinite float32 learning rate: every step would write
    # inf/NaN into the parameters, so every step is undone and counted; nothing changes.
    env = MarketVecEnv(market, "train", EnvConfig(n_envs=2), seed=0)
    model = DistributionalPPO("MlpLstmPolicy", env, seed=0, learning_rate=1e300, **HYPER)
    initial = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(128)
    assert model.train_state.skipped_steps == 4  # 2 updates x 2 minibatches
    assert model.n_updates == 0
    for key, value in model.policy.state_dict().items():
        assert torch.equal(value, initial[key]), key
    assert len(model.optimizer.state) == 0  # the optimizer state is undone too
    model.save(tmp_path / "m")
    tensors, _ = load_checkpoint(tmp_path / "m.safetensors")
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


def test_step_undo_restores_upgd_state_exactly() -> None:
    # UPGD keeps per-parameter state and global counters in its first param group.
    params = [torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(3, 2))]
    optimizer = AdaptiveUPGD(params, lr=0.1, adaptive_noise=True)
    flat = torch.nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))

    def step() -> None:
        for p in params:
            p.grad = torch.randn_like(p)
        optimizer.step()

    step()  # state exists before the undone step
    undo = StepUndo(flat, optimizer)
    before_state = {k: v.clone() for k, v in optimizer.state[params[0]].items()}
    before_groups = [dict(g) for g in optimizer.param_groups]
    step()
    assert not torch.equal(optimizer.state[params[0]]["exp_avg"], before_state["exp_avg"])
    with torch.no_grad():
        flat[2] = float("inf")
    assert not undo.step_was_finite()
    undo.restore()
    assert undo.step_was_finite()
    for key, value in before_state.items():
        assert torch.equal(optimizer.state[params[0]][key], value), key
    assert optimizer.param_groups == before_groups


def test_infinite_learning_rate_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"algo\.learning_rate"):
        load_config(None, ["algo.learning_rate=.inf"])
    result = run_cli(
        "train", "--set", "algo.learning_rate=.inf", "--set", f"run.out_dir={tmp_path}"
    )
    assert_user_error(result, "algo.learning_rate")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", [".nan", "-.inf"])
def test_non_finite_hyperparameters_are_refused(value: str) -> None:
    for key in ("algo.clip_range", "algo.risk.cvar_limit", "algo.log_std_init"):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(None, [f"{key}={value}"])


def test_batch_larger_than_rollout_is_refused() -> None:
    # One rollout is n_steps x n_envs = 32 x 2 = 64 samples; 64 fits, 80 does not.
    base = {**TINY, "algo": {**TINY["algo"], "batch_size": 64}}
    validate_config(base)
    with pytest.raises(ConfigError, match=r"algo\.batch_size") as caught:
        validate_config({**TINY, "algo": {**TINY["algo"], "batch_size": 80}})
    assert "32 x 2 = 64" in str(caught.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_gpu_is_refused(tmp_path: Path) -> None:
    config = validate_config(
        {**TINY, "algo": {**TINY["algo"], "device": "cuda"}, "run": {"out_dir": str(tmp_path)}}
    )
    with pytest.raises(ConfigError, match=r"algo\.device"):
        train(config)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ resume (items 8, 10, 11)
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("runs"))


@pytest.fixture
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "tiny"))


def assert_same_model(a: Path, b: Path) -> None:
    first, m1 = load_checkpoint(a)
    second, m2 = load_checkpoint(b)
    assert m1.step == m2.step and first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_kill_between_last_checkpoint_and_model_resumes_to_the_model(
    tiny_run: Path, run_copy: Path
) -> None:
    # The state a kill leaves after the final checkpoint, inside the model's atomic write: the
    # checkpoint at total_timesteps, no model.safetensors, the model's temporary file.
    (run_copy / MODEL_FILE).unlink()
    partial = run_copy / f".{MODEL_FILE}.k1ll3d.tmp"
    partial.write_bytes(b"half a model")
    stray = run_copy / CHECKPOINT_DIR / ".step_000000000256.safetensors.x1y2.tmp"
    stray.write_bytes(b"half a checkpoint")
    unrelated = run_copy / ".notes.tmp"  # not of our naming pattern: left alone
    unrelated.write_text("mine")
    resume(run_copy)
    assert_same_model(tiny_run / MODEL_FILE, run_copy / MODEL_FILE)
    assert not partial.exists() and not stray.exists() and unrelated.exists()
    (run_copy / MODEL_FILE).unlink()  # and from the command line
    result = run_cli("train", "--no-progress", "--resume", run_copy)
    assert result.returncode == 0, result.output
    assert_same_model(tiny_run / MODEL_FILE, run_copy / MODEL_FILE)


def test_bad_newest_checkpoint_falls_back_to_an_older_one(
    tiny_run: Path, run_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = run_copy / CHECKPOINT_DIR
    newest = list_checkpoints(directory)[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # torn write
    (directory / "step_999999999999.safetensors").mkdir()  # not a checkpoint at all
    (run_copy / MODEL_FILE).unlink()
    with caplog.at_level(logging.WARNING, logger="tradingbot.train"):
        resume(run_copy)
    assert str(newest) in caplog.text and "step_000000000192" in caplog.text
    # Resumed from step 192, the run is bit-for-bit the one that was never damaged.
    assert_same_model(tiny_run / MODEL_FILE, run_copy / MODEL_FILE)
    assert_same_model(tiny_run / CHECKPOINT_DIR / newest.name, newest)


def test_no_valid_checkpoint_is_a_user_error(run_copy: Path) -> None:
    for path in list_checkpoints(run_copy / CHECKPOINT_DIR):
        path.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="no valid checkpoint"):
        resume(run_copy)
    result = run_cli("train", "--no-progress", "--resume", run_copy)
    assert_user_error(result, str(run_copy / CHECKPOINT_DIR), "no valid checkpoint")


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("learning_rate: 0.0003", "learning_rate: 0.5", "algo.learning_rate"),
        ("n_envs: 2", "n_envs: 3", "env.n_envs"),
    ],
)
def test_edited_config_is_refused_on_resume(run_copy: Path, old: str, new: str, key: str) -> None:
    config_file = run_copy / "config.yaml"
    text = config_file.read_text()
    assert old in text
    config_file.write_text(text.replace(old, new))
    before = sorted(p.name for p in run_copy.rglob("*"))
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as caught:
        resume(run_copy)
    assert str(config_file) in str(caught.value)
    result = run_cli("train", "--no-progress", "--resume", run_copy)
    assert_user_error(result, str(config_file), key)
    assert sorted(p.name for p in run_copy.rglob("*")) == before
