"""Diagnosis of a late fall on the memory task: is it the policy, or the observation statistics?

Trains one run of ``benchmarks/memory_tasks.py`` (same task settings, same seed, so the same
run), saving ``VecNormalize``'s observation statistics every 10k env steps from 40k on, then
evaluates the *final* policy under each saved set of statistics (20 deterministic episodes,
eval env seeded 1000 + seed, as the benchmark does). If the final policy scores well under
earlier statistics and badly under the final ones, what fell is not what the policy learned
but the scaling of its inputs, which ``VecNormalize`` keeps updating while a decayed learning
rate has frozen the policy (docs/benchmarks.md, issue 24).

    .venv/bin/python benchmarks/obs_stats_drift.py --algo ours_all --seed 3
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecNormalize

from memory_tasks import ALL_OPTIONS, TASKS, DistributionalPPO, make_env


class ObsStatsSnapshots(BaseCallback):
    """Copies the env's observation statistics at every multiple of ``every`` env steps from
    ``start`` on, keyed by the step in thousands."""

    def __init__(self, env: VecNormalize, every: int = 10_000, start: int = 40_000) -> None:
        super().__init__()
        self.env, self.every, self.start = env, every, start
        self.snapshots: dict[int, Any] = {}

    def _on_step(self) -> bool:
        t = self.num_timesteps
        if t >= self.start and t % self.every < self.env.num_envs:
            self.snapshots[t // 1000] = copy.deepcopy(self.env.obs_rms)
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--algo", choices=["ours", "ours_all"], default="ours_all")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="default: the task's 100k")
    parser.add_argument("--out", default=None, help="JSON file of the results")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    task = TASKS["cartpole"]
    setup = task["ours"]
    kwargs = setup["kwargs"]()
    if args.algo == "ours_all":
        kwargs.update(ALL_OPTIONS)
    env = make_env(task, setup["n_envs"], args.seed, True, kwargs["gamma"])
    model = DistributionalPPO("MlpLstmPolicy", env, seed=args.seed, verbose=0, **kwargs)
    snapshots = ObsStatsSnapshots(env)
    model.learn(args.steps or task["steps"], callback=snapshots)
    snapshots.snapshots[model.num_timesteps // 1000] = copy.deepcopy(env.obs_rms)
    results = {}
    for step, stats in sorted(snapshots.snapshots.items()):
        eval_env = make_env(task, 1, 1000 + args.seed, True)
        eval_env.obs_rms, eval_env.training, eval_env.norm_reward = stats, False, False
        rewards, _ = evaluate_policy(
            model, eval_env, n_eval_episodes=20, deterministic=True, return_episode_rewards=True
        )
        results[step] = {
            "final_policy_reward": float(np.mean(rewards)),
            "obs_mean": stats.mean.tolist(),
            "obs_std": np.sqrt(stats.var).tolist(),
        }
        print(f"stats of {step}k steps: final policy {results[step]['final_policy_reward']:.1f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
