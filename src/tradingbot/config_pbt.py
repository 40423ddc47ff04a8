"""The ``pbt`` section of a run config: population-based training on Ray Tune."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tradingbot.config_base import StrictModel


class MutationSpec(StrictModel):
    """How PBT samples and perturbs one hyperparameter: uniform (or log-uniform) in
    [low, high]; a perturbed value is clipped back into the range."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> MutationSpec:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        return self


def _default_mutations() -> dict[str, MutationSpec]:
    return {
        "algo.learning_rate": MutationSpec(low=1e-5, high=1e-3, log=True),
        "algo.ent_coef": MutationSpec(low=0.0, high=0.02),
        "algo.clip_range": MutationSpec(low=0.1, high=0.3),
        "algo.vf_coef": MutationSpec(low=0.25, high=1.0),
        "algo.risk.weight": MutationSpec(low=0.0, high=1.0),
        "algo.grad_scaler.alpha": MutationSpec(low=0.0, high=2.0),
        "algo.upgd.sigma": MutationSpec(low=1e-5, high=1e-2, log=True),
        # Robust training (only acts with algo.robust.enabled): the attack radius in normalized
        # feature units (z-scores) and the regularizer weight.
        "algo.robust.epsilon": MutationSpec(low=0.01, high=0.3),
        "algo.robust.kappa": MutationSpec(low=0.01, high=1.0, log=True),
    }


class PBTConfig(StrictModel):
    """Population-based training on Ray Tune (``tradingbot pbt``; see :mod:`tradingbot.pbt`).

    Each member trains ``perturbation_interval`` updates, is scored on ``split`` with
    ``metric`` and reported to Tune; members in the bottom ``quantile_fraction`` copy the full
    checkpoint of one in the top fraction and perturb its hyperparameters (each resampled with
    ``resample_probability``, else multiplied by one of ``perturbation_factors``). A member's
    budget is ``run.total_timesteps``. ``mutations`` maps dotted config paths (``algo.*``) to
    ranges; paths the algorithm config lacks are skipped with a log line.
    """

    population: int = Field(8, ge=2)
    perturbation_interval: int = Field(5, ge=1)  # updates between reports
    quantile_fraction: float = Field(0.25, gt=0.0, le=0.5)
    resample_probability: float = Field(0.25, ge=0.0, le=1.0)
    perturbation_factors: tuple[float, float] = (1.2, 0.8)
    synch: bool = False
    metric: str = "sharpe"  # a key of tradingbot.evaluate.backtest.backtest_metrics
    mode: Literal["max", "min"] = "max"
    split: str = "validation"
    max_failures: int = Field(3, ge=0)  # retries of a crashed member from its last checkpoint
    cpus_per_trial: float = Field(1.0, gt=0.0)
    mutations: dict[str, MutationSpec] = Field(default_factory=_default_mutations)
