"""What one update of DistributionalPPO works on: the policy, its flat parameters and
gradients, the optimizer, the statistics carried between updates and the hyperparameters;
and how the optimizer and the gradient scaler are built from the config."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import torch as th

from tradingbot.algo.config import PPOConfig
from tradingbot.algo.fast.flat import FlatGradients
from tradingbot.algo.policy import RecurrentActorCritic
from tradingbot.algo.state import TrainState
from tradingbot.optim import UPGD, AdaptiveUPGD, VarianceGradientScaler


@dataclasses.dataclass
class Learner:
    """
    The parts of the algorithm that an update reads and changes (and nothing else of it).

    Parameters
    ----------
    policy : RecurrentActorCritic
        The actor-critic being trained.
    gradients : FlatGradients
        The policy's parameters and gradients as views of flat buffers.
    optimizer : torch.optim.Optimizer
        Built by :func:`build_optimizer`.
    train_state : TrainState
        Statistics carried from update to update (the gradient scaler among them).
    config : PPOConfig
        The hyperparameters.
    compile_loss : bool
        Run the minibatch loss after the LSTMs compiled (set per ``learn`` call from
        ``PPOConfig.compile``, see :func:`~tradingbot.algo.fast.compiled.use_compile`).
    """

    policy: RecurrentActorCritic
    gradients: FlatGradients
    optimizer: th.optim.Optimizer
    train_state: TrainState
    config: PPOConfig
    compile_loss: bool = False


def build_optimizer(cfg: PPOConfig, gradients: FlatGradients) -> th.optim.Optimizer:
    """
    The optimizer chosen by ``cfg.optimizer`` with ``cfg.learning_rate`` and ``cfg.upgd``.

    Adam steps the one flat parameter (:attr:`FlatGradients.param`); the UPGD optimizers step
    the parameters one by one (their utilities are per parameter tensor under
    ``scope="local"``), so the optimizer state is laid out differently for the two.

    Parameters
    ----------
    cfg : PPOConfig
        The hyperparameters.
    gradients : FlatGradients
        The policy's parameters.

    Returns
    -------
    torch.optim.Optimizer
    """
    if cfg.optimizer == "adam":
        # Fused, over the one flat parameter: a single kernel and a single state per step.
        # Adam is elementwise, so this is Adam over the parameters one by one (to rounding).
        return th.optim.Adam([gradients.param], lr=cfg.learning_rate, eps=1e-5, fused=True)
    u = cfg.upgd
    options: dict[str, Any] = {
        "lr": cfg.learning_rate,
        "weight_decay": u.weight_decay,
        "beta_utility": u.beta_utility,
        "sigma": u.sigma,
        "protect": u.protect,
        "scope": u.scope,
    }
    if cfg.optimizer == "upgd":
        return UPGD(gradients.params, **options)
    if cfg.optimizer == "adaptive_upgd":
        return AdaptiveUPGD(
            gradients.params,
            eps=1e-5,
            adaptive_noise=u.adaptive_noise,
            beta_noise=u.beta_noise,
            min_noise_std=u.min_noise_std,
            **options,
        )
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def build_scaler(
    cfg: PPOConfig, params: Iterable[th.nn.Parameter]
) -> VarianceGradientScaler | None:
    """
    The variance gradient scaler of ``cfg.grad_scaler``.

    Parameters
    ----------
    cfg : PPOConfig
        The hyperparameters.
    params : iterable of Parameter
        The parameters whose gradients it scales.

    Returns
    -------
    VarianceGradientScaler or None
        ``None`` when the scaler is disabled.
    """
    s = cfg.grad_scaler
    if not s.enabled:
        return None
    return VarianceGradientScaler(
        params,
        beta=s.beta,
        alpha=s.alpha,
        warmup=s.warmup,
        min_factor=s.min_factor,
        aggregate=s.aggregate,
        percentile=s.percentile,
        max_ratio=s.max_ratio,
        grad_norm_beta=s.grad_norm_beta,
    )


def build_learner(policy: RecurrentActorCritic, cfg: PPOConfig) -> Learner:
    """
    A fresh learner for ``policy``: flat parameters, optimizer, initial train state.

    Parameters
    ----------
    policy : RecurrentActorCritic
        The policy, already on its device (its parameters' data become views of one buffer).
    cfg : PPOConfig
        The hyperparameters.

    Returns
    -------
    Learner
    """
    gradients = FlatGradients(policy.parameters(), policy.network_sizes())
    optimizer = build_optimizer(cfg, gradients)
    # Statistics carried between updates (saved with the model): DSAC-T sigma_bar, KL beta,
    # CVaR multiplier, entropy boost, AWR coefficient, skipped steps, the gradient scaler.
    train_state = TrainState(
        kl_beta=cfg.kl_beta_init,
        risk_multiplier=cfg.risk.weight,
        awr_coef=cfg.awr.coef,
        scaler=build_scaler(cfg, policy.parameters()),
    )
    return Learner(policy, gradients, optimizer, train_state, cfg)
