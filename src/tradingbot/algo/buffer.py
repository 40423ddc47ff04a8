"""Rollout storage for recurrent PPO, served as minibatches of whole sequence chunks."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch as th

from tradingbot.algo.losses import compute_gae
from tradingbot.algo.policy import LSTMStates


@dataclasses.dataclass(frozen=True)
class SequenceChunks:
    """Rollout data cut into sequence chunks: every field has shape (chunks, seq_len, ...) except
    ``initial_states``, the stored LSTM (h, c) before each chunk's first step, each (chunks, H).
    ``returns`` and ``old_values`` / ``old_quantiles`` are in return units (not normalized)."""

    observations: th.Tensor
    raw_actions: th.Tensor
    episode_starts: th.Tensor
    old_log_probs: th.Tensor
    old_values: th.Tensor
    old_quantiles: th.Tensor
    old_dist_params: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    initial_states: LSTMStates

    @property
    def n_chunks(self) -> int:
        return self.episode_starts.shape[0]

    def _map(self, fn: Callable[[th.Tensor], th.Tensor]) -> SequenceChunks:
        """``fn`` applied to every field along the chunk dimension."""
        fields = {
            field.name: fn(getattr(self, field.name))
            for field in dataclasses.fields(self)
            if field.name != "initial_states"
        }
        return SequenceChunks(**fields, initial_states=LSTMStates(*map(fn, self.initial_states)))

    def select(self, chunk_indices: th.Tensor) -> SequenceChunks:
        """The chunks at ``chunk_indices``."""
        return self._map(lambda x: x.index_select(0, chunk_indices))

    def narrow(self, start: int, length: int) -> SequenceChunks:
        """Chunks ``start`` to ``start + length`` (views, no copy)."""
        return self._map(lambda x: x.narrow(0, start, length))

    def split(self, n_parts: int) -> list[SequenceChunks]:
        """``n_parts`` consecutive parts whose sizes differ by at most one chunk (views), the
        larger ones first, as ``torch.tensor_split`` cuts."""
        n_parts = min(n_parts, self.n_chunks)
        base, extra = divmod(self.n_chunks, n_parts)
        parts, start = [], 0
        for part in range(n_parts):
            length = base + (part < extra)
            parts.append(self.narrow(start, length))
            start += length
        return parts


class RecurrentRolloutBuffer:
    """
    Preallocated rollout storage of shape (n_steps, n_envs, ...), including the LSTM states of
    actor and critic before every step, so any chunk can be replayed from its first step.

    Parameters
    ----------
    n_steps : int
        Steps per environment in a rollout.
    n_envs : int
        Number of environments.
    obs_dim : int
        Flattened observation size.
    action_dim : int
        Width of a stored raw action (action dim for Box, 1 for Discrete).
    dist_param_dim : int
        Width of the stored action-distribution parameters.
    n_critics : int
        Number of critic heads.
    n_quantiles : int
        Quantiles per critic.
    state_size : int
        Width of the stored LSTM states (2 * lstm_hidden_size unless shared).
    device : th.device | str
        Torch device.
    """

    def __init__(
        self,
        n_steps: int,
        n_envs: int,
        obs_dim: int,
        action_dim: int,
        dist_param_dim: int,
        n_critics: int,
        n_quantiles: int,
        state_size: int,
        device: th.device | str,
    ) -> None:
        self.n_steps = n_steps
        self.n_envs = n_envs

        def zeros(*shape: int) -> th.Tensor:
            return th.zeros(n_steps, n_envs, *shape, device=device)

        self.observations = zeros(obs_dim)
        self.raw_actions = zeros(action_dim)
        self.episode_starts = zeros()
        self.log_probs = zeros()
        self.rewards = zeros()
        # gamma * terminal_values is added to the reward of steps truncated by a time limit.
        self.terminal_values = zeros()
        self.values = zeros()
        self.quantiles = zeros(n_critics, n_quantiles)
        self.dist_params = zeros(dist_param_dim)
        # (h, c) of the (actor and critic) LSTMs before each step, before the episode-start
        # reset.
        self.lstm_states = th.zeros(n_steps, 2, n_envs, state_size, device=device)
        self.advantages = zeros()
        self.returns = zeros()

    def store_rollout(
        self,
        episode_starts: th.Tensor,
        lstm_h: th.Tensor,
        lstm_c: th.Tensor,
        raw_actions: th.Tensor,
        log_probs: th.Tensor,
        values: th.Tensor,
        quantiles: th.Tensor,
        dist_params: th.Tensor,
        rewards: th.Tensor,
        terminal_values: th.Tensor,
    ) -> None:
        """Store a whole rollout at once (each field (n_steps, n_envs, ...); ``values`` and
        ``quantiles`` in return units, ``lstm_h`` / ``lstm_c`` the states before each step)
        except the observations, which the caller writes to ``observations[t]`` as it steps
        (an env may reuse its observation array)."""
        self.episode_starts.copy_(episode_starts)
        self.lstm_states[:, 0].copy_(lstm_h)
        self.lstm_states[:, 1].copy_(lstm_c)
        self.raw_actions.copy_(raw_actions)
        self.log_probs.copy_(log_probs)
        self.values.copy_(values)
        self.quantiles.copy_(quantiles)
        self.dist_params.copy_(dist_params)
        self.rewards.copy_(rewards)
        self.terminal_values.copy_(terminal_values)

    def compute_returns_and_advantage(
        self, last_values: th.Tensor, last_dones: th.Tensor, gamma: float, gae_lambda: float
    ) -> None:
        """GAE(lambda) advantages and lambda-returns with the time-limit bootstrap."""
        self.advantages, self.returns = compute_gae(
            self.rewards,
            self.values,
            self.episode_starts,
            last_values,
            last_dones,
            gamma,
            gae_lambda,
            terminal_values=self.terminal_values,
        )

    def to_chunks(self, seq_len: int) -> SequenceChunks:
        """Cut the rollout into (n_steps / seq_len) * n_envs chunks of ``seq_len`` steps."""
        if self.n_steps % seq_len != 0:
            raise ValueError(f"n_steps ({self.n_steps}) must be a multiple of seq_len ({seq_len})")
        n_blocks = self.n_steps // seq_len

        def chunk(x: th.Tensor) -> th.Tensor:
            # (T, E, ...) -> (T/L, L, E, ...) -> (T/L, E, L, ...) -> (T/L * E, L, ...)
            rest = x.shape[2:]
            x = x.reshape(n_blocks, seq_len, self.n_envs, *rest).transpose(1, 2)
            return x.reshape(n_blocks * self.n_envs, seq_len, *rest)

        # (T/L, 2, E, H) -> (2, T/L * E, H), chunk order matching chunk()
        first_states = self.lstm_states[::seq_len].transpose(0, 1)
        first_states = first_states.reshape(2, n_blocks * self.n_envs, -1)
        return SequenceChunks(
            observations=chunk(self.observations),
            raw_actions=chunk(self.raw_actions),
            episode_starts=chunk(self.episode_starts),
            old_log_probs=chunk(self.log_probs),
            old_values=chunk(self.values),
            old_quantiles=chunk(self.quantiles),
            old_dist_params=chunk(self.dist_params),
            advantages=chunk(self.advantages),
            returns=chunk(self.returns),
            initial_states=LSTMStates(*first_states.unbind(0)),
        )
