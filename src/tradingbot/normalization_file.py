"""The feature normalization a run stores beside its model (``normalization.safetensors``),
read back safely: shared by single-instrument and portfolio runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open

from tradingbot.checkpoint import CheckpointError
from tradingbot.data.features import FeatureNormalizer


def load_normalizer(path: Path, clip: float) -> FeatureNormalizer:
    """The feature normalization a run stored (safetensors, never unpickled).

    Refused with :class:`CheckpointError` naming the file (and the tensor): a file that is not
    a complete safetensors file, a missing ``mean`` or ``std``, shapes that do not match the
    feature list, non-finite values or a non-positive std.
    """
    try:
        with safe_open(str(path), framework="numpy") as handle:
            names = (handle.metadata() or {}).get("features", "").split(",")
            keys = set(handle.keys())
            if not {"mean", "std"} <= keys:
                raise CheckpointError(f"{path}: needs tensors 'mean' and 'std', has {sorted(keys)}")
            mean, std = handle.get_tensor("mean"), handle.get_tensor("std")
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    for key, value in (("mean", mean), ("std", std)):
        if value.shape != (len(names),):
            raise CheckpointError(
                f"{path}: tensor {key!r} has shape {list(value.shape)}, expected "
                f"[{len(names)}] (one per feature)"
            )
        if not np.isfinite(value).all():
            raise CheckpointError(f"{path}: tensor {key!r} has non-finite values")
    if not (std > 0).all():
        raise CheckpointError(f"{path}: tensor 'std' has values <= 0")
    return FeatureNormalizer(names=names, mean=mean, std=std, clip=clip)
