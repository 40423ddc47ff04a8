"""What every kind of training run shares (single-instrument in :mod:`tradingbot.train`,
portfolio in :mod:`tradingbot.portfolio_run`): the run directory's file names, the learning
loop with periodic checkpoints, the result, the model a config builds, the device check and
resuming from the newest valid checkpoint. Nothing here knows which environment a run trains
in."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.callbacks import BaseCallback

from tradingbot.algo.portfolio_policy import portfolio_policy
from tradingbot.algo.ppo import DistributionalPPO
from tradingbot.checkpoint import CheckpointError, read_manifest
from tradingbot.config import ConfigError, TradingConfig
from tradingbot.config_loading import validate_config
from tradingbot.data.market import PreparedMarket
from tradingbot.data.portfolio import PortfolioMarket

MODEL_FILE = "model.safetensors"
NORMALIZATION_FILE = "normalization.safetensors"
CHECKPOINT_DIR = "checkpoints"
log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run produced.

    ``model`` is the run's model, or, for a seed ensemble (``run.seeds``), its first member;
    ``members`` holds every member in ``run.seeds`` order (empty for a plain run); ``market``
    is a single-instrument run's :class:`PreparedMarket` or a portfolio's universe.
    """

    run_dir: Path
    model: DistributionalPPO
    market: PreparedMarket | PortfolioMarket
    members: list[DistributionalPPO] = field(default_factory=list)


def model_policy(config: TradingConfig) -> Any:
    """The policy a run's model is built and loaded with: the permutation-equivariant policy
    for a portfolio config, ``MlpLstmPolicy`` for a single-instrument one."""
    if config.portfolio is None:
        return "MlpLstmPolicy"
    return portfolio_policy(config.portfolio.asset_embedding)


def build_model(
    config: TradingConfig, env: Any, tensorboard_log: str | None = None
) -> DistributionalPPO:
    """DistributionalPPO with the config's hyperparameters and :func:`model_policy`, seeded by
    ``run.seed``, on ``env`` (the run's training environments)."""
    hyperparameters = config.algo.model_copy(update={"seed": config.run.seed})
    return DistributionalPPO(
        model_policy(config), env, config=hyperparameters, tensorboard_log=tensorboard_log
    )


class PeriodicCheckpoint(BaseCallback):
    """Write a full checkpoint every ``every`` updates, keeping the newest ``keep``.

    A checkpoint is taken at the start of a rollout, after the previous update, which is the
    point a resumed run starts from. Files are ``step_<num_timesteps>.safetensors``.

    Parameters
    ----------
    directory: where checkpoints go.
    every: updates between checkpoints.
    keep: how many of the newest checkpoints to keep.
    config: the run config, stored in each checkpoint's manifest.
    """

    def __init__(self, directory: Path, every: int, keep: int, config: dict) -> None:
        super().__init__()
        self.directory, self.every, self.keep, self.config = directory, every, keep, config
        self._rollouts = 0

    def _on_rollout_start(self) -> None:
        if self._rollouts > 0 and self._rollouts % self.every == 0:
            self.save()
        self._rollouts += 1

    def _on_step(self) -> bool:
        return True

    def save(self) -> Path:
        path = self.model.save(
            self.directory / f"step_{self.model.num_timesteps:012d}", config=self.config
        )
        for old in list_checkpoints(self.directory)[: -self.keep]:
            old.unlink()
        return path


def list_checkpoints(directory: Path) -> list[Path]:
    """A run's complete checkpoints, oldest first (temporary files of a write, and anything
    that is not a regular file, are ignored)."""
    return sorted(
        p
        for p in directory.glob("step_*.safetensors")
        if not p.name.startswith(".") and p.is_file() and not p.is_symlink()
    )


def learn_with_checkpoints(
    model: DistributionalPPO,
    config: TradingConfig,
    run_dir: Path,
    progress_bar: bool,
    fresh: bool,
    tb_log_name: str = "train",
) -> None:
    """Train up to ``run.total_timesteps`` with checkpoints in ``run_dir/checkpoints``; write
    ``run_dir/model.safetensors`` (``run_dir``: a run's or an ensemble member's directory)."""
    checkpoints = PeriodicCheckpoint(
        run_dir / CHECKPOINT_DIR,
        config.run.checkpoint_every,
        config.run.keep_checkpoints,
        config.to_dict(),
    )
    remaining = config.run.total_timesteps - (0 if fresh else model.num_timesteps)
    if remaining > 0:
        model.learn(
            remaining,
            callback=checkpoints,
            tb_log_name=tb_log_name,
            reset_num_timesteps=fresh,
            progress_bar=progress_bar,
        )
        checkpoints.save()
    # else: a resumed run that had already finished (killed before its model was written):
    # the checkpoint it resumed from is the final one; only the model is still to be written.
    model.save(run_dir / MODEL_FILE, config=config.to_dict())


def resume_from(
    run_dir: Path,
    directory: Path,
    config: TradingConfig,
    load: Callable[[Path], DistributionalPPO],
    found: list[Path],
) -> DistributionalPPO:
    """The model of the newest of ``found`` (checkpoints, oldest first) that ``load`` loads
    (with the run's training environment), with its TensorBoard log under ``run_dir/tb``;
    ``directory`` (the run's or a member's) names the checkpoints in errors."""
    directory = directory / CHECKPOINT_DIR
    errors = []
    for path in reversed(found):
        try:
            check_config_unchanged(run_dir, config, read_manifest(path).config)
            model = load(path)
        except CheckpointError as err:
            errors.append(str(err))
            log.warning(
                "warning: cannot resume from %s (%s); trying an older checkpoint", path, err
            )
            continue
        if errors:
            log.warning("warning: resuming from %s, the newest valid checkpoint", path)
        break
    else:
        raise CheckpointError(
            f"{directory}: no valid checkpoint to resume from ({len(found)} tried; newest: "
            f"{errors[0]})"
        )
    model.tensorboard_log = str(run_dir / "tb")
    return model


def checkpoints_to_resume(run_dir: Path) -> list[Path]:
    """A plain run's checkpoints, oldest first, after removing what a crash left half-written
    (a FileNotFoundError when there is none to resume from)."""
    directory = run_dir / CHECKPOINT_DIR
    remove_partial_writes(run_dir, directory)
    found = list_checkpoints(directory)
    if not found:
        raise FileNotFoundError(f"{run_dir}: no checkpoint to resume from in {CHECKPOINT_DIR}/")
    return found


def remove_partial_writes(run_dir: Path, directory: Path) -> None:
    """Delete the temporary files of checkpoint and model writes that a crash cut short (only
    names of :func:`tradingbot.checkpoint.save_checkpoint`'s pattern)."""
    partial = [*directory.glob(".step_*.safetensors.*.tmp"), *run_dir.glob(f".{MODEL_FILE}.*.tmp")]
    for path in partial:
        if path.is_file() and not path.is_symlink():
            path.unlink()


def check_config_unchanged(run_dir: Path, config: TradingConfig, saved: dict[str, Any]) -> None:
    """Refuse a ``config.yaml`` that differs from the config a checkpoint was written with."""
    if not saved:  # a checkpoint written by the API without a run config
        return
    try:  # defaults added by a newer tradingbot are not changes
        saved = validate_config(saved, "the checkpoint's config").to_dict()
    except ConfigError:
        pass
    current = _flatten(config.to_dict())
    before = _flatten(saved)
    changed = sorted(k for k in current.keys() | before.keys() if current.get(k) != before.get(k))
    if changed:
        shown = ", ".join(
            f"{k} ({before.get(k, '<unset>')!r} -> {current.get(k, '<unset>')!r})"
            for k in changed[:5]
        )
        more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        raise ConfigError(
            f"{run_dir / 'config.yaml'}: changed since the run started: {shown}{more}; "
            "--resume continues a run with the config it started with (undo the edit, or "
            "start a new run with the new config)"
        )


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_device(config: TradingConfig) -> None:
    """Refuse a CUDA ``algo.device`` on a machine without CUDA (torch would otherwise fall back
    to the CPU without saying so)."""
    device = config.algo.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"algo.device: {device!r} but torch finds no CUDA device here; set algo.device=cpu "
            "(or auto)"
        )
