"""DistributionalPPO: recurrent PPO with twin quantile critics, in Stable-Baselines3 conventions."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback
from stable_baselines3.common.utils import safe_mean
from stable_baselines3.common.vec_env import VecEnv

from tradingbot.algo.buffer import RecurrentRolloutBuffer
from tradingbot.algo.config import PPOConfig
from tradingbot.algo.gradients import FlatGradients
from tradingbot.algo.guard import StepUndo
from tradingbot.algo.losses import cvar_from_quantiles, explained_variance, quantile_spread
from tradingbot.algo.persistence import checkpoint_path, restore_model, save_model
from tradingbot.algo.policy import LSTMStates, PolicyStep, RecurrentActorCritic
from tradingbot.algo.risk import dual_ascent, empirical_cvar, shape_advantages
from tradingbot.algo.robust import robust_step
from tradingbot.algo.rollout import collect_rollouts
from tradingbot.algo.saved_state import read_saved_model
from tradingbot.algo.schedules import (
    adapt_clip_range,
    adapt_kl_beta,
    decay_awr_coef,
    entropy_coef,
    linear_schedule,
    update_entropy_boost,
    warmup_coef,
)
from tradingbot.algo.state import TrainState
from tradingbot.algo.update import (
    UpdateContext,
    accumulate_gradients,
    apply_step,
    build_optimizer,
    build_scaler,
    kl_after_update,
)
from tradingbot.checkpoint import CheckpointError

SelfDistributionalPPO = TypeVar("SelfDistributionalPPO", bound="DistributionalPPO")
LOGGER = logging.getLogger(__name__)  # warnings (``log`` in train() is the SB3 logger)
# A return std that grows by more than this factor in one update is reported (an outlier reward
# or a broken environment; ordinary training moves it by a few percent per update).
RETURN_STD_JUMP = 100.0


class DistributionalPPO(BaseAlgorithm):
    """
    Recurrent (LSTM) PPO whose twin critics learn quantiles of the normalized return.

    One update: collect ``n_steps`` per env with the LSTM states carried across rollouts, compute
    GAE(lambda) with the time-limit bootstrap from the de-normalized critic value, update the
    return statistics with this rollout's lambda-returns, then ``n_epochs`` passes over
    minibatches of whole ``seq_len`` chunks replayed from their stored LSTM states.

    Choices worth knowing: the entropy bonus uses the entropy of the pre-squash Gaussian (the
    tanh-squashed one has no closed form); the gradient norm is clipped separately for actor and
    critic (see ``train``); values and stored quantiles are in return units, the critic's
    outputs in normalized units.

    :param policy: ``"MlpLstmPolicy"`` or the :class:`RecurrentActorCritic` class.
    :param env: Gymnasium env, SB3 ``VecEnv`` or env id (``None`` only when loading).
    :param config: Hyperparameters as a :class:`PPOConfig`; or pass its fields as keyword
        arguments (``**hyperparams``), validated by :class:`PPOConfig` — not both.
    :param tensorboard_log: TensorBoard log directory (``None``: no TensorBoard).
    :param verbose: 0 silent, 1 training information, 2 debug.
    :param _init_setup_model: Build networks and buffers now (``load`` builds them later).
    """

    policy_aliases: ClassVar[dict[str, type[Any]]] = {"MlpLstmPolicy": RecurrentActorCritic}
    policy: RecurrentActorCritic  # type: ignore[assignment]

    def __init__(
        self,
        policy: str | type[RecurrentActorCritic],
        env: GymEnv | str | None,
        config: PPOConfig | None = None,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        _init_setup_model: bool = True,
        **hyperparams: Any,
    ) -> None:
        if config is None:
            config = PPOConfig(**hyperparams)
        elif hyperparams:
            raise TypeError(
                "pass hyperparameters either as config=PPOConfig(...) or as keyword arguments, "
                f"not both (got config and {sorted(hyperparams)})"
            )
        self.config = config
        super().__init__(
            policy=policy,  # type: ignore[arg-type]
            env=env,
            learning_rate=config.learning_rate,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=config.device,
            support_multi_env=True,
            seed=config.seed,
            supported_action_spaces=(spaces.Box, spaces.Discrete),
        )
        if _init_setup_model:
            self._setup_model()

    def _setup_lr_schedule(self) -> None:
        # SB3 calls lr_schedule(progress_remaining) before each update; built from the config
        # so that a changed config (PBT) takes effect through this one method.
        cfg = self.config
        self.lr_schedule = functools.partial(
            linear_schedule, cfg.learning_rate, cfg.learning_rate_final
        )

    def _setup_model(self) -> None:
        cfg = self.config
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(self.observation_space, self.action_space, cfg)
        self.policy = self.policy.to(self.device)
        self.gradients = FlatGradients(self.policy.parameters(), self.policy.network_sizes())
        self.optimizer = build_optimizer(cfg, self.gradients)
        # Statistics carried between updates (saved with the model): DSAC-T sigma_bar, KL beta,
        # CVaR multiplier, entropy boost, AWR coefficient, skipped steps, the gradient scaler.
        self.train_state = TrainState(
            kl_beta=cfg.kl_beta_init,
            risk_multiplier=cfg.risk.weight,
            awr_coef=cfg.awr.coef,
            scaler=build_scaler(cfg, self.policy.parameters()),
        )
        if isinstance(self.action_space, spaces.Discrete):
            dist_param_dim = int(self.action_space.n)
        else:
            dist_param_dim = 2 * self.policy.action_dim
        self.rollout_buffer = RecurrentRolloutBuffer(
            n_steps=cfg.n_steps,
            n_envs=self.n_envs,
            obs_dim=self.policy.obs_dim,
            action_dim=self.policy.action_dim,
            dist_param_dim=dist_param_dim,
            n_critics=self.policy.n_critics,
            n_quantiles=cfg.n_quantiles,
            state_size=self.policy.state_size,
            device=self.device,
        )
        # Running statistics of the lambda-returns; the critic predicts (G - mean) / std.
        self.return_rms = RunningMeanStd(shape=())
        self._last_lstm_states = self.policy.initial_state(self.n_envs)

    # ---------------------------------------------------------------------------------------
    def _return_scale(self) -> tuple[float, float]:
        """(mean, std) mapping the critic's normalized outputs to return units."""
        if not self.config.normalize_returns:
            return 0.0, 1.0
        return float(self.return_rms.mean), float(np.sqrt(self.return_rms.var + 1e-8))

    def _obs_tensor(self, obs: np.ndarray) -> th.Tensor:
        obs_t = th.as_tensor(obs, dtype=th.float32, device=self.device)
        return obs_t.reshape(-1, self.policy.obs_dim)

    def _env_actions(self, action: th.Tensor) -> np.ndarray:
        action_np = action.cpu().numpy()
        if isinstance(self.action_space, spaces.Box):
            return action_np.reshape(-1, *self.action_space.shape)
        return action_np.reshape(-1)

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RecurrentRolloutBuffer
    ) -> bool:
        """Fill ``rollout_buffer`` with ``n_steps`` steps per env (:mod:`tradingbot.algo.rollout`);
        False if a callback stopped training."""
        return collect_rollouts(self, env, callback, rollout_buffer)

    def train(self) -> None:
        """
        One PPO update over the rollout in the buffer.

        Before the epochs: return statistics (skipped for a rollout with non-finite returns),
        CVaR shaping of the advantages, the entropy coefficient. Each minibatch step (see
        :mod:`tradingbot.algo.update`): losses accumulated over microbatches -> non-finite
        guard on the loss and the gradient norms (skip, count, change nothing) -> KL early
        stop -> scaler -> per-network norm clip -> optimizer -> a step that left a non-finite
        parameter is undone (parameters and optimizer state) and counted as skipped. After: KL
        beta, AWR coefficient and logging.
        """
        cfg = self.config
        buffer = self.rollout_buffer
        state = self.train_state
        self._update_learning_rate(self.optimizer)
        log = self.logger.record

        # Return normalization without lag: this rollout's returns update the statistics before
        # they normalize this update's value targets.
        returns_finite = bool(th.isfinite(buffer.returns).all())
        if cfg.normalize_returns and returns_finite:
            std_before = self._return_scale()[1]
            self.return_rms.update(buffer.returns.reshape(-1).double().cpu().numpy())
            # The statistics never forget (running, not moving): one extreme return rescales
            # the critic's targets for the rest of training, so say so when it happens.
            jump = self._return_scale()[1] / std_before
            if self._n_updates > 0 and jump > RETURN_STD_JUMP:
                LOGGER.warning(
                    "warning: one rollout's returns (|G| up to %.3g) multiplied the return "
                    "std by %.3g (now %.3g); the running statistics keep this for the rest "
                    "of training",
                    float(buffer.returns.abs().max()),
                    jump,
                    self._return_scale()[1],
                )
        ret_mean, ret_std = self._return_scale()
        values, returns = buffer.values.reshape(-1), buffer.returns.reshape(-1)
        rollout_ev = explained_variance(values, returns)

        for name, value in self._risk_shaping(returns_finite).items():
            log(f"train/{name}", value)
        for name, value in self._lstm_norms().items():
            log(f"train/{name}", value)

        ent = cfg.entropy
        if ent.boost_factor > 1.0:
            state.entropy_boost = update_entropy_boost(
                state.entropy_boost, rollout_ev, ent.ev_threshold, ent.boost_factor, ent.boost_max
            )
        ent_coef = entropy_coef(
            cfg.ent_coef,
            ent.final,
            self._current_progress_remaining,
            state.entropy_boost,
            ent.minimum,
        )
        dsac_t = cfg.critic_adjust.mode == "dsac_t"
        if dsac_t and not state.sigma_bar > 0:
            # First update: start sigma_bar at the rollout's mean spread (normalized units).
            spread = float(quantile_spread(buffer.quantiles).mean()) / ret_std
            if np.isfinite(spread):
                state.sigma_bar = spread
        robust = None
        if cfg.robust.enabled:  # off: nothing runs and no random number is drawn
            robust = robust_step(
                cfg.robust, self._current_progress_remaining, self.observation_space, self.device
            )
            log("train/robust_epsilon", robust.epsilon)
        clip_range = linear_schedule(
            cfg.clip_range, cfg.clip_range_final, self._current_progress_remaining
        )
        if cfg.clip_adapt.enabled:
            if not state.clip_range > 0:  # first update
                state.clip_range = cfg.clip_range
            clip_range = state.clip_range
        adv_stats = None
        if cfg.advantage_normalization == "rollout":
            adv_stats = (float(buffer.advantages.mean()), float(buffer.advantages.std()))
        ctx = UpdateContext(
            ret_mean=ret_mean,
            ret_std=ret_std,
            ent_coef=ent_coef,
            clip_range=clip_range,
            adv_stats=adv_stats,
            sigma_bar=state.sigma_bar if dsac_t else None,
            kl_beta=state.kl_beta if cfg.kl_penalty else None,
            awr_coef=state.awr_coef if cfg.awr.enabled else None,
            robust=robust,
            vf_coef=warmup_coef(
                cfg.vf_coef,
                cfg.vf_coef_initial,
                cfg.vf_coef_warmup,
                self._current_progress_remaining,
            ),
        )

        chunks = buffer.to_chunks(cfg.seq_len)
        chunks_per_batch = cfg.batch_size // cfg.seq_len
        stats: dict[str, list[float]] = defaultdict(list)
        skipped_before = state.skipped_steps
        continue_training = True
        for epoch in range(cfg.n_epochs):
            # One gather per epoch; the minibatches are then views of consecutive chunks.
            shuffled = chunks.select(th.randperm(chunks.n_chunks))
            for start in range(0, chunks.n_chunks, chunks_per_batch):
                batch = shuffled.narrow(start, min(chunks_per_batch, chunks.n_chunks - start))
                metric_tensors = accumulate_gradients(self, batch, ctx, cfg.n_microbatches)
                # One device sync for the metrics and the per-network gradient norms (a norm is
                # non-finite when one of its network's gradient elements is).
                values = th.cat(
                    [th.stack(list(metric_tensors.values())), self.gradients.square_norms()]
                ).tolist()
                metrics = dict(zip(metric_tensors, values, strict=False))
                square_norms = values[len(metric_tensors) :]
                if not np.isfinite([metrics["loss"], *square_norms]).all():
                    # Skip: parameters, optimizer, scaler and statistics stay as they were.
                    self.gradients.zero_()
                    state.skipped_steps += 1
                    continue
                for name, value in metrics.items():
                    stats[name].append(value)
                kl = metrics["kl_exact" if cfg.kl_early_stop == "exact" else "approx_kl"]
                if cfg.target_kl is not None and kl > 1.5 * cfg.target_kl:
                    self.gradients.zero_()
                    continue_training = False
                    if self.verbose >= 1:
                        print(
                            f"Early stopping at epoch {epoch} with {cfg.kl_early_stop} KL {kl:.4f}"
                        )
                    break
                undo = StepUndo(self.gradients.param, self.optimizer)
                step_stats = apply_step(self, square_norms)
                if not undo.step_was_finite():
                    # A finite gradient gave a non-finite parameter (e.g. an overflowing step):
                    # undo the step and count it as skipped, so nothing non-finite is saved.
                    undo.restore()
                    self.policy.forget_rollout_weights()
                    self.gradients.zero_()
                    state.skipped_steps += 1
                    continue
                for name, value in step_stats.items():
                    stats[name].append(value)
                self._n_updates += 1
                if dsac_t:
                    rate = cfg.critic_adjust.rate
                    state.sigma_bar += rate * (metrics["quantile_spread"] - state.sigma_bar)
                    ctx = dataclasses.replace(ctx, sigma_bar=state.sigma_bar)
            if not continue_training:
                break

        if (cfg.kl_penalty or cfg.clip_adapt.enabled) and stats.get("kl_exact"):
            # The KL the update caused, measured after it (the minibatches' KLs are measured
            # before each step, the first at ~0).
            kl_after = kl_after_update(self, chunks)
            log("train/kl_after_update", kl_after)
            if cfg.kl_penalty:
                target = cfg.kl_penalty_target or cfg.target_kl
                assert target is not None
                state.kl_beta = adapt_kl_beta(state.kl_beta, kl_after, target)
                log("train/kl_beta", state.kl_beta)
            if cfg.clip_adapt.enabled:
                adapt = cfg.clip_adapt
                state.clip_range = adapt_clip_range(
                    state.clip_range, kl_after, adapt.target_kl, adapt.factor, adapt.min_clip,
                    adapt.max_clip,
                )  # fmt: skip
        if cfg.awr.enabled and stats.get("bc_ppo_ratio"):
            log("train/awr_coef", state.awr_coef)
            ratio = float(np.mean(stats["bc_ppo_ratio"]))
            state.awr_coef = decay_awr_coef(state.awr_coef, ratio, cfg.awr.max_ratio, cfg.awr.decay)
        for name, values_list in stats.items():
            if name != "loss":
                log(f"train/{name}", float(np.mean(values_list)))
        if dsac_t:
            log("train/sigma_bar", state.sigma_bar)
        log("train/ent_coef", ent_coef)
        log("train/clip_range", ctx.clip_range)
        if cfg.vf_coef_warmup > 0:
            log("train/vf_coef", ctx.vf_coef)
        if ent.boost_factor > 1.0:
            log("train/ent_boost", state.entropy_boost)
        log("train/skipped_steps", state.skipped_steps)
        log("train/skipped_steps_update", state.skipped_steps - skipped_before)
        log("train/early_stopped", int(not continue_training))
        log("train/explained_variance", rollout_ev)
        if not self.policy.discrete:
            with th.no_grad():
                log("train/std", float(th.exp(self.policy.log_std()).mean()))
        log("train/return_mean", ret_mean)
        log("train/return_std", ret_std)
        log("train/n_updates", self._n_updates, exclude="tensorboard")

    def _risk_shaping(self, returns_finite: bool) -> dict[str, float]:
        """CVaR metrics of the rollout and, under a risk mode, the Rockafellar-Uryasev shaping
        of the buffer's advantages (and the dual-ascent step of ``cvar_constraint``)."""
        risk = self.config.risk
        buffer = self.rollout_buffer
        state = self.train_state
        critic_cvar = cvar_from_quantiles(buffer.quantiles.mean(dim=-2), risk.alpha)
        cvar = empirical_cvar(buffer.returns, risk.alpha)
        stats = {"cvar_critic": float(critic_cvar.mean()), "cvar_empirical": cvar}
        if risk.mode == "none":
            return stats
        weight = risk.weight if risk.mode == "mean_cvar" else state.risk_multiplier
        buffer.advantages, penalty = shape_advantages(
            buffer.advantages, buffer.returns, buffer.quantiles, risk.alpha, weight
        )
        if risk.mode == "cvar_constraint" and returns_finite:
            state.risk_multiplier = dual_ascent(
                weight, cvar, risk.cvar_limit, risk.dual_lr, risk.max_multiplier
            )
        stats.update(risk_weight=weight, risk_penalty=float(penalty.mean()))
        return stats

    def _lstm_norms(self) -> dict[str, float]:
        """Mean L2 norm of the stored actor and critic LSTM hidden states of the rollout."""
        h = self.rollout_buffer.lstm_states[:, 0]
        size = self.policy.hidden_size
        norms = {"lstm_h_norm_actor": float(h[..., :size].norm(dim=-1).mean())}
        if not self.policy.shared_lstm:
            norms["lstm_h_norm_critic"] = float(h[..., size:].norm(dim=-1).mean())
        return norms

    # ---------------------------------------------------------------------------------------
    def learn(
        self: SelfDistributionalPPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "DistributionalPPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfDistributionalPPO:
        """Train for at least ``total_timesteps`` env steps (whole rollouts), SB3-style."""
        iteration = 0
        total_timesteps, callback = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        callback.on_training_start(locals(), globals())
        assert self.env is not None
        while self.num_timesteps < total_timesteps:
            if not self.collect_rollouts(self.env, callback, self.rollout_buffer):
                break
            iteration += 1
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            if log_interval is not None and iteration % log_interval == 0:
                self.dump_logs(iteration)
            self.train()
        callback.on_training_end()
        return self

    def dump_logs(self, iteration: int = 0) -> None:
        """Write rollout statistics and fps to the SB3 logger (as SB3's on-policy algorithms)."""
        assert self.ep_info_buffer is not None
        time_elapsed = max((time.time_ns() - self.start_time) / 1e9, sys.float_info.epsilon)
        fps = int((self.num_timesteps - self._num_timesteps_at_start) / time_elapsed)
        self.logger.record("time/iterations", iteration, exclude="tensorboard")
        if len(self.ep_info_buffer) > 0:
            self.logger.record(
                "rollout/ep_rew_mean", safe_mean([e["r"] for e in self.ep_info_buffer])
            )
            self.logger.record(
                "rollout/ep_len_mean", safe_mean([e["l"] for e in self.ep_info_buffer])
            )
        self.logger.record("time/fps", fps)
        self.logger.record("time/time_elapsed", int(time_elapsed), exclude="tensorboard")
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self.logger.dump(step=self.num_timesteps)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """
        Action for an observation (or a batch) given the LSTM state, like RecurrentPPO.

        :param observation: One observation or a batch (n_envs, *obs_shape).
        :param state: The state returned by the previous call (``None``: zeros).
        :param episode_start: 1 where an observation starts an episode (``None``: no reset).
        :param deterministic: Use the mode of the action distribution.
        :return: (actions, state) where state is the LSTM (h, c), each (n_envs, 2 * hidden).
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
        obs = np.asarray(observation, dtype=np.float32)
        vectorized = obs.shape != self.observation_space.shape
        obs_t = self._obs_tensor(obs)
        n_envs = obs_t.shape[0]
        if state is None:
            states = self.policy.initial_state(n_envs)
        else:
            states = LSTMStates(
                *(th.as_tensor(s, dtype=th.float32, device=self.device) for s in state)
            )
        if episode_start is None:
            starts = th.zeros(n_envs, device=self.device)
        else:
            starts = th.as_tensor(np.asarray(episode_start, dtype=np.float32), device=self.device)
        step = self.policy.step(obs_t, states, starts.reshape(n_envs), deterministic=deterministic)
        ret_mean, ret_std = self._return_scale()
        step = step._replace(
            quantiles=step.quantiles * ret_std + ret_mean, value=step.value * ret_std + ret_mean
        )
        actions = self._env_actions(step.action)
        new_state = tuple(s.cpu().numpy() for s in step.states)
        return (actions if vectorized else actions[0]), new_state, step

    # ---------------------------------------------------------------------------------------
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
        cls: type[SelfDistributionalPPO],
        path: str | os.PathLike[str],
        env: GymEnv | None = None,
        policy: str | type[RecurrentActorCritic] = "MlpLstmPolicy",
        **kwargs: Any,
    ) -> SelfDistributionalPPO:
        """Rebuild a model from :meth:`save`'s checkpoint (never unpickles). ``env``
        (optional) must have the saved observation and action spaces; with it, training
        continues exactly where the checkpoint left off (``learn(...,
        reset_num_timesteps=False)``). ``policy``: the policy the model was trained with (as
        given to the constructor)."""
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        # Everything the manifest claims is checked before the model is built (its policy
        # shapes against its hyperparameters too): a lying manifest allocates nothing.
        policy_class = cls.policy_aliases.get(policy) if isinstance(policy, str) else policy
        saved = read_saved_model(checkpoint_path(path), policy_class)
        config, observation_space, action_space = (
            saved.config,
            saved.observation_space,
            saved.action_space,
        )
        model = cls(policy, env, config=config, _init_setup_model=False)
        if env is None:
            model.observation_space, model.action_space = observation_space, action_space
            model.n_envs = 1
        elif model.observation_space != observation_space or model.action_space != action_space:
            raise CheckpointError(
                f"{saved.path}: env spaces ({model.observation_space}, {model.action_space}) "
                f"differ from the saved ones ({observation_space}, {action_space})"
            )
        model._setup_model()
        restore_model(model, path, saved)
        return model
