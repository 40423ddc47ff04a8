"""Memory tasks: DistributionalPPO against sb3-contrib RecurrentPPO at equal env steps.

CartPole-v1 with the velocities (observation indices 1 and 3) hidden and Pendulum-v1 with the
angular velocity (index 2) hidden: a memoryless policy cannot solve either, a recurrent one
must infer the velocities from consecutive observations. Both algorithms get the same env
steps, the same seeds and the same wrappers (VecNormalize where rl-zoo uses it, for both);
each runs with its own good hyperparameters:

- RecurrentPPO('MlpLstmPolicy'): the tuned rl-baselines3-zoo settings
  (``hyperparams/ppo_lstm.yml``: CartPoleNoVel-v1, PendulumNoVel-v1);
- DistributionalPPO: for CartPole the memory-test settings of ``tests/test_ppo.py`` (the zoo's
  VecNormalize and linear decay of the learning rate and clip range to 0); for Pendulum the
  settings in ``TASKS`` below.

Reported per task: final mean reward over 20 deterministic evaluation episodes (the model at
the end of training; eval envs seeded 1000 + seed) and the wall time of ``learn`` (one torch
thread each), then the ratios ours / RecurrentPPO.

    .venv/bin/python benchmarks/memory_tasks.py                     # 3 seeds, both tasks
    .venv/bin/python benchmarks/memory_tasks.py --workers 2         # runs in 2 processes
    .venv/bin/python benchmarks/memory_tasks.py --tasks cartpole --seeds 0
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.utils import get_linear_fn
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from tradingbot.algo.ppo import DistributionalPPO


class HideIndices(gym.ObservationWrapper):
    """Drop the observation entries at ``hidden`` (the velocities)."""

    def __init__(self, env: gym.Env, hidden: tuple[int, ...]) -> None:
        super().__init__(env)
        low, high = env.observation_space.low, env.observation_space.high
        self.keep = [i for i in range(low.shape[0]) if i not in hidden]
        self.observation_space = gym.spaces.Box(low[self.keep], high[self.keep], dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[self.keep].astype(np.float32)


def _relu() -> Any:
    return torch.nn.ReLU


TASKS: dict[str, dict[str, Any]] = {
    "cartpole": {
        "env_id": "CartPole-v1",
        "hidden": (1, 3),
        "steps": 100_000,
        # rl-zoo CartPoleNoVel-v1 (tuned): normalize True, 8 envs.
        "recurrent": {
            "normalize": True,
            "n_envs": 8,
            "kwargs": lambda: dict(
                n_steps=32,
                batch_size=256,
                gae_lambda=0.8,
                gamma=0.98,
                n_epochs=20,
                ent_coef=0.0,
                learning_rate=get_linear_fn(1e-3, 0.0, 1.0),
                clip_range=get_linear_fn(0.2, 0.0, 1.0),
                policy_kwargs=dict(
                    ortho_init=False,
                    activation_fn=_relu(),
                    lstm_hidden_size=64,
                    enable_critic_lstm=True,
                    net_arch=dict(pi=[64], vf=[64]),
                ),
            ),
        },
        # tests/test_ppo.py::test_memory_task_cartpole_without_velocities.
        "ours": {
            "normalize": True,
            "n_envs": 8,
            "kwargs": lambda: dict(
                n_steps=32,
                batch_size=256,
                seq_len=32,
                n_epochs=10,
                learning_rate=1e-3,
                learning_rate_final=0.0,
                clip_range=0.2,
                clip_range_final=0.0,
                gamma=0.98,
                gae_lambda=0.8,
                ent_coef=0.0,
                lstm_hidden_size=64,
            ),
        },
    },
    "pendulum": {
        "env_id": "Pendulum-v1",
        "hidden": (2,),
        "steps": 100_000,
        # rl-zoo PendulumNoVel-v1 (tuned): normalize True, 4 envs, gSDE.
        "recurrent": {
            "normalize": True,
            "n_envs": 4,
            "kwargs": lambda: dict(
                n_steps=1024,
                gae_lambda=0.95,
                gamma=0.9,
                n_epochs=10,
                ent_coef=0.0,
                learning_rate=1e-3,
                clip_range=0.2,
                use_sde=True,
                sde_sample_freq=4,
                policy_kwargs=dict(
                    ortho_init=False,
                    activation_fn=_relu(),
                    lstm_hidden_size=64,
                    enable_critic_lstm=True,
                    net_arch=dict(pi=[64], vf=[64]),
                ),
            ),
        },
        "ours": {
            "normalize": True,
            "n_envs": 8,
            "kwargs": lambda: dict(
                n_steps=256,
                batch_size=512,
                seq_len=32,
                n_epochs=10,
                learning_rate=1e-3,
                learning_rate_final=0.0,
                gamma=0.9,
                gae_lambda=0.95,
                ent_coef=0.0,
                lstm_hidden_size=64,
            ),
        },
    },
}


def make_env(
    task: dict[str, Any], n_envs: int, seed: int, normalize: bool, gamma: float = 0.99
) -> VecEnv:
    env = make_vec_env(
        task["env_id"],
        n_envs=n_envs,
        seed=seed,
        wrapper_class=HideIndices,
        wrapper_kwargs={"hidden": task["hidden"]},
    )
    # Reward normalization discounts with the algorithm's gamma, as rl-baselines3-zoo does.
    return VecNormalize(env, gamma=gamma) if normalize else env


def run_one(task_name: str, algo: str, seed: int, steps: int | None = None) -> dict[str, Any]:
    torch.set_num_threads(1)
    task = TASKS[task_name]
    setup = task[algo]
    steps = steps or task["steps"]
    kwargs = setup["kwargs"]()
    env = make_env(task, setup["n_envs"], seed, setup["normalize"], kwargs["gamma"])
    cls: Callable[..., Any] = RecurrentPPO if algo == "recurrent" else DistributionalPPO
    model = cls("MlpLstmPolicy", env, seed=seed, verbose=0, **kwargs)
    start = time.perf_counter()
    model.learn(steps)
    seconds = time.perf_counter() - start
    eval_env = make_env(task, 1, 1000 + seed, setup["normalize"])
    if setup["normalize"]:
        eval_env.obs_rms = env.obs_rms
        eval_env.training, eval_env.norm_reward = False, False
    rewards, _ = evaluate_policy(
        model, eval_env, n_eval_episodes=20, deterministic=True, return_episode_rewards=True
    )
    return {
        "task": task_name,
        "algo": algo,
        "seed": seed,
        "steps": model.num_timesteps,
        "reward": float(np.mean(rewards)),
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument(
        "--algos", nargs="+", default=["ours", "recurrent"], choices=["ours", "recurrent"]
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="override the env steps")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes (one torch thread each; keep <= cores)"
    )
    args = parser.parse_args(argv)

    jobs = [
        (task, algo, seed, args.steps)
        for task in args.tasks
        for seed in args.seeds
        for algo in args.algos
    ]
    results = []
    with ProcessPoolExecutor(args.workers) as pool:
        for r in pool.map(run_one, *zip(*jobs, strict=True)):
            results.append(r)
            print(
                f"  {r['task']} {r['algo']} seed {r['seed']}: reward {r['reward']:.1f} "
                f"in {r['seconds']:.0f}s ({r['steps']} steps)",
                flush=True,
            )

    names = {"ours": "DistributionalPPO", "recurrent": "RecurrentPPO"}
    print()
    print("| task | algorithm | steps | seeds | mean reward (per seed) | wall s (per seed) |")
    print("|---|---|---:|---:|---:|---:|")
    summary: dict[tuple[str, str], tuple[float, float]] = {}
    for task in args.tasks:
        for algo in args.algos:
            rs = [r for r in results if r["task"] == task and r["algo"] == algo]
            reward = float(np.mean([r["reward"] for r in rs]))
            seconds = float(np.mean([r["seconds"] for r in rs]))
            summary[task, algo] = (reward, seconds)
            per_r = ", ".join(f"{r['reward']:.0f}" for r in rs)
            per_s = ", ".join(f"{r['seconds']:.0f}" for r in rs)
            print(
                f"| {task} | {names[algo]} | {rs[0]['steps']} | {len(rs)} | "
                f"{reward:.1f} ({per_r}) | {seconds:.0f} ({per_s}) |"
            )
    if set(args.algos) == {"ours", "recurrent"}:
        print()
        # Reward ratio oriented so that >= 1 means ours is as good or better: ours / theirs for
        # positive rewards (CartPole), theirs / ours for negative ones (Pendulum costs).
        print(
            "| task | reward ours vs RecurrentPPO | reward ratio (>=1: ours >=) | "
            "time ours / RecurrentPPO |"
        )
        print("|---|---:|---:|---:|")
        for task in args.tasks:
            (r0, s0), (r1, s1) = summary[task, "ours"], summary[task, "recurrent"]
            ratio = r0 / r1 if r1 > 0 else r1 / r0
            print(f"| {task} | {r0:.1f} vs {r1:.1f} | {ratio:.2f} | {s0 / s1:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
