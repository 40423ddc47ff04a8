"""The main job: train DistributionalPPO on a config's data and write a run directory."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
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
MEMBERS_DIR = "members"  # a seed ensemble's members: members/seed_<k>/
log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run produced.

    ``model`` is the run's model, or, for a seed ensemble (``run.seeds``), its first member;
    ``members`` holds every member in ``run.seeds`` order (empty for a plain run).
    """

    run_dir: Path
    model: DistributionalPPO
    market: PreparedMarket
    members: list[DistributionalPPO] = field(default_factory=list)


def member_dir(run_dir: Path, seed: int) -> Path:
    """The directory of a seed ensemble's member: its model and its checkpoints."""
    return Path(run_dir) / MEMBERS_DIR / f"seed_{seed}"


def member_config(config: TradingConfig, seed: int) -> TradingConfig:
    """The config of one member of ``config``'s seed ensemble: the plain run seeded by ``seed``
    (what its checkpoints record)."""
    raw = config.to_dict()
    raw["run"] = {**raw["run"], "seed": seed, "seeds": None}
    return validate_config(raw, f"run.seeds member {seed}")


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


def train(config: TradingConfig, progress_bar: bool = False) -> TrainResult:
    """Train on the config's training split and write the run directory.

    The run directory holds ``config.yaml`` and ``run.json`` (see :mod:`tradingbot.run`),
    TensorBoard logs under ``tb/``, checkpoints under ``checkpoints/``, the final model and
    the feature normalization and the GARCH VaR parameters fitted on the training split.

    A seed ensemble (``run.seeds``) trains its members one after the other, each exactly the
    plain run with its seed (:func:`member_config`), into ``members/seed_<k>/`` (model and
    checkpoints; TensorBoard logs ``tb/seed_<k>_1``); normalization and VaR model are shared.
    """
    if config.portfolio is not None:  # K assets and cash: tradingbot.portfolio_run
        from tradingbot.portfolio_run import train_portfolio

        return train_portfolio(config, progress_bar)
    check_device(config)
    market = load_prepared(config.data, window=config.env.window)
    run_dir = create_run_dir(config)
    write_normalization(market, run_dir)
    write_var_model(market, run_dir)
    if config.run.seeds is not None:
        members = [
            _train_member(config, market, run_dir, seed, progress_bar) for seed in config.run.seeds
        ]
        return TrainResult(run_dir=run_dir, model=members[0], market=market, members=members)
    env = MarketVecEnv(market, "train", config.env, seed=config.run.seed)
    model = build_model(config, env, tensorboard_log=str(run_dir / "tb"))
    _learn(model, config, run_dir, progress_bar, fresh=True)
    return TrainResult(run_dir=run_dir, model=model, market=market)


def _train_member(
    config: TradingConfig, market: PreparedMarket, run_dir: Path, seed: int, progress_bar: bool
) -> DistributionalPPO:
    """Train the ensemble member ``seed`` from scratch into :func:`member_dir`."""
    member = member_config(config, seed)
    env = MarketVecEnv(market, "train", member.env, seed=seed)
    model = build_model(member, env, tensorboard_log=str(run_dir / "tb"))
    _learn(model, member, member_dir(run_dir, seed), progress_bar, True, f"seed_{seed}")
    return model


def resume(run_dir: str | Path, progress_bar: bool = False) -> TrainResult:
    """Continue an interrupted run from its newest valid checkpoint up to
    ``run.total_timesteps``, or, if it already got there, write its model.

    The result is bit-for-bit the run that was never interrupted (on CPU): the checkpoint
    carries the model, optimizer, statistics, RNG and environment state. A checkpoint that
    does not load is reported (a warning) and the next older one is tried. The run's
    ``config.yaml`` must be the config the run started with: a changed one is refused, naming
    the keys that differ (a resumed run that silently ignored an edit would not be the run
    the edit describes; start a new run instead). Temporary files left by a write that a crash
    cut short are removed. A seed ensemble resumes member by member (finished members kept).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no config.yaml)")
    config = load_config(run_dir / "config.yaml")
    check_run_layout(run_dir, config)
    if config.run.seeds is not None:
        return _resume_ensemble(run_dir, config, progress_bar)
    directory = run_dir / CHECKPOINT_DIR
    remove_partial_writes(run_dir, directory)
    found = list_checkpoints(directory)
    if not found:
        raise FileNotFoundError(f"{run_dir}: no checkpoint to resume from in {CHECKPOINT_DIR}/")
    check_device(config)
    market = load_prepared(config.data, window=config.env.window)
    model = _resume_from(run_dir, run_dir, config, market, found)
    _learn(model, config, run_dir, progress_bar, fresh=False)
    return TrainResult(run_dir=run_dir, model=model, market=market)


def check_run_layout(run_dir: Path, config: TradingConfig) -> None:
    """Refuse a ``config.yaml`` whose ``run.seeds`` does not match what the run directory
    holds (a seed ensemble's ``members/``, or a plain run's model and checkpoints)."""
    plain = (run_dir / MODEL_FILE).exists() or any((run_dir / CHECKPOINT_DIR).glob("step_*"))
    ensemble = (run_dir / MEMBERS_DIR).exists()
    if config.run.seeds is not None and plain:
        raise ConfigError(
            f"{run_dir / 'config.yaml'}: run.seeds is set but {run_dir} holds a single-seed "
            f"run ({MODEL_FILE} or {CHECKPOINT_DIR}/), not a seed ensemble's {MEMBERS_DIR}/"
        )
    if config.run.seeds is None and ensemble:
        raise ConfigError(
            f"{run_dir / 'config.yaml'}: run.seeds is not set but {run_dir} holds a seed "
            f"ensemble ({MEMBERS_DIR}/); give run.seeds as the run was trained"
        )


def _resume_ensemble(run_dir: Path, config: TradingConfig, progress_bar: bool) -> TrainResult:
    """Resume a seed ensemble member by member: a member whose model loads is done (its
    checkpoints were not needed); one with checkpoints continues from the newest valid one;
    one with neither (not started, or killed before its first checkpoint) trains from scratch,
    which gives the same member (it depends on its seed alone)."""
    check_device(config)
    market = load_prepared(config.data, window=config.env.window)
    members = []
    for seed in config.run.seeds or []:
        directory, member = member_dir(run_dir, seed), member_config(config, seed)
        remove_partial_writes(directory, directory / CHECKPOINT_DIR)
        model = _finished_member(run_dir, directory, member)
        if model is None:
            found = list_checkpoints(directory / CHECKPOINT_DIR)
            if not found:
                log.info("ensemble member seed %d: no checkpoint; training it from scratch", seed)
                model = _train_member(config, market, run_dir, seed, progress_bar)
            else:
                model = _resume_from(run_dir, directory, member, market, found)
                _learn(model, member, directory, progress_bar, False, f"seed_{seed}")
        members.append(model)
    return TrainResult(run_dir=run_dir, model=members[0], market=market, members=members)


def _finished_member(
    run_dir: Path, directory: Path, member: TradingConfig
) -> DistributionalPPO | None:
    """A member's final model when it loads and was trained with ``member``'s config (else
    None, with a warning for a model that does not load: its checkpoints are used instead)."""
    path = directory / MODEL_FILE
    if not path.is_file():
        return None
    try:
        check_config_unchanged(run_dir, member, read_manifest(path).config)
        return DistributionalPPO.load(path)
    except CheckpointError as err:
        log.warning("warning: %s does not load (%s); resuming from its checkpoints", path, err)
        return None


def _resume_from(
    run_dir: Path,
    directory: Path,
    config: TradingConfig,
    market: PreparedMarket,
    found: list[Path],
) -> DistributionalPPO:
    """The model of the newest of ``found`` (checkpoints, oldest first) that loads, with its
    TensorBoard log under ``run_dir/tb``; ``directory`` names the checkpoints in errors."""
    directory = directory / CHECKPOINT_DIR
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
    return model


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
