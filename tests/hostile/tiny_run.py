"""A tiny training run for the hostile-input tests, and a tool to forge its checkpoints."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tradingbot.checkpoint import MANIFEST_KEY
from tradingbot.config_loading import validate_config
from tradingbot.train import train

TINY = {
    "data": {"source": "synthetic"},
    "env": {"n_envs": 2, "episode_length": 50},
    "algo": {
        "n_steps": 32,
        "batch_size": 32,
        "seq_len": 16,
        "n_epochs": 1,
        "n_quantiles": 8,
        "lstm_hidden_size": 8,
        "net_arch": [8],
    },
    "run": {
        "total_timesteps": 256,
        "checkpoint_every": 1,
        "keep_checkpoints": 10,
        "name": "tiny",
    },
}


def train_tiny(out_dir: Path) -> Path:
    """Train :data:`TINY` under ``out_dir``: four updates of 64 steps, checkpoints at steps 64,
    128, 192 and 256, the model and the normalization. Returns the run directory."""
    config = validate_config({**TINY, "run": {**TINY["run"], "out_dir": str(out_dir)}})
    return train(config).run_dir


def rewrite(
    path: Path,
    tensors: Callable[[dict[str, torch.Tensor]], None] | None = None,
    manifest: Callable[[dict[str, Any]], None] | None = None,
    respec: bool = True,
) -> None:
    """Rewrite a checkpoint after ``tensors`` and ``manifest`` edited them in place; with
    ``respec`` the manifest's tensor list is updated to the edited tensors (a consistent
    forgery, so that only the check under test can catch it)."""
    with safe_open(str(path), framework="pt") as handle:
        data = {k: handle.get_tensor(k) for k in handle.keys()}
        metadata = dict(handle.metadata())
    raw = json.loads(metadata[MANIFEST_KEY])
    if tensors is not None:
        tensors(data)
    if respec:
        raw["tensors"] = {
            k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
            for k, v in data.items()
        }
    if manifest is not None:
        manifest(raw)
    metadata[MANIFEST_KEY] = json.dumps(raw)
    save_file(data, str(path), metadata=metadata)
