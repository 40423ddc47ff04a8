"""Interleaved A/B timing of DistributionalPPO's training at two source trees (e.g. a base
commit checked out with ``git worktree add /tmp/ab_base <commit>`` and this checkout).

    python benchmarks/ab_commits.py /tmp/ab_base/src src [--rounds 5] [--timesteps 8192]

Each measurement is a fresh child process (``PYTHONPATH`` = the tree's ``src``, one torch
thread, glibc malloc retaining freed memory as training runs do) that builds the model with
``benchmarks/throughput.py``'s settings (8 envs, n_steps 256, batch 512, 4 epochs, LSTM 64, 32
quantiles, twin critics), trains one rollout to warm up, then times ``--timesteps`` more steps.
The cases are the default and the all-options config (throughput.py's ``FULL_FEATURES``), on
Pendulum-v1 and the trading env. In every round each case runs at both trees, in alternating
order, so both see the same drift of a shared machine; the ratio B / A of steps per second is
taken per round and summarized by its median and range over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from throughput import BATCH_SIZE, FULL_FEATURES, LSTM_HIDDEN, N_ENVS, N_EPOCHS, N_STEPS

# The child runs against either tree, so it gets the settings and options as literals (it
# cannot import this checkout's benchmarks against an older src).
SETTINGS = (N_ENVS, N_STEPS, BATCH_SIZE, N_EPOCHS, LSTM_HIDDEN)
OPTIONS = {"default": {}, "all_options": FULL_FEATURES}

CHILD = r"""
import json, sys, time
import gymnasium as gym
import torch as th
import tradingbot
from stable_baselines3.common.env_util import make_vec_env
from tradingbot.algo.ppo import DistributionalPPO
from tradingbot.runtime import retain_freed_memory

th.set_num_threads(1)
retain_freed_memory()
gym.logger.min_level = gym.logger.ERROR
N_ENVS, N_STEPS, BATCH_SIZE, N_EPOCHS, LSTM_HIDDEN = {settings}
env_name, options, timesteps = {env!r}, json.loads({options!r}), {timesteps}
if env_name == "pendulum":
    env = make_vec_env("Pendulum-v1", n_envs=N_ENVS, seed=0)
else:
    from tradingbot.config import DataConfig, EnvConfig
    from tradingbot.data.market import load_prepared
    from tradingbot.env import MarketVecEnv

    market = load_prepared(DataConfig(source="sp500"))
    env = MarketVecEnv(market, "train", EnvConfig(n_envs=N_ENVS), seed=0)
model = DistributionalPPO(
    "MlpLstmPolicy", env, n_steps=N_STEPS, batch_size=BATCH_SIZE, n_epochs=N_EPOCHS,
    lstm_hidden_size=LSTM_HIDDEN, n_quantiles=32, twin_critics=True, seed=0, **options,
)
model.learn(N_STEPS * N_ENVS)
start, cpu_start = time.perf_counter(), time.process_time()
model.learn(timesteps, reset_num_timesteps=False)
seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
print(json.dumps({{
    "sps": timesteps / seconds, "cpu_sps": timesteps / cpu_seconds, "module": tradingbot.__file__
}}))
"""

CASES = [
    ("pendulum", "default"),
    ("pendulum", "all_options"),
    ("trading", "default"),
    ("trading", "all_options"),
]


def measure(src: Path, env: str, options: str, timesteps: int) -> tuple[float, float]:
    """Steps per second of one child run on the tree ``src``: per second of CPU time (the
    child's one thread; what the code costs, little affected by other processes) and of wall
    time."""
    code = CHILD.format(
        settings=SETTINGS, env=env, options=json.dumps(OPTIONS[options]), timesteps=timesteps
    )
    child_env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=child_env, capture_output=True, text=True, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["module"].startswith(str(src)):
        raise RuntimeError(f"the child imported {result['module']}, not the tree {src}")
    return float(result["cpu_sps"]), float(result["sps"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("a", type=Path, help="the base tree's src directory")
    parser.add_argument("b", type=Path, help="the changed tree's src directory")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--timesteps", type=int, default=8192)
    parser.add_argument(
        "--cases", nargs="+", default=[f"{e}/{o}" for e, o in CASES], help="env/options pairs"
    )
    args = parser.parse_args()
    a, b = args.a.resolve(), args.b.resolve()
    # key -> clock ("cpu", "wall") -> per-round (A, B) steps per second
    speeds: dict[str, dict[str, list[tuple[float, float]]]] = {
        key: {"cpu": [], "wall": []} for key in args.cases
    }
    for round_index in range(args.rounds):
        for key in args.cases:
            env, options = key.split("/")
            order = (a, b) if round_index % 2 == 0 else (b, a)
            sps = {src: measure(src, env, options, args.timesteps) for src in order}
            for clock, index in (("cpu", 0), ("wall", 1)):
                speeds[key][clock].append((sps[a][index], sps[b][index]))
            print(
                f"round {round_index} {key}: CPU-time steps/s A {sps[a][0]:.0f} B {sps[b][0]:.0f} "
                f"(B/A {sps[b][0] / sps[a][0]:.3f}); wall B/A {sps[b][1] / sps[a][1]:.3f}",
                flush=True,
            )
    print(f"\nA = {a}\nB = {b}\n{args.rounds} rounds of {args.timesteps} timesteps")
    for clock in ("cpu", "wall"):
        print(f"\nsteps per second of {clock} time")
        print(f"{'case':<24} {'A':>8} {'B':>8} {'B/A median':>11} {'range':>16}")
        for key, clocks in speeds.items():
            pairs = clocks[clock]
            ratios = [pb / pa for pa, pb in pairs]
            print(
                f"{key:<24} {statistics.median(p[0] for p in pairs):>8.0f} "
                f"{statistics.median(p[1] for p in pairs):>8.0f} "
                f"{statistics.median(ratios):>11.3f} [{min(ratios):.3f}, {max(ratios):.3f}]"
            )


if __name__ == "__main__":
    main()
