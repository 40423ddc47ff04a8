"""The main job: train DistributionalPPO on a config's data and write a run directory."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from safetensors.numpy import save

from tradingbot.algo.ppo import DistributionalPPO
from tradingbot.checkpoint import CheckpointError, read_manifest
from tradingbot.config import ConfigError, TradingConfig
from tradingbot.config_loading import load_config, validate_config
from tradingbot.data.market import PreparedMarket, load_prepared
from tradingbot.env.vec_env import MarketVecEnv
from tradingbot.evaluate.var import VAR_MODEL_FILE, fit_market_var_model
from tradingbot.portfolio_run import resume_portfolio, train_portfolio
from tradingbot.run import create_run_dir
from tradingbot.safe_write import write_bytes
from tradingbot.training_run import (  # the names every kind of run shares, kept importable here
    CHECKPOINT_DIR,
    MODEL_FILE,
    NORMALIZATION_FILE,
    TrainResult,
    build_model,
    check_config_unchanged,
    check_device,
    checkpoints_to_resume,
    learn_with_checkpoints,
    list_checkpoints,
    remove_partial_writes,
    resume_from,
)

MEMBERS_DIR = "members"  # a seed ensemble's members: members/seed_<k>/
log = logging.getLogger(__name__)


def member_dir(run_dir: Path, seed: int) -> Path:
    """The directory of a seed ensemble's member: its model and its checkpoints."""
    return Path(run_dir) / MEMBERS_DIR / f"seed_{seed}"


def member_config(config: TradingConfig, seed: int) -> TradingConfig:
    """The config of one member of ``config``'s seed ensemble: the plain run seeded by ``seed``
    (what its checkpoints record)."""
    raw = config.to_dict()
    raw["run"] = {**raw["run"], "seed": seed, "seeds": None}
    return validate_config(raw, f"run.seeds member {seed}")


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
    learn_with_checkpoints(model, config, run_dir, progress_bar, fresh=True)
    return TrainResult(run_dir=run_dir, model=model, market=market)


def _train_member(
    config: TradingConfig, market: PreparedMarket, run_dir: Path, seed: int, progress_bar: bool
) -> DistributionalPPO:
    """Train the ensemble member ``seed`` from scratch into :func:`member_dir`."""
    member = member_config(config, seed)
    env = MarketVecEnv(market, "train", member.env, seed=seed)
    model = build_model(member, env, tensorboard_log=str(run_dir / "tb"))
    learn_with_checkpoints(
        model, member, member_dir(run_dir, seed), progress_bar, True, f"seed_{seed}"
    )
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
    cut short are removed. A seed ensemble resumes member by member (finished members kept);
    a portfolio run as :func:`tradingbot.portfolio_run.resume_portfolio`.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no config.yaml)")
    config = load_config(run_dir / "config.yaml")
    check_run_layout(run_dir, config)
    if config.run.seeds is not None:
        return _resume_ensemble(run_dir, config, progress_bar)
    if config.portfolio is not None:  # K assets and cash: tradingbot.portfolio_run
        return resume_portfolio(run_dir, config, progress_bar)
    found = checkpoints_to_resume(run_dir)
    check_device(config)
    market = load_prepared(config.data, window=config.env.window)
    model = resume_from(run_dir, run_dir, config, _loader(market, config), found)
    learn_with_checkpoints(model, config, run_dir, progress_bar, fresh=False)
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
                model = resume_from(run_dir, directory, member, _loader(market, member), found)
                learn_with_checkpoints(
                    model, member, directory, progress_bar, False, f"seed_{seed}"
                )
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


def _loader(market: PreparedMarket, config: TradingConfig) -> Callable[[Path], DistributionalPPO]:
    """Loads a checkpoint with the run's training environment (for :func:`resume_from`)."""

    def load(path: Path) -> DistributionalPPO:
        env = MarketVecEnv(market, "train", config.env, seed=config.run.seed)
        return DistributionalPPO.load(path, env=env)

    return load
