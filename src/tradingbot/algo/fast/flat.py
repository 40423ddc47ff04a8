"""The policy's parameters and gradients in flat buffers, and the per-network or global norm
clip."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch as th


class FlatGradients:
    """
    Every parameter's ``.grad`` as a view into one flat buffer, so that whole-model gradient
    operations take a few kernels instead of a few per parameter (on CPU the per-parameter
    dispatch, not the arithmetic, is what costs): zeroing, the per-network squared norms and the
    per-network scaling. Each network's parameters are consecutive, so its gradient is one
    slice of the buffer. Backward accumulates into the views in place.

    The parameters' values move into one flat buffer too (each parameter's data becomes a view
    of it), exposed as the single parameter :attr:`param` whose ``.grad`` is :attr:`flat`: an
    elementwise optimizer (Adam) over ``[param]`` steps every parameter in one call, with the
    result of stepping them one by one (up to the last bit of float32 rounding).

    Something that replaces a ``.grad`` (``zero_grad(set_to_none=True)``, an assignment)
    detaches it from the buffer; :meth:`zero_` re-attaches every parameter, so call it, not
    ``zero_grad``, before each backward. Replacing a parameter's data (``param.data = ...``,
    a move to another device) detaches it from :attr:`param`.

    Parameters
    ----------
    params : Iterable[th.nn.Parameter]
        The parameters, in the order of the optimizer and the gradient scaler.
    network_sizes : Sequence[int]
        The number of elements of each network's parameters, which come in that order (they sum
        to all the parameters' elements).
    """

    def __init__(self, params: Iterable[th.nn.Parameter], network_sizes: Sequence[int]) -> None:
        self.params = list(params)
        sizes = [p.numel() for p in self.params]
        total = sum(sizes)
        if sum(network_sizes) != total:
            raise ValueError(
                f"network_sizes {list(network_sizes)} cover {sum(network_sizes)} elements, the "
                f"parameters {total}"
            )
        values = th.cat([p.detach().reshape(-1) for p in self.params])
        for p, part in zip(self.params, values.split(sizes), strict=True):
            p.data = part.view_as(p)
        self.param = th.nn.Parameter(values)
        self.flat = th.zeros_like(values)
        self.networks = list(self.flat.split(list(network_sizes)))
        self.views = [
            part.view_as(p) for part, p in zip(self.flat.split(sizes), self.params, strict=True)
        ]
        self.zero_()

    def zero_(self) -> None:
        """Zero the gradients (re-attaching any parameter whose ``.grad`` was replaced)."""
        for param, view in zip(self.params, self.views, strict=True):
            if param.grad is not view:
                param.grad = view
        if self.param.grad is not self.flat:
            self.param.grad = self.flat
        self.flat.zero_()

    def square_norms(self) -> th.Tensor:
        """Squared L2 norm of each network's gradient, shape (n_networks,). A NaN or inf
        element (or a square that overflows) makes its network's entry non-finite, so this is
        also the finiteness check."""
        return th.stack([part.dot(part) for part in self.networks])

    def scale_(self, scales: Sequence[float]) -> None:
        """Multiply each network's gradient by its scale."""
        for part, scale in zip(self.networks, scales, strict=True):
            if scale != 1.0:
                part.mul_(scale)


def clip_scales(
    square_norms: Sequence[float], max_norm: float, factor: float = 1.0, mode: str = "per_network"
) -> tuple[list[float], list[float]]:
    """Per-network gradient multipliers: each network's norm (``mode="per_network"``) or the
    norm over all networks (``"global"``) of the *raw* gradient is clipped to ``max_norm`` as
    ``torch.nn.utils.clip_grad_norm_`` does (``scale = min(1, max_norm / (norm + 1e-6))``),
    then the result is multiplied by ``factor`` (the variance scaler's). Clipping first makes
    the clip bound the raw gradient whatever the factor: clipping after it compared
    ``factor * norm`` with ``max_norm``, so a scaler at its floor (0.1) raised the effective
    bound tenfold and the clip never fired (docs/benchmarks.md, issue 24, third round).
    Returns (the multipliers, the per-network norms of the raw gradient)."""
    norms = [float(square) ** 0.5 for square in square_norms]
    if mode == "global":
        total = float(sum(square_norms)) ** 0.5
        return [factor * min(1.0, max_norm / (total + 1e-6))] * len(norms), norms
    scales = [factor * min(1.0, max_norm / (norm + 1e-6)) for norm in norms]
    return scales, norms
