"""Checking a DistributionalPPO checkpoint before anything is built from it.

:func:`read_saved_model` validates what a checkpoint's manifest claims (hyperparameters, the
JSON-able training state, the spaces) and compares the policy tensors it lists with the shapes
those hyperparameters imply, computed on torch's ``meta`` device (no memory is allocated). So a
small file whose manifest claims a huge network is refused before the network is built.
:func:`expected_specs` gives the exact names, shapes and dtypes a checkpoint for a built model
must hold, and :func:`check_values` the value ranges that finiteness alone does not cover.
Every refusal is a :class:`~tradingbot.checkpoint.CheckpointError` naming the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch as th
from gymnasium import spaces
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tradingbot.algo.config import PPOConfig
from tradingbot.algo.policy import LSTMStates, RecurrentActorCritic
from tradingbot.algo.space_description import space_from_description
from tradingbot.checkpoint import (
    CheckpointError,
    Manifest,
    TensorSpec,
    compare_specs,
    read_manifest,
    specs_of,
    validation_problems,
)


class CheckpointedModel(Protocol):
    """What saving, checking and restoring a checkpoint read of a model (DistributionalPPO)."""

    config: PPOConfig
    policy: RecurrentActorCritic
    optimizer: th.optim.Optimizer
    observation_space: spaces.Space
    action_space: spaces.Space
    n_envs: int
    num_timesteps: int

    def get_env(self) -> Any:
        """The model's VecEnv, or ``None``."""

    def state_tensors(self) -> tuple[dict[str, th.Tensor], dict[str, Any]]:
        """The model's training state (``DistributionalPPO.state_tensors``)."""

    def load_state_tensors(self, tensors: dict[str, th.Tensor], state: dict[str, Any]) -> None:
        """Restore :meth:`state_tensors`' output (``DistributionalPPO.load_state_tensors``)."""


# Logged only; NaN until the gradient scaler's first finite step.
NONFINITE_OK = frozenset({"train_state.scaler.last_ratio"})


class TrainingState(BaseModel):
    """The JSON-able part of a model's state in ``Manifest.state``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    num_timesteps: int = Field(ge=0)
    n_updates: int = Field(ge=0)
    optimizer_param_groups: list[dict[str, Any]] = Field(min_length=1)
    observation_space: dict[str, Any]
    action_space: dict[str, Any]
    env: dict[str, Any] | None = None


@dataclass
class SavedModel:
    """A checkpoint's manifest with its validated parts."""

    path: Path
    manifest: Manifest
    config: PPOConfig
    state: TrainingState
    observation_space: spaces.Space
    action_space: spaces.Space


def read_saved_model(path: Path, policy_class: Any = RecurrentActorCritic) -> SavedModel:
    """Read and validate a DistributionalPPO checkpoint's manifest, and check its policy
    tensors' shapes against its hyperparameters, without allocating the model.
    ``policy_class``: the policy the checkpoint was written by (a class or partial)."""
    manifest = read_manifest(path)
    try:
        config = PPOConfig(**manifest.hyperparameters)
    except ValidationError as err:
        raise CheckpointError(
            f"{path}: invalid hyperparameters in the manifest: {validation_problems(err)}"
        ) from None
    except TypeError as err:
        raise CheckpointError(f"{path}: invalid hyperparameters in the manifest: {err}") from None
    try:
        state = TrainingState.model_validate(manifest.state)
    except ValidationError as err:
        raise CheckpointError(
            f"{path}: invalid manifest state: {validation_problems(err)}"
        ) from None
    try:
        observation_space = space_from_description(state.observation_space)
        action_space = space_from_description(state.action_space)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: invalid space in the manifest state: {err!r}") from None
    try:
        with th.device("meta"):  # shapes only: nothing is allocated
            policy = policy_class(observation_space, action_space, config)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: cannot build the policy it describes: {err}") from None
    listed = {k: v for k, v in manifest.tensors.items() if k.startswith("policy.")}
    implied = {f"policy.{k}": v for k, v in specs_of(policy.state_dict()).items()}
    compare_specs(path, "policy of its hyperparameters", implied, listed)
    return SavedModel(path, manifest, config, state, observation_space, action_space)


def expected_specs(model: CheckpointedModel, saved: SavedModel) -> dict[str, TensorSpec]:
    """Every tensor a checkpoint for ``model`` must hold, by name, shape and dtype.

    The policy and statistics tensors are the model's own; optimizer moments must be shaped
    like the parameter they belong to; the rollout's carried state (present once a run has
    started) is shaped by the number of environments (the env's, or the checkpoint's own when
    loaded without one) and the environments' state like ``env.state_dict()``.
    """
    path, listed = saved.path, saved.manifest.tensors
    own, _ = model.state_tensors()
    optional = ("rollout.", "env.", "optimizer.", "train_state.")
    expected = {k: v for k, v in specs_of(own).items() if not k.startswith(optional)}
    params = [p for group in model.optimizer.param_groups for p in group["params"]]
    for key, spec in listed.items():
        if key.startswith("optimizer."):
            index_text = key.split(".")[1]
            index = int(index_text) if index_text.isdigit() else -1
            if not 0 <= index < len(params) or key.count(".") != 2:
                raise CheckpointError(f"{path}: {key} names no parameter of {len(params)}")
            if spec.shape and spec.shape != list(params[index].shape):
                raise CheckpointError(
                    f"{path}: {key} has shape {spec.shape}, parameter {index} has shape "
                    f"{list(params[index].shape)}"
                )
            expected[key] = spec
        elif key.startswith("train_state."):
            expected[key] = spec
    if any(k.startswith("rollout.") for k in listed):
        expected.update(_rollout_specs(model, saved))
    env = model.get_env()
    if env is not None and hasattr(env, "state_dict"):
        if any(k.startswith("env.") for k in listed):
            arrays, _ = env.state_dict()
            env_specs = specs_of({f"env.{k}": th.as_tensor(v) for k, v in arrays.items()})
            expected.update(env_specs)
    else:
        expected.update({k: v for k, v in listed.items() if k.startswith("env.")})
    return expected


def _rollout_specs(model: CheckpointedModel, saved: SavedModel) -> dict[str, TensorSpec]:
    listed = saved.manifest.tensors
    last_obs = listed.get("rollout.last_obs")
    if last_obs is None or not last_obs.shape:
        raise CheckpointError(f"{saved.path}: rollout state without rollout.last_obs")
    n_envs = model.n_envs if model.get_env() is not None else last_obs.shape[0]
    obs_shape = [n_envs, *model.observation_space.shape]  # type: ignore[misc]
    if not last_obs.dtype.startswith("float"):
        raise CheckpointError(f"{saved.path}: rollout.last_obs has dtype {last_obs.dtype}")
    state_dtype = str(next(model.policy.parameters()).dtype).removeprefix("torch.")
    specs = {
        "rollout.last_obs": TensorSpec(shape=obs_shape, dtype=last_obs.dtype),
        "rollout.episode_starts": TensorSpec(shape=[n_envs], dtype="bool"),
    }
    for i in range(len(LSTMStates._fields)):
        specs[f"rollout.lstm.{i}"] = TensorSpec(
            shape=[n_envs, model.policy.state_size], dtype=state_dtype
        )
    return specs


def check_values(path: Path, tensors: dict[str, th.Tensor], saved: SavedModel) -> None:
    """Ranges that finiteness does not cover: return statistics, Adam's second moments,
    counters, and the optimizer's saved settings."""
    if float(tensors["return_rms.var"]) < 0:
        raise CheckpointError(
            f"{path}: tensor 'return_rms.var' is negative ({float(tensors['return_rms.var'])})"
        )
    if not float(tensors["return_rms.count"]) > 0:
        raise CheckpointError(f"{path}: tensor 'return_rms.count' must be positive")
    var = tensors.get("policy.obs_normalizer.var")
    count = tensors.get("policy.obs_normalizer.count")
    if var is not None and bool((var < 0).any()):
        raise CheckpointError(f"{path}: tensor 'policy.obs_normalizer.var' has negative values")
    if count is not None and not float(count) > 0:
        raise CheckpointError(f"{path}: tensor 'policy.obs_normalizer.count' must be positive")
    for key, value in tensors.items():
        never_negative = key.startswith("optimizer.") and key.endswith((".exp_avg_sq", ".step"))
        if never_negative and bool((value < 0).any()):
            raise CheckpointError(f"{path}: tensor {key!r} has negative values")
    for i, group in enumerate(saved.state.optimizer_param_groups):
        for name, value in group.items():
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if number and not math.isfinite(value):
                raise CheckpointError(
                    f"{path}: state.optimizer_param_groups[{i}].{name} is {value}"
                )


def check_param_groups(path: Path, current: list[dict[str, Any]], saved: SavedModel) -> None:
    """The saved optimizer settings must have the optimizer's own groups and keys."""
    groups = saved.state.optimizer_param_groups
    if len(groups) != len(current):
        raise CheckpointError(
            f"{path}: state.optimizer_param_groups has {len(groups)} group(s), the optimizer "
            f"{len(current)}"
        )
    for i, (group, own) in enumerate(zip(groups, current, strict=True)):
        wanted = set(own) - {"params"}
        if set(group) != wanted:
            raise CheckpointError(
                f"{path}: state.optimizer_param_groups[{i}] has keys {sorted(group)}, the "
                f"optimizer {sorted(wanted)}"
            )
