"""The main job: train DistributionalPPO on a config's data and write a run directory."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.numpy import save
from stable_baselines3.common.callbacks import BaseCallback

from tradingbot.algo.ppo import DistributionalPPO
from tradingbot.checkpoint import CheckpointError, read_manifest
from tradingbot.config import ConfigError, TradingConfig, load_config, validate_config
from tradingbot.data.market import PreparedMarket, load_prepared
from tradingbot.env.vec_env import MarketVecEnv
from tradingbot.evaluate.var import VAR_MODEL_FILE, fit_market_var_model
from tradingbot.run import create_run_dir
from tradingbot.safe_write import write_bytes

MODEL_FILE = "model.safetensors"
NORMALIZATION_FILE = "normalization.safetensors"
CHECKPOINT_DIR = "checkpoints"
log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run produced."""

    run_dir: Path
    model: DistributionalPPO
    market: PreparedMarket


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


def write_normalization(market: PreparedMarket, run_dir: Path) -> Path:
    """Store the feature normalization with the model (signals and backtests reuse it)."""
    path = run_dir / NORMALIZATION_FILE
    payload = save(
        market.normalizer.state_dict(), metadata={"features": ",".join(market.feature_names)}
    )
    write_bytes(path, payload, root=run_dir)
    return path


def write_var_model(market: PreparedMarket, run_dir: Path) -> Path | None:
    """Store the GARCH VaR parameters fitted on the training split (None: too few bars)."""
    try:
        return fit_market_var_model(market, "train").save(run_dir / VAR_MODEL_FILE)
    except ValueError:
        return None


def build_model(
    config: TradingConfig, env: MarketVecEnv, tensorboard_log: str | None = None
) -> DistributionalPPO:
    """DistributionalPPO with the config's hyperparameters, seeded by ``run.seed``."""
    hyperparameters = config.algo.model_copy(update={"seed": config.run.seed})
    return DistributionalPPO(
        "MlpLstmPolicy", env, config=hyperparameters, tensorboard_log=tensorboard_log
    )


def _learn(
    model: DistributionalPPO, config: TradingConfig, run_dir: Path, progress_bar: bool, fresh: bool
) -> None:
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
            tb_log_name="train",
            reset_num_timesteps=fresh,
            progress_bar=progress_bar,
        )
        checkpoints.save()
    # else: a resumed run that had already finished (killed before its model was written):
    # the checkpoint it resumed from is the final one; only the model is still to be written.
    model.save(run_dir / MODEL_FILE, config=config.to_dict())


def train(config: TradingConfig, progress_bar: bool = False) -> TrainResult:
    """Train on the config's training split and write the run directory.

    The run directory holds ``config.yaml`` and ``run.json`` (see :mod:`tradingbot.run`),
    TensorBoard logs under ``tb/``, checkpoints under ``checkpoints/``, the final model and
    the feature normalization and the GARCH VaR parameters fitted on the training split.
    """
    check_device(config)
    market = load_prepared(config.data, window=config.env.window)
    run_dir = create_run_dir(config)
    write_normalization(market, run_dir)
    write_var_model(market, run_dir)
    env = MarketVecEnv(market, "train", config.env, seed=config.run.seed)
    model = build_model(config, env, tensorboard_log=str(run_dir / "tb"))
    _learn(model, config, run_dir, progress_bar, fresh=True)
    return TrainResult(run_dir=run_dir, model=model, market=market)


def resume(run_dir: str | Path, progress_bar: bool = False) -> TrainResult:
    """Continue an interrupted run from its newest valid checkpoint up to
    ``run.total_timesteps``, or, if it already got there, write its model.

    The result is bit-for-bit the run that was never interrupted (on CPU): the checkpoint
    carries the model, optimizer, statistics, RNG and environment state. A checkpoint that
    does not load is reported (a warning) and the next older one is tried. The run's
    ``config.yaml`` must be the config the run started with: a changed one is refused, naming
    the keys that differ (a resumed run that silently ignored an edit would not be the run
    the edit describes; start a new run instead). Temporary files left by a write that a crash
    cut short are removed.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no config.yaml)")
    config = load_config(run_dir / "config.yaml")
    directory = run_dir / CHECKPOINT_DIR
    remove_partial_writes(run_dir, directory)
    found = list_checkpoints(directory)
    if not found:
        raise FileNotFoundError(f"{run_dir}: no checkpoint to resume from in {CHECKPOINT_DIR}/")
    check_device(config)
    market = load_prepared(config.data, window=config.env.window)
    errors = []
    for path in reversed(found):
        try:
            check_config_unchanged(run_dir, config, read_manifest(path).config)
            env = MarketVecEnv(market, "train", config.env, seed=config.run.seed)
            model = DistributionalPPO.load(path, env=env)
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
    _learn(model, config, run_dir, progress_bar, fresh=False)
    return TrainResult(run_dir=run_dir, model=model, market=market)


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
