"""Hyperparameters of DistributionalPPO: the single home of every default (:class:`PPOConfig`;
its option sections in :mod:`tradingbot.algo.config_sections`)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The option sections (their home; imported here for PPOConfig's fields and for callers).
from tradingbot.algo.config_sections import (
    AWRConfig,
    ClipAdaptConfig,
    CriticAdjustConfig,
    EntropyConfig,
    ExplorationConfig,
    GradScalerConfig,
    ObservationNormalizationConfig,
    RiskConfig,
    RobustConfig,
    UPGDConfig,
    ValueClipConfig,
)

_DEVICE = re.compile(r"auto|cpu|mps|meta|(cuda|xpu|hip)(:\d+)?")


class PPOConfig(BaseModel):
    """
    Hyperparameters of :class:`tradingbot.algo.ppo.DistributionalPPO`.

    Parameters
    ----------
    learning_rate : float
        Learning rate (the initial one when ``learning_rate_final`` is set).
    learning_rate_final : float | None
        Learning rate at the end of training, reached linearly over training progress (``None``:
        constant).
    n_steps : int
        Steps collected per environment in one rollout.
    batch_size : int
        Samples (time steps) per minibatch; a whole number of ``seq_len`` chunks.
    n_epochs : int
        Passes over the rollout per update.
    gamma : float
        Discount factor.
    gae_lambda : float
        GAE(lambda) trace parameter.
    clip_range : float
        PPO surrogate clip range epsilon (the initial one when ``clip_range_final`` is set).
    clip_range_final : float | None
        Clip range at the end of training, linear in training progress (``None``: constant).
    clip_range_vf : float | None
        Clip range of distributional value clipping, in the critic's normalized units; required
        by, and only allowed with, ``value_clip.mode != "none"``.
    value_clip : ValueClipConfig
        Value-clipping mode (:class:`ValueClipConfig`).
    ent_coef : float
        Entropy bonus coefficient (the initial one when ``entropy.final`` is set).
    entropy : EntropyConfig
        Entropy-coefficient schedule (:class:`EntropyConfig`).
    vf_coef : float
        Critic loss coefficient.
    max_grad_norm : float
        Gradient-norm clip, applied to the actor and to the critic parameters (``grad_clip``).
    target_kl : float | None
        Stop the update's epochs when the KL of a minibatch (estimator ``kl_early_stop``)
        exceeds ``1.5 * target_kl`` (``None`` disables early stopping); also the target of the
        adaptive KL penalty.
    kl_early_stop : Literal['k3', 'exact']
        KL used for the early stop: ``k3`` estimator ``mean((r - 1) - log r)`` or ``exact``
        KL(old || new) of the action distributions (Gaussian / categorical).
    kl_penalty : bool
        Add ``beta * exact KL`` to the loss; beta is doubled after an update whose exact KL(old
        || new) over the rollout, measured after the update (as in the PPO paper), exceeds ``1.5
        * target`` and halved below ``target / 1.5``, with ``target`` the ``kl_penalty_target``
        (else ``target_kl``).
    kl_beta_init : float
        Initial beta of the KL penalty.
    dual_clip : float | None
        Dual-clip constant c (> 1): for negative advantages the surrogate is bounded below by
        ``c * A`` (``None``: off).
    log_ratio_clamp : float
        The new/old log-probability ratio is clamped to +-this before ``exp``.
    advantage_normalization : Literal['minibatch', 'rollout', 'none']
        ``minibatch`` (per minibatch), ``rollout`` (once over the whole rollout) or ``none``.
    n_quantiles : int
        Quantiles per critic, at midpoints ``(i + 0.5) / n_quantiles``.
    huber_kappa : float
        Huber threshold of the quantile Huber loss.
    twin_critics : bool
        Train two critic heads; the value is their min or mean.
    critic_value : Literal['min', 'mean']
        How twin critics are combined into the value: ``min`` or ``mean``.
    lstm_hidden_size : int
        Hidden size of each LSTM.
    shared_lstm : bool
        One LSTM for actor and critic instead of one each.
    net_arch : list[int]
        Hidden sizes of the MLP after the LSTM (actor and each critic).
    activation : Literal['tanh', 'relu']
        Activation after every hidden layer of ``net_arch`` (the actor's trunk and each
        critic's head); the output layers have none. Under gSDE the features ``phi`` are the
        actor's last hidden activations: bounded by tanh, unbounded under ReLU (as in SB3).
    ortho_init : bool
        Orthogonal init of the Linear layers after the LSTMs (gain sqrt 2 on hidden layers, 0.01
        on the actor's output, 1 on the critics'; zero biases). ``False``: PyTorch's default
        init of every one of them, weights and biases uniform in +-1/sqrt(fan_in) (SB3's
        ``ortho_init=False``); the critics' output bias still starts its quantile gaps at an
        even spread, which keeps the quantiles monotone and apart from the start. The LSTMs'
        init (uniform in +-1/sqrt(state size)) is the same either way: SB3's ``ortho_init``
        does not touch its LSTMs either.
    seq_len : int
        Length of the sequence chunks minibatches are made of (truncated BPTT).
    log_std_init : float
        Initial log standard deviation of the Gaussian policy.
    log_std_min : float
        Lower bound of the log standard deviation.
    log_std_max : float
        Upper bound of the log standard deviation.
    exploration : ExplorationConfig
        State-independent or state-dependent (gSDE) exploration noise and the action's
        bounding (:class:`ExplorationConfig`).
    normalize_returns : bool
        Critic predicts returns normalized by running mean/std.
    risk : RiskConfig
        CVaR risk objective (:class:`RiskConfig`).
    critic_adjust : CriticAdjustConfig
        DSAC-T variance-based critic weights (:class:`CriticAdjustConfig`).
    awr : AWRConfig
        Advantage-weighted behaviour-cloning term (:class:`AWRConfig`).
    n_microbatches : int
        Split each minibatch (of whole chunks) into this many microbatches whose gradients are
        accumulated (same gradient as the whole minibatch).
    optimizer : Literal['adam', 'upgd', 'adaptive_upgd']
        ``adam``, ``upgd`` or ``adaptive_upgd`` (options in ``upgd``).
    upgd : UPGDConfig
        Options of the UPGD optimizers (:class:`UPGDConfig`).
    grad_scaler : GradScalerConfig
        Variance gradient scaler (:class:`GradScalerConfig`).
    robust : RobustConfig
        State-adversarial robust training (:class:`RobustConfig`).
    kl_penalty_target : float | None
        Target KL of the KL penalty (``None``: ``target_kl``), so the penalty can run without
        ``target_kl``'s early stopping.
    grad_clip : Literal['per_network', 'global']
        ``per_network``: clip the actor's and the critic's gradient norms to ``max_grad_norm``
        each (the critic's norm is larger than the actor's, 2-3x on the oracle market, and a
        global clip shrinks the actor's step with it); ``global``: clip the norm over all
        parameters (as ``torch.nn.utils.clip_grad_norm_``). Both learn equally well on the
        oracle market (docs/benchmarks.md). ``train/grad_norm`` logs the global norm either way.
    clip_adapt : ClipAdaptConfig
        Adaptive surrogate clip range (:class:`ClipAdaptConfig`).
    vf_coef_initial : float
        Value-loss coefficient at the start of the warm-up.
    vf_coef_warmup : float
        Fraction of training over which the value-loss coefficient grows linearly from
        ``vf_coef_initial`` to ``vf_coef`` (0: no warm-up, ``vf_coef`` throughout).
    compile : Literal['off', 'auto', 'on']
        Run the minibatch loss after the LSTMs (heads, distributions, losses, forward and
        backward) through ``torch.compile`` (inductor): ``on``, ``off``, or ``auto``: when a
        ``learn`` call trains at least ``compile_min_timesteps`` steps and a C++ compiler is
        present. Compiling takes tens of seconds once per process and configuration
        (docs/benchmarks.md); the numbers differ from the eager path's by float32 rounding.
    compile_min_timesteps : int
        The run length from which ``compile = 'auto'`` compiles (where the measured saving per
        step has paid for the compilation).
    observation_normalization : ObservationNormalizationConfig
        Running observation statistics owned by the algorithm, the policy's input weights
        rewritten as they move (:class:`ObservationNormalizationConfig`).
    seed : int | None
        Seed of the random generators (``None``: not seeded).
    device : str
        Torch device.
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
    activation: Literal["tanh", "relu"] = "tanh"
    ortho_init: bool = True
    seq_len: int = Field(32, gt=0)
    log_std_init: float = 0.0
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    exploration: ExplorationConfig = Field(default_factory=ExplorationConfig)
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
    compile: Literal["off", "auto", "on"] = "auto"
    compile_min_timesteps: int = Field(5_000_000, gt=0)
    observation_normalization: ObservationNormalizationConfig = Field(
        default_factory=ObservationNormalizationConfig
    )
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
        if self.observation_normalization.enabled and self.robust.enabled:
            # The attack's bounds are the raw observation space's; the update would see
            # normalized observations.
            raise ValueError(
                "observation_normalization.enabled cannot be combined with robust.enabled: the "
                "robust attack clamps to the raw observation bounds"
            )
        return self
