"""Saving and loading DistributionalPPO through the safe checkpoint format.

A checkpoint holds everything that a run needs to continue bit-for-bit on CPU: the policy, the
optimizer state, the return-normalization statistics, the torch RNG state, the rollout's
carried state (last observation, episode starts, LSTM states), counters, and, when the
environment can export it (``MarketVecEnv.state_dict``), the environments' state too.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch as th
from gymnasium import spaces

from tradingbot.algo.saved_state import (
    NONFINITE_OK,
    SavedModel,
    check_param_groups,
    check_values,
    expected_specs,
    read_saved_model,
)
from tradingbot.checkpoint import CheckpointError, Manifest, load_checkpoint, save_checkpoint

if TYPE_CHECKING:
    from tradingbot.algo.ppo import DistributionalPPO

CHECKPOINT_SUFFIX = ".safetensors"
KIND = "DistributionalPPO"


def checkpoint_path(path: str | Path) -> Path:
    """``path`` with the checkpoint suffix (SB3's CheckpointCallback passes ``*.zip``)."""
    path = Path(path)
    return path if path.suffix == CHECKPOINT_SUFFIX else path.with_suffix(CHECKPOINT_SUFFIX)


def describe_space(space: spaces.Space) -> dict[str, Any]:
    """JSON description of a Box or Discrete space (non-finite bounds as strings)."""
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": [_json_float(x) for x in space.low.reshape(-1)],
            "high": [_json_float(x) for x in space.high.reshape(-1)],
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    raise TypeError(f"cannot describe space {space}")


def space_from_description(description: dict[str, Any]) -> spaces.Space:
    """Inverse of :func:`describe_space`."""
    if description["type"] == "Box":
        shape, dtype = tuple(description["shape"]), np.dtype(description["dtype"])
        low = np.array([float(x) for x in description["low"]], dtype=dtype).reshape(shape)
        high = np.array([float(x) for x in description["high"]], dtype=dtype).reshape(shape)
        return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)
    if description["type"] == "Discrete":
        return spaces.Discrete(description["n"], start=description["start"])
    raise ValueError(f"unknown space type {description['type']!r}")


def _json_float(x: float) -> float | str:
    return float(x) if np.isfinite(x) else str(float(x))


def model_state(model: DistributionalPPO) -> tuple[dict[str, th.Tensor], dict[str, Any]]:
    """Every tensor of the model's training state, and the JSON-able rest."""
    tensors = {f"policy.{k}": v for k, v in model.policy.state_dict().items()}
    optimizer_state = model.optimizer.state_dict()
    for index, param_state in optimizer_state["state"].items():
        for name, value in param_state.items():
            tensors[f"optimizer.{index}.{name}"] = th.as_tensor(value).clone()
    rms = model.return_rms
    tensors["return_rms.mean"] = th.tensor(float(rms.mean), dtype=th.float64)
    tensors["return_rms.var"] = th.tensor(float(rms.var), dtype=th.float64)
    tensors["return_rms.count"] = th.tensor(float(rms.count), dtype=th.float64)
    tensors["rng.torch"] = th.get_rng_state()
    # Update statistics: DSAC-T sigma_bar, KL beta, CVaR multiplier, entropy boost, AWR
    # coefficient, skipped-step counter and the gradient scaler's state.
    for key, value in model.train_state.state_dict().items():
        tensors[f"train_state.{key}"] = value
    if model._last_obs is not None:
        tensors["rollout.last_obs"] = th.as_tensor(np.asarray(model._last_obs))
        tensors["rollout.episode_starts"] = th.as_tensor(
            np.asarray(model._last_episode_starts, dtype=bool)
        )
        for i, s in enumerate(model._last_lstm_states):
            tensors[f"rollout.lstm.{i}"] = s
    state: dict[str, Any] = {
        "num_timesteps": model.num_timesteps,
        "n_updates": model._n_updates,
        "optimizer_param_groups": [
            {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items() if k != "params"}
            for g in optimizer_state["param_groups"]
        ],
        "observation_space": describe_space(model.observation_space),
        "action_space": describe_space(model.action_space),
    }
    env = model.get_env()
    if env is not None and hasattr(env, "state_dict"):
        env_tensors, env_state = env.state_dict()
        tensors.update({f"env.{k}": th.as_tensor(v) for k, v in env_tensors.items()})
        state["env"] = env_state
    return tensors, state


def save_model(
    model: DistributionalPPO,
    path: str | Path,
    config: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
) -> Manifest:
    """Write the model's full state to one safetensors checkpoint (atomically)."""
    tensors, state = model_state(model)
    return save_checkpoint(
        checkpoint_path(path),
        tensors,
        kind=KIND,
        step=model.num_timesteps,
        config=config or {},
        hyperparameters=model.config.model_dump(mode="json"),
        metrics=metrics,
        state=state,
    )


def restore_model(
    model: DistributionalPPO, path: str | Path, saved: SavedModel | None = None
) -> Manifest:
    """Load a checkpoint into ``model`` (built with the checkpoint's hyperparameters).

    Tensors must match the model's own names, shapes and dtypes (checked before any tensor is
    read), be finite and in range (:mod:`tradingbot.algo.saved_state`); the environment's
    state is restored when the checkpoint has it and the model's env accepts it. Everything is
    checked before the model or the env is changed. ``saved``: the checkpoint's validated
    manifest, when the caller has read it already.
    """
    path = checkpoint_path(path)
    if saved is None:
        saved = read_saved_model(path)
    manifest = saved.manifest
    tensors, _ = load_checkpoint(
        path, expected=expected_specs(model, saved), nonfinite_ok=NONFINITE_OK
    )
    check_values(path, tensors, saved)
    check_param_groups(path, model.optimizer.param_groups, saved)
    env = model.get_env()
    if saved.state.env is not None and env is not None and hasattr(env, "load_state_dict"):
        env_tensors = {
            k.removeprefix("env."): v.numpy() for k, v in tensors.items() if k.startswith("env.")
        }
        try:  # validates everything before it changes the env
            env.load_state_dict(env_tensors, saved.state.env)
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: invalid environment state: {err}") from None
    model.policy.load_state_dict(
        {k.removeprefix("policy."): v for k, v in tensors.items() if k.startswith("policy.")}
    )
    optimizer_state: dict[str, Any] = {"state": defaultdict(dict), "param_groups": []}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            optimizer_state["state"][int(index)][name] = value
    first = 0
    for group, saved_group in zip(
        model.optimizer.param_groups, saved.state.optimizer_param_groups, strict=True
    ):
        restored = {k: (tuple(v) if isinstance(v, list) else v) for k, v in saved_group.items()}
        restored["params"] = list(range(first, first + len(group["params"])))
        optimizer_state["param_groups"].append(restored)
        first += len(group["params"])
    optimizer_state["state"] = dict(optimizer_state["state"])
    try:
        model.optimizer.load_state_dict(optimizer_state)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: optimizer state does not load: {err!r}") from None
    model.return_rms.mean = tensors["return_rms.mean"].numpy().copy()
    model.return_rms.var = tensors["return_rms.var"].numpy().copy()
    model.return_rms.count = float(tensors["return_rms.count"])
    try:
        th.set_rng_state(tensors["rng.torch"])
    except RuntimeError as err:
        raise CheckpointError(
            f"{path}: tensor 'rng.torch' is not a torch RNG state ({err})"
        ) from None
    train_state = {
        k.removeprefix("train_state."): v
        for k, v in tensors.items()
        if k.startswith("train_state.")
    }
    if train_state:  # checkpoints written before these statistics existed have none
        try:
            model.train_state.load_state_dict(train_state)
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: invalid train_state tensors: {err!r}") from None
    model.num_timesteps = saved.state.num_timesteps
    model._n_updates = saved.state.n_updates
    if "rollout.last_obs" in tensors:
        model._last_obs = tensors["rollout.last_obs"].numpy().copy()
        model._last_episode_starts = tensors["rollout.episode_starts"].numpy().copy()
        n_states = len(model._last_lstm_states)
        model._last_lstm_states = type(model._last_lstm_states)(
            *(tensors[f"rollout.lstm.{i}"].clone() for i in range(n_states))
        )
    return manifest
