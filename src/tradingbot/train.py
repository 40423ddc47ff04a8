"""The main job: train DistributionalPPO on a config's data and write a run directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.numpy import save_file

from tradingbot.algo.ppo import DistributionalPPO
from tradingbot.config import TradingConfig
from tradingbot.data.market import PreparedMarket, load_prepared
from tradingbot.env.vec_env import MarketVecEnv
from tradingbot.run import create_run_dir

MODEL_FILE = "model.safetensors"
NORMALIZATION_FILE = "normalization.safetensors"


@dataclass
class TrainResult:
    """What a training run produced."""

    run_dir: Path
    model: DistributionalPPO
    market: PreparedMarket


def build_model(
    config: TradingConfig, env: MarketVecEnv, tensorboard_log: str | None = None
) -> DistributionalPPO:
    """DistributionalPPO with the config's hyperparameters, seeded by ``run.seed``."""
    hyperparameters = config.algo.model_copy(update={"seed": config.run.seed})
    return DistributionalPPO(
        "MlpLstmPolicy", env, config=hyperparameters, tensorboard_log=tensorboard_log
    )


def train(config: TradingConfig, progress_bar: bool = False) -> TrainResult:
    """Train on the config's training split and write the run directory.

    The run directory holds ``config.yaml`` and ``run.json`` (see :mod:`tradingbot.run`),
    TensorBoard logs under ``tb/``, the model and the feature normalization fitted on the
    training split.
    """
    torch.set_num_threads(config.run.torch_threads)
    market = load_prepared(config.data, window=config.env.window)
    run_dir = create_run_dir(config)
    env = MarketVecEnv(market, "train", config.env, seed=config.run.seed)
    model = build_model(config, env, tensorboard_log=str(run_dir / "tb"))
    model.learn(config.run.total_timesteps, tb_log_name="train", progress_bar=progress_bar)
    model.save(run_dir / MODEL_FILE, config=config.to_dict())
    save_file(
        market.normalizer.state_dict(),
        str(run_dir / NORMALIZATION_FILE),
        metadata={"features": ",".join(market.feature_names)},
    )
    return TrainResult(run_dir=run_dir, model=model, market=market)
