#!/usr/bin/env python
"""Where an iteration's time goes: rollout against update, SB3 PPO against ours (issue 26).

The trading env or Pendulum-v1 (``--env``), 8 envs, n_steps 256, batch 512, 4 epochs
(``benchmarks/throughput.py``'s settings), for SB3 PPO (MLP) and for DistributionalPPO with
every risk and stability option on, compiled (``--eager``: not compiled). Each model's
``collect_rollouts`` and ``train`` are timed in thread CPU time; the models take turns, one
2,048-sample iteration each per round, after one warm-up iteration (the compilation happens
there). Prints the median milliseconds per iteration of each part and the ratio of the totals.

    .venv/bin/python benchmarks/time_split.py [--rounds 12] [--eager] [--env trading|pendulum]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch as th
from stable_baselines3.common.env_util import make_vec_env

from throughput import (
    N_ENVS,
    OURS_FULL,
    OURS_FULL_COMPILED,
    ROLLOUT_SAMPLES,
    SB3_PPO,
    make_trading_vec_env,
    peer_makers,
)
from tradingbot.runtime import retain_freed_memory


def timed(model: Any, name: str, spent: dict[str, list[float]]) -> Callable[..., Any]:
    """``model.<name>`` wrapped so that each call appends its thread CPU seconds to ``spent``."""
    method = getattr(model, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.thread_time()
        result = method(*args, **kwargs)
        spent[name].append(time.thread_time() - start)
        return result

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--eager", action="store_true", help="do not compile our loss")
    parser.add_argument("--env", choices=("trading", "pendulum"), default="trading")
    args = parser.parse_args()
    th.set_num_threads(1)
    retain_freed_memory()
    makers = peer_makers(full_features=True, compile_loss=not args.eager, skip_recurrent_ppo=True)
    labels = [SB3_PPO, OURS_FULL if args.eager else OURS_FULL_COMPILED]
    models, spent = {}, {}
    for label in labels:
        env = (
            make_trading_vec_env()
            if args.env == "trading"
            else make_vec_env("Pendulum-v1", n_envs=N_ENVS, seed=0)
        )
        model = makers[label](env)
        model.learn(ROLLOUT_SAMPLES)  # warm-up (compilation)
        spent[label] = {"collect_rollouts": [], "train": []}
        model.collect_rollouts = timed(model, "collect_rollouts", spent[label])
        model.train = timed(model, "train", spent[label])
        models[label] = model
    for _ in range(args.rounds):
        for model in models.values():
            model.learn(ROLLOUT_SAMPLES, reset_num_timesteps=False)
    totals = {}
    for label, parts in spent.items():
        rollout = statistics.median(parts["collect_rollouts"]) * 1e3
        update = statistics.median(parts["train"]) * 1e3
        totals[label] = rollout + update
        print(
            f"{label:<44} rollout {rollout:6.1f} ms  update {update:6.1f} ms  total "
            f"{rollout + update:6.1f} ms per {ROLLOUT_SAMPLES}-sample iteration"
        )
    first, second = totals
    print(f"{first} / {second} total: {totals[first] / totals[second]:.2f}")


if __name__ == "__main__":
    main()
