"""Hyperparameters of DistributionalPPO: the single home of every default."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_DEVICE = re.compile(r"auto|cpu|mps|meta|(cuda|xpu|hip)(:\d+)?")


class _Section(BaseModel):
    # allow_inf_nan=False: an infinite or NaN hyperparameter (``learning_rate: .inf``) is refused.
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, allow_inf_nan=False, defer_build=True
    )


class RiskConfig(_Section):
    """
    CVaR risk objective (see :mod:`tradingbot.algo.risk`).

    :param mode: ``none`` (risk-neutral); ``mean_cvar`` (maximize E[G] + weight * CVaR_alpha(G)
        by Rockafellar-Uryasev shaping of the return used for the advantage); ``cvar_constraint``
        (the same shaping with the weight a Lagrange multiplier, updated by dual ascent to keep
        the estimated CVaR_alpha of the rollout's returns >= ``cvar_limit``).
    :param alpha: CVaR level (the worst ``alpha`` fraction of outcomes).
    :param weight: lambda of ``mean_cvar``; the initial multiplier of ``cvar_constraint``.
    :param cvar_limit: Lower limit of CVaR_alpha (return units) for ``cvar_constraint``.
    :param dual_lr: Dual-ascent step: ``lambda <- clip(lambda + dual_lr * (limit - CVaR))``.
    :param max_multiplier: Upper bound of the Lagrange multiplier.
    """

    mode: Literal["none", "mean_cvar", "cvar_constraint"] = "none"
    alpha: float = Field(0.05, gt=0, le=1)
    weight: float = Field(0.5, ge=0)
    cvar_limit: float = -1.0
    dual_lr: float = Field(0.1, gt=0)
    max_multiplier: float = Field(10.0, gt=0)


class CriticAdjustConfig(_Section):
    """
    Variance-based critic gradient adjusting from DSAC-T (arXiv 2310.05858).

    :param mode: ``none`` (plain quantile loss) or ``dsac_t``: each sample's loss is weighted by
        ``(sigma_bar^2 + eps) / (sigma_i^2 + eps)`` (detached), ``sigma_i`` the std of its
        predicted quantiles and ``sigma_bar`` a moving average of the batch-mean ``sigma``.
    :param eps: The ``eps`` of the weight.
    :param rate: Moving-average rate of ``sigma_bar`` (``sigma_bar += rate * (mean - sigma_bar)``).
    :param target_clip: Clip the target to within ``xi * sigma_bar`` of the predicted mean.
    :param xi: The clipping width in units of ``sigma_bar``.
    :param weight_clamp: ``[low, high]`` bounds of the per-sample weights (e.g. ``[0.1, 10]``),
        so that a sample whose quantiles collapse cannot dominate the loss (``None``: off).
    """

    mode: Literal["none", "dsac_t"] = "none"
    eps: float = Field(1e-2, gt=0)
    rate: float = Field(0.01, gt=0, le=1)
    target_clip: bool = False
    xi: float = Field(3.0, gt=0)
    weight_clamp: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _check_clamp(self) -> CriticAdjustConfig:
        if self.weight_clamp is not None and not 0 < self.weight_clamp[0] <= self.weight_clamp[1]:
            raise ValueError(
                f"critic_adjust.weight_clamp {list(self.weight_clamp)} must be [low, high] "
                "with 0 < low <= high"
            )
        return self


class ValueClipConfig(_Section):
    """
    Value clipping of the distributional critic, with ``PPOConfig.clip_range_vf`` (in the
    critic's normalized units): ``mean_shift`` clips the change of the quantiles' mean to
    +-clip_range_vf around the old mean and shifts every quantile by the same amount;
    ``per_quantile`` clamps each quantile to +-clip_range_vf around its old value. The loss is
    the mean over samples of max(unclipped, clipped).
    """

    mode: Literal["none", "mean_shift", "per_quantile"] = "none"


class EntropyConfig(_Section):
    """
    Entropy-coefficient schedule around ``PPOConfig.ent_coef`` (the initial coefficient).

    coef = max(linear(ent_coef -> final over training progress) * boost, minimum), where the
    boost is multiplied by ``boost_factor`` (up to ``boost_max``) after each update whose
    rollout explained variance is below ``ev_threshold``, and reset to 1 otherwise.

    :param final: Coefficient at the end of training (``None``: constant ``ent_coef``).
    :param boost_factor: Multiplicative boost per low-EV update (1: no boost).
    :param boost_max: Bound of the boost.
    :param ev_threshold: Explained-variance threshold below which the boost grows.
    :param minimum: Lower clamp of the coefficient, applied after decay and boost.
    """

    final: float | None = Field(None, ge=0)
    boost_factor: float = Field(1.0, ge=1)
    boost_max: float = Field(4.0, ge=1)
    ev_threshold: float = 0.0
    minimum: float = Field(0.0, ge=0)


class AWRConfig(_Section):
    """
    Advantage-weighted behaviour cloning term ``-coef * mean(w * log pi(a|s))`` with
    ``w = exp(clamp(A / beta, max=log(max_weight)))`` on the raw (unnormalized) advantages.

    :param enabled: Add the term.
    :param coef: Initial coefficient.
    :param beta: Temperature of the weights.
    :param max_weight: Upper bound of a weight.
    :param max_ratio: Bound of ``coef * |BC loss| / mean_i |surrogate_i|`` (the mean size of
        PPO's per-sample clipped-surrogate terms, not the policy loss, which averages terms of
        both signs to ~0), per minibatch; above it (mean over an update) the coefficient is
        multiplied by ``decay``.
    :param decay: Coefficient decay factor.
    """

    enabled: bool = False
    coef: float = Field(0.1, ge=0)
    beta: float = Field(1.0, gt=0)
    max_weight: float = Field(20.0, gt=1)
    max_ratio: float = Field(1.0, gt=0)
    decay: float = Field(0.5, gt=0, lt=1)


class UPGDConfig(_Section):
    """
    Options of :class:`tradingbot.optim.UPGD` / :class:`tradingbot.optim.AdaptiveUPGD` (the
    learning rate is ``PPOConfig.learning_rate``). ``adaptive_noise``, ``beta_noise`` and
    ``min_noise_std`` only apply to ``adaptive_upgd``.
    """

    sigma: float = Field(1e-3, ge=0)
    beta_utility: float = Field(0.999, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    protect: bool = True
    scope: Literal["global", "local"] = "global"
    adaptive_noise: bool = False
    beta_noise: float = Field(0.99, ge=0, lt=1)
    min_noise_std: float = Field(1e-6, ge=0)


class GradScalerConfig(_Section):
    """Options of :class:`tradingbot.optim.VarianceGradientScaler`, applied after backward and
    before the gradient-norm clip when ``enabled``. ``max_ratio`` bounds each tensor's
    noise-to-signal ratio before they are aggregated (``None``: unbounded), so one tensor whose
    mean gradient vanishes cannot dominate the mean; ``grad_norm_beta`` turns on the metric
    ``train/scaler_grad_norm_ema``, the bias-corrected EMA (this decay) of the global gradient
    norm the scaler sees (``None``: off)."""

    enabled: bool = False
    alpha: float = Field(1.0, ge=0)
    beta: float = Field(0.99, ge=0, lt=1)
    warmup: int = Field(10, ge=0)
    min_factor: float = Field(0.1, gt=0, le=1)
    aggregate: Literal["mean", "percentile"] = "mean"
    percentile: float = Field(90.0, ge=0, le=100)
    max_ratio: float | None = Field(None, gt=0)
    grad_norm_beta: float | None = Field(None, ge=0, lt=1)


class RobustConfig(_Section):
    """
    State-adversarial robust training (SA-PPO style, see :mod:`tradingbot.algo.robust`).

    For the first ``ceil(fraction * chunks)`` chunks of each (randomly ordered) minibatch, every
    observation of the chunk is perturbed within an L-infinity ball of radius epsilon (in the
    observation's normalized units) by ``pgd_steps`` steps of projected sign-gradient ascent on
    ``KL(pi(.|clean) || pi(.|perturbed))``, the LSTM re-run from the chunk's stored initial
    state over the perturbed sequence (episode starts inside the chunk honoured). The loss gets
    ``kappa * KL`` at the final perturbation (actor only; the clean distribution is the
    detached target). Off (``enabled: false``): nothing of this runs and no random number is
    drawn, so the update is the plain one bit for bit.

    :param enabled: Add the robustness regularizer.
    :param epsilon: Radius of the L-infinity ball (after the warm-up). PBT-mutable.
    :param kappa: Weight of the regularizer. PBT-mutable.
    :param fraction: Fraction of each minibatch's chunks that are attacked (at least one).
    :param pgd_steps: PGD steps K (after a uniform random start in the ball).
    :param step_size: PGD step size (``None``: ``2.5 * epsilon / pgd_steps``).
    :param warmup_fraction: Epsilon grows linearly from 0 to ``epsilon`` over this fraction of
        training (0: constant epsilon).
    :param perturb_last: Also perturb the last observation entry. Off by default: in the
        trading env it is the agent's own position, which it knows exactly, so the realistic
        threat perturbs only the market features. Turn it on for envs without that layout.
    """

    enabled: bool = False
    epsilon: float = Field(0.1, ge=0)
    kappa: float = Field(0.1, ge=0)
    fraction: float = Field(0.25, gt=0, le=1)
    pgd_steps: int = Field(5, ge=1)
    step_size: float | None = Field(None, gt=0)
    warmup_fraction: float = Field(0.0, ge=0, le=1)
    perturb_last: bool = False


class ClipAdaptConfig(_Section):
    """
    Adaptive surrogate clip range: after each update, the exact KL(old || new) of the rollout's
    action distributions under the updated policy is compared with ``target_kl``; the clip
    range is divided by ``factor`` when the KL exceeds ``1.5 * target_kl``, multiplied by it
    below ``target_kl / 1.5``, and kept within ``[min_clip, max_clip]``. It starts at
    ``PPOConfig.clip_range`` (which cannot then have a ``clip_range_final`` schedule).

    :param enabled: Adapt the clip range.
    :param target_kl: The KL the clip range adapts around.
    :param factor: Multiplicative step (> 1).
    :param min_clip: Lower bound of the clip range.
    :param max_clip: Upper bound of the clip range.
    """

    enabled: bool = False
    target_kl: float = Field(0.01, gt=0)
    factor: float = Field(1.5, gt=1)
    min_clip: float = Field(0.02, gt=0)
    max_clip: float = Field(0.5, gt=0)


class PPOConfig(BaseModel):
    """
    Hyperparameters of :class:`tradingbot.algo.ppo.DistributionalPPO`.

    :param learning_rate: Learning rate (the initial one when ``learning_rate_final`` is set).
    :param learning_rate_final: Learning rate at the end of training, reached linearly over
        training progress (``None``: constant).
    :param n_steps: Steps collected per environment in one rollout.
    :param batch_size: Samples (time steps) per minibatch; a whole number of ``seq_len`` chunks.
    :param n_epochs: Passes over the rollout per update.
    :param gamma: Discount factor.
    :param gae_lambda: GAE(lambda) trace parameter.
    :param clip_range: PPO surrogate clip range epsilon (the initial one when
        ``clip_range_final`` is set).
    :param clip_range_final: Clip range at the end of training, linear in training progress
        (``None``: constant).
    :param clip_range_vf: Clip range of distributional value clipping, in the critic's
        normalized units; required by, and only allowed with, ``value_clip.mode != "none"``.
    :param value_clip: Value-clipping mode (:class:`ValueClipConfig`).
    :param ent_coef: Entropy bonus coefficient (the initial one when ``entropy.final`` is set).
    :param entropy: Entropy-coefficient schedule (:class:`EntropyConfig`).
    :param vf_coef: Critic loss coefficient.
    :param max_grad_norm: Gradient-norm clip, applied to the actor and to the critic parameters
        (``grad_clip``).
    :param target_kl: Stop the update's epochs when the KL of a minibatch (estimator
        ``kl_early_stop``) exceeds ``1.5 * target_kl`` (``None`` disables early stopping); also
        the target of the adaptive KL penalty.
    :param kl_early_stop: KL used for the early stop: ``k3`` estimator ``mean((r - 1) - log r)``
        or ``exact`` KL(old || new) of the action distributions (Gaussian / categorical).
    :param kl_penalty: Add ``beta * exact KL`` to the loss; beta is doubled after an update whose
        exact KL(old || new) over the rollout, measured after the update (as in the PPO paper),
        exceeds ``1.5 * target`` and halved below ``target / 1.5``, with ``target`` the
        ``kl_penalty_target`` (else ``target_kl``).
    :param kl_beta_init: Initial beta of the KL penalty.
    :param dual_clip: Dual-clip constant c (> 1): for negative advantages the surrogate is
        bounded below by ``c * A`` (``None``: off).
    :param log_ratio_clamp: The new/old log-probability ratio is clamped to +-this before ``exp``.
    :param advantage_normalization: ``minibatch`` (per minibatch), ``rollout`` (once over the
        whole rollout) or ``none``.
    :param n_quantiles: Quantiles per critic, at midpoints ``(i + 0.5) / n_quantiles``.
    :param huber_kappa: Huber threshold of the quantile Huber loss.
    :param twin_critics: Train two critic heads; the value is their min or mean.
    :param critic_value: How twin critics are combined into the value: ``min`` or ``mean``.
    :param lstm_hidden_size: Hidden size of each LSTM.
    :param shared_lstm: One LSTM for actor and critic instead of one each.
    :param net_arch: Hidden sizes of the MLP after the LSTM (actor and each critic).
    :param seq_len: Length of the sequence chunks minibatches are made of (truncated BPTT).
    :param log_std_init: Initial log standard deviation of the Gaussian policy.
    :param log_std_min: Lower bound of the log standard deviation.
    :param log_std_max: Upper bound of the log standard deviation.
    :param normalize_returns: Critic predicts returns normalized by running mean/std.
    :param risk: CVaR risk objective (:class:`RiskConfig`).
    :param critic_adjust: DSAC-T variance-based critic weights (:class:`CriticAdjustConfig`).
    :param awr: Advantage-weighted behaviour-cloning term (:class:`AWRConfig`).
    :param n_microbatches: Split each minibatch (of whole chunks) into this many microbatches
        whose gradients are accumulated (same gradient as the whole minibatch).
    :param optimizer: ``adam``, ``upgd`` or ``adaptive_upgd`` (options in ``upgd``).
    :param upgd: Options of the UPGD optimizers (:class:`UPGDConfig`).
    :param grad_scaler: Variance gradient scaler (:class:`GradScalerConfig`).
    :param robust: State-adversarial robust training (:class:`RobustConfig`).
    :param kl_penalty_target: Target KL of the KL penalty (``None``: ``target_kl``), so the
        penalty can run without ``target_kl``'s early stopping.
    :param grad_clip: ``per_network``: clip the actor's and the critic's gradient norms to
        ``max_grad_norm`` each (the critic's norm is larger than the actor's, 2-3x on the
        oracle market, and a global clip shrinks the actor's step with it); ``global``: clip
        the norm over all parameters (as ``torch.nn.utils.clip_grad_norm_``). Both learn
        equally well on the oracle market (docs/benchmarks.md). ``train/grad_norm`` logs the
        global norm either way.
    :param clip_adapt: Adaptive surrogate clip range (:class:`ClipAdaptConfig`).
    :param vf_coef_initial: Value-loss coefficient at the start of the warm-up.
    :param vf_coef_warmup: Fraction of training over which the value-loss coefficient grows
        linearly from ``vf_coef_initial`` to ``vf_coef`` (0: no warm-up, ``vf_coef`` throughout).
    :param seed: Seed of the random generators (``None``: not seeded).
    :param device: Torch device.
    """

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, allow_inf_nan=False, defer_build=True
    )

    learning_rate: float = Field(3e-4, gt=0)
    learning_rate_final: float | None = Field(None, ge=0)
    n_steps: int = Field(256, gt=0)
    batch_size: int = Field(512, gt=0)
    n_epochs: int = Field(4, gt=0)
    gamma: float = Field(0.99, gt=0, le=1)
    gae_lambda: float = Field(0.95, ge=0, le=1)
    clip_range: float = Field(0.2, gt=0)
    clip_range_final: float | None = Field(None, ge=0)
    clip_range_vf: float | None = Field(None, gt=0)
    value_clip: ValueClipConfig = Field(default_factory=ValueClipConfig)
    ent_coef: float = Field(0.0, ge=0)
    entropy: EntropyConfig = Field(default_factory=EntropyConfig)
    vf_coef: float = Field(0.5, ge=0)
    max_grad_norm: float = Field(0.5, gt=0)
    target_kl: float | None = Field(None, gt=0)
    kl_early_stop: Literal["k3", "exact"] = "k3"
    kl_penalty: bool = False
    kl_beta_init: float = Field(1.0, gt=0)
    dual_clip: float | None = Field(None, gt=1)
    log_ratio_clamp: float = Field(10.0, gt=0)
    advantage_normalization: Literal["minibatch", "rollout", "none"] = "minibatch"
    n_quantiles: int = Field(32, gt=0)
    huber_kappa: float = Field(1.0, gt=0)
    twin_critics: bool = True
    critic_value: Literal["min", "mean"] = "min"
    lstm_hidden_size: int = Field(64, gt=0)
    shared_lstm: bool = False
    net_arch: list[int] = Field(default_factory=lambda: [64])
    seq_len: int = Field(32, gt=0)
    log_std_init: float = 0.0
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    normalize_returns: bool = True
    risk: RiskConfig = Field(default_factory=RiskConfig)
    critic_adjust: CriticAdjustConfig = Field(default_factory=CriticAdjustConfig)
    awr: AWRConfig = Field(default_factory=AWRConfig)
    n_microbatches: int = Field(1, gt=0)
    optimizer: Literal["adam", "upgd", "adaptive_upgd"] = "adam"
    upgd: UPGDConfig = Field(default_factory=UPGDConfig)
    grad_scaler: GradScalerConfig = Field(default_factory=GradScalerConfig)
    robust: RobustConfig = Field(default_factory=RobustConfig)
    kl_penalty_target: float | None = Field(None, gt=0)
    grad_clip: Literal["per_network", "global"] = "per_network"
    clip_adapt: ClipAdaptConfig = Field(default_factory=ClipAdaptConfig)
    vf_coef_initial: float = Field(0.0, ge=0)
    vf_coef_warmup: float = Field(0.0, ge=0, le=1)
    seed: int | None = None
    device: str = "cpu"

    @field_validator("device")
    @classmethod
    def _check_device(cls, device: str) -> str:
        # A pattern, not torch.device(): the config models must not import torch (CLI start-up).
        if not _DEVICE.fullmatch(device):
            raise ValueError(
                f"device {device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1', 'auto')"
            )
        return device

    @model_validator(mode="after")
    def _check_relations(self) -> PPOConfig:
        if self.batch_size % self.seq_len != 0:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of seq_len ({self.seq_len}): "
                "minibatches are made of whole sequence chunks"
            )
        if self.n_steps % self.seq_len != 0:
            raise ValueError(
                f"n_steps ({self.n_steps}) must be a multiple of seq_len ({self.seq_len}): "
                "the rollout is cut into whole sequence chunks"
            )
        if not self.log_std_min < self.log_std_init < self.log_std_max:
            raise ValueError(
                f"log_std_init ({self.log_std_init}) must lie strictly between "
                f"log_std_min ({self.log_std_min}) and log_std_max ({self.log_std_max})"
            )
        if any(size <= 0 for size in self.net_arch):
            raise ValueError(f"net_arch sizes must be positive, got {self.net_arch}")
        clipping = self.value_clip.mode != "none"
        if clipping and self.clip_range_vf is None:
            raise ValueError(f"value_clip.mode {self.value_clip.mode!r} needs clip_range_vf")
        if not clipping and self.clip_range_vf is not None:
            raise ValueError(
                f"clip_range_vf ({self.clip_range_vf}) is set but value_clip.mode is 'none'; "
                "choose 'mean_shift' or 'per_quantile'"
            )
        chunks_per_batch = self.batch_size // self.seq_len
        if chunks_per_batch % self.n_microbatches != 0:
            raise ValueError(
                f"batch_size ({self.batch_size}) is {chunks_per_batch} chunks of seq_len "
                f"({self.seq_len}), which n_microbatches ({self.n_microbatches}) does not divide"
            )
        if self.kl_penalty and self.target_kl is None and self.kl_penalty_target is None:
            raise ValueError(
                "kl_penalty needs kl_penalty_target or target_kl (the KL the penalty adapts around)"
            )
        if self.clip_adapt.enabled and self.clip_range_final is not None:
            raise ValueError(
                "clip_adapt.enabled adapts the clip range; it cannot also follow the "
                f"clip_range_final ({self.clip_range_final}) schedule"
            )
        if self.clip_adapt.min_clip > self.clip_adapt.max_clip:
            raise ValueError(
                f"clip_adapt.min_clip ({self.clip_adapt.min_clip}) exceeds clip_adapt.max_clip "
                f"({self.clip_adapt.max_clip})"
            )
        return self
