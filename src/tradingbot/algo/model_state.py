"""The training state of DistributionalPPO as named tensors (and the JSON-able rest), and
back: what ``DistributionalPPO.state_tensors`` / ``load_state_tensors`` read and write, and what
a checkpoint holds besides the environments' state."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.running_mean_std import RunningMeanStd

from tradingbot.algo.learner import Learner


def learner_tensors(learner: Learner, return_rms: RunningMeanStd) -> dict[str, th.Tensor]:
    """
    The policy, optimizer state, return statistics, torch RNG and update statistics.

    Parameters
    ----------
    learner : Learner
        Policy, optimizer and train state.
    return_rms : RunningMeanStd
        The return-normalization statistics.

    Returns
    -------
    dict of str to Tensor
        ``policy.*``, ``optimizer.<index>.<name>``, ``return_rms.*``, ``rng.torch`` and
        ``train_state.*``.
    """
    tensors = {f"policy.{k}": v for k, v in learner.policy.state_dict().items()}
    for index, param_state in learner.optimizer.state_dict()["state"].items():
        for name, value in param_state.items():
            tensors[f"optimizer.{index}.{name}"] = th.as_tensor(value).clone()
    tensors["return_rms.mean"] = th.tensor(float(return_rms.mean), dtype=th.float64)
    tensors["return_rms.var"] = th.tensor(float(return_rms.var), dtype=th.float64)
    tensors["return_rms.count"] = th.tensor(float(return_rms.count), dtype=th.float64)
    tensors["rng.torch"] = th.get_rng_state()
    # Update statistics: DSAC-T sigma_bar, KL beta, CVaR multiplier, entropy boost, AWR
    # coefficient, skipped-step counter and the gradient scaler's state.
    for key, value in learner.train_state.state_dict().items():
        tensors[f"train_state.{key}"] = value
    return tensors


def param_groups_state(optimizer: th.optim.Optimizer) -> list[dict[str, Any]]:
    """
    The optimizer's param groups without their parameters, JSON-able (tuples as lists).

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        The optimizer.

    Returns
    -------
    list of dict
    """
    return [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items() if k != "params"}
        for g in optimizer.state_dict()["param_groups"]
    ]


def load_learner_tensors(
    learner: Learner,
    return_rms: RunningMeanStd,
    tensors: dict[str, th.Tensor],
    param_groups: list[dict[str, Any]],
) -> None:
    """
    Restore :func:`learner_tensors`' output (names, shapes and dtypes checked by the caller).

    Parameters
    ----------
    learner : Learner
        Policy, optimizer and train state, changed in place.
    return_rms : RunningMeanStd
        Changed in place.
    tensors : dict of str to Tensor
        As written by :func:`learner_tensors` (``train_state.*`` may be absent: checkpoints
        written before those statistics existed).
    param_groups : list of dict
        :func:`param_groups_state` of the saved optimizer.

    Raises
    ------
    ValueError
        A part does not load (the message names it).
    """
    learner.policy.load_state_dict(
        {k.removeprefix("policy."): v for k, v in tensors.items() if k.startswith("policy.")}
    )
    optimizer = learner.optimizer
    optimizer_state: dict[str, Any] = {"state": defaultdict(dict), "param_groups": []}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            optimizer_state["state"][int(index)][name] = value
    first = 0
    for group, saved_group in zip(optimizer.param_groups, param_groups, strict=True):
        restored = {k: (tuple(v) if isinstance(v, list) else v) for k, v in saved_group.items()}
        restored["params"] = list(range(first, first + len(group["params"])))
        optimizer_state["param_groups"].append(restored)
        first += len(group["params"])
    optimizer_state["state"] = dict(optimizer_state["state"])
    try:
        optimizer.load_state_dict(optimizer_state)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"optimizer state does not load: {err!r}") from None
    return_rms.mean = tensors["return_rms.mean"].numpy().copy()
    return_rms.var = tensors["return_rms.var"].numpy().copy()
    return_rms.count = float(tensors["return_rms.count"])
    try:
        th.set_rng_state(tensors["rng.torch"])
    except RuntimeError as err:
        raise ValueError(f"tensor 'rng.torch' is not a torch RNG state ({err})") from None
    train_state = {
        k.removeprefix("train_state."): v
        for k, v in tensors.items()
        if k.startswith("train_state.")
    }
    if train_state:  # checkpoints written before these statistics existed have none
        try:
            learner.train_state.load_state_dict(train_state)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"invalid train_state tensors: {err!r}") from None


def carry_tensors(
    last_obs: np.ndarray, episode_starts: np.ndarray, lstm_states: tuple[th.Tensor, ...]
) -> dict[str, th.Tensor]:
    """
    The state a rollout carries to the next one, as ``rollout.*`` tensors.

    Parameters
    ----------
    last_obs : ndarray
        The last observation of each env.
    episode_starts : ndarray
        Whether it starts an episode.
    lstm_states : tuple of Tensor
        The LSTM (h, c) after it.

    Returns
    -------
    dict of str to Tensor
    """
    tensors = {
        "rollout.last_obs": th.as_tensor(np.asarray(last_obs)),
        "rollout.episode_starts": th.as_tensor(np.asarray(episode_starts, dtype=bool)),
    }
    for i, s in enumerate(lstm_states):
        tensors[f"rollout.lstm.{i}"] = s
    return tensors
