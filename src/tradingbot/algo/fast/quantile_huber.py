"""The quantile Huber loss per sample as an ``autograd.Function`` with its gradient written out
(the speed-critical part of the critic loss). Its reference is
``tradingbot.algo.losses.quantile_huber_loss`` checked against sb3-contrib's
``quantile_huber_loss`` (tests/test_fast_quantile_huber.py)."""

from __future__ import annotations

import torch as th


class QuantileHuberPerSample(th.autograd.Function):
    """The quantile Huber loss per sample with its gradient written out: the backward is one
    multiply and a sum instead of autograd's trip back through a dozen elementwise ops (which
    on CPU cost more than the arithmetic). With ``u = target - pred`` and
    ``c = clamp(u, -kappa, kappa)``, ``huber_kappa(u) = c (u - c / 2)`` and its derivative is
    ``c``; the indicator weight is piecewise constant."""

    @staticmethod
    def forward(
        ctx: th.autograd.function.FunctionCtx,
        pred: th.Tensor,
        target: th.Tensor,
        taus: th.Tensor,
        kappa: float,
    ) -> th.Tensor:
        # One target sample (the critic's case): pairs (..., N) without a size-1 last dim,
        # whose strided reductions cost more; the same values, bit for bit.
        single = target.shape[-1] == 1
        if single:
            u = target - pred  # (..., N)
            taus = taus / kappa
        else:
            u = target.unsqueeze(-2) - pred.unsqueeze(-1)  # (..., N, M): pred i, target j
            taus = taus.view(-1, 1) / kappa
        clipped = u.clamp(-kappa, kappa)
        # d(pair loss)/du = |tau - 1{u < 0}| * c / kappa
        slope = th.where(u < 0, 1.0 / kappa - taus, taus).mul_(clipped)
        pair_loss = slope * (u - 0.5 * clipped)
        loss = pair_loss.sum(dim=-1) if single else pair_loss.sum(dim=-2).mean(dim=-1)
        ctx.save_for_backward(slope)
        ctx.single = single
        return loss

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: th.autograd.function.FunctionCtx, grad_loss: th.Tensor
    ) -> tuple[th.Tensor | None, th.Tensor | None, None, None]:
        (slope,) = ctx.saved_tensors  # type: ignore[attr-defined]
        needs_pred, needs_target = ctx.needs_input_grad[:2]  # type: ignore[attr-defined]
        if ctx.single:  # type: ignore[attr-defined]
            grad_u = slope * grad_loss.unsqueeze(-1)
            grad_pred = -grad_u if needs_pred else None
            grad_target = grad_u.sum(dim=-1, keepdim=True) if needs_target else None
            return grad_pred, grad_target, None, None
        grad_u = slope * (grad_loss / slope.shape[-1]).unsqueeze(-1).unsqueeze(-1)
        grad_pred = -grad_u.sum(dim=-1) if needs_pred else None
        grad_target = grad_u.sum(dim=-2) if needs_target else None
        return grad_pred, grad_target, None, None


def quantile_huber_loss_per_sample(
    pred_quantiles: th.Tensor, target: th.Tensor, taus: th.Tensor, kappa: float = 1.0
) -> th.Tensor:
    """
    Quantile Huber loss of QR-DQN per sample, shape (B,).

    With ``u = target_j - pred_i``, each pair contributes
    ``|tau_i - 1{u < 0}| * huber_kappa(u) / kappa``; pairs are summed over the predicted
    quantiles ``i`` and averaged over the target samples ``j``. Differentiable in both
    ``pred_quantiles`` and ``target`` (the indicator is a step function: no gradient flows
    through it).

    Parameters
    ----------
    pred_quantiles : th.Tensor
        Predicted quantiles, shape (B, N) (or (..., N), e.g. (B, K, N)).
    target : th.Tensor
        Target samples, shape (B,) (one sample, e.g. a lambda-return) or (B, M) (or (..., M)
        matching the leading dims of ``pred_quantiles``).
    taus : th.Tensor
        Quantile levels of the predictions, shape (N,).
    kappa : float
        Huber threshold.
    """
    if target.ndim == 1:
        target = target.unsqueeze(-1)
    return QuantileHuberPerSample.apply(pred_quantiles, target, taus, kappa)
