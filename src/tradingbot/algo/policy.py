"""Recurrent actor-critic: squashed Gaussian (or categorical) actor, twin quantile critics."""

from __future__ import annotations

import math

import numpy as np
import torch as th
from gymnasium import spaces
from torch import nn
from torch.nn import functional as F

from tradingbot.algo.config import PPOConfig
from tradingbot.algo.distributions import categorical_log_prob, gaussian_entropy
from tradingbot.algo.exploration import (
    box_log_prob,
    gaussian_raw_action,
    head_with_features,
    rollout_distribution,
    rollout_noise,
    squash_action,
    state_dependent_std,
)
from tradingbot.algo.fast.inference import (
    LSTMStates,
    RolloutWeights,
    derive_rollout_weights,
    fused_step,
)
from tradingbot.algo.fast.sequence import lstms_over_chunks
from tradingbot.algo.heads import TwinQuantileHead, actor_critic_lstms, actor_output_layer, mlp
from tradingbot.algo.losses import midpoint_taus
from tradingbot.algo.obs_normalization import normalized, observation_normalizer
from tradingbot.algo.policy_outputs import PolicyStep, SequenceEvaluation


class RecurrentActorCritic(nn.Module):
    """
    Recurrent actor-critic for DistributionalPPO.

    Actor and critic each read the observation through their own single-layer LSTM (or one shared
    LSTM), then an MLP; rollouts step both LSTMs together, with one input matmul, one sigmoid
    and fused output layers (see :meth:`rollout_weights`). The actor is a diagonal Gaussian with a
    state-independent log-std bounded to ``[log_std_min, log_std_max]`` by a sigmoid, squashed by
    tanh into the Box action range (log-probabilities include the change of variables), or a
    categorical for Discrete actions; ``exploration`` offers a state-dependent std (gSDE) and a
    clip instead of the tanh (:mod:`tradingbot.algo.exploration`). The critic has 2 (twin) or
    1 quantile heads reading the critic LSTM; each head has its own MLP and outputs monotone
    quantiles at midpoint taus. LSTM states are replaced by zeros where an episode starts,
    before a step, in rollouts and in training (replaced, not multiplied by
    ``1 - episode_start``: a NaN state times 0 stays NaN).

    Parameters
    ----------
    observation_space : spaces.Space
        Box observation space (flattened).
    action_space : spaces.Space
        Box (finite bounds) or Discrete action space.
    config : PPOConfig
        Hyperparameters; the policy reads ``lstm_hidden_size``, ``shared_lstm``, ``net_arch``,
        ``n_quantiles``, ``twin_critics``, ``critic_value``, the ``log_std_*``,
        ``exploration``, ``activation`` and ``ortho_init``.
    """

    def __init__(
        self, observation_space: spaces.Space, action_space: spaces.Space, config: PPOConfig
    ) -> None:
        super().__init__()
        if not isinstance(observation_space, spaces.Box):
            raise TypeError(f"observation space must be a Box, got {observation_space}")
        self.obs_dim = int(np.prod(observation_space.shape))
        self.hidden_size = config.lstm_hidden_size
        self.shared_lstm = config.shared_lstm
        self.critic_value = config.critic_value
        self.n_critics = 2 if config.twin_critics else 1
        self.discrete = isinstance(action_space, spaces.Discrete)
        self.gsde = config.exploration.mode == "gsde"
        self.sample_freq = config.exploration.sample_freq
        self.squash_mode = config.exploration.squash
        if self.discrete and self.gsde:
            raise ValueError("exploration.mode 'gsde' needs a Box action space, got Discrete")
        # Separate actor and critic LSTMs (one shared LSTM optional). Their states travel
        # together as (batch, n_lstms * H): columns [0, H) the actor's, [H, 2H) the critic's.
        self.actor_lstm, critic_lstm = actor_critic_lstms(
            self.obs_dim, self.hidden_size, self.shared_lstm
        )
        self.state_size = (1 if critic_lstm is None else 2) * self.hidden_size
        network = (config.activation, config.ortho_init)
        self.actor_mlp = mlp(self.hidden_size, config.net_arch, *network)
        actor_out = config.net_arch[-1] if config.net_arch else self.hidden_size
        if self.discrete:
            self.action_dim = 1
            self.actor_head = actor_output_layer(actor_out, int(action_space.n), config.ortho_init)
        elif isinstance(action_space, spaces.Box):
            if not np.all(np.isfinite(action_space.low)) or not np.all(
                np.isfinite(action_space.high)
            ):
                raise ValueError(f"Box action space must have finite bounds, got {action_space}")
            self.action_dim = int(np.prod(action_space.shape))
            self.actor_head = actor_output_layer(actor_out, self.action_dim, config.ortho_init)
            low = th.as_tensor(action_space.low, dtype=th.float32).reshape(-1)
            high = th.as_tensor(action_space.high, dtype=th.float32).reshape(-1)
            self.register_buffer("action_center", (high + low) / 2)
            self.register_buffer("action_half_range", (high - low) / 2)
            self.log_std_min = config.log_std_min
            self.log_std_range = config.log_std_max - config.log_std_min
            init_fraction = (config.log_std_init - config.log_std_min) / self.log_std_range
            shape = (actor_out, self.action_dim) if self.gsde else (self.action_dim,)
            self.log_std_logit = nn.Parameter(
                th.full(shape, math.log(init_fraction / (1 - init_fraction)))
            )
        else:
            raise TypeError(f"action space must be Box or Discrete, got {action_space}")
        # Registered after every actor parameter: each network's parameters are consecutive
        # (see network_sizes).
        self.critic_lstm = critic_lstm
        self.critic_head = TwinQuantileHead(
            self.hidden_size, config.net_arch, self.n_critics, config.n_quantiles, *network
        )
        self.register_buffer("taus", midpoint_taus(config.n_quantiles))
        # The fused inference weights (see rollout_weights), derived on demand.
        self._rollout_weights: RolloutWeights | None = None
        # Observation statistics owned by the algorithm (None: off; see obs_normalization).
        self.obs_normalizer = observation_normalizer(self.obs_dim, config.observation_normalization)

    # ----------------------------------------------------------------------------------------
    @property
    def lstms(self) -> list[nn.LSTM]:
        """The LSTMs in state-column order: the actor's, then the critic's (if not shared)."""
        return [m for m in (self.actor_lstm, self.critic_lstm) if m is not None]

    def critic_parameters(self) -> list[nn.Parameter]:
        """Parameters of the critic: its quantile heads and the LSTM it reads."""
        return [*self.critic_head.parameters(), *self.lstms[-1].parameters()]

    def network_sizes(self) -> list[int]:
        """Numbers of parameter elements of the actor (its LSTM, MLP, head and log-std) and of
        the critic (its LSTM and quantile heads), which :meth:`parameters` yields in that order,
        the actor's first. With a shared LSTM the LSTM counts with the actor."""
        critic = {id(p) for p in self.critic_head.parameters()}
        if self.critic_lstm is not None:
            critic |= {id(p) for p in self.critic_lstm.parameters()}
        owners = [int(id(p) in critic) for p in self.parameters()]
        if owners != sorted(owners):
            raise RuntimeError("the actor's parameters must all come before the critic's")
        sizes = [0, 0]
        for owner, param in zip(owners, self.parameters(), strict=True):
            sizes[owner] += param.numel()
        return sizes

    def initial_state(self, batch_size: int) -> LSTMStates:
        """Zero LSTM states for ``batch_size`` environments."""
        zeros = th.zeros(batch_size, self.state_size, device=self.taus.device)
        return LSTMStates(zeros, zeros.clone())

    def log_std(self) -> th.Tensor:
        """Bounded log standard deviation of the pre-squash Gaussian, shape (action_dim,);
        under gSDE the log of ``sigma``, (n_features, action_dim)."""
        return self.log_std_min + self.log_std_range * th.sigmoid(self.log_std_logit)

    def value_from_quantiles(self, quantiles: th.Tensor) -> th.Tensor:
        """Min (or mean) over critics of each critic's quantile mean: (..., K, N) -> (...)."""
        means = quantiles.mean(dim=-1)
        return means.min(dim=-1).values if self.critic_value == "min" else means.mean(dim=-1)

    def squash(self, raw_action: th.Tensor) -> th.Tensor:
        """Map pre-squash Gaussian samples into the Box action range (tanh, or a clip)."""
        center, half_range = self.action_center, self.action_half_range
        return squash_action(raw_action, self.squash_mode, center, half_range)

    def rollout_noise(self, n_steps: int, n_envs: int, weights: RolloutWeights) -> th.Tensor | None:
        """The noise of a rollout's steps, drawn at its start
        (:func:`~tradingbot.algo.exploration.rollout_noise`; ``None``: categorical)."""
        if weights.std is None:
            return None
        return rollout_noise(weights.std, n_steps, n_envs, self.sample_freq if self.gsde else None)

    # ----------------------------------------------------------------------------------------
    def rollout_weights(self) -> RolloutWeights:
        """The inference weights of :meth:`rollout_step` last derived by
        :meth:`refresh_rollout_weights` (derived now if they never were). The algorithm
        refreshes them at the start of each rollout and after each update; code that changes
        the parameters otherwise calls :meth:`refresh_rollout_weights` itself."""
        if self._rollout_weights is None:
            return self.refresh_rollout_weights()
        return self._rollout_weights

    @th.no_grad()
    def refresh_rollout_weights(self) -> RolloutWeights:
        """Derive the inference weights from the current parameters
        (:func:`~tradingbot.algo.fast.inference.derive_rollout_weights`), keep them for
        :meth:`step` and :meth:`predict_values`, and return them."""
        head = self.critic_head
        actor_linears = [m for m in self.actor_mlp if isinstance(m, nn.Linear)]
        # gSDE: the actor's output carries its features after the mean (an identity block).
        actor_head = head_with_features(self.actor_head) if self.gsde else self.actor_head
        weights = derive_rollout_weights(
            self.lstms,
            [*actor_linears, actor_head],
            head.first,
            list(head.weights),
            list(head.biases),
            self.n_critics,
            self.shared_lstm,
            None if self.discrete else self.log_std(),
            head.activation,
        )
        self._rollout_weights = weights
        return weights

    def rollout_step(
        self,
        obs: th.Tensor,
        states: LSTMStates,
        keep: th.Tensor | None,
        weights: RolloutWeights,
    ) -> tuple[th.Tensor, th.Tensor, LSTMStates]:
        """The network part of a rollout step: one fused LSTM cell step and the fused
        actor/critic layers (:func:`~tradingbot.algo.fast.inference.fused_step`; no grad, call
        it under ``th.inference_mode``). Returns the actor output, the critics' pre-quantile
        output (see :meth:`rollout_outputs`) and the new LSTM states."""
        return fused_step(obs, states, keep, weights)

    def sample_action(
        self,
        actor_out: th.Tensor,
        weights: RolloutWeights,
        noise: th.Tensor | None = None,
        deterministic: bool = False,
    ) -> tuple[th.Tensor, th.Tensor]:
        """(env action, raw action) from the actor output. ``noise`` is the standard normal
        sample of a Gaussian policy, or under gSDE each env's noise matrix (drawn here when
        ``None``)."""
        if self.discrete:
            if deterministic:
                index = actor_out.argmax(dim=-1, keepdim=True)
            else:
                index = th.multinomial(F.softmax(actor_out, dim=-1), 1)
            return index.squeeze(-1), index.to(th.float32)
        assert weights.std is not None
        gsde_actions = self.action_dim if self.gsde else None
        raw_action = gaussian_raw_action(actor_out, weights.std, noise, deterministic, gsde_actions)
        return self.squash(raw_action), raw_action

    def rollout_outputs(
        self,
        actor_out: th.Tensor,
        critic_raw: th.Tensor,
        raw_action: th.Tensor,
        weights: RolloutWeights,
        noise: th.Tensor | None = None,
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
        """
        (log_prob, value, quantiles, dist_params) of :meth:`rollout_step` outputs with any
        leading shape, so a whole rollout's can be computed in one pass at its end.

        Parameters
        ----------
        noise : th.Tensor | None
            The standard normal sample behind ``raw_action`` (Gaussian policy): the log-probability
            then uses it instead of recomputing it from ``raw_action``. Not read under gSDE.
        """
        quantiles = TwinQuantileHead.monotone(critic_raw)
        if self.discrete:
            log_prob = categorical_log_prob(F.log_softmax(actor_out, dim=-1), raw_action)
            dist_params = actor_out
        else:
            w, gsde_actions = weights, self.action_dim if self.gsde else None
            assert w.log_std is not None and w.std is not None
            mean, log_std, std = rollout_distribution(actor_out, w.log_std, w.std, gsde_actions)
            noise, half_range = None if self.gsde else noise, self.action_half_range
            log_prob = box_log_prob(self.squash_mode, mean, raw_action, log_std, half_range, noise)
            dist_params = th.cat([mean, std], dim=-1)
        return log_prob, self.value_from_quantiles(quantiles), quantiles, dist_params

    @th.inference_mode()
    def step(
        self,
        obs: th.Tensor,
        states: LSTMStates,
        episode_starts: th.Tensor,
        deterministic: bool = False,
        weights: RolloutWeights | None = None,
    ) -> PolicyStep:
        """
        One rollout step for a batch of environments (rollouts use :meth:`rollout_step` and
        :meth:`rollout_outputs` directly, which compute the same).

        Parameters
        ----------
        obs : th.Tensor
            Raw observations (normalized here if ``obs_normalizer``), shape (n_envs, obs_dim).
        states : LSTMStates
            LSTM states before this step (not yet reset).
        episode_starts : th.Tensor
            1.0 where ``obs`` is the first of an episode, shape (n_envs,).
        deterministic : bool
            Take the mode (tanh of the mean, or the argmax) instead of sampling.
        weights : RolloutWeights | None
            :meth:`rollout_weights` of the current parameters (computed if ``None``).
        """
        weights = self.rollout_weights() if weights is None else weights
        keep = (1.0 - episode_starts).unsqueeze(-1)
        obs = normalized(self.obs_normalizer, obs)
        actor_out, critic_raw, new_states = self.rollout_step(obs, states, keep, weights)
        noise = None  # gSDE: sample_action draws one noise matrix per env
        independent = not self.discrete and not self.gsde
        if independent and not deterministic:
            noise = th.randn_like(actor_out)
        action, raw_action = self.sample_action(actor_out, weights, noise, deterministic)
        if deterministic and independent:
            noise = th.zeros_like(actor_out)
        log_prob, value, quantiles, dist_params = self.rollout_outputs(
            actor_out, critic_raw, raw_action, weights, noise
        )
        return PolicyStep(
            action, raw_action, log_prob, value, quantiles, dist_params, new_states
        )  # fields in PolicyStep's order

    @th.inference_mode()
    def predict_values(
        self,
        obs: th.Tensor,
        states: LSTMStates,
        episode_starts: th.Tensor,
        weights: RolloutWeights | None = None,
    ) -> th.Tensor:
        """Critic value (normalized units) of raw ``obs`` given the states before it, (batch,)."""
        weights = self.rollout_weights() if weights is None else weights
        keep = (1.0 - episode_starts).unsqueeze(-1)
        obs = normalized(self.obs_normalizer, obs)
        _, critic_raw, _ = self.rollout_step(obs, states, keep, weights)
        return self.value_from_quantiles(TwinQuantileHead.monotone(critic_raw))

    def evaluate_sequences(
        self,
        obs: th.Tensor,
        episode_starts: th.Tensor,
        initial_states: LSTMStates,
        raw_actions: th.Tensor,
    ) -> SequenceEvaluation:
        """
        Evaluate stored actions over sequence chunks (training, with gradients).

        Parameters
        ----------
        obs : th.Tensor
            Observations as stored (normalized under ``obs_normalizer``), shape (C, L, obs_dim).
        episode_starts : th.Tensor
            Episode-start flags, shape (C, L).
        initial_states : LSTMStates
            Stored LSTM states before each chunk's first step, each (C, 2H).
        raw_actions : th.Tensor
            Stored raw actions, shape (C, L, action_dim).

        Returns
        -------
        SequenceEvaluation
            Flattened (C * L, ...) log-probs, entropies, quantiles and distribution params.
        """
        features = self.sequence_features(obs, episode_starts, initial_states)
        return self.evaluate_features(*features, raw_actions)

    def sequence_features(
        self, obs: th.Tensor, episode_starts: th.Tensor, initial_states: LSTMStates
    ) -> tuple[th.Tensor, ...]:
        """The LSTMs' part of :meth:`evaluate_sequences`: the actor's and critic's outputs."""
        lstm_seqs = lstms_over_chunks(self.lstms, obs, episode_starts, *initial_states)
        return lstm_seqs[0], lstm_seqs[-1]

    def evaluate_features(
        self, actor_seq: th.Tensor, critic_seq: th.Tensor, raw_actions: th.Tensor
    ) -> SequenceEvaluation:
        """The part of :meth:`evaluate_sequences` after the LSTMs, from their outputs
        ``actor_seq`` and ``critic_seq`` (C, L, H): the heads and the distributions, a graph of
        small ops without data-dependent shapes (what ``compile`` compiles)."""
        batch = actor_seq.shape[0] * actor_seq.shape[1]
        features = self.actor_mlp(actor_seq.reshape(batch, -1))
        actor_out = self.actor_head(features)
        quantiles = self.critic_head(critic_seq.reshape(batch, -1))
        raw_actions = raw_actions.reshape(batch, -1)
        if self.discrete:
            log_probs = F.log_softmax(actor_out, dim=-1)
            entropy = -(log_probs.exp() * log_probs).sum(dim=-1)
            log_prob = categorical_log_prob(log_probs, raw_actions)
            dist_params = actor_out
        else:
            if self.gsde:  # detached features, as SB3's default (learn_features=False)
                log_std = th.log(state_dependent_std(features.detach(), th.exp(self.log_std())))
            else:
                log_std = self.log_std().expand_as(actor_out)
            entropy = gaussian_entropy(log_std)  # of the pre-squash Gaussian (see there)
            log_prob = box_log_prob(
                self.squash_mode, actor_out, raw_actions, log_std, self.action_half_range
            )
            # exp after the log-prob, as before gSDE: the order of the graph's nodes fixes the
            # order in which backward sums gradients, so the default path stays bit-identical.
            dist_params = th.cat([actor_out, th.exp(log_std)], dim=-1)
        return SequenceEvaluation(log_prob, entropy, quantiles, dist_params)
