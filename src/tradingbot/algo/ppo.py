"""DistributionalPPO: recurrent PPO with twin quantile critics, in Stable-Baselines3 conventions."""

from __future__ import annotations

import functools
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback
from stable_baselines3.common.vec_env import VecEnv

from tradingbot.algo.buffer import RecurrentRolloutBuffer
from tradingbot.algo.config import PPOConfig
from tradingbot.algo.fast.compiled import use_compile
from tradingbot.algo.learner import Learner, build_learner
from tradingbot.algo.losses import explained_variance
from tradingbot.algo.model_io import ModelIO
from tradingbot.algo.obs_normalization import normalized
from tradingbot.algo.policy import RecurrentActorCritic
from tradingbot.algo.rollout import (
    RolloutSteps,
    env_actions,
    obs_tensor,
    truncation_values,
)
from tradingbot.algo.schedules import linear_schedule
from tradingbot.algo.train_steps import (
    absorb_rollout_observations,
    begin_update,
    end_update,
    return_scale,
    shape_rollout_advantages,
    update_context,
    update_return_statistics,
)
from tradingbot.algo.update import run_epochs
from tradingbot.algo.update_log import update_metrics

SelfDistributionalPPO = TypeVar("SelfDistributionalPPO", bound="DistributionalPPO")
# SB3's OnPolicyAlgorithm keeps copies of these config fields as attributes (it reads n_steps);
# set_hyperparameters keeps them in step with the config.
SB3_MIRRORS = ("n_steps", "gamma", "gae_lambda", "ent_coef", "vf_coef", "max_grad_norm")


class DistributionalPPO(ModelIO, OnPolicyAlgorithm):
    """
    Recurrent (LSTM) PPO whose twin critics learn quantiles of the normalized return.

    One update: collect ``n_steps`` per env with the LSTM states carried across rollouts, compute
    GAE(lambda) with the time-limit bootstrap from the de-normalized critic value, update the
    return statistics with this rollout's lambda-returns, then ``n_epochs`` passes over
    minibatches of whole ``seq_len`` chunks replayed from their stored LSTM states (the steps
    in order: :meth:`train`, and the README's "How one update flows").

    Choices worth knowing: the entropy bonus uses the entropy of the pre-squash Gaussian (the
    tanh-squashed one has no closed form); the gradient norm is clipped separately for actor and
    critic (``PPOConfig.grad_clip``); values and stored quantiles are in return units, the
    critic's outputs in normalized units. ``learn`` and ``dump_logs`` are SB3's
    ``OnPolicyAlgorithm``'s; ``config`` is the one home of the hyperparameters (SB3's mirrors
    ``n_steps``, ``gamma``, ``ent_coef``, ... follow it through :meth:`set_hyperparameters`).

    Parameters
    ----------
    policy : str or type
        ``"MlpLstmPolicy"`` or the :class:`RecurrentActorCritic` class (or a subclass).
    env : gymnasium.Env, VecEnv, str or None
        Gymnasium env, SB3 ``VecEnv`` or env id (``None`` only when loading).
    config : PPOConfig, optional
        Hyperparameters; or pass its fields as keyword arguments (``**hyperparams``),
        validated by :class:`PPOConfig`, not both.
    tensorboard_log : str, optional
        TensorBoard log directory (``None``: no TensorBoard).
    verbose : int
        0 silent, 1 training information, 2 debug.
    _init_setup_model : bool
        Build networks and buffers now (``load`` builds them later).
    """

    policy_aliases: ClassVar[dict[str, type[Any]]] = {"MlpLstmPolicy": RecurrentActorCritic}
    policy: RecurrentActorCritic  # type: ignore[assignment]
    rollout_buffer: RecurrentRolloutBuffer  # type: ignore[assignment]

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
            env=env,  # type: ignore[arg-type]
            learning_rate=config.learning_rate,
            **{name: getattr(config, name) for name in SB3_MIRRORS},
            use_sde=False,
            sde_sample_freq=-1,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=config.device,
            seed=config.seed,
            _init_setup_model=False,
            supported_action_spaces=(spaces.Box, spaces.Discrete),
        )
        if _init_setup_model:
            self._setup_model()

    def _setup_lr_schedule(self) -> None:
        # SB3 calls lr_schedule(progress_remaining) before each update; built from the config
        # so that a changed config (PBT) takes effect through set_hyperparameters.
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
        learner = build_learner(self.policy, cfg)
        self.gradients, self.optimizer = learner.gradients, learner.optimizer
        self.train_state = learner.train_state
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
        # The last rollout's raw observations for the observation statistics (None: none).
        self._rollout_raw_obs: list[th.Tensor] | None = None
        # Compile the update's loss (PPOConfig.compile); decided per learn call, and under
        # "auto", once on, kept on (the compilation is paid).
        self._compile_loss = False

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        # SB3's get_parameters/set_parameters: the policy (OnPolicyAlgorithm would also name
        # "policy.optimizer", which this policy does not have; the optimizer is the model's).
        return ["policy"], []

    def set_parameters(self, *args: Any, **kwargs: Any) -> None:
        """SB3's ``set_parameters``, then the inference weights re-derived from the loaded
        parameters."""
        super().set_parameters(*args, **kwargs)
        self.policy.refresh_rollout_weights()

    # ---------------------------------------------------------------------------------------
    @property
    def learner(self) -> Learner:
        """What an update reads and changes: policy, flat parameters, optimizer, train state
        and config (a view of the model's own; built on each access)."""
        return Learner(
            self.policy,
            self.gradients,
            self.optimizer,
            self.train_state,
            self.config,
            self._compile_loss,
        )

    @property
    def n_updates(self) -> int:
        """Optimizer steps taken (and kept) since the model was built."""
        return self._n_updates

    def return_scale(self) -> tuple[float, float]:
        """(mean, std) mapping the critic's normalized outputs to return units."""
        return return_scale(self.return_rms, self.config.normalize_returns)

    def reset_recurrent_state(self) -> None:
        """Zero the LSTM states carried between rollouts and mark every env as starting an
        episode (so the next rollout starts from a clean state)."""
        self._last_lstm_states = self.policy.initial_state(self.n_envs)
        self._last_episode_starts = np.ones(self.n_envs, dtype=bool)

    def set_hyperparameters(self, config: PPOConfig) -> None:
        """
        Make ``config`` take effect in the live model (PBT): the config itself (read at every
        update), the learning-rate schedule and the optimizer's learning rate, UPGD's sigma,
        the gradient scaler's alpha. The network shapes must not change.

        Parameters
        ----------
        config : PPOConfig
            The new hyperparameters.
        """
        self.config = config
        for name in SB3_MIRRORS:
            setattr(self, name, getattr(config, name))
        self._setup_lr_schedule()
        for group in self.optimizer.param_groups:
            group["lr"] = config.learning_rate
            if "sigma" in group:
                group["sigma"] = config.upgd.sigma
        scaler = self.train_state.scaler
        if scaler is not None:
            scaler.alpha = config.grad_scaler.alpha

    # ---------------------------------------------------------------------------------------
    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RecurrentRolloutBuffer,  # type: ignore[override]
        n_rollout_steps: int | None = None,
    ) -> bool:
        """
        Fill ``rollout_buffer`` with ``n_steps`` steps per env; False if a callback stopped
        training. Values and quantiles are stored in return units (de-normalized).
        ``callback.update_locals`` sees SB3's usual names (``self``, ``infos``, ``dones``,
        ``new_obs``, ``rewards``, ...).

        Per rollout, not per step: the inference weights (derived here from the current
        parameters), the noise of every step (``policy.rollout_noise``), and (after the loop, in
        :meth:`RolloutSteps.store`) log-probs, quantiles, values and distribution parameters
        from the stacked raw network outputs.
        """
        assert self._last_obs is not None and self._last_episode_starts is not None
        return_stats = self.return_scale()
        ret_mean, ret_std = return_stats
        callback.on_rollout_start()
        policy, device = self.policy, self.device
        n_steps, n_envs = rollout_buffer.n_steps, env.num_envs
        weights = policy.refresh_rollout_weights()
        noise = policy.rollout_noise(n_steps, n_envs, weights)
        terminal_values = th.zeros(n_steps, n_envs, device=device)
        steps = RolloutSteps()
        states = self._last_lstm_states
        raw_obs: list[th.Tensor] | None = None if policy.obs_normalizer is None else []
        for t in range(n_steps):
            starts_np = np.asarray(self._last_episode_starts, dtype=np.float32).reshape(n_envs)
            keep = None
            if starts_np.any():
                keep = th.as_tensor(1.0 - starts_np, device=device).unsqueeze(-1)
            obs = obs_tensor(self._last_obs, policy.obs_dim, device)  # type: ignore[arg-type]
            if raw_obs is not None:  # stored normalized: the update sees what the policy saw
                raw_obs.append(obs.clone())  # obs_tensor may alias the env's array
                obs = normalized(policy.obs_normalizer, obs)
            rollout_buffer.observations[t] = obs
            with th.inference_mode():
                actor_out, critic_raw, new_states = policy.rollout_step(obs, states, keep, weights)
                action, raw_action = policy.sample_action(
                    actor_out, weights, None if noise is None else noise[t]
                )
            new_obs, rewards, dones, infos = env.step(env_actions(action, self.action_space))
            self.num_timesteps += env.num_envs

            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)
            truncated = truncation_values(policy, infos, dones, new_states, weights, device)
            if truncated is not None:
                terminal_values[t, truncated[0]] = truncated[1] * ret_std + ret_mean
            steps.append(states, actor_out, critic_raw, raw_action, starts_np, rewards)
            states = new_states
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones

        steps.store(rollout_buffer, policy, weights, noise, terminal_values, return_stats)
        self._rollout_raw_obs = raw_obs
        self._last_lstm_states = states
        last_dones = th.as_tensor(dones, dtype=th.float32)
        last_obs = obs_tensor(new_obs, policy.obs_dim, device)
        last_values = policy.predict_values(last_obs, states, last_dones, weights)
        rollout_buffer.compute_returns_and_advantage(
            last_values * ret_std + ret_mean, last_dones, self.config.gamma, self.config.gae_lambda
        )
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def train(self) -> None:
        """
        One PPO update over the rollout in the buffer, step by step:

        1. the learning rate of this point of training;
        2. :func:`~tradingbot.algo.train_steps.update_return_statistics` with this rollout's
           returns (skipped for non-finite returns), then the return scale;
        3. :func:`~tradingbot.algo.train_steps.shape_rollout_advantages`: the CVaR-shaped
           advantages and multiplier, which replace the buffer's and the train state's;
        4. :func:`~tradingbot.algo.train_steps.begin_update` (entropy boost, first sigma_bar,
           first clip range) and :func:`~tradingbot.algo.train_steps.update_context`;
        5. :func:`~tradingbot.algo.update.run_epochs` over the rollout's chunks;
        6. :func:`~tradingbot.algo.train_steps.end_update` (KL beta, clip range, AWR);
        7. under ``observation_normalization``, the statistics absorb the rollout's raw
           observations and the LSTMs' input weights are rewritten to compute the same function
           of them (:func:`~tradingbot.algo.obs_normalization.absorb_observations`);
        8. the inference weights are re-derived from the new parameters; logging.
        """
        cfg, buffer, state = self.config, self.rollout_buffer, self.train_state
        progress = self._current_progress_remaining
        self._update_learning_rate(self.optimizer)
        returns_finite = update_return_statistics(
            self.return_rms, buffer.returns, cfg.normalize_returns, self._n_updates > 0
        )
        return_stats = self.return_scale()
        rollout_ev = explained_variance(buffer.values.reshape(-1), buffer.returns.reshape(-1))
        shaping = shape_rollout_advantages(
            buffer.advantages,
            buffer.returns,
            buffer.quantiles,
            cfg.risk,
            state.risk_multiplier,
            returns_finite,
        )
        buffer.advantages, state.risk_multiplier = shaping.advantages, shaping.risk_multiplier
        begin_update(state, cfg, rollout_ev, buffer.quantiles, return_stats[1])
        ctx = update_context(
            cfg,
            state,
            buffer.advantages,
            progress,
            return_stats,
            self.observation_space,
            self.device,
        )
        chunks = buffer.to_chunks(cfg.seq_len)
        skipped_before = state.skipped_steps
        result = run_epochs(self.learner, chunks, ctx, self.verbose)
        self._n_updates += result.n_steps
        adapted = end_update(self.learner, chunks, result.stats)
        absorb_rollout_observations(self.learner, self._rollout_raw_obs)
        self._rollout_raw_obs = None
        self.policy.refresh_rollout_weights()

        metrics = update_metrics(
            cfg,
            state,
            ctx,
            result,
            {**shaping.metrics, **adapted},
            skipped_before,
            rollout_ev,
            self.policy,
            buffer.lstm_states,
        )
        for name, value in metrics.items():
            self.logger.record(f"train/{name}", value)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    def learn(
        self: SelfDistributionalPPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "DistributionalPPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfDistributionalPPO:
        """Train for at least ``total_timesteps`` env steps (whole rollouts): SB3's
        ``OnPolicyAlgorithm.learn`` under this algorithm's TensorBoard name. Under
        ``PPOConfig.compile = 'auto'`` the update compiles when the run's total (with the steps
        already trained when ``reset_num_timesteps`` is off) reaches ``compile_min_timesteps``."""
        cfg = self.config
        run_total = total_timesteps + (0 if reset_num_timesteps else self.num_timesteps)
        kept = self._compile_loss and cfg.compile == "auto"
        self._compile_loss = kept or use_compile(
            cfg.compile, run_total, cfg.compile_min_timesteps, self.device
        )
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
