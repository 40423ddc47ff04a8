"""Env-steps per second: tradingbot's vectorized market env (N = 256, one process) against
gym-anytrading's ``stocks-v0`` single env, measured in the same run.

    python benchmarks/env_throughput.py [--n-envs 256] [--seconds 3]

Both step the GOOGL daily bars with random actions, resetting at episode ends; the ratio of
env-steps per second is printed (target: >= 20x). Our infos are built when read (as SB3's
learning loop reads only the ended episodes'); a second row reads every info dict each step.
"""

from __future__ import annotations

import argparse
import time

import gym_anytrading  # noqa: F401  (registers stocks-v0)
import gymnasium as gym
import numpy as np

from tradingbot.config import DataConfig, EnvConfig
from tradingbot.data.market import load_prepared
from tradingbot.env import MarketVecEnv


def steps_per_second(step, batch: int, seconds: float) -> float:
    """Call ``step`` (which advances ``batch`` env-steps) for about ``seconds``; best of 3."""
    best = 0.0
    for _ in range(3):
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / 3:
            for _ in range(20):
                step()
            n += 20
        best = max(best, n * batch / elapsed)
    return best


def anytrading_rate(seconds: float) -> float:
    env = gym.make("stocks-v0")
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 2, 100_000)
    i = 0

    def step() -> None:
        nonlocal i
        _, _, term, trunc, _ = env.step(int(actions[i % len(actions)]))
        i += 1
        if term or trunc:
            env.reset()

    return steps_per_second(step, 1, seconds)


def tradingbot_rate(n_envs: int, seconds: float, read_infos: bool) -> float:
    market = load_prepared(DataConfig(source="googl"))
    env = MarketVecEnv(market, "train", EnvConfig(n_envs=n_envs, episode_length=256), seed=0)
    env.reset()
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (64, n_envs, 1)).astype(np.float32)
    i = 0

    def step() -> None:
        nonlocal i
        infos = env.step(actions[i % 64])[3]
        if read_infos:
            for info in infos:
                info.get("episode")
        i += 1

    return steps_per_second(step, n_envs, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-envs", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    ours = tradingbot_rate(args.n_envs, args.seconds, read_infos=False)
    ours_infos = tradingbot_rate(args.n_envs, args.seconds, read_infos=True)
    theirs = anytrading_rate(args.seconds)
    name = f"tradingbot MarketVecEnv (N={args.n_envs})"
    print(f"{'env':<52}{'env-steps/s':>14}{'ratio':>8}")
    print(f"{name:<52}{ours:>14,.0f}{ours / theirs:>7.1f}x")
    print(f"{name + ', every info dict read':<52}{ours_infos:>14,.0f}{ours_infos / theirs:>7.1f}x")
    print(f"{'gym-anytrading stocks-v0 (single, gym.make)':<52}{theirs:>14,.0f}{1:>7.1f}x")
    print("target: >= 20x")


if __name__ == "__main__":
    main()
