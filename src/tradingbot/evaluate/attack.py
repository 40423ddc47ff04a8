"""Observation attacks for backtests: how much does an agent lose when its inputs are perturbed?

At every bar the attack perturbs the observation the agent sees (never the market itself, so
fills, costs and equity are the true ones) within an L-infinity ball of radius ``epsilon``
(normalized feature units): ``pgd`` by projected sign-gradient ascent of the KL between the
model's action distribution on the clean observation and on the perturbed one, both given the
agent's current LSTM state (see :mod:`tradingbot.algo.robust`); ``random`` by uniform noise of
the same size, the baseline a real attack must beat. The agent then acts on, and its LSTM
remembers, the perturbed observation. By default the last observation entry (the agent's own
position) is left alone: the agent knows it exactly.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch as th

from tradingbot.algo.policy import LSTMStates
from tradingbot.algo.ppo import DistributionalPPO
from tradingbot.algo.robust import (
    actor_kl,
    feature_mask,
    observation_bounds,
    pgd_perturb,
    random_perturbation,
    sequence_dist_params,
)
from tradingbot.algo.rollout import obs_tensor
from tradingbot.evaluate.backtest import Predictor

ATTACKS = ("pgd", "random")
AttackKind = Literal["pgd", "random"]


class ObservationAttack:
    """
    Perturbs a DistributionalPPO agent's observations, one bar at a time.

    Parameters
    ----------
    model : DistributionalPPO
        The attacked model (its policy gives the gradients).
    epsilon : float
        L-infinity radius in the observation's (normalized) units.
    kind : AttackKind
        ``pgd`` or ``random``.
    steps : int
        PGD steps.
    step_size : float | None
        PGD step (``None``: ``2.5 * epsilon / steps``).
    perturb_last : bool
        Also perturb the last entry (the trading env's position).
    seed : int
        Seed of the attack's own random generator (the PGD start, the noise).
    """

    def __init__(
        self,
        model: DistributionalPPO,
        epsilon: float,
        kind: AttackKind = "pgd",
        steps: int = 10,
        step_size: float | None = None,
        perturb_last: bool = False,
        seed: int = 0,
    ) -> None:
        if kind not in ATTACKS:
            raise ValueError(f"unknown attack {kind!r}; choose one of {', '.join(ATTACKS)}")
        if epsilon < 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon}")
        if steps < 1:
            raise ValueError(f"attack steps must be >= 1, got {steps}")
        self.model = model
        self.epsilon = float(epsilon)
        self.kind = kind
        self.steps = steps
        self.step_size = step_size
        device = model.device
        self.low, self.high = observation_bounds(model.observation_space, device)
        self.mask = feature_mask(model.policy.obs_dim, perturb_last, device)
        self.generator = th.Generator(device=device)
        self.generator.manual_seed(seed)
        # Per bar: KL(clean || perturbed) of the action distributions.
        self.kls: list[float] = []

    def perturb(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
    ) -> np.ndarray:
        """The perturbed observation (same shape and dtype) for the agent in ``state``."""
        model = self.model
        policy = model.policy
        obs = obs_tensor(np.asarray(observation, dtype=np.float32), policy.obs_dim, model.device)
        n = obs.shape[0]
        if state is None:
            states = policy.initial_state(n)
        else:
            states = LSTMStates(
                *(th.as_tensor(s, dtype=th.float32, device=model.device) for s in state)
            )
        if episode_start is None:
            starts = th.zeros(n, 1, device=model.device)
        else:
            starts = th.as_tensor(
                np.asarray(episode_start, dtype=np.float32), device=model.device
            ).reshape(n, 1)

        def params(x: th.Tensor) -> th.Tensor:  # one step: (n, D) -> (n, P)
            return sequence_dist_params(policy, x.unsqueeze(1), starts, states)

        with th.no_grad():
            clean = params(obs)

        def objective(x: th.Tensor) -> th.Tensor:
            return actor_kl(clean, params(x), policy.discrete)

        if self.epsilon == 0.0:
            perturbed = obs
        elif self.kind == "random":
            delta = random_perturbation(
                obs, self.epsilon, self.mask, self.low, self.high, self.generator
            )
            perturbed = obs + delta
        else:
            perturbed, _, _ = pgd_perturb(
                objective,
                obs,
                self.epsilon,
                self.steps,
                self.step_size,
                self.mask,
                self.low,
                self.high,
                self.generator,
                evaluate_end=False,
            )
        with th.no_grad():
            self.kls.append(float(objective(perturbed).mean()))
        out = perturbed.detach().cpu().numpy().astype(np.asarray(observation).dtype, copy=False)
        return out.reshape(np.shape(observation))


class AttackedPredictor:
    """
    A predictor that sees observations through an :class:`ObservationAttack`.

    Parameters
    ----------
    inner : Predictor
        The agent (e.g. the model or a recording wrapper around it).
    attack : ObservationAttack
        The attack on the observations.
    """

    def __init__(self, inner: Predictor, attack: ObservationAttack) -> None:
        self.inner = inner
        self.attack = attack

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        perturbed = self.attack.perturb(observation, state, episode_start)
        return self.inner.predict(
            perturbed, state=state, episode_start=episode_start, deterministic=deterministic
        )
