"""The option sections of :class:`~tradingbot.algo.config.PPOConfig` (risk, critic
adjustment, value clipping, entropy schedule, AWR, UPGD, gradient scaler, robust training,
adaptive clip range): the single home of their defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Section(BaseModel):
    # allow_inf_nan=False: an infinite or NaN hyperparameter (``learning_rate: .inf``) is refused.
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, allow_inf_nan=False, defer_build=True
    )


class RiskConfig(_Section):
    """
    CVaR risk objective (see :mod:`tradingbot.algo.risk`).

    Parameters
    ----------
    mode : Literal['none', 'mean_cvar', 'cvar_constraint']
        ``none`` (risk-neutral); ``mean_cvar`` (maximize E[G] + weight * CVaR_alpha(G) by
        Rockafellar-Uryasev shaping of the return used for the advantage); ``cvar_constraint``
        (the same shaping with the weight a Lagrange multiplier, updated by dual ascent to keep
        the estimated CVaR_alpha of the rollout's returns >= ``cvar_limit``).
    alpha : float
        CVaR level (the worst ``alpha`` fraction of outcomes).
    weight : float
        lambda of ``mean_cvar``; the initial multiplier of ``cvar_constraint``.
    cvar_limit : float
        Lower limit of CVaR_alpha (return units) for ``cvar_constraint``.
    dual_lr : float
        Dual-ascent step: ``lambda <- clip(lambda + dual_lr * (limit - CVaR))``.
    max_multiplier : float
        Upper bound of the Lagrange multiplier.
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

    Parameters
    ----------
    mode : Literal['none', 'dsac_t']
        ``none`` (plain quantile loss) or ``dsac_t``: each sample's loss is weighted by
        ``(sigma_bar^2 + eps) / (sigma_i^2 + eps)`` (detached), ``sigma_i`` the std of its
        predicted quantiles and ``sigma_bar`` a moving average of the batch-mean ``sigma``.
    eps : float
        The ``eps`` of the weight.
    rate : float
        Moving-average rate of ``sigma_bar`` (``sigma_bar += rate * (mean - sigma_bar)``).
    target_clip : bool
        Clip the target to within ``xi * sigma_bar`` of the predicted mean.
    xi : float
        The clipping width in units of ``sigma_bar``.
    weight_clamp : tuple[float, float] | None
        ``[low, high]`` bounds of the per-sample weights (e.g. ``[0.1, 10]``), so that a sample
        whose quantiles collapse cannot dominate the loss (``None``: off).
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

    Parameters
    ----------
    final : float | None
        Coefficient at the end of training (``None``: constant ``ent_coef``).
    boost_factor : float
        Multiplicative boost per low-EV update (1: no boost).
    boost_max : float
        Bound of the boost.
    ev_threshold : float
        Explained-variance threshold below which the boost grows.
    minimum : float
        Lower clamp of the coefficient, applied after decay and boost.
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

    Parameters
    ----------
    enabled : bool
        Add the term.
    coef : float
        Initial coefficient.
    beta : float
        Temperature of the weights.
    max_weight : float
        Upper bound of a weight.
    max_ratio : float
        Bound of ``coef * |BC loss| / mean_i |surrogate_i|`` (the mean size of PPO's per-sample
        clipped-surrogate terms, not the policy loss, which averages terms of both signs to ~0),
        per minibatch; above it (mean over an update) the coefficient is multiplied by
        ``decay``.
    decay : float
        Coefficient decay factor.
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
    """Options of :class:`tradingbot.optim.VarianceGradientScaler`: when ``enabled``, its
    factor multiplies the gradient after the norm clip, which bounds the raw gradient
    (``max_grad_norm``). ``max_ratio`` bounds each tensor's
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

    Parameters
    ----------
    enabled : bool
        Add the robustness regularizer.
    epsilon : float
        Radius of the L-infinity ball (after the warm-up). PBT-mutable.
    kappa : float
        Weight of the regularizer. PBT-mutable.
    fraction : float
        Fraction of each minibatch's chunks that are attacked (at least one).
    pgd_steps : int
        PGD steps K (after a uniform random start in the ball).
    step_size : float | None
        PGD step size (``None``: ``2.5 * epsilon / pgd_steps``).
    warmup_fraction : float
        Epsilon grows linearly from 0 to ``epsilon`` over this fraction of training (0: constant
        epsilon).
    perturb_last : bool
        Also perturb the last observation entry. Off by default: in the trading env it is the
        agent's own position, which it knows exactly, so the realistic threat perturbs only the
        market features. Turn it on for envs without that layout.
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

    Parameters
    ----------
    enabled : bool
        Adapt the clip range.
    target_kl : float
        The KL the clip range adapts around.
    factor : float
        Multiplicative step (> 1).
    min_clip : float
        Lower bound of the clip range.
    max_clip : float
        Upper bound of the clip range.
    """

    enabled: bool = False
    target_kl: float = Field(0.01, gt=0)
    factor: float = Field(1.5, gt=1)
    min_clip: float = Field(0.02, gt=0)
    max_clip: float = Field(0.5, gt=0)


class ExplorationConfig(_Section):
    """
    Exploration noise of a Gaussian (Box) policy and how its actions are bounded.

    Parameters
    ----------
    mode : Literal['independent', 'gsde']
        ``independent``: a state-independent diagonal Gaussian, ``std = exp(log_std)`` per
        action dimension, fresh noise at every step. ``gsde``: generalized state-dependent
        exploration (Raffin et al. 2021, arXiv 2005.05719): the noise is ``phi(s) @ theta``,
        ``phi`` the actor's last hidden features (detached) and ``theta`` a per-env matrix
        drawn from ``N(0, sigma^2)`` every ``sample_freq`` steps, ``sigma = exp(log_std)`` a
        learned (features x actions) matrix; the action's Gaussian has the per-state variance
        ``sum_j phi_j^2 sigma_jk^2``. ``PPOConfig.log_std_init/min/max`` apply to every entry
        of ``log_std`` in both modes.
    sample_freq : int
        gSDE: draw new noise matrices every ``sample_freq`` env steps of a rollout (and at its
        start); 0: once per rollout.
    squash : Literal['tanh', 'clip']
        ``tanh``: the action is ``center + half_range * tanh(u)`` and its log-probability
        includes the change of variables; ``clip``: the env receives ``u`` clipped to the Box
        and the log-probability is the Gaussian's of ``u`` (as SB3 does without squashing).
    """

    mode: Literal["independent", "gsde"] = "independent"
    sample_freq: int = Field(4, ge=0)
    squash: Literal["tanh", "clip"] = "tanh"


class ObservationNormalizationConfig(_Section):
    """
    Observation normalization owned by the algorithm (see :mod:`tradingbot.algo.obs_normalization`):
    the policy reads ``clip((obs - mean) / sqrt(var + epsilon), -clip, clip)`` with running
    statistics of the raw observations (SB3's ``RunningMeanStd``), held constant within a rollout
    and updated after each update, when the LSTMs' input weights are rewritten so that the
    function of the raw observation stays the same (exact where the clip does not bind): moving
    statistics do not move a policy that has stopped learning. Use it instead of ``VecNormalize``'s
    observation normalization, not on top of it.

    Parameters
    ----------
    enabled : bool
        Normalize the observations inside the algorithm.
    clip : float
        Bound of the normalized observation (``VecNormalize``'s ``clip_obs``).
    epsilon : float
        Added to the variance before the square root (``VecNormalize``'s ``epsilon``).
    compensate_initial : bool
        Rewrite the input weights at the first statistics update too (from ``RunningMeanStd``'s
        start, mean 0 and variance 1, which the first rollout is normalized with). ``False``:
        the first update of the statistics sets them and leaves the weights, which were drawn
        for inputs of unit scale, to read inputs of unit scale (the policy's function of raw
        observations changes once, after the first update, as under ``VecNormalize``).
    """

    enabled: bool = False
    clip: float = Field(10.0, gt=0)
    epsilon: float = Field(1e-8, gt=0)
    compensate_initial: bool = True
