"""The run directory: resolved config, its hash, the seed and package versions."""

from __future__ import annotations

import json
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from tradingbot.config import ConfigError, TradingConfig
from tradingbot.config_loading import dump_config
from tradingbot.evaluate.selection import SELECTION_FILE
from tradingbot.safe_write import write_bytes, write_text

RECORDED_PACKAGES = (
    "tradingbot",
    "torch",
    "numpy",
    "pandas",
    "gymnasium",
    "stable-baselines3",
    "pydantic",
    "safetensors",
)


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a result depends on."""
    versions = {"python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def create_run_dir(config: TradingConfig) -> Path:
    """Create the run directory and record what reproduces the run.

    Writes ``config.yaml`` (the resolved config) and ``run.json`` (config hash, seed, package
    versions, command line, creation time). The directory is ``run.out_dir / run.name``, or
    ``run.out_dir / <timestamp>-<hash[:8]>`` when no name is given; an existing directory is
    never overwritten. ``evaluation.selection_file``, when set, is copied in as
    ``selection.json`` (read by ``backtest`` for the deflated Sharpe ratio).
    """
    selection = config.evaluation.selection_file
    if selection is not None and not Path(selection).is_file():
        raise ConfigError(f"evaluation.selection_file: {selection} does not exist")
    digest = config.config_hash()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = config.run.name or f"{stamp}-{digest[:8]}"
    out_dir = Path(config.run.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"run.out_dir: {out_dir} exists and is not a directory")
    run_dir = out_dir / name  # one path component: RunConfig refuses '/' and '..' in names
    if run_dir.exists() or run_dir.is_symlink():
        raise FileExistsError(f"run directory {run_dir} exists; choose another run.name")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir()
    except FileExistsError:
        raise FileExistsError(f"run directory {run_dir} exists; choose another run.name") from None
    except OSError as err:
        raise ConfigError(
            f"run.out_dir: cannot create the run directory {run_dir} ({err.strerror})"
        ) from None
    write_text(run_dir / "config.yaml", dump_config(config), root=run_dir)
    record = {
        "config_hash": digest,
        "seed": config.run.seed,
        **({"seeds": config.run.seeds} if config.run.seeds is not None else {}),  # an ensemble's
        "versions": package_versions(),
        "command": sys.argv,
        "created": datetime.now(timezone.utc).isoformat(),
    }
    write_text(run_dir / "run.json", json.dumps(record, indent=2) + "\n", root=run_dir)
    if selection is not None:  # the configurations tried to arrive at this config
        write_bytes(run_dir / SELECTION_FILE, Path(selection).read_bytes(), root=run_dir)
    return run_dir
