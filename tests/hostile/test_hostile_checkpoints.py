"""Hostile and broken checkpoints, normalization files and run directories.

One tiny run is trained per module; each case corrupts a copy of one of its files the way a
careless user, a hostile file or a crashing machine would, with the safetensors API (headers
and tensors are rewritten, files truncated), and checks that loading refuses it with a
:class:`CheckpointError` naming the file and the tensor or key, before anything is built.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from hostile.conftest import assert_user_error, run_cli
from hostile.tiny_run import rewrite, train_tiny
from tradingbot.algo import DistributionalPPO
from tradingbot.checkpoint import CheckpointError, load_checkpoint, read_manifest
from tradingbot.config_loading import validate_config
from tradingbot.data.market import load_prepared
from tradingbot.env import MarketVecEnv
from tradingbot.evaluate.runs import load_normalizer, load_run
from tradingbot.train import CHECKPOINT_DIR, MODEL_FILE, NORMALIZATION_FILE, list_checkpoints


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run: four updates, checkpoints at steps 64, 128, 192 and 256."""
    return train_tiny(tmp_path_factory.mktemp("runs"))


@pytest.fixture
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    """A copy of the tiny run that a test may damage."""
    return Path(shutil.copytree(tiny_run, tmp_path / "tiny"))


def refused(path: Path, *names: str, env: bool = False) -> str:
    """Loading ``path`` raises CheckpointError naming the file and each of ``names``."""
    env_arg = None
    if env:
        config = load_run_config(path)
        market = load_prepared(config.data, window=config.env.window)
        env_arg = MarketVecEnv(market, "train", config.env, seed=0)
    with pytest.raises(CheckpointError) as caught:
        DistributionalPPO.load(path, env=env_arg)
    message = str(caught.value)
    assert str(path) in message
    for name in names:
        assert name in message, (name, message)
    assert "input_value" not in message and "errors.pydantic.dev" not in message
    return message


def load_run_config(path: Path) -> Any:
    return validate_config(read_manifest(path).config)


def newest(run: Path) -> Path:
    return list_checkpoints(run / CHECKPOINT_DIR)[-1]


# ------------------------------------------------------------------ non-finite values (item 5)
def test_nan_weight_in_model_is_refused(run_copy: Path) -> None:
    path = run_copy / MODEL_FILE
    key = "policy.critic_head.weights.0"

    def poison(t: dict[str, torch.Tensor]) -> None:
        name = next(k for k in t if k.startswith("policy.") and t[k].is_floating_point())
        t[name].view(-1)[0] = float("nan")
        nonlocal key
        key = name

    rewrite(path, poison)
    refused(path, key, "non-finite")


def test_nan_weight_backtest_is_a_user_error(run_copy: Path) -> None:
    def poison(t: dict[str, torch.Tensor]) -> None:
        t["policy.log_std_logit"][0] = float("nan")

    rewrite(run_copy / MODEL_FILE, poison)
    result = run_cli("backtest", run_copy, "--split", "validation")
    assert_user_error(result, str(run_copy / MODEL_FILE), "policy.log_std_logit")
    assert not (run_copy / "backtest").exists()


def test_nan_adam_moment_is_refused(run_copy: Path) -> None:
    path = newest(run_copy)

    def poison(t: dict[str, torch.Tensor]) -> None:
        t["optimizer.0.exp_avg"][3] = float("inf")

    rewrite(path, poison)
    refused(path, "optimizer.0.exp_avg", "non-finite")


def test_negative_adam_second_moment_is_refused(run_copy: Path) -> None:
    path = newest(run_copy)

    def poison(t: dict[str, torch.Tensor]) -> None:
        t["optimizer.0.exp_avg_sq"][0] = -1.0

    rewrite(path, poison)
    refused(path, "optimizer.0.exp_avg_sq", "negative")


def test_negative_return_variance_is_refused(run_copy: Path) -> None:
    path = newest(run_copy)

    def poison(t: dict[str, torch.Tensor]) -> None:
        t["return_rms.var"] = torch.tensor(-0.5, dtype=torch.float64)

    rewrite(path, poison)
    refused(path, "return_rms.var", "negative")


def test_nan_optimizer_setting_is_refused(run_copy: Path) -> None:
    path = newest(run_copy)

    def poison(m: dict[str, Any]) -> None:
        m["state"]["optimizer_param_groups"][0]["lr"] = float("nan")

    rewrite(path, manifest=poison)
    refused(path, "optimizer_param_groups", "lr")


@pytest.mark.parametrize("value", [float("nan"), 0.0, -1.0])
def test_bad_normalization_std_is_refused(run_copy: Path, value: float) -> None:
    path = run_copy / NORMALIZATION_FILE
    with safe_open(str(path), framework="pt") as handle:
        data = {k: handle.get_tensor(k) for k in handle.keys()}
        metadata = handle.metadata()
    data["std"][1] = value
    save_file(data, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match="'std'") as caught:
        load_normalizer(path, clip=5.0)
    assert str(path) in str(caught.value)


def test_truncated_normalization_file_is_refused(run_copy: Path) -> None:
    path = run_copy / NORMALIZATION_FILE
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(CheckpointError) as caught:
        load_run(run_copy)
    assert str(path) in str(caught.value)
    result = run_cli("backtest", run_copy, "--split", "validation")
    assert_user_error(result, str(path))


def test_normalization_with_wrong_length_is_refused(run_copy: Path) -> None:
    path = run_copy / NORMALIZATION_FILE
    with safe_open(str(path), framework="pt") as handle:
        data = {k: handle.get_tensor(k) for k in handle.keys()}
        metadata = handle.metadata()
    data["mean"] = data["mean"][:-1].clone()
    save_file(data, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match="'mean' has shape"):
        load_normalizer(path, clip=5.0)


def test_garbage_rng_state_is_refused(run_copy: Path) -> None:
    path = newest(run_copy)

    def poison(t: dict[str, torch.Tensor]) -> None:
        t["rng.torch"] = torch.full_like(t["rng.torch"], 255)

    rewrite(path, poison)
    refused(path, "rng.torch")


# ---------------------------------------------------------- environment state range (item 9)
@pytest.mark.parametrize(("value", "name"), [(-3, "row"), (10**9, "row"), (7, "slot")])
def test_env_state_out_of_range_is_refused(run_copy: Path, value: int, name: str) -> None:
    path = newest(run_copy)

    def poison(t: dict[str, torch.Tensor]) -> None:
        t[f"env.{name}"][0] = value

    rewrite(path, poison)
    refused(path, "environment state", repr(name), env=True)


def test_env_equity_nan_is_refused(run_copy: Path) -> None:
    path = newest(run_copy)

    def poison(t: dict[str, torch.Tensor]) -> None:
        t["env.equity"][1] = float("nan")

    rewrite(path, poison)
    refused(path, "env.equity", env=True)


# ------------------------------------------- manifest shapes before allocation (item 13, 15)
def test_huge_network_in_manifest_is_refused_before_allocation(run_copy: Path) -> None:
    path = newest(run_copy)

    def lie(m: dict[str, Any]) -> None:
        m["hyperparameters"]["lstm_hidden_size"] = 12000

    rewrite(path, manifest=lie)
    start = time.perf_counter()
    message = refused(path, "policy of its hyperparameters", "policy.")
    # Building the 12000-unit model takes ~10 GB and most of a minute; the check takes neither.
    assert time.perf_counter() - start < 5.0, message


def test_header_shapes_that_differ_from_the_manifest_are_refused(run_copy: Path) -> None:
    path = newest(run_copy)

    def lie(m: dict[str, Any]) -> None:
        m["tensors"]["return_rms.var"]["shape"] = [4096, 4096]

    rewrite(path, manifest=lie)
    with pytest.raises(CheckpointError, match=r"return_rms\.var") as caught:
        read_manifest(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("key", ["observation_space", "optimizer_param_groups", "num_timesteps"])
def test_manifest_without_state_key_is_refused(run_copy: Path, key: str) -> None:
    path = newest(run_copy)
    rewrite(path, manifest=lambda m: m["state"].pop(key))
    refused(path, key)


def test_manifest_with_evil_device_is_refused(run_copy: Path) -> None:
    path = newest(run_copy)

    def lie(m: dict[str, Any]) -> None:
        m["hyperparameters"]["device"] = "evil"

    rewrite(path, manifest=lie)
    refused(path, "device", "evil")


def test_invalid_manifest_hyperparameters_name_the_checkpoint(run_copy: Path) -> None:
    path = newest(run_copy)

    def lie(m: dict[str, Any]) -> None:
        m["hyperparameters"]["n_steps"] = -5
        m["hyperparameters"]["bogus"] = 1

    rewrite(path, manifest=lie)
    message = refused(path, "n_steps", "bogus", "hyperparameters")
    assert "\n" not in message


def test_misshaped_rollout_tensor_is_refused(run_copy: Path) -> None:
    path = newest(run_copy)

    def extra_env(t: dict[str, torch.Tensor]) -> None:
        t["rollout.lstm.0"] = torch.zeros(3, t["rollout.lstm.0"].shape[1])

    rewrite(path, extra_env)
    refused(path, "rollout.lstm.0", "shape", env=True)
    refused(path, "rollout.lstm.0", "shape")  # without an env: consistent with rollout.last_obs


def test_misshaped_env_tensor_is_refused(run_copy: Path) -> None:
    path = newest(run_copy)

    def extra_env(t: dict[str, torch.Tensor]) -> None:
        t["env.position"] = torch.zeros(5, dtype=torch.float64)

    rewrite(path, extra_env)
    refused(path, "env.position", "shape", env=True)


def test_undamaged_checkpoints_still_load(tiny_run: Path) -> None:
    """The checks refuse nothing a run writes."""
    for path in [*list_checkpoints(tiny_run / CHECKPOINT_DIR), tiny_run / MODEL_FILE]:
        load_checkpoint(path)
        DistributionalPPO.load(path)
    load_run(tiny_run)
