"""DistributionalPPO's inputs and outputs besides training: prediction, the model's state as
named tensors (for checkpoints and PBT) and save/load. A base class of
:class:`~tradingbot.algo.ppo.DistributionalPPO`, which provides the attributes it reads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.type_aliases import GymEnv

from tradingbot.algo.config import PPOConfig
from tradingbot.algo.learner import Learner
from tradingbot.algo.model_state import (
    carry_tensors,
    learner_tensors,
    load_learner_tensors,
    param_groups_state,
)
from tradingbot.algo.persistence import checkpoint_path, load_model, save_model
from tradingbot.algo.policy import LSTMStates, PolicyStep, RecurrentActorCritic
from tradingbot.algo.prediction import predict_step
from tradingbot.algo.train_steps import return_scale

SelfModelIO = TypeVar("SelfModelIO", bound="ModelIO")


class ModelIO:
    """Prediction, state tensors and save/load of a DistributionalPPO (see the module)."""

    config: PPOConfig
    policy: RecurrentActorCritic
    optimizer: th.optim.Optimizer
    return_rms: RunningMeanStd
    observation_space: spaces.Space
    action_space: spaces.Space
    num_timesteps: int
    _n_updates: int
    _last_obs: Any
    _last_episode_starts: Any
    _last_lstm_states: LSTMStates
    learner: Learner

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """
        Action for an observation (or a batch) given the LSTM state, like RecurrentPPO.

        Parameters
        ----------
        observation : ndarray
            One observation or a batch (n_envs, *obs_shape).
        state : tuple of ndarray, optional
            The state returned by the previous call (``None``: zeros).
        episode_start : ndarray, optional
            1 where an observation starts an episode (``None``: no reset).
        deterministic : bool
            Use the mode of the action distribution. Otherwise sample it; under gSDE
            (``exploration.mode``) every call draws new noise matrices, so each call samples
            the per-step distribution (SB3 keeps its matrices until ``reset_noise``).

        Returns
        -------
        tuple
            (actions, state) where state is the LSTM (h, c), each (n_envs, 2 * hidden).
        """
        actions, new_state, _ = self.predict_details(
            observation, state, episode_start, deterministic
        )
        return actions, new_state

    def predict_details(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...], PolicyStep]:
        """:meth:`predict`, plus the policy's full step output (quantiles and value in return
        units, de-normalized; action distribution parameters) for backtests and signals."""
        return predict_step(
            self.policy,
            observation,
            state,
            episode_start,
            deterministic,
            return_scale(self.return_rms, self.config.normalize_returns),
            self.observation_space,
            self.action_space,
        )

    # ---------------------------------------------------------------------------------------
    def state_tensors(self) -> tuple[dict[str, th.Tensor], dict[str, Any]]:
        """
        Every tensor of the model's training state (not the environments'), and the JSON-able
        rest: what a checkpoint needs to continue the run bit for bit on CPU.

        Returns
        -------
        tuple of (dict of str to Tensor, dict)
            Tensors ``policy.*``, ``optimizer.*``, ``return_rms.*``, ``rng.torch``,
            ``train_state.*`` and, once a run has started, ``rollout.*`` (the carried
            observation, episode starts and LSTM states); and ``num_timesteps``,
            ``n_updates`` and the optimizer's ``optimizer_param_groups``.
        """
        tensors = learner_tensors(self.learner, self.return_rms)
        if self._last_obs is not None:
            tensors.update(
                carry_tensors(
                    self._last_obs,  # type: ignore[arg-type]
                    self._last_episode_starts,  # type: ignore[arg-type]
                    self._last_lstm_states,
                )
            )
        state: dict[str, Any] = {
            "num_timesteps": self.num_timesteps,
            "n_updates": self._n_updates,
            "optimizer_param_groups": param_groups_state(self.optimizer),
        }
        return tensors, state

    def load_state_tensors(self, tensors: dict[str, th.Tensor], state: dict[str, Any]) -> None:
        """
        Restore :meth:`state_tensors`' output (names, shapes and dtypes already checked, as
        :func:`~tradingbot.algo.persistence.restore_model` does) and re-derive the inference
        weights.

        Parameters
        ----------
        tensors : dict of str to Tensor
            As :meth:`state_tensors` wrote them (``rollout.*`` optional).
        state : dict
            Its JSON-able part: ``num_timesteps``, ``n_updates``, ``optimizer_param_groups``.

        Raises
        ------
        ValueError
            A part does not load (the message names it).
        """
        load_learner_tensors(
            self.learner, self.return_rms, tensors, state["optimizer_param_groups"]
        )
        self.num_timesteps = int(state["num_timesteps"])
        self._n_updates = int(state["n_updates"])
        if "rollout.last_obs" in tensors:
            self._last_obs = tensors["rollout.last_obs"].numpy().copy()
            self._last_episode_starts = tensors["rollout.episode_starts"].numpy().copy()
            n_states = len(self._last_lstm_states)
            self._last_lstm_states = LSTMStates(
                *(tensors[f"rollout.lstm.{i}"].clone() for i in range(n_states))
            )
        self.policy.refresh_rollout_weights()

    def save(  # type: ignore[override]
        self,
        path: str | os.PathLike[str],
        config: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
    ) -> Path:
        """Write the full training state to one safetensors checkpoint (see
        :mod:`tradingbot.algo.persistence`); no pickle. A ``.zip`` suffix (SB3's
        CheckpointCallback adds one) becomes ``.safetensors``. Returns the file written."""
        save_model(self, path, config=config, metrics=metrics)
        return checkpoint_path(path)

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfModelIO],
        path: str | os.PathLike[str],
        env: GymEnv | None = None,
        policy: Any = "MlpLstmPolicy",
        **kwargs: Any,
    ) -> SelfModelIO:
        """Rebuild a model from :meth:`save`'s checkpoint (never unpickles). ``env``
        (optional) must have the saved observation and action spaces; with it, training
        continues exactly where the checkpoint left off (``learn(...,
        reset_num_timesteps=False)``). ``policy``: the policy the model was trained with (as
        given to the constructor)."""
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        return load_model(cls, path, env, policy)
