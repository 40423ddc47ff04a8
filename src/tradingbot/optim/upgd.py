"""Utility-based Perturbed Gradient Descent (UPGD) and its Adam-based variant.

Elsayed & Mahmood, "Addressing Loss of Plasticity and Catastrophic Forgetting in Continual
Learning", ICLR 2024 (reference code: github.com/mohmdelsayed/upgd). Both optimizers keep, per
weight, an exponential moving average of the first-order utility ``u = -g * w`` (the first-order
estimate of how much the loss would rise if the weight were set to zero), scale it into
``s = sigmoid(u_hat / max u_hat)`` and use ``1 - s`` to gate the update: useful weights (``s``
near ``sigmoid(1)``) change less, useless ones (``s`` near 0) are trained and perturbed more.

Two deliberate choices, shared by both classes:

- **Step constant.** The update uses the plain learning rate, as in the paper's equation:
  ``w <- w (1 - lr wd) - lr (g + noise) (1 - s)``. The repository's README uses ``2 lr`` for the
  step but keeps ``1 - lr wd`` for the decay, which makes a weight with zero utility
  (``s = 0.5``) move exactly like SGD with ``lr``; to reproduce the reference with ``lr_ref`` and
  ``wd_ref``, pass ``lr = 2 lr_ref`` and ``weight_decay = wd_ref / 2`` (doubling ``lr`` alone
  also doubles the decay whenever ``wd_ref > 0``).
- **Non-positive maximum utility.** Where the maximum bias-corrected utility used for the scaling
  (over all parameters, ``scope="global"``) is ``<= 0`` (or not finite), no weight has a
  positive estimated utility and the ratio ``u_hat / max`` is meaningless (the reference
  divides by it, which flips signs, or gives ``inf``/``NaN`` at zero). Every scaled utility is
  then set to ``sigmoid(0) = 0.5``, the value the formula gives a weight of zero utility: all
  weights are gated equally, none is protected.

``scope="local"`` follows the reference's ``FirstOrderLocalUPGD``: each row (last dimension) of
a tensor's bias-corrected utilities is L2-normalized, ``s = sigmoid(u_hat / ||u_hat_row||)``
(``torch.nn.functional.normalize``); a row of zeros gives ``s = 0.5``.

The global maximum is taken over the bias-corrected utilities, so the ratio ``u_hat / max u_hat``
equals ``ema / max ema`` (all parameters share the step count); the reference divides the corrected
utility by the uncorrected maximum, which inflates the ratio by ``1 / (1 - beta^t)`` early on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from tradingbot.optim.utility import (
    UtilityGatedOptimizer,
    common_defaults,
    local_scaled_utility,
    require,
    scaled_utility,
)

__all__ = ["UPGD", "AdaptiveUPGD", "local_scaled_utility", "scaled_utility"]

# Keys kept in ``param_groups[0]`` by AdaptiveUPGD so the standard state_dict carries them.
_NORM_EMA_KEY = "direction_rms_ema"
_NORM_STEPS_KEY = "direction_rms_steps"


class UPGD(UtilityGatedOptimizer):
    """
    Utility-based Perturbed Gradient Descent (first-order utility).

    Per step, for each weight ``w`` with gradient ``g``:
    ``u = -g w``; ``ema <- beta_u ema + (1 - beta_u) u``; ``u_hat = ema / (1 - beta_u^t)``;
    ``s = sigmoid(u_hat / M)`` with ``M`` the maximum ``u_hat`` over all parameters of all groups
    with ``scope="global"`` (``scope="local"``: ``M`` is the L2 norm of the row, last dimension,
    of the tensor, as the reference's local variant);
    ``noise ~ N(0, sigma^2)`` and

    - ``protect=True`` (the paper's UPGD): ``w <- w (1 - lr wd) - lr (g + noise) (1 - s)``;
    - ``protect=False`` (non-protecting): ``w <- w (1 - lr wd) - lr (g + noise (1 - s))``.

    The step constant is ``lr`` (the README of the reference repository steps with ``2 lr`` and
    decays with ``1 - lr wd``: pass ``2 * lr`` and ``weight_decay / 2`` to reproduce it). When
    the global ``M <= 0`` (no weight has positive utility) every ``s`` is 0.5 (``sigmoid(0)``)
    instead of dividing by ``M``. With ``sigma == 0`` no noise is drawn and the random number
    generator is not advanced; otherwise one draw of ``p.shape`` is made per
    parameter with a gradient, in ``param_groups`` order. Parameters without a gradient are
    skipped. The state (``step``, ``avg_utility`` per parameter) is standard optimizer state.

    Parameters
    ----------
    params : Iterable[Tensor] | Iterable[dict[str, Any]]
        iterable of parameters or of parameter-group dicts.
    lr : float
        learning rate.
    weight_decay : float
        decoupled weight decay: weights are multiplied by ``1 - lr * wd``.
    beta_utility : float
        EMA decay of the utility trace, in ``[0, 1)``.
    sigma : float
        standard deviation of the Gaussian perturbation.
    protect : bool
        gate gradient and noise by ``1 - s`` (True) or only the noise (False).
    scope : str
        ``"global"``: normalize by the maximum utility over all parameters; ``"local"``:
        L2-normalize each row (last dimension) of each tensor.
    generator : torch.Generator | None
        optional ``torch.Generator`` for the noise (on the device where the noise is drawn); its
        state is not part of ``state_dict`` — save ``generator.get_state()`` with the other RNG
        states. ``None`` uses the global RNG.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        weight_decay: float = 0.0,
        beta_utility: float = 0.999,
        sigma: float = 1e-3,
        protect: bool = True,
        scope: str = "global",
        generator: torch.Generator | None = None,
    ) -> None:
        defaults = common_defaults(lr, weight_decay, beta_utility, sigma, protect, scope)
        super().__init__(params, defaults, generator)

    def _step(self) -> None:

        groups = []
        for group in self.param_groups:
            params = self._params_with_grad(group)
            groups.append((group, params, self._update_utilities(group, params)))

        gates = self._gates(groups)
        for (group, params, _), group_gates in zip(groups, gates, strict=True):
            for p, s in zip(params, group_gates, strict=True):
                self._gated_update(p, p.grad, 1.0 - s, group["sigma"], group)

        sigma0 = float(self.param_groups[0]["sigma"])
        self._record_stats(gates, [us for _, _, us in groups], sigma0)


class AdaptiveUPGD(UtilityGatedOptimizer):
    """
    UPGD on Adam's bias-corrected moments.

    Per step, Adam's moments ``m <- beta1 m + (1 - beta1) g``, ``v <- beta2 v + (1 - beta2) g^2``
    give the direction ``d = m_hat / (sqrt(v_hat) + eps)`` (computed exactly like
    ``torch.optim.Adam``); the utility and ``s`` are computed as in :class:`UPGD`; then

    - ``protect=True``: ``w <- w (1 - lr wd) - lr (d + noise) (1 - s)`` (as the reference's
      adaptive variant); with ``sigma = 0`` and every ``s`` equal this is Adam with learning rate
      ``lr (1 - s)``;
    - ``protect=False``: ``w <- w (1 - lr wd) - lr (d + noise (1 - s))``.

    Noise is ``N(0, sigma_eff^2)`` with ``sigma_eff = sigma`` or, with ``adaptive_noise=True``,
    ``sigma_eff = max(sigma * r_hat, min_noise_std)`` (0 where ``sigma = 0``) where ``r_hat`` is
    the bias-corrected EMA (decay ``beta_noise``) of the root mean square of Adam's direction
    ``d`` over all elements of all groups: the noise stays ``sigma`` times the size of the
    update it perturbs. Adam's direction does not change when all gradients are rescaled, so
    neither does the noise (nor does the fixed noise); what the adaptive noise follows is the
    direction's size, which shrinks where the gradients' sign is noisy (``|m_hat| <<
    sqrt(v_hat)``). (Scaling by the gradient norm instead would make the noise-to-update ratio
    follow the gradient scale: measured ratio of noise to direction 3.2 at gradients x1 and
    0.032 at x0.01, against 0.10 for both with fixed noise and with this rule.) That EMA and its
    step count live in ``param_groups[0]`` (keys ``direction_rms_ema``,
    ``direction_rms_steps``), so the standard ``state_dict`` carries them; ``adaptive_noise``,
    ``beta_noise`` and ``min_noise_std`` of the first group decide for all groups. Step constant
    ``lr`` and the ``max <= 0 -> s = 0.5`` rule are as in :class:`UPGD`. After each step
    ``last_stats`` holds ``mean_utility``, ``max_utility`` and ``noise_std``.

    Parameters
    ----------
    params, lr, weight_decay, beta_utility, scope, generator
        As in :class:`UPGD`.
    betas : tuple[float, float]
        Adam's decay rates of the first and second moments.
    eps : float
        added to ``sqrt(v_hat)`` as in Adam.
    sigma : float
        noise standard deviation (relative to the RMS of Adam's direction if
        ``adaptive_noise``).
    protect : bool
        gate Adam's direction and the noise by ``1 - s`` (True) or only the noise.
    adaptive_noise : bool
        scale ``sigma`` by the bias-corrected EMA of the RMS of Adam's direction.
    beta_noise : float
        EMA decay of that RMS, in ``[0, 1)``.
    min_noise_std : float
        floor of the adaptive noise's standard deviation ``sigma_eff``.
    """

    _moments = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        beta_utility: float = 0.999,
        sigma: float = 1e-3,
        protect: bool = True,
        scope: str = "global",
        adaptive_noise: bool = False,
        beta_noise: float = 0.99,
        min_noise_std: float = 1e-6,
        generator: torch.Generator | None = None,
    ) -> None:
        common = common_defaults(lr, weight_decay, beta_utility, sigma, protect, scope)
        require(0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0, f"Invalid betas: {betas}")
        require(not (eps < 0.0), f"Invalid eps: {eps}")
        require(0.0 <= beta_noise < 1.0, f"Invalid beta_noise: {beta_noise}")
        require(not (min_noise_std < 0.0), f"Invalid min_noise_std: {min_noise_std}")
        defaults = {
            **common,
            "betas": tuple(betas),
            "eps": eps,
            "adaptive_noise": adaptive_noise,
            "beta_noise": beta_noise,
            "min_noise_std": min_noise_std,
        }
        super().__init__(params, defaults, generator)
        # Global (cross-group) counters live in the first group: the standard state_dict keeps
        # every non-"params" key of each group, and load_state_dict restores them.
        self.param_groups[0].setdefault(_NORM_EMA_KEY, 0.0)
        self.param_groups[0].setdefault(_NORM_STEPS_KEY, 0)

    def _direction_rms(self, directions: list[Tensor]) -> float:
        """Advance the EMA of the directions' RMS; return its bias-corrected value ``r_hat``."""
        head = self.param_groups[0]
        beta = head["beta_noise"]
        # One host sync: the per-tensor sums of squares are combined on the device first.
        squares = torch.stack([d.to(torch.float64).square().sum() for d in directions])
        count = sum(d.numel() for d in directions)
        rms = math.sqrt(float(squares.sum()) / count)
        # .get: a state saved before these keys existed starts the EMA afresh.
        ema = beta * head.get(_NORM_EMA_KEY, 0.0) + (1.0 - beta) * rms
        steps = head.get(_NORM_STEPS_KEY, 0) + 1
        head[_NORM_EMA_KEY], head[_NORM_STEPS_KEY] = ema, steps
        return ema / (1.0 - beta**steps)

    def _step(self) -> None:

        groups = []
        for group in self.param_groups:
            params = self._params_with_grad(group)
            beta1, beta2 = group["betas"]
            for p in params:
                state = self.state[p]
                state["exp_avg"].lerp_(p.grad, 1.0 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1.0 - beta2)
            groups.append((group, params, self._update_utilities(group, params)))

        # Adam's direction of every parameter first: the adaptive noise depends on all of them.
        directions = []
        for group, params, _ in groups:
            eps = group["eps"]
            beta1, beta2 = group["betas"]
            group_directions = []
            for p in params:
                state = self.state[p]
                step = float(state["step"])
                bias_correction1 = 1.0 - beta1**step
                bias_correction2_sqrt = math.sqrt(1.0 - beta2**step)
                # Same operation order as torch.optim.Adam (single-tensor path).
                denom = (state["exp_avg_sq"].sqrt() / bias_correction2_sqrt).add_(eps)
                group_directions.append((state["exp_avg"] / denom).div_(bias_correction1))
            directions.append(group_directions)
        r_hat = None
        flat_directions = [d for ds in directions for d in ds]
        if self.param_groups[0]["adaptive_noise"] and flat_directions:
            r_hat = self._direction_rms(flat_directions)

        gates = self._gates(groups)
        noise_std0 = float(self.param_groups[0]["sigma"])
        for index, ((group, params, _), group_gates, group_directions) in enumerate(
            zip(groups, gates, directions, strict=True)
        ):
            sigma = group["sigma"]
            if r_hat is not None and sigma > 0.0:  # sigma = 0 keeps a group noise-free
                sigma = max(sigma * r_hat, self.param_groups[0]["min_noise_std"])
            if index == 0:
                noise_std0 = sigma
            for p, s, direction in zip(params, group_gates, group_directions, strict=True):
                self._gated_update(p, direction, 1.0 - s, sigma, group)

        self._record_stats(gates, [us for _, _, us in groups], noise_std0)
