"""The policy's gradients in one flat buffer, and the per-network norm clip on it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch as th


class FlatGradients:
    """
    Every parameter's ``.grad`` as a view into one flat buffer, so that whole-model gradient
    operations take a few kernels instead of a few per parameter (on CPU the per-parameter
    dispatch, not the arithmetic, is what costs): zeroing, the per-network squared norms and the
    per-network scaling. Backward accumulates into the views in place.

    Something that replaces a ``.grad`` (``zero_grad(set_to_none=True)``, an assignment)
    detaches it from the buffer; :meth:`zero_` re-attaches every parameter, so call it, not
    ``zero_grad``, before each backward.

    :param params: The parameters, in the order of the optimizer and the gradient scaler.
    :param network_masks: Shape (n_networks, n_elements): 1.0 where an element of the
        concatenated, flattened parameters belongs to network k, else 0.0; every element
        belongs to exactly one network.
    """

    def __init__(self, params: Iterable[th.nn.Parameter], network_masks: th.Tensor) -> None:
        self.params = list(params)
        sizes = [p.numel() for p in self.params]
        first = self.params[0]
        self.flat = th.zeros(sum(sizes), dtype=first.dtype, device=first.device)
        if network_masks.shape[-1] != self.flat.numel():
            raise ValueError(
                f"network_masks cover {network_masks.shape[-1]} elements, the parameters "
                f"{self.flat.numel()}"
            )
        if not bool((network_masks.sum(dim=0) == 1).all()):
            raise ValueError("network_masks must assign every element to exactly one network")
        self.network_masks = network_masks.to(self.flat)
        self.views = [
            part.view_as(p) for part, p in zip(self.flat.split(sizes), self.params, strict=True)
        ]
        self.zero_()

    def zero_(self) -> None:
        """Zero the gradients (re-attaching any parameter whose ``.grad`` was replaced)."""
        for param, view in zip(self.params, self.views, strict=True):
            if param.grad is not view:
                param.grad = view
        self.flat.zero_()

    def square_norms(self) -> th.Tensor:
        """Squared L2 norm of each network's gradient, shape (n_networks,). A NaN or inf
        element (or a square that overflows) makes every entry non-finite, so this is also the
        finiteness check."""
        return self.network_masks.mv(self.flat.square())

    def scale_(self, scales: Sequence[float]) -> None:
        """Multiply each network's gradient by its scale, shape (n_networks,)."""
        factors = th.as_tensor(scales, dtype=self.flat.dtype, device=self.flat.device)
        self.flat.mul_(factors @ self.network_masks)


def clip_scales(
    square_norms: Sequence[float], max_norm: float, factor: float = 1.0
) -> tuple[list[float], list[float]]:
    """Per-network gradient multipliers: the gradient is first multiplied by ``factor`` (the
    variance scaler's), then each network's norm is clipped to ``max_norm`` as
    ``torch.nn.utils.clip_grad_norm_`` does (``scale = min(1, max_norm / (norm + 1e-6))``).
    Returns (the multipliers, the norms after ``factor`` and before clipping)."""
    norms = [factor * float(square) ** 0.5 for square in square_norms]
    scales = [factor * min(1.0, max_norm / (norm + 1e-6)) for norm in norms]
    return scales, norms
