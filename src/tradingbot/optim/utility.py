"""The machinery UPGD and AdaptiveUPGD share (:mod:`tradingbot.optim.upgd` explains the
method): the utility traces, their scaling into gates (global or row-wise), the gated update
with its Gaussian perturbation, the argument checks and the per-step statistics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

_SCOPES = ("global", "local")


def scaled_utility(utility: Tensor, max_utility: Tensor) -> Tensor:
    """
    Scale bias-corrected utilities into gates ``s`` in ``[0, sigmoid(1)]``.

    Parameters
    ----------
    utility : Tensor
        bias-corrected utilities ``u_hat`` of one tensor.
    max_utility : Tensor
        0-dim tensor, the maximum ``u_hat`` used for normalization.

    Returns
    -------
    Tensor
        ``sigmoid(utility / max_utility)`` where ``max_utility > 0`` and finite, else a tensor
        filled with 0.5 (see the module docstring).
    """
    valid = torch.isfinite(max_utility) & (max_utility > 0)
    # A safe denominator keeps the unused branch of ``where`` free of inf/NaN.
    denom = torch.where(valid, max_utility, torch.ones_like(max_utility))
    return torch.where(valid, torch.sigmoid(utility / denom), torch.full_like(utility, 0.5))


def local_scaled_utility(utility: Tensor) -> Tensor:
    """
    Gates of ``scope="local"``, as the reference's ``FirstOrderLocalUPGD``.

    Parameters
    ----------
    utility : Tensor
        bias-corrected utilities ``u_hat`` of one tensor.

    Returns
    -------
    Tensor
        ``sigmoid(u_hat / ||row||)`` with each row (last dimension) L2-normalized by
        ``torch.nn.functional.normalize`` (a row of zeros gives 0.5; a 0-dim tensor is one row).
    """
    rows = utility.reshape(1) if utility.dim() == 0 else utility
    return torch.sigmoid(torch.nn.functional.normalize(rows, dim=-1)).view_as(utility)


def require(ok: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``ok`` (an optimizer argument's check)."""
    if not ok:
        raise ValueError(message)


def common_defaults(
    lr: float, weight_decay: float, beta_utility: float, sigma: float, protect: bool, scope: str
) -> dict[str, Any]:
    """The options both optimizers share, checked, as param-group defaults."""
    # "not x < 0" rather than "x >= 0": a NaN passes, as it always has.
    require(not (lr < 0.0), f"Invalid learning rate: {lr}")
    require(not (weight_decay < 0.0), f"Invalid weight_decay: {weight_decay}")
    require(0.0 <= beta_utility < 1.0, f"Invalid beta_utility (need 0 <= beta < 1): {beta_utility}")
    require(not (sigma < 0.0), f"Invalid sigma: {sigma}")
    require(scope in _SCOPES, f"Invalid scope {scope!r}, expected one of {_SCOPES}")
    return {
        "lr": lr,
        "weight_decay": weight_decay,
        "beta_utility": beta_utility,
        "sigma": sigma,
        "protect": protect,
        "scope": scope,
    }


def gaussian_like(p: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise with ``p``'s shape, drawn from ``generator`` (else the global RNG)."""
    if generator is None:
        return torch.randn_like(p, memory_format=torch.contiguous_format)
    noise = torch.randn(p.shape, generator=generator, dtype=p.dtype, device=generator.device)
    return noise.to(p.device)


class UtilityGatedOptimizer(Optimizer):
    """Shared machinery: utility traces, the global/local scaling, and the per-step statistics."""

    # Per-parameter moments besides ``step`` and ``avg_utility`` (AdaptiveUPGD: Adam's).
    _moments: tuple[str, ...] = ()

    def __init__(
        self, params: Any, defaults: dict[str, Any], generator: torch.Generator | None
    ) -> None:
        super().__init__(params, defaults)
        self.generator = generator
        self._stats: dict[str, Tensor | float] = {}

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """
        Perform one optimization step.

        Parameters
        ----------
        closure : Callable[[], float] | None
            optional closure that re-evaluates the model and returns the loss.

        Returns
        -------
        float | None
            the closure's loss, if a closure was given.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._step()
        return loss

    def _step(self) -> None:
        raise NotImplementedError

    def _init_state(self, p: Tensor) -> None:
        state = self.state[p]
        if len(state) == 0:
            state["step"] = torch.tensor(0.0)
            state["avg_utility"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            for key in self._moments:
                state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _params_with_grad(self, group: dict[str, Any]) -> list[Tensor]:
        """The group's parameters that have a (dense) gradient, their state initialized."""
        params = [p for p in group["params"] if p.grad is not None and p.numel() > 0]
        for p in params:
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            self._init_state(p)
        return params

    def _gated_update(
        self, p: Tensor, direction: Tensor, gate: Tensor, noise_std: float, group: dict[str, Any]
    ) -> None:
        """``p <- p (1 - lr wd) - lr u`` with ``u = (direction + noise) * gate`` (``protect``)
        or ``direction + noise * gate``; no noise is drawn when ``noise_std`` is 0."""
        if noise_std > 0.0:
            noise = gaussian_like(p, self.generator).mul_(noise_std)
            if group["protect"]:
                update = (direction + noise) * gate
            else:
                update = direction + noise * gate
        else:
            update = direction * gate if group["protect"] else direction
        lr = group["lr"]
        p.mul_(1.0 - lr * group["weight_decay"]).add_(update, alpha=-lr)

    @property
    def last_stats(self) -> dict[str, float]:
        """Statistics of the latest step, as floats (converted lazily to avoid a sync per step).

        ``mean_utility``: mean of the scaled utility ``s`` over all updated elements;
        ``max_utility``: the largest bias-corrected utility ``u_hat``; ``noise_std``: the standard
        deviation of the noise actually used (``sigma`` of the first group, or the adaptive one).
        """
        return {k: float(v) for k, v in self._stats.items()}

    def _update_utilities(self, group: dict[str, Any], params: list[Tensor]) -> list[Tensor]:
        """Advance the step count and utility EMA of ``params``; return their ``u_hat``."""
        beta = group["beta_utility"]
        u_hats = []
        for p in params:
            state = self.state[p]
            state["step"] += 1
            avg = state["avg_utility"]
            avg.mul_(beta).addcmul_(p.grad, p, value=-(1.0 - beta))
            bias_correction = 1.0 - beta ** float(state["step"])
            u_hats.append(avg / bias_correction)
        return u_hats

    def _gates(
        self,
        groups: list[tuple[dict[str, Any], list[Tensor], list[Tensor]]],
    ) -> list[list[Tensor]]:
        """Scaled utilities ``s`` per group and parameter: by the global maximum, or row-wise
        L2-normalized (``scope="local"``)."""
        global_maxes = [u.max() for g, _, us in groups if g["scope"] == "global" for u in us]
        global_max = torch.stack(global_maxes).max() if global_maxes else None
        gates = []
        for group, _, u_hats in groups:
            if group["scope"] == "global":
                gates.append([scaled_utility(u, global_max) for u in u_hats])
            else:
                gates.append([local_scaled_utility(u) for u in u_hats])
        return gates

    def _record_stats(
        self, gates: list[list[Tensor]], u_hats: list[list[Tensor]], noise_std: Tensor | float
    ) -> None:
        flat_s = [s.reshape(-1) for gs in gates for s in gs]
        if not flat_s:
            return
        self._stats = {
            "mean_utility": torch.cat(flat_s).mean().detach(),
            "max_utility": torch.stack([u.max() for us in u_hats for u in us]).max().detach(),
            "noise_std": noise_std,
        }
