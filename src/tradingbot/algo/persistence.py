"""Saving and loading DistributionalPPO through the safe checkpoint format.

A checkpoint holds everything that a run needs to continue bit-for-bit on CPU: the policy, the
optimizer state, the return-normalization statistics, the torch RNG state, the rollout's
carried state (last observation, episode starts, LSTM states), counters, and, when the
environment can export it (``MarketVecEnv.state_dict``), the environments' state too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import torch as th

from tradingbot.algo.saved_state import (
    NONFINITE_OK,
    CheckpointedModel,
    SavedModel,
    check_param_groups,
    check_values,
    expected_specs,
    read_saved_model,
)
from tradingbot.algo.space_description import describe_space
from tradingbot.checkpoint import CheckpointError, Manifest, load_checkpoint, save_checkpoint

ModelT = TypeVar("ModelT", bound=CheckpointedModel)

CHECKPOINT_SUFFIX = ".safetensors"
KIND = "DistributionalPPO"


def checkpoint_path(path: str | Path) -> Path:
    """``path`` with the checkpoint suffix (SB3's CheckpointCallback passes ``*.zip``)."""
    path = Path(path)
    return path if path.suffix == CHECKPOINT_SUFFIX else path.with_suffix(CHECKPOINT_SUFFIX)


def model_state(model: CheckpointedModel) -> tuple[dict[str, th.Tensor], dict[str, Any]]:
    """Every tensor of a checkpoint of ``model`` (its :meth:`state_tensors` and, when the env
    can export it, the environments' state under ``env.``), and the JSON-able rest."""
    tensors, state = model.state_tensors()
    state = {
        **state,
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
    model: CheckpointedModel,
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
    model: CheckpointedModel, path: str | Path, saved: SavedModel | None = None
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
    try:
        model.load_state_tensors(tensors, saved.state.model_dump())
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    return manifest


def load_model(
    cls: type[ModelT], path: str | Path, env: Any | None = None, policy: Any = "MlpLstmPolicy"
) -> ModelT:
    """
    Build a model of class ``cls`` from a checkpoint (never unpickles).

    Everything the manifest claims is checked before the model is built (its policy shapes
    against its hyperparameters too): a lying manifest allocates nothing.

    Parameters
    ----------
    cls : type
        The algorithm class (``DistributionalPPO``): called as
        ``cls(policy, env, config=..., _init_setup_model=False)``.
    path : str or Path
        The checkpoint.
    env : VecEnv, optional
        Must have the saved observation and action spaces; with it, training continues
        exactly where the checkpoint left off.
    policy : str or type
        The policy the model was trained with, as given to the constructor (an alias of
        ``cls.policy_aliases`` or a class, e.g. the portfolio policy).

    Returns
    -------
    The model.
    """
    policy_class = cls.policy_aliases.get(policy) if isinstance(policy, str) else policy  # type: ignore[attr-defined]
    saved = read_saved_model(checkpoint_path(path), policy_class)
    model = cls(policy, env, config=saved.config, _init_setup_model=False)  # type: ignore[call-arg]
    if env is None:
        model.observation_space, model.action_space = saved.observation_space, saved.action_space
        model.n_envs = 1
    elif (
        model.observation_space != saved.observation_space
        or model.action_space != saved.action_space
    ):
        raise CheckpointError(
            f"{saved.path}: env spaces ({model.observation_space}, {model.action_space}) "
            f"differ from the saved ones ({saved.observation_space}, {saved.action_space})"
        )
    model._setup_model()  # type: ignore[attr-defined]
    restore_model(model, path, saved)
    return model
