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


def state_dependent_noise(features: th.Tensor, noise_matrices: th.Tensor) -> th.Tensor:
    """
    gSDE's noise ``phi(s) @ theta`` of each env: (n_envs, n_features) features times each
    env's (n_features, action_dim) matrix, giving (n_envs, action_dim).
    """
    return th.bmm(features.unsqueeze(1), noise_matrices).squeeze(1)


def clip_to_box(raw_action: th.Tensor, center: th.Tensor, half_range: th.Tensor) -> th.Tensor:
    """The Gaussian sample clipped to the Box ``[center - half_range, center + half_range]``."""
    return th.clamp(raw_action, center - half_range, center + half_range)


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
