"""Hyperparameters of DistributionalPPO: the single home of every default."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class PPOConfig(BaseModel):
    """
    Hyperparameters of :class:`tradingbot.algo.ppo.DistributionalPPO`.

    :param learning_rate: Adam learning rate.
    :param n_steps: Steps collected per environment in one rollout.
    :param batch_size: Samples (time steps) per minibatch; a whole number of ``seq_len`` chunks.
    :param n_epochs: Passes over the rollout per update.
    :param gamma: Discount factor.
    :param gae_lambda: GAE(lambda) trace parameter.
    :param clip_range: PPO surrogate clip range epsilon.
    :param clip_range_vf: Reserved for distributional value clipping (not implemented yet);
        must stay ``None``.
    :param ent_coef: Entropy bonus coefficient.
    :param vf_coef: Critic loss coefficient.
    :param max_grad_norm: Gradient-norm clip, applied to the actor and to the critic parameters.
    :param target_kl: Stop the update's epochs when the k3 KL estimate of a minibatch exceeds
        ``1.5 * target_kl`` (``None`` disables early stopping).
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
    :param seed: Seed of the random generators (``None``: not seeded).
    :param device: Torch device.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    learning_rate: float = Field(3e-4, gt=0)
    n_steps: int = Field(256, gt=0)
    batch_size: int = Field(512, gt=0)
    n_epochs: int = Field(4, gt=0)
    gamma: float = Field(0.99, gt=0, le=1)
    gae_lambda: float = Field(0.95, ge=0, le=1)
    clip_range: float = Field(0.2, gt=0)
    clip_range_vf: float | None = None
    ent_coef: float = Field(0.0, ge=0)
    vf_coef: float = Field(0.5, ge=0)
    max_grad_norm: float = Field(0.5, gt=0)
    target_kl: float | None = Field(None, gt=0)
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
    seed: int | None = None
    device: str = "cpu"

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
        if self.clip_range_vf is not None:
            # Refuse rather than silently ignore: value clipping for the quantile critic comes
            # with its modes (none / mean_shift / per_quantile) in a later issue.
            raise ValueError(
                f"clip_range_vf ({self.clip_range_vf}) is not supported yet; leave it None"
            )
        return self
