"""CPU seconds of ``collect_rollouts`` and ``train`` of DistributionalPPO over 6 updates (after
a one-update warm-up), for an A/B of two source trees on a shared machine: CPU time of the one
torch thread is what the code costs, far less disturbed by other processes than wall time.

    PYTHONPATH=/tmp/ab_base/src python benchmarks/ab_parts.py trading all
    PYTHONPATH=src python benchmarks/ab_parts.py pendulum default

Settings of ``benchmarks/throughput.py`` (8 envs, n_steps 256, batch 512, 4 epochs, LSTM 64, 32
quantiles, twin critics); ``all`` is its all-options set, written out here so that the script
runs against an older tree too. Prints one JSON line: ``{"rollout": s, "train": s}``.
"""

from __future__ import annotations

import json
import sys
import time

import gymnasium as gym
import torch as th
from stable_baselines3.common.env_util import make_vec_env

from tradingbot.algo.ppo import DistributionalPPO
from tradingbot.algo.presets import ALL_RISK_AND_STABILITY
from tradingbot.runtime import retain_freed_memory

ALL_OPTIONS = ALL_RISK_AND_STABILITY


def main(env_name: str, options: str, updates: int = 6) -> None:
    th.set_num_threads(1)
    retain_freed_memory()
    gym.logger.min_level = gym.logger.ERROR
    if env_name == "trading":
        from tradingbot.config import DataConfig, EnvConfig
        from tradingbot.data.market import load_prepared
        from tradingbot.env import MarketVecEnv

        market = load_prepared(DataConfig(source="sp500"))
        env = MarketVecEnv(market, "train", EnvConfig(n_envs=8), seed=0)
    else:
        env = make_vec_env("Pendulum-v1", n_envs=8, seed=0)
    model = DistributionalPPO(
        "MlpLstmPolicy", env, n_steps=256, batch_size=512, n_epochs=4, lstm_hidden_size=64,
        n_quantiles=32, seed=0, **(ALL_OPTIONS if options == "all" else {}),
    )  # fmt: skip
    model.learn(2048)
    _, callback = model._setup_learn(10**9, None, False, "ab", False)
    rollout = train = 0.0
    for _ in range(updates):
        start = time.process_time()
        model.collect_rollouts(model.env, callback, model.rollout_buffer)
        rollout += time.process_time() - start
        start = time.process_time()
        model.train()
        train += time.process_time() - start
    print(json.dumps({"rollout": rollout, "train": train}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
