"""The main job: train DistributionalPPO on a config's data and write a run directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from safetensors.numpy import save
from stable_baselines3.common.callbacks import BaseCallback

from tradingbot.algo.ppo import DistributionalPPO
from tradingbot.config import TradingConfig, load_config
from tradingbot.data.market import PreparedMarket, load_prepared
from tradingbot.env.vec_env import MarketVecEnv
from tradingbot.evaluate.var import VAR_MODEL_FILE, fit_market_var_model
from tradingbot.run import create_run_dir
from tradingbot.runtime import configure_process
from tradingbot.safe_write import write_bytes

MODEL_FILE = "model.safetensors"
NORMALIZATION_FILE = "normalization.safetensors"
CHECKPOINT_DIR = "checkpoints"


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
    """A run's complete checkpoints, oldest first (temporary files of a write are ignored)."""
    return sorted(p for p in directory.glob("step_*.safetensors") if not p.name.startswith("."))


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
    model.save(run_dir / MODEL_FILE, config=config.to_dict())


def train(config: TradingConfig, progress_bar: bool = False) -> TrainResult:
    """Train on the config's training split and write the run directory.

    The run directory holds ``config.yaml`` and ``run.json`` (see :mod:`tradingbot.run`),
    TensorBoard logs under ``tb/``, checkpoints under ``checkpoints/``, the final model and
    the feature normalization and the GARCH VaR parameters fitted on the training split.
    """
    configure_process(config.run)
    market = load_prepared(config.data, window=config.env.window)
    run_dir = create_run_dir(config)
    write_normalization(market, run_dir)
    write_var_model(market, run_dir)
    env = MarketVecEnv(market, "train", config.env, seed=config.run.seed)
    model = build_model(config, env, tensorboard_log=str(run_dir / "tb"))
    _learn(model, config, run_dir, progress_bar, fresh=True)
    return TrainResult(run_dir=run_dir, model=model, market=market)


def resume(run_dir: str | Path, progress_bar: bool = False) -> TrainResult:
    """Continue an interrupted run from its newest checkpoint up to ``run.total_timesteps``.

    The result is bit-for-bit the run that was never interrupted (on CPU): the checkpoint
    carries the model, optimizer, statistics, RNG and environment state.
    """
    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.yaml")
    found = list_checkpoints(run_dir / CHECKPOINT_DIR)
    for partial in (run_dir / CHECKPOINT_DIR).glob(".*.tmp"):  # writes cut short by a crash
        partial.unlink()
    if not found:
        raise FileNotFoundError(f"{run_dir}: no checkpoint to resume from in {CHECKPOINT_DIR}/")
    configure_process(config.run)
    market = load_prepared(config.data, window=config.env.window)
    env = MarketVecEnv(market, "train", config.env, seed=config.run.seed)
    model = DistributionalPPO.load(found[-1], env=env)
    model.tensorboard_log = str(run_dir / "tb")
    _learn(model, config, run_dir, progress_bar, fresh=False)
    return TrainResult(run_dir=run_dir, model=model, market=market)
