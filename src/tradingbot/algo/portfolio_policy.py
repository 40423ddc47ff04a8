"""A recurrent actor-critic shared across assets, for the portfolio environment.

The observation is (K, F + 1): each asset's features and current weight. Every asset is read by
the same encoder phi (an MLP); the assets meet only through a permutation-invariant pooling
(mean and max over assets of phi, and the cash weight 1 - sum of weights); the actor and critic
LSTMs run over that pooled portfolio state. The actor scores each asset from (phi_k, h_actor)
with one shared MLP, and cash from h_actor: the K + 1 scores are the mean of the Gaussian whose
tanh-squashed sample the environment turns into weights (softmax for long-only). The critic's
quantile heads read h_critic (the portfolio's return distribution). The log-std has one value
for all assets and one for cash. Hence permuting the assets permutes the action mean (and the
weights) the same way, and the parameters do not depend on K: one set of weights runs on any
number of assets.

It keeps :class:`~tradingbot.algo.policy.RecurrentActorCritic`'s interface (``rollout_step``,
``rollout_outputs``, ``evaluate_sequences``, ``initial_state``, ...), so
:class:`~tradingbot.algo.ppo.DistributionalPPO` trains it unchanged, with every risk option.
It does not use the base class's fused inference weights: :meth:`rollout_step` is the plain
network.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from torch import nn

from tradingbot.algo.config import PPOConfig
from tradingbot.algo.distributions import gaussian_entropy, squashed_gaussian_log_prob
from tradingbot.algo.fast.inference import LSTMStates, RolloutWeights, reset_started
from tradingbot.algo.fast.sequence import lstms_over_chunks
from tradingbot.algo.heads import TwinQuantileHead, actor_critic_lstms, mlp
from tradingbot.algo.losses import midpoint_taus
from tradingbot.algo.policy import RecurrentActorCritic, SequenceEvaluation
from tradingbot.errors import ConfigError


def critic_raw_output(head: TwinQuantileHead, features: th.Tensor) -> th.Tensor:
    """The quantile heads' last-layer output before :meth:`TwinQuantileHead.monotone`,
    (batch, n_critics, n_quantiles)."""
    x = head.first(features).view(-1, head.n_critics, head.first.out_features // head.n_critics)
    x = x.transpose(0, 1)
    for weight, bias in zip(head.weights, head.biases, strict=True):
        x = th.baddbmm(bias, head.activation(x), weight)
    return x.transpose(0, 1)


class PortfolioActorCritic(RecurrentActorCritic):
    """Permutation-equivariant recurrent actor-critic (see the module docstring).

    :param observation_space: Box of shape (K, F + 1), the last column the asset's weight.
    :param action_space: Box of shape (K + 1,) (K asset scores and cash).
    :param config: The PPO hyperparameters (LSTM size, shared LSTM, net_arch, quantiles, twin
        critics, log-std bounds) as :class:`RecurrentActorCritic` reads them.
    :param asset_embedding: Width of the per-asset encoder (``portfolio.asset_embedding``).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        config: PPOConfig,
        asset_embedding: int = 32,
    ) -> None:
        nn.Module.__init__(self)
        if config.observation_normalization.enabled:
            raise ConfigError(
                "algo.observation_normalization.enabled is not supported by the portfolio "
                "policy (its per-asset encoder reads the observation); the portfolio env's "
                "features are normalized already"
            )
        self.obs_normalizer = None
        for key, default in (("activation", "tanh"), ("ortho_init", True)):
            if getattr(config, key) != default:
                raise ConfigError(
                    f"algo.{key} {getattr(config, key)!r} is not supported by the portfolio "
                    f"policy (its encoder, actor and critic are built with {key} {default!r})"
                )
        if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 2:
            raise TypeError(f"observation space must be a (K, F + 1) Box, got {observation_space}")
        self.n_assets, self.n_inputs = (int(n) for n in observation_space.shape)
        if not isinstance(action_space, spaces.Box) or action_space.shape != (self.n_assets + 1,):
            raise TypeError(f"action space must be a Box of shape (K + 1,), got {action_space}")
        self.obs_dim = self.n_assets * self.n_inputs
        self.action_dim = self.n_assets + 1
        self.hidden_size = config.lstm_hidden_size
        self.shared_lstm = config.shared_lstm
        self.critic_value = config.critic_value
        self.n_critics = 2 if config.twin_critics else 1
        self.discrete = False
        if config.exploration != type(config.exploration)():
            raise ValueError(
                "the portfolio policy explores with a state-independent, tanh-squashed Gaussian; "
                f"exploration must keep its defaults, got {config.exploration.model_dump()}"
            )
        self.gsde, self.squash_mode = False, "tanh"
        self.config, self.asset_embedding = config, asset_embedding
        width = asset_embedding

        # Actor parameters first (network_sizes): the shared encoder counts with the actor, as a
        # shared LSTM does.
        self.encoder = mlp(self.n_inputs, [width, width], config.activation, config.ortho_init)
        pooled = 2 * width + 1
        self.actor_lstm, critic_lstm = actor_critic_lstms(
            pooled, self.hidden_size, self.shared_lstm
        )
        self.state_size = (1 if critic_lstm is None else 2) * self.hidden_size
        self.actor_mlp = mlp(
            width + self.hidden_size, config.net_arch, config.activation, config.ortho_init
        )
        actor_out = config.net_arch[-1] if config.net_arch else width + self.hidden_size
        self.actor_head = nn.Linear(actor_out, 1)
        self.cash_head = nn.Linear(self.hidden_size, 1)
        for head in (self.actor_head, self.cash_head):
            nn.init.orthogonal_(head.weight, gain=0.01)
            nn.init.zeros_(head.bias)
        low = th.as_tensor(action_space.low, dtype=th.float32).reshape(-1)
        high = th.as_tensor(action_space.high, dtype=th.float32).reshape(-1)
        # Not saved: they follow from the action space, whose size K may differ at load time.
        self.register_buffer("action_center", (high + low) / 2, persistent=False)
        self.register_buffer("action_half_range", (high - low) / 2, persistent=False)
        self.log_std_min = config.log_std_min
        self.log_std_range = config.log_std_max - config.log_std_min
        init_fraction = (config.log_std_init - config.log_std_min) / self.log_std_range
        # One log-std shared by the assets, one for cash (equivariant, independent of K).
        self.log_std_logit = nn.Parameter(
            th.full((2,), math.log(init_fraction / (1 - init_fraction)))
        )
        self.critic_lstm = critic_lstm
        self.critic_head = TwinQuantileHead(
            self.hidden_size,
            config.net_arch,
            self.n_critics,
            config.n_quantiles,
            config.activation,
            config.ortho_init,
        )
        self.register_buffer("taus", midpoint_taus(config.n_quantiles))
        self._rollout_weights: RolloutWeights | None = None

    # ----------------------------------------------------------------------------------------
    def log_std(self) -> th.Tensor:
        """Bounded log-std, shape (K + 1,): the assets' shared value, then cash's."""
        pair = self.log_std_min + self.log_std_range * th.sigmoid(self.log_std_logit)
        return th.cat([pair[:1].expand(self.n_assets), pair[1:]])

    def encode(self, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Per-asset embeddings (B, K, E) and the pooled portfolio state (B, 2E + 1) of flat
        observations (B, K * (F + 1))."""
        x = obs.reshape(obs.shape[0], self.n_assets, self.n_inputs)
        embedded = self.encoder(x)
        cash = 1.0 - x[..., -1].sum(dim=1, keepdim=True)
        pooled = th.cat([embedded.mean(dim=1), embedded.amax(dim=1), cash], dim=1)
        return embedded, pooled

    def actor_scores(self, embedded: th.Tensor, h_actor: th.Tensor) -> th.Tensor:
        """Gaussian means (B, K + 1): one shared score per asset from (phi_k, h), then cash."""
        context = h_actor.unsqueeze(1).expand(-1, embedded.shape[1], -1)
        scores = self.actor_head(self.actor_mlp(th.cat([embedded, context], dim=2))).squeeze(-1)
        return th.cat([scores, self.cash_head(h_actor)], dim=1)

    @th.no_grad()
    def refresh_rollout_weights(self) -> RolloutWeights:
        """Only the log-std is precomputed: :meth:`rollout_step` runs the plain network."""
        empty = th.empty(0, device=self.taus.device)
        log_std = self.log_std()
        self._rollout_weights = RolloutWeights(
            empty,
            [],
            empty,
            [],
            log_std,
            th.exp(log_std),
            self.hidden_size,
            self.action_dim,
            self.n_critics,
            self.critic_head.activation,
        )
        return self._rollout_weights

    def rollout_step(
        self,
        obs: th.Tensor,
        states: LSTMStates,
        keep: th.Tensor | None,
        weights: RolloutWeights,
    ) -> tuple[th.Tensor, th.Tensor, LSTMStates]:
        """One step of the network for a batch of environments (see
        :meth:`RecurrentActorCritic.rollout_step` for the contract)."""
        h, c = reset_started(states, keep)
        embedded, pooled = self.encode(obs)
        n = self.hidden_size
        hs, cs = [], []
        for k, lstm in enumerate(self.lstms):
            state = (
                h[None, :, n * k : n * (k + 1)].contiguous(),
                c[None, :, n * k : n * (k + 1)].contiguous(),
            )
            _, (h_k, c_k) = lstm(pooled.unsqueeze(1), state)
            hs.append(h_k[0])
            cs.append(c_k[0])
        actor_out = self.actor_scores(embedded, hs[0])
        critic_raw = critic_raw_output(self.critic_head, hs[-1])
        return actor_out, critic_raw, LSTMStates(th.cat(hs, dim=1), th.cat(cs, dim=1))

    def sequence_features(
        self, obs: th.Tensor, episode_starts: th.Tensor, initial_states: LSTMStates
    ) -> tuple[th.Tensor, ...]:
        """The encoder and the LSTMs: per-asset embeddings, actor and critic LSTM outputs."""
        n_chunks, seq_len = episode_starts.shape
        batch = n_chunks * seq_len
        embedded, pooled = self.encode(obs.reshape(batch, -1))
        lstm_seqs = lstms_over_chunks(
            self.lstms,
            pooled.view(n_chunks, seq_len, -1),
            episode_starts,
            initial_states.h,
            initial_states.c,
        )
        return embedded, lstm_seqs[0], lstm_seqs[-1]

    def evaluate_features(  # type: ignore[override]
        self,
        embedded: th.Tensor,
        actor_seq: th.Tensor,
        critic_seq: th.Tensor,
        raw_actions: th.Tensor,
    ) -> SequenceEvaluation:
        """The heads and distributions of :meth:`evaluate_sequences` from ``sequence_features``."""
        batch = actor_seq.shape[0] * actor_seq.shape[1]
        actor_out = self.actor_scores(embedded, actor_seq.reshape(batch, -1))
        quantiles = self.critic_head(critic_seq.reshape(batch, -1))
        log_std = self.log_std().expand_as(actor_out)
        entropy = gaussian_entropy(log_std)
        log_prob = squashed_gaussian_log_prob(
            actor_out, raw_actions.reshape(batch, -1), log_std, self.action_half_range
        )
        dist_params = th.cat([actor_out, th.exp(log_std)], dim=-1)
        return SequenceEvaluation(log_prob, entropy, quantiles, dist_params)


def policy_for_assets(policy: PortfolioActorCritic, n_assets: int) -> PortfolioActorCritic:
    """The same parameters in a policy for ``n_assets`` assets (e.g. trained on random subsets
    of 10, run on all 20): nothing in the parameters depends on K."""
    if n_assets == policy.n_assets:
        return policy
    obs_space = spaces.Box(-np.inf, np.inf, shape=(n_assets, policy.n_inputs), dtype=np.float32)
    act_space = spaces.Box(-1.0, 1.0, shape=(n_assets + 1,), dtype=np.float32)
    resized = PortfolioActorCritic(obs_space, act_space, policy.config, policy.asset_embedding)
    resized.load_state_dict(policy.state_dict())
    return resized.to(policy.taus.device)


def portfolio_policy(asset_embedding: int) -> Any:
    """The policy class argument for ``DistributionalPPO(policy, env, ...)`` with the given
    encoder width (a partial of :class:`PortfolioActorCritic`)."""
    return functools.partial(PortfolioActorCritic, asset_embedding=asset_embedding)
