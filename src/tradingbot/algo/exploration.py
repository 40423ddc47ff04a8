"""Generalized state-dependent exploration (gSDE, Raffin et al. 2021, arXiv 2005.05719) and
the bounding of Gaussian actions into a Box (``ExplorationConfig``).

Under gSDE the exploration noise of an action is ``eps = phi(s) @ theta``: ``phi`` the
actor's last hidden features (detached, so the noise's scale does not train the features; SB3's
default), ``theta`` a (features x actions) matrix per env drawn from ``N(0, sigma^2)`` every
``sample_freq`` steps, ``sigma`` a learned matrix. Given the state, ``eps`` is Gaussian with
variance ``sum_j phi_j^2 sigma_jk^2`` per action dimension, the distribution that log-probs
and entropies use. SB3's ``StateDependentNoiseDistribution`` (``full_std``, no ``expln``) is
the reference of the math; this is its own code, on plain tensors.
"""

from __future__ import annotations

import math

import torch as th
from torch import nn

from tradingbot.algo.distributions import gaussian_log_prob, squashed_gaussian_log_prob

# Added to the state-dependent variance, as SB3 does: features near zero would otherwise give
# a zero std and an infinite log-probability.
VARIANCE_EPS = 1e-6


def state_dependent_std(features: th.Tensor, std_matrix: th.Tensor) -> th.Tensor:
    """
    Per-state standard deviation ``sqrt(phi^2 @ sigma^2 + eps)`` of gSDE's noise.

    Parameters
    ----------
    features : Tensor
        The actor's features ``phi``, (..., n_features) (detach them for training).
    std_matrix : Tensor
        ``sigma``, (n_features, action_dim).

    Returns
    -------
    Tensor
        (..., action_dim).
    """
    return th.sqrt(features.square() @ std_matrix.square() + VARIANCE_EPS)


def draw_noise_matrices(
    std_matrix: th.Tensor, n_steps: int, n_envs: int, sample_freq: int
) -> th.Tensor:
    """
    The noise matrices ``theta ~ N(0, sigma^2)`` of every step of a rollout: one draw per env
    at the first step and every ``sample_freq`` steps after (0: one for the whole rollout),
    from torch's global generator (saved in checkpoints, so a resumed run draws the same).

    Parameters
    ----------
    std_matrix : Tensor
        ``sigma``, (n_features, action_dim).
    n_steps, n_envs : int
        Rollout length and number of envs.
    sample_freq : int
        Steps between draws (0: once).

    Returns
    -------
    Tensor
        (n_steps, n_envs, n_features, action_dim); steps of one block share their matrix.
    """
    n_blocks = 1 if sample_freq == 0 else math.ceil(n_steps / sample_freq)
    blocks = th.randn(n_blocks, n_envs, *std_matrix.shape, device=std_matrix.device) * std_matrix
    if n_blocks == 1:
        return blocks.expand(n_steps, *blocks.shape[1:])
    return blocks.repeat_interleave(sample_freq, dim=0)[:n_steps]


def rollout_noise(std: th.Tensor, n_steps: int, n_envs: int, sample_freq: int | None) -> th.Tensor:
    """The noise of a rollout's steps, drawn at its start: standard normal samples
    (n_steps, n_envs, action_dim) when ``sample_freq`` is ``None`` (independent noise; ``std``
    gives the shape), else gSDE's noise matrices (:func:`draw_noise_matrices`)."""
    if sample_freq is None:
        return th.randn(n_steps, n_envs, *std.shape, device=std.device)
    return draw_noise_matrices(std, n_steps, n_envs, sample_freq)


def state_dependent_noise(features: th.Tensor, noise_matrices: th.Tensor) -> th.Tensor:
    """
    gSDE's noise ``phi(s) @ theta`` of each env: (n_envs, n_features) features times each
    env's (n_features, action_dim) matrix, giving (n_envs, action_dim).
    """
    return th.bmm(features.unsqueeze(1), noise_matrices).squeeze(1)


def squash_action(
    raw_action: th.Tensor, squash: str, center: th.Tensor, half_range: th.Tensor
) -> th.Tensor:
    """The Gaussian sample mapped into the Box ``center +- half_range``: ``tanh``
    (``center + half_range * tanh(u)``) or ``clip`` (``u`` clipped to the Box)."""
    if squash == "clip":
        return th.clamp(raw_action, center - half_range, center + half_range)
    return th.addcmul(center, half_range, th.tanh(raw_action))


def box_log_prob(
    squash: str,
    mean: th.Tensor,
    raw_action: th.Tensor,
    log_std: th.Tensor,
    half_range: th.Tensor,
    noise: th.Tensor | None = None,
) -> th.Tensor:
    """Log-probability of a Box action from its Gaussian sample ``raw_action``: with the tanh's
    change of variables (``squash = 'tanh'``) or the Gaussian's alone (``'clip'``)."""
    if squash == "clip":
        return gaussian_log_prob(mean, raw_action, log_std, noise)
    return squashed_gaussian_log_prob(mean, raw_action, log_std, half_range, noise)


def gaussian_raw_action(
    actor_out: th.Tensor,
    std: th.Tensor,
    noise: th.Tensor | None,
    deterministic: bool,
    gsde_actions: int | None,
) -> th.Tensor:
    """
    The Gaussian sample of one rollout step (the mean when ``deterministic``).

    Parameters
    ----------
    actor_out : Tensor
        The actor's output, (n_envs, action_dim), or under gSDE the mean followed by the
        features, (n_envs, action_dim + n_features).
    std : Tensor
        The std (action_dim,), or gSDE's ``sigma`` (n_features, action_dim).
    noise : Tensor or None
        Standard normal samples (n_envs, action_dim), or gSDE's noise matrices (n_envs,
        n_features, action_dim); drawn here when ``None``.
    deterministic : bool
        Return the mean.
    gsde_actions : int or None
        The number of actions under gSDE, ``None`` for independent noise.

    Returns
    -------
    Tensor
        (n_envs, action_dim).
    """
    if gsde_actions is None:
        if deterministic:
            return actor_out
        if noise is None:
            noise = th.randn_like(actor_out)
        return th.addcmul(actor_out, std, noise)
    mean, features = actor_out[:, :gsde_actions], actor_out[:, gsde_actions:]
    if deterministic:
        return mean
    if noise is None:
        noise = draw_noise_matrices(std, 1, actor_out.shape[0], 0)[0]
    return mean + state_dependent_noise(features, noise)


def rollout_distribution(
    actor_out: th.Tensor, log_std: th.Tensor, std: th.Tensor, gsde_actions: int | None
) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """(mean, log-std, std) of the Gaussian of rollout steps' actor outputs (any leading
    shape; see :func:`gaussian_raw_action` for the layout); the std expanded to the mean's
    shape (under gSDE the per-state std)."""
    if gsde_actions is None:
        return actor_out, log_std, std.expand_as(actor_out)
    mean, features = actor_out[..., :gsde_actions], actor_out[..., gsde_actions:]
    state_std = state_dependent_std(features, std)
    return mean, th.log(state_std), state_std


@th.no_grad()
def head_with_features(head: nn.Linear) -> nn.Linear:
    """The actor head extended by an identity block: its output is the head's (the Gaussian's
    mean) followed by its input (the features ``phi``), so the fused rollout step, which
    returns the last layer's output, gives gSDE both. ``phi @ I`` is exact in float."""
    n_features, n_actions = head.in_features, head.out_features
    # skip_init: no draw from the global generator (its stream is part of a run's result).
    extended = nn.utils.skip_init(
        nn.Linear, n_features, n_actions + n_features, device=head.weight.device
    )
    extended.weight.copy_(th.cat([head.weight, th.eye(n_features, device=head.weight.device)]))
    extended.bias.copy_(th.cat([head.bias, th.zeros(n_features, device=head.bias.device)]))
    return extended
