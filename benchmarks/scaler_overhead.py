"""Overhead of the variance gradient scaler on a DistributionalPPO update (target < 10%).

One process: the same rollout (trading env, MarketVecEnv on the prepared sp500 data, 8 envs,
n_steps 256, batch 512, 4 epochs, LSTM 64, default PPOConfig otherwise) is trained on by a model
without and a model with the scaler (``grad_scaler.enabled``), alternating, and the median
time of ``train()`` (one update: 4 epochs x 8 minibatches) is compared.

    python benchmarks/scaler_overhead.py [--repeats 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch as th

from tradingbot.algo.ppo import DistributionalPPO
from tradingbot.config import DataConfig, EnvConfig
from tradingbot.data.market import load_prepared
from tradingbot.env import MarketVecEnv


def make_model(env: MarketVecEnv, scaler: bool) -> DistributionalPPO:
    return DistributionalPPO(
        "MlpLstmPolicy",
        env,
        seed=0,
        n_steps=256,
        batch_size=512,
        n_epochs=4,
        grad_scaler={"enabled": scaler, "warmup": 0},
    )


def time_update(model: DistributionalPPO) -> float:
    state = {k: v.clone() for k, v in model.policy.state_dict().items()}
    start = time.perf_counter()
    model.train()
    elapsed = time.perf_counter() - start
    model.policy.load_state_dict(state)  # every timed update starts from the same weights
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    th.set_num_threads(args.threads)

    market = load_prepared(DataConfig(source="sp500"))
    env = MarketVecEnv(market, "train", EnvConfig(n_envs=8), seed=0)
    plain, scaled = make_model(env, False), make_model(env, True)
    plain.learn(256 * 8)  # one rollout (and a warm-up update)
    # Same rollout and weights for both.
    scaled.policy.load_state_dict(plain.policy.state_dict())
    scaled.return_rms = plain.return_rms
    fields = ["observations", "raw_actions", "episode_starts", "log_probs", "values"]
    fields += ["quantiles", "dist_params", "lstm_states", "advantages", "returns", "rewards"]
    for name in fields:
        getattr(scaled.rollout_buffer, name).copy_(getattr(plain.rollout_buffer, name))
    scaled._logger = plain.logger
    time_update(scaled)  # warm-up of the scaler's buffers

    times: dict[str, list[float]] = {"without scaler": [], "with scaler": []}
    for _ in range(args.repeats):
        times["without scaler"].append(time_update(plain))
        times["with scaler"].append(time_update(scaled))
    medians = {k: statistics.median(v) for k, v in times.items()}
    print(f"DistributionalPPO update on the trading env ({args.threads} thread(s), "
          f"median of {args.repeats}):")  # fmt: skip
    for name, value in medians.items():
        print(f"  {name:<16} {value * 1000:8.1f} ms per update")
    ratio = medians["with scaler"] / medians["without scaler"]
    print(f"  overhead ratio   {ratio:8.3f}  ({(ratio - 1) * 100:+.1f}%, target < +10%)")


if __name__ == "__main__":
    main()
