"""Running statistics of DistributionalPPO's updates, saved with the model as one object."""

from __future__ import annotations

import dataclasses

import torch as th

from tradingbot.optim import VarianceGradientScaler

_SCALAR_FIELDS = (
    "sigma_bar",
    "kl_beta",
    "risk_multiplier",
    "entropy_boost",
    "awr_coef",
    "skipped_steps",
    "clip_range",
)


@dataclasses.dataclass
class TrainState:
    """
    Statistics carried from update to update (``DistributionalPPO.train_state``).

    Parameters
    ----------
    sigma_bar : float
        DSAC-T moving average of the batch-mean quantile spread (0 until the first update sets
        it; 0 rather than NaN so that saved states compare equal).
    kl_beta : float
        Adaptive KL-penalty coefficient.
    risk_multiplier : float
        CVaR weight lambda (a Lagrange multiplier under ``cvar_constraint``).
    entropy_boost : float
        Multiplicative entropy-coefficient boost.
    awr_coef : float
        Current AWR behaviour-cloning coefficient.
    skipped_steps : int
        Optimizer steps skipped (non-finite loss or gradient) or undone (non-finite parameter
        after the step), in total.
    clip_range : float
        The adapted surrogate clip range (``clip_adapt``; 0 until the first update sets it).
    scaler : VarianceGradientScaler | None
        The variance gradient scaler (``None`` when disabled).
    """

    sigma_bar: float = 0.0
    kl_beta: float = 1.0
    risk_multiplier: float = 0.0
    entropy_boost: float = 1.0
    awr_coef: float = 0.0
    skipped_steps: int = 0
    clip_range: float = 0.0
    scaler: VarianceGradientScaler | None = None

    def state_dict(self) -> dict[str, th.Tensor]:
        """Flat tensors (float64 / int64 scalars, and the scaler's state under ``scaler.``)."""
        state = {
            name: th.tensor(
                getattr(self, name), dtype=th.int64 if name == "skipped_steps" else th.float64
            )
            for name in _SCALAR_FIELDS
        }
        if self.scaler is not None:
            for key, value in self.scaler.state_dict().items():
                if isinstance(value, th.Tensor):
                    tensor = value.detach().clone()
                else:
                    tensor = th.tensor(
                        value, dtype=th.int64 if isinstance(value, int) else th.float64
                    )
                state[f"scaler.{key}"] = tensor
        return state

    def load_state_dict(self, state: dict[str, th.Tensor]) -> None:
        """Restore :meth:`state_dict`'s output (the scaler's part only if this one has one)."""
        for name in _SCALAR_FIELDS:
            if name not in state:  # saved before the field existed: keep the default
                continue
            value = state[name]
            setattr(self, name, int(value) if name == "skipped_steps" else float(value))
        if self.scaler is not None:
            scaler_state: dict[str, th.Tensor | int | float] = {
                k.removeprefix("scaler."): v for k, v in state.items() if k.startswith("scaler.")
            }
            for key in ("step_count", "grad_norm_steps"):
                if key in scaler_state:
                    scaler_state[key] = int(scaler_state[key])
            for key in ("last_factor", "last_ratio", "grad_norm_ema"):
                if key in scaler_state:
                    scaler_state[key] = float(scaler_state[key])
            self.scaler.load_state_dict(scaler_state)

    def snapshot(self) -> dict[str, th.Tensor]:
        """A copy of the state (to compare or restore)."""
        return {k: v.clone() for k, v in self.state_dict().items()}
