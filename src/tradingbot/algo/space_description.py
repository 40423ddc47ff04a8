"""JSON descriptions of the Box and Discrete spaces a checkpoint records, and their inverse
(shared by writing a checkpoint, :mod:`tradingbot.algo.persistence`, and reading one,
:mod:`tradingbot.algo.saved_state`)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces


def describe_space(space: spaces.Space) -> dict[str, Any]:
    """JSON description of a Box or Discrete space (non-finite bounds as strings)."""
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": [_json_float(x) for x in space.low.reshape(-1)],
            "high": [_json_float(x) for x in space.high.reshape(-1)],
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    raise TypeError(f"cannot describe space {space}")


def space_from_description(description: dict[str, Any]) -> spaces.Space:
    """Inverse of :func:`describe_space`."""
    if description["type"] == "Box":
        shape, dtype = tuple(description["shape"]), np.dtype(description["dtype"])
        low = np.array([float(x) for x in description["low"]], dtype=dtype).reshape(shape)
        high = np.array([float(x) for x in description["high"]], dtype=dtype).reshape(shape)
        return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)
    if description["type"] == "Discrete":
        return spaces.Discrete(description["n"], start=description["start"])
    raise ValueError(f"unknown space type {description['type']!r}")


def _json_float(x: float) -> float | str:
    return float(x) if np.isfinite(x) else str(float(x))
