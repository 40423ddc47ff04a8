"""State-adversarial robust training (SA-PPO, Zhang et al. 2020) for the recurrent policy.

The threat model: an adversary may move every observation the agent sees by at most
``epsilon`` per entry (an L-infinity ball, in the observation's normalized units), and chooses
the move that changes the policy's action distribution the most. SA-PPO regularizes the actor
with the KL between its action distributions on the clean and on the worst-case perturbed
observation, the worst case found by projected gradient descent (PGD).

With an LSTM a perturbation at step t also changes the memory that every later step reads, so
the attack works on whole sequence chunks: the perturbation covers every step of a chunk, the
LSTM is re-run from the chunk's stored initial state over the perturbed sequence (with the
same sequence evaluation training uses, so episode starts inside a chunk reset it), and PGD
maximizes the KL summed over the chunk's steps.

Pieces, each usable alone:

- :func:`actor_kl`: per-sample KL(clean || perturbed) of the action distributions, the clean
  one detached (the target). For the tanh-squashed Gaussian it is the pre-squash Gaussian's KL
  (the squash is a bijection); the perturbed distribution uses the clean (detached) std, which
  is state-independent anyway, so the regularizer moves the mean network only and cannot be
  lowered by widening the exploration noise. Categorical KL for discrete actions.
- :func:`pgd_perturb`: uniform random start in the ball, K steps of sign-gradient ascent of
  step ``2.5 * epsilon / K``, each followed by projection onto the ball (and the observation
  space's box), entries outside the feature mask never moved.
- :func:`robust_regularizer`: the training term for a minibatch of chunks.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import torch as th
from gymnasium import spaces

from tradingbot.algo.buffer import SequenceChunks
from tradingbot.algo.config import RobustConfig
from tradingbot.algo.losses import categorical_kl
from tradingbot.algo.policy import LSTMStates, RecurrentActorCritic


@dataclasses.dataclass(frozen=True)
class RobustStep:
    """
    The robust-training constants of one update (see :class:`RobustConfig`).

    Parameters
    ----------
    epsilon : float
        This update's radius (after the warm-up schedule).
    kappa : float
        Weight of the regularizer.
    fraction : float
        Fraction of a minibatch's chunks that are attacked.
    pgd_steps : int
        PGD steps.
    step_size : float
        PGD step size.
    mask : th.Tensor
        1.0 for the observation entries that may be perturbed, shape (obs_dim,).
    low : th.Tensor
        Lower bounds of the observation space, shape (obs_dim,) (may be -inf).
    high : th.Tensor
        Upper bounds of the observation space, shape (obs_dim,) (may be +inf).
    """

    epsilon: float
    kappa: float
    fraction: float
    pgd_steps: int
    step_size: float
    mask: th.Tensor
    low: th.Tensor
    high: th.Tensor


def scheduled_epsilon(epsilon: float, warmup_fraction: float, progress_remaining: float) -> float:
    """Epsilon after a linear warm-up from 0 over the first ``warmup_fraction`` of training
    (``progress_remaining`` goes from 1 to 0, SB3's convention)."""
    if warmup_fraction <= 0.0:
        return epsilon
    progress = min(max(1.0 - progress_remaining, 0.0), 1.0)
    return epsilon * min(progress / warmup_fraction, 1.0)


def feature_mask(obs_dim: int, perturb_last: bool, device: th.device | str = "cpu") -> th.Tensor:
    """1.0 for the entries an adversary may perturb: all, or all but the last (the trading
    env's position)."""
    mask = th.ones(obs_dim, device=device)
    if not perturb_last and obs_dim > 1:
        mask[-1] = 0.0
    return mask


def observation_bounds(
    observation_space: spaces.Space, device: th.device | str = "cpu"
) -> tuple[th.Tensor, th.Tensor]:
    """Flattened (low, high) of a Box observation space (+-inf for anything else)."""
    if isinstance(observation_space, spaces.Box):
        low = np.asarray(observation_space.low, dtype=np.float32).reshape(-1)
        high = np.asarray(observation_space.high, dtype=np.float32).reshape(-1)
        return th.as_tensor(low, device=device), th.as_tensor(high, device=device)
    dim = int(np.prod(observation_space.shape or (1,)))
    inf = th.full((dim,), math.inf, device=device)
    return -inf, inf


def robust_step(
    cfg: RobustConfig,
    progress_remaining: float,
    observation_space: spaces.Space,
    device: th.device | str = "cpu",
) -> RobustStep:
    """This update's :class:`RobustStep` from the config and the training progress."""
    epsilon = scheduled_epsilon(cfg.epsilon, cfg.warmup_fraction, progress_remaining)
    step_size = cfg.step_size if cfg.step_size is not None else 2.5 * epsilon / cfg.pgd_steps
    low, high = observation_bounds(observation_space, device)
    return RobustStep(
        epsilon=epsilon,
        kappa=cfg.kappa,
        fraction=cfg.fraction,
        pgd_steps=cfg.pgd_steps,
        step_size=step_size,
        mask=feature_mask(low.shape[0], cfg.perturb_last, device),
        low=low,
        high=high,
    )


def actor_kl(clean_params: th.Tensor, perturbed_params: th.Tensor, discrete: bool) -> th.Tensor:
    """Per-sample KL(clean || perturbed) of the action distributions from their parameters
    (logits, or ``[mean, std]`` of the pre-squash Gaussian), the clean side detached. The
    Gaussian KL uses the clean std for both sides: ``sum(((mu_p - mu_c) / std_c)^2) / 2``."""
    clean_params = clean_params.detach()
    if discrete:
        return categorical_kl(clean_params, perturbed_params)
    dim = clean_params.shape[-1] // 2
    mean_c, std_c = clean_params[..., :dim], clean_params[..., dim:]
    z = (perturbed_params[..., :dim] - mean_c) / std_c
    return 0.5 * z.square().sum(dim=-1)


def project(
    obs: th.Tensor,
    delta: th.Tensor,
    epsilon: float,
    mask: th.Tensor | None = None,
    low: th.Tensor | None = None,
    high: th.Tensor | None = None,
) -> th.Tensor:
    """``delta`` moved so that ``obs + delta`` lies in the observation box (when given) and
    ``delta`` in the L-infinity ball of radius ``epsilon`` (always: the ball comes last), zero
    outside ``mask``."""
    if low is not None and high is not None:
        delta = th.maximum(th.minimum(delta, high - obs), low - obs)
    delta = delta.clamp(-epsilon, epsilon)
    return delta if mask is None else delta * mask


def random_perturbation(
    obs: th.Tensor,
    epsilon: float,
    mask: th.Tensor | None = None,
    low: th.Tensor | None = None,
    high: th.Tensor | None = None,
    generator: th.Generator | None = None,
) -> th.Tensor:
    """Uniform noise in the ball (projected like PGD's iterates): PGD's random start, and the
    baseline an attack must beat."""
    noise = th.rand(obs.shape, generator=generator, device=obs.device, dtype=obs.dtype)
    return project(obs, (2.0 * noise - 1.0) * epsilon, epsilon, mask, low, high)


def pgd_perturb(
    objective: Callable[[th.Tensor], th.Tensor],
    obs: th.Tensor,
    epsilon: float,
    steps: int,
    step_size: float | None = None,
    mask: th.Tensor | None = None,
    low: th.Tensor | None = None,
    high: th.Tensor | None = None,
    generator: th.Generator | None = None,
    evaluate_end: bool = True,
) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
    """
    Projected sign-gradient ascent of ``objective`` in the L-infinity ball around ``obs``.

    Parameters
    ----------
    objective : Callable[[th.Tensor], th.Tensor]
        Maps perturbed observations (shape of ``obs``) to per-sample values (any shape) whose
        sum is maximized (for the policy: the KL to the clean distribution).
    obs : th.Tensor
        Clean observations (any leading shape, last dim the observation).
    epsilon : float
        Radius of the ball.
    steps : int
        Number of ascent steps after the random start.
    step_size : float | None
        Step size (``None``: ``2.5 * epsilon / steps``).
    mask : th.Tensor | None
        1.0 for the entries that may move (``None``: all).
    low : th.Tensor | None
        Box lower bounds the perturbed observation must respect (optional).
    high : th.Tensor | None
        Box upper bounds (optional).
    generator : th.Generator | None
        Random generator of the start (``None``: torch's global one).
    evaluate_end : bool
        Evaluate the objective at the result (one more forward pass).

    Returns
    -------
    tuple[th.Tensor, th.Tensor, th.Tensor | None]
        ``(perturbed observations (detached), mean objective at the random start, mean objective
        at the result or None)``, the means detached.
    """
    obs = obs.detach()
    if step_size is None:
        step_size = 2.5 * epsilon / steps
    delta = random_perturbation(obs, epsilon, mask, low, high, generator)
    start_value = th.zeros(())
    with th.enable_grad():
        for k in range(steps):
            delta.requires_grad_(True)
            value = objective(obs + delta)
            if k == 0:
                start_value = value.detach().mean()
            (grad,) = th.autograd.grad(value.sum(), delta)
            delta = project(obs, delta.detach() + step_size * grad.sign(), epsilon, mask, low, high)
    end_value = None
    if evaluate_end:
        with th.no_grad():
            end_value = objective(obs + delta).mean()
    return (obs + delta).detach(), start_value, end_value


def sequence_dist_params(
    policy: RecurrentActorCritic,
    obs: th.Tensor,
    episode_starts: th.Tensor,
    initial_states: LSTMStates,
) -> th.Tensor:
    """Action-distribution parameters over sequence chunks, (C * L, D), from the training-time
    sequence evaluation (LSTM from the stored initial states, resets at episode starts)."""
    n_chunks, seq_len = episode_starts.shape
    dummy_actions = obs.new_zeros(n_chunks, seq_len, policy.action_dim)
    return policy.evaluate_sequences(obs, episode_starts, initial_states, dummy_actions).dist_params


def attacked_chunks(n_chunks: int, fraction: float) -> int:
    """How many chunks of a (micro)batch are attacked: ``ceil(fraction * n)``, at least one."""
    return max(1, min(n_chunks, math.ceil(fraction * n_chunks - 1e-9)))


def robust_regularizer(
    policy: RecurrentActorCritic,
    batch: SequenceChunks,
    clean_params: th.Tensor,
    step: RobustStep,
    n_attacked: int | None = None,
    weight: float = 1.0,
) -> tuple[th.Tensor, dict[str, th.Tensor]]:
    """
    SA-PPO regularizer of a minibatch of chunks: the mean KL(clean || PGD-perturbed) over the
    steps of its first ``attacked_chunks`` chunks (a random subset: minibatches are random
    sets of chunks), with gradients to the actor.

    Parameters
    ----------
    policy : RecurrentActorCritic
        The policy being trained.
    batch : SequenceChunks
        The (micro)batch's chunks.
    clean_params : th.Tensor
        The current policy's distribution parameters on the clean chunks, flattened (C * L, D)
        as :meth:`RecurrentActorCritic.evaluate_sequences` returns them; the target (detached
        here).
    step : RobustStep
        This update's constants.
    n_attacked : int | None
        How many leading chunks to attack (``None``: ``attacked_chunks`` of the batch). A
        microbatch attacks its part of the whole minibatch's attacked chunks.
    weight : float
        Multiplies the regularizer and the KL metrics: a microbatch's mean KL becomes its share
        of the minibatch's mean over all attacked steps.

    Returns
    -------
    tuple[th.Tensor, dict[str, th.Tensor]]
        The regularizer (without kappa, scalar) and detached metrics: the mean KL at PGD's
        random start (``robust_kl_random``: random noise of the same size) and after PGD
        (``robust_kl_pgd``), and ``robust_loss`` = kappa * regularizer.
    """
    n_chunks, seq_len = batch.episode_starts.shape
    k = attacked_chunks(n_chunks, step.fraction) if n_attacked is None else n_attacked
    obs = batch.observations[:k]
    starts = batch.episode_starts[:k]
    states = LSTMStates(*(s[:k] for s in batch.initial_states))
    target = clean_params[: k * seq_len].detach()

    def objective(perturbed: th.Tensor) -> th.Tensor:
        params = sequence_dist_params(policy, perturbed, starts, states)
        return actor_kl(target, params, policy.discrete)

    perturbed, kl_random, _ = pgd_perturb(
        objective,
        obs,
        step.epsilon,
        step.pgd_steps,
        step.step_size,
        step.mask,
        step.low,
        step.high,
        evaluate_end=False,
    )
    regularizer = objective(perturbed).mean()
    if weight != 1.0:
        regularizer, kl_random = regularizer * weight, kl_random * weight
    metrics = {
        "robust_kl_random": kl_random,
        "robust_kl_pgd": regularizer.detach(),
        "robust_loss": (step.kappa * regularizer).detach(),
    }
    return regularizer, metrics
