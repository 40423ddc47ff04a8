"""Safe checkpoints: one safetensors file whose header carries a validated JSON manifest.

Every tensor (weights, optimizer moments, scaler statistics, normalization statistics, RNG
states) is stored by safetensors, which reads a JSON header and raw buffers: loading never
unpickles. The manifest (format version, package version, config, step, metrics,
hyperparameters, and the name, shape and dtype of every tensor) is validated by a pydantic
schema before any tensor is used, and the header's tensor list (names, shapes, dtypes, read
without loading any data) must match it. Every floating-point tensor must be finite. Writes are
atomic: a temporary file in the same directory is written, fsynced and renamed over the target,
so a crash leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from tradingbot import __version__
from tradingbot.errors import UserError
from tradingbot.safe_write import write_bytes

FORMAT_VERSION = 1
MANIFEST_KEY = "tradingbot.manifest"
# safetensors' dtype names in a file header, as torch names them.
_HEADER_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


class CheckpointError(UserError):
    """A checkpoint that cannot be loaded as it is."""


class TensorSpec(BaseModel):
    """Shape and dtype of one stored tensor."""

    model_config = ConfigDict(extra="forbid")

    shape: list[int]
    dtype: str


class Manifest(BaseModel):
    """What a checkpoint holds besides the tensors themselves.

    Parameters
    ----------
    format_version: the checkpoint format; unknown versions are refused.
    package_version: the tradingbot version that wrote it.
    kind: what the tensors belong to (e.g. ``DistributionalPPO``).
    step: environment steps trained so far.
    config: the resolved run config (or the algorithm's hyperparameters).
    hyperparameters: values that may differ from the config (e.g. after a PBT exploit).
    metrics: the latest scalar metrics.
    state: JSON-able state that is not a tensor (counters, numpy RNG state, spaces).
    tensors: the name, shape and dtype of every stored tensor.
    """

    model_config = ConfigDict(extra="forbid")

    format_version: int
    package_version: str
    kind: str
    step: int = Field(ge=0)
    config: dict[str, Any] = Field(default_factory=dict)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    state: dict[str, Any] = Field(default_factory=dict)
    tensors: dict[str, TensorSpec]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def save_checkpoint(
    path: str | Path,
    tensors: dict[str, torch.Tensor],
    kind: str,
    step: int,
    config: dict[str, Any] | None = None,
    hyperparameters: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    state: dict[str, Any] | None = None,
) -> Manifest:
    """Write ``tensors`` and their manifest to ``path`` atomically; return the manifest."""
    path = Path(path)
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        package_version=__version__,
        kind=kind,
        step=step,
        config=config or {},
        hyperparameters=hyperparameters or {},
        metrics=metrics or {},
        state=state or {},
        tensors=specs_of(contiguous),
    )
    payload = save(contiguous, metadata={MANIFEST_KEY: manifest.model_dump_json()})
    write_bytes(path, payload)  # atomic: temporary file, fsync, rename, fsync of the directory
    return manifest


def read_manifest(path: str | Path) -> Manifest:
    """Read and validate only the manifest (the header) of a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            header = header_specs(handle)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a safetensors checkpoint ({err})") from None
    if MANIFEST_KEY not in metadata:
        raise CheckpointError(f"{path}: no tradingbot manifest in the header")
    try:
        raw = json.loads(metadata[MANIFEST_KEY])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: manifest is not valid JSON ({err})") from None
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: unknown checkpoint format_version {version!r} (this tradingbot reads "
            f"version {FORMAT_VERSION})"
        )
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as err:
        raise CheckpointError(f"{path}: invalid manifest: {validation_problems(err)}") from None
    # The header's shapes, before any tensor is read: a manifest that lies about them is refused
    # here, not after the loader has allocated what it claims.
    compare_specs(path, "manifest", manifest.tensors, header)
    return manifest


def header_specs(handle: Any) -> dict[str, TensorSpec]:
    """The name, shape and dtype of every tensor of an open safetensors file, from its header
    alone (no tensor data is read)."""
    specs = {}
    for key in handle.keys():
        tensor_slice = handle.get_slice(key)
        dtype = tensor_slice.get_dtype()
        specs[key] = TensorSpec(
            shape=list(tensor_slice.get_shape()), dtype=_HEADER_DTYPES.get(dtype, dtype)
        )
    return specs


def validation_problems(err: ValidationError) -> str:
    """A pydantic error as one line: ``key: message; key: message`` (no input dump)."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in err.errors()
    )


def load_checkpoint(
    path: str | Path,
    expected: dict[str, TensorSpec] | None = None,
    nonfinite_ok: Collection[str] = (),
) -> tuple[dict[str, torch.Tensor], Manifest]:
    """Load a checkpoint's tensors and manifest, refusing anything inconsistent.

    The stored tensors must match the manifest's list exactly (names, shapes, dtypes), and,
    when ``expected`` is given, that list too (checked before any tensor is read). Every
    floating-point tensor must be finite, except those named in ``nonfinite_ok``.
    """
    path = Path(path)
    manifest = read_manifest(path)
    if expected is not None:
        compare_specs(path, "model", expected, manifest.tensors)
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():
                tensors[key] = handle.get_tensor(key)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: tensor data unreadable ({err})") from None
    actual = specs_of(tensors)
    compare_specs(path, "manifest", manifest.tensors, actual)
    for key, tensor in tensors.items():
        if key not in nonfinite_ok:
            check_finite(path, key, tensor)
    return tensors, manifest


def check_finite(path: Path, key: str, tensor: torch.Tensor) -> None:
    """Refuse a floating-point ``tensor`` with a NaN or infinite element (naming file and key)."""
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise CheckpointError(
            f"{path}: tensor {key!r} has {bad} non-finite (NaN or infinite) value(s) of "
            f"{tensor.numel()}"
        )


def compare_specs(
    path: Path, what: str, wanted: dict[str, TensorSpec], actual: dict[str, TensorSpec]
) -> None:
    """Refuse ``actual`` tensor specs that differ from ``wanted`` (those that ``what`` lists):
    a missing or unexpected key, or another shape or dtype, named with the file."""
    missing = sorted(set(wanted) - set(actual))
    extra = sorted(set(actual) - set(wanted))
    if missing:
        raise CheckpointError(f"{path}: tensors missing that the {what} lists: {missing}")
    if extra:
        raise CheckpointError(f"{path}: tensors the {what} does not list: {extra}")
    for key, spec in wanted.items():
        got = actual[key]
        if got != spec:
            raise CheckpointError(
                f"{path}: tensor {key!r} has shape {got.shape} dtype {got.dtype}, the {what} "
                f"expects shape {spec.shape} dtype {spec.dtype}"
            )


def specs_of(tensors: dict[str, torch.Tensor]) -> dict[str, TensorSpec]:
    """The specs a model expects, from its own current tensors."""
    return {
        k: TensorSpec(shape=list(v.shape), dtype=_dtype_name(v.dtype)) for k, v in tensors.items()
    }


def model_id(path: Path) -> str:
    """The first 16 hex digits of the checkpoint's sha256: which model made a signal."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
