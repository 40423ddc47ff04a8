"""Checkpoints: round trip, atomic writes, and hostile input refused without running code."""

import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch

from tradingbot.checkpoint import (
    MANIFEST_KEY,
    CheckpointError,
    load_checkpoint,
    read_manifest,
    save_checkpoint,
    specs_of,
)


def tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "policy.weight": torch.randn(4, 3, generator=g),
        "optim.step": torch.tensor(7, dtype=torch.int64),
        "rng.torch": torch.get_rng_state(),
    }


def test_round_trip_is_exact(tmp_path):
    t = tensors()
    save_checkpoint(
        tmp_path / "c.safetensors",
        t,
        kind="test",
        step=12,
        metrics={"sharpe": 1.5},
        state={"counter": 3, "np_rng": {"state": 2**100}},
    )
    loaded, manifest = load_checkpoint(tmp_path / "c.safetensors", expected=specs_of(t))
    assert manifest.step == 12 and manifest.metrics == {"sharpe": 1.5}
    assert manifest.state["np_rng"]["state"] == 2**100
    for k, v in t.items():
        assert torch.equal(loaded[k], v) and loaded[k].dtype == v.dtype


def raw_safetensors(header: dict, data: bytes) -> bytes:
    blob = json.dumps(header).encode()
    return struct.pack("<Q", len(blob)) + blob + data


class Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Payload(str(marker))))
    with pytest.raises(CheckpointError, match="not a safetensors checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()
    # The same payload saved under torch.save's zip format is refused too.
    torch.save({"x": Payload(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_wrong_manifest_types(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, tensors(), kind="test", step=1)
    manifest = read_manifest(path).model_dump()
    manifest["step"] = "many"
    header = {MANIFEST_KEY: json.dumps(manifest)}
    data = torch.zeros(1)
    bad = raw_safetensors(
        {"__metadata__": header, "x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},
        data.numpy().tobytes(),
    )
    path.write_bytes(bad)
    with pytest.raises(CheckpointError, match="invalid manifest: step"):
        load_checkpoint(path)


def test_unknown_format_version(tmp_path):
    path = tmp_path / "c.safetensors"
    manifest = {"format_version": 99, "package_version": "9", "kind": "x", "step": 0, "tensors": {}}
    path.write_bytes(raw_safetensors({"__metadata__": {MANIFEST_KEY: json.dumps(manifest)}}, b""))
    with pytest.raises(CheckpointError, match="unknown checkpoint format_version 99"):
        load_checkpoint(path)


def test_truncated_file(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, tensors(), kind="test", step=1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])
    with pytest.raises(CheckpointError, match=r"c\.safetensors"):
        load_checkpoint(path)


def test_wrong_shape_against_model(tmp_path):
    path = tmp_path / "c.safetensors"
    t = tensors()
    save_checkpoint(path, t, kind="test", step=1)
    expected = specs_of({**t, "policy.weight": torch.zeros(4, 5)})
    with pytest.raises(
        CheckpointError, match=r"'policy.weight' has shape \[4, 3\].*expects shape \[4, 5\]"
    ):
        load_checkpoint(path, expected=expected)


def test_missing_and_extra_tensors(tmp_path):
    path = tmp_path / "c.safetensors"
    t = tensors()
    save_checkpoint(path, t, kind="test", step=1)
    with pytest.raises(CheckpointError, match=r"missing .*\['critic.bias'\]"):
        load_checkpoint(path, expected=specs_of({**t, "critic.bias": torch.zeros(2)}))
    less = dict(t)
    less.pop("optim.step")
    with pytest.raises(CheckpointError, match=r"does not list: \['optim.step'\]"):
        load_checkpoint(path, expected=specs_of(less))


def test_manifest_lists_tensor_that_file_lacks(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, tensors(), kind="test", step=1)
    manifest = read_manifest(path).model_dump()
    manifest["tensors"]["ghost"] = {"shape": [1], "dtype": "float32"}
    path.write_bytes(raw_safetensors({"__metadata__": {MANIFEST_KEY: json.dumps(manifest)}}, b""))
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(path)


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, tensors(), kind="test", step=1)
    before = path.read_bytes()

    def crash(fd):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk gone"):
        save_checkpoint(path, {"other": torch.ones(3)}, kind="test", step=2)
    assert path.read_bytes() == before  # the previous checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]  # no temp file left
