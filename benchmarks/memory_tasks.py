"""Memory tasks: DistributionalPPO against sb3-contrib RecurrentPPO at equal env steps.

CartPole-v1 with the velocities (observation indices 1 and 3) hidden and Pendulum-v1 with the
angular velocity (index 2) hidden: a memoryless policy cannot solve either, a recurrent one
must infer the velocities from consecutive observations. Both algorithms get the same env
steps, the same seeds and the same wrappers (VecNormalize where rl-zoo uses it, for both);
each runs with its own good hyperparameters:

- RecurrentPPO('MlpLstmPolicy'): the tuned rl-baselines3-zoo settings
  (``hyperparams/ppo_lstm.yml``: CartPoleNoVel-v1, PendulumNoVel-v1);
- DistributionalPPO: for CartPole the zoo's CartPoleNoVel-v1 settings where they exist
  (VecNormalize, 20 epochs, linear decay of the learning rate and clip range to 0), which
  ``tests/test_ppo.py``'s memory test runs too; for Pendulum the settings in ``TASKS`` below.

Reported per task: final mean reward over 20 deterministic evaluation episodes (the model at
the end of training; eval envs seeded 1000 + seed) and the wall time of ``learn`` (one torch
thread each), then the ratios ours / RecurrentPPO.

Algorithms: ``ours`` (DistributionalPPO with the task's settings), ``ours_all`` (the same with
every risk and stability option on, ``ALL_OPTIONS``, as the memory test runs it) and
``recurrent`` (RecurrentPPO). ``--perturb-tanh`` computes every tanh of our policy's hidden
layers as ``2 sigmoid(2x) - 1`` (equal in exact arithmetic, different in float rounding), a
check that a result does not hang on rounding. With ``--out DIR`` each run writes
``DIR/<task>_<algo>_seed<k>.json`` (and its per-update log ``.csv``); runs whose file is there
already are not run again, and the tables cover every requested run in ``DIR``.

Our algorithm's own observation normalization (``PPOConfig.observation_normalization``, issue
24): ``--set '{"observation_normalization": {"enabled": true}}' --label NAME``. With it on,
``VecNormalize`` normalizes the rewards only (``norm_obs=False``) for ours, and the evaluation
feeds raw observations to the model, which normalizes them with its own trained statistics.

    .venv/bin/python benchmarks/memory_tasks.py --workers 2 --out out/memory   # 10 + 5 seeds
    .venv/bin/python benchmarks/memory_tasks.py --tasks cartpole --algos ours --seeds 0
    .venv/bin/python benchmarks/memory_tasks.py --out out/memory --report   # tables only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure
from stable_baselines3.common.utils import get_linear_fn
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from tradingbot.algo.ppo import DistributionalPPO
from tradingbot.algo.presets import ALL_RISK_AND_STABILITY, GRAD_SCALER_ON


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
        # The zoo's settings where they exist (tests/test_ppo.py's memory test runs these). 20
        # epochs, the zoo's: with 10, 2 of seeds 0-2 ended below 450 (docs/benchmarks.md).
        "ours": {
            "normalize": True,
            "n_envs": 8,
            "kwargs": lambda: dict(
                n_steps=32,
                batch_size=256,
                seq_len=32,
                n_epochs=20,
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
                # 128-step chunks (BPTT length) and a start learning rate of 2e-3: chosen on
                # seeds 10-39 among 29 settings (issue 24, sixth round in docs/benchmarks.md).
                seq_len=128,
                n_epochs=10,
                learning_rate=2e-3,
                learning_rate_final=0.0,
                gamma=0.9,
                gae_lambda=0.95,
                ent_coef=0.0,
                lstm_hidden_size=64,
                # gSDE as the zoo's RecurrentPPO explores here; frequency and initial log-std
                # chosen on seeds 10-12 among 19 settings (docs/benchmarks.md, issue 24).
                exploration={"mode": "gsde", "sample_freq": 8},
                log_std_init=-0.5,
                # PyTorch's default init of the layers after the LSTMs (RecurrentPPO's
                # ortho_init=False) and one critic: chosen on seeds 10-14 among 11 settings of
                # the activation and the init (issue 24, fifth round in docs/benchmarks.md).
                ortho_init=False,
                twin_critics=False,
            ),
        },
    },
}


# Every risk and stability option of the algorithm config at once (benchmarks/throughput.py's
# set) plus the variance gradient scaler and gradient accumulation: the memory test's
# "all_options" case (tests/test_ppo.py).
ALL_OPTIONS: dict[str, object] = {
    **ALL_RISK_AND_STABILITY,
    **GRAD_SCALER_ON,
    "n_microbatches": 2,
}
ALGOS = ("ours", "ours_all", "recurrent")
NAMES = {
    "ours": "DistributionalPPO",
    "ours_all": "DistributionalPPO, every option",
    "recurrent": "RecurrentPPO",
}
DEFAULT_SEEDS = {"cartpole": list(range(10)), "pendulum": list(range(5))}


def make_env(
    task: dict[str, Any],
    n_envs: int,
    seed: int,
    normalize: bool,
    gamma: float = 0.99,
    norm_obs: bool = True,
) -> VecEnv:
    env = make_vec_env(
        task["env_id"],
        n_envs=n_envs,
        seed=seed,
        wrapper_class=HideIndices,
        wrapper_kwargs={"hidden": task["hidden"]},
    )
    # Reward normalization discounts with the algorithm's gamma, as rl-baselines3-zoo does.
    # norm_obs=False: the algorithm normalizes the observations itself (rewards only here).
    return VecNormalize(env, gamma=gamma, norm_obs=norm_obs) if normalize else env


def _tanh_by_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return 2.0 * torch.sigmoid(2.0 * x) - 1.0


def perturb_tanh() -> None:
    """Compute the tanh of our policy's hidden layers as ``2 sigmoid(2x) - 1`` in this process:
    ``nn.Tanh`` (the MLPs in training) and ``th.tanh`` where the algorithm's modules call it
    (the fused rollout step, the critic heads, the action squash in ``exploration``). Equal in
    exact arithmetic, not in rounding."""
    from types import SimpleNamespace

    from tradingbot.algo import exploration, heads, policy
    from tradingbot.algo.fast import inference

    torch.nn.Tanh.forward = lambda self, x: _tanh_by_sigmoid(x)  # type: ignore[method-assign]
    patched = SimpleNamespace(**{**vars(torch), "tanh": _tanh_by_sigmoid})
    for module in (policy, heads, inference, exploration):
        module.th = patched  # type: ignore[attr-defined]
    # The hidden layers' activation functions are looked up in this table when a network is
    # built (PPOConfig.activation), so the table's tanh is patched too.
    heads.ACTIVATIONS["tanh"] = _tanh_by_sigmoid


class FreezeObsStats(BaseCallback):
    """Stop ``VecNormalize`` updating its statistics (observations and returns) once ``at`` env
    steps are done: from then on the policy's inputs are scaled as they were at ``at``."""

    def __init__(self, env: VecNormalize, at: int) -> None:
        super().__init__()
        self.env, self.at = env, at

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.at and self.env.training:
            self.env.training = False
        return True


def owns_obs_normalization(kwargs: dict[str, Any]) -> bool:
    """Whether our settings turn on ``observation_normalization`` (the algorithm's own)."""
    section = kwargs.get("observation_normalization") or {}
    return bool(section.get("enabled", False))


def run_name(task_name: str, algo: str, seed: int, perturbed: bool = False, label: str = "") -> str:
    """File stem of one run's results: ``<task>_<algo>[_<label>][_tanh_sigmoid]_seed<k>``."""
    label = f"_{label}" if label else ""
    return f"{task_name}_{algo}{label}{'_tanh_sigmoid' if perturbed else ''}_seed{seed}"


def run_one(
    task_name: str,
    algo: str,
    seed: int,
    steps: int | None = None,
    perturbed: bool = False,
    out: str | None = None,
    overrides: dict[str, Any] | None = None,
    label: str = "",
    freeze_obs_stats_at: int | None = None,
) -> dict[str, Any]:
    """Train one algorithm on one task and seed; the final model's mean reward over 20
    deterministic episodes and the wall time of ``learn``. ``overrides``: settings of ours
    that replace the task's (an ablation, named by ``label`` in the result files).
    ``freeze_obs_stats_at``: env steps after which the training env's ``VecNormalize``
    statistics stop updating (``None``: never, the zoo's setting)."""
    torch.set_num_threads(1)
    if perturbed:
        perturb_tanh()
    task = TASKS[task_name]
    setup = task["recurrent" if algo == "recurrent" else "ours"]
    steps = steps or task["steps"]
    kwargs = setup["kwargs"]()
    if algo == "ours_all":
        kwargs.update(ALL_OPTIONS)
    if algo != "recurrent":
        kwargs.update(overrides or {})
    # Under the algorithm's own observation normalization VecNormalize keeps the rewards only,
    # and the evaluation uses the trained model's statistics (inside the model).
    own_obs_norm = algo != "recurrent" and owns_obs_normalization(kwargs)
    norm_obs = not own_obs_norm
    env = make_env(task, setup["n_envs"], seed, setup["normalize"], kwargs["gamma"], norm_obs)
    cls: Callable[..., Any] = RecurrentPPO if algo == "recurrent" else DistributionalPPO
    model = cls("MlpLstmPolicy", env, seed=seed, verbose=0, **kwargs)
    if out is not None:
        # Per-update training metrics (KL, clip fraction, explained variance, return scale, ...).
        log_dir = Path(out) / run_name(task_name, algo, seed, perturbed, label)
        model.set_logger(configure(str(log_dir), ["csv"]))
    start = time.perf_counter()
    callback = None
    if freeze_obs_stats_at is not None:
        if not isinstance(env, VecNormalize):
            raise ValueError(f"freeze_obs_stats_at needs a VecNormalize task, not {task_name}")
        callback = FreezeObsStats(env, freeze_obs_stats_at)
    model.learn(steps, callback=callback)
    seconds = time.perf_counter() - start
    eval_env = make_env(task, 1, 1000 + seed, setup["normalize"], norm_obs=norm_obs)
    if setup["normalize"]:
        if norm_obs:
            eval_env.obs_rms = env.obs_rms
        eval_env.training, eval_env.norm_reward = False, False
    rewards, _ = evaluate_policy(
        model, eval_env, n_eval_episodes=20, deterministic=True, return_episode_rewards=True
    )
    result = {
        "task": task_name,
        "algo": algo,
        "seed": seed,
        "perturbed": perturbed,
        "overrides": overrides or {},
        "steps": model.num_timesteps,
        "reward": float(np.mean(rewards)),
        "seconds": seconds,
        "freeze_obs_stats_at": freeze_obs_stats_at,
        "algorithm_obs_normalization": own_obs_norm,
    }
    if out is not None:
        path = Path(out) / f"{run_name(task_name, algo, seed, perturbed, label)}.json"
        path.write_text(json.dumps(result, indent=1))
    return result


def _print_tables(results: list[dict[str, Any]], tasks: list[str], algos: list[str]) -> None:
    print()
    print("| task | algorithm | steps | seeds | mean reward (per seed) | min | wall s (per seed) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    summary: dict[tuple[str, str], tuple[float, float]] = {}
    for task in tasks:
        for algo in algos:
            rs = sorted(
                (r for r in results if r["task"] == task and r["algo"] == algo),
                key=lambda r: r["seed"],
            )
            if not rs:
                continue
            reward = float(np.mean([r["reward"] for r in rs]))
            seconds = float(np.mean([r["seconds"] for r in rs]))
            summary[task, algo] = (reward, seconds)
            per_r = ", ".join(f"{r['reward']:.0f}" for r in rs)
            per_s = ", ".join(f"{r['seconds']:.0f}" for r in rs)
            low = min(r["reward"] for r in rs)
            print(
                f"| {task} | {NAMES[algo]} | {rs[0]['steps']} | "
                f"{', '.join(str(r['seed']) for r in rs)} | "
                f"{reward:.1f} ({per_r}) | {low:.0f} | {seconds:.0f} ({per_s}) |"
            )
    pairs = [t for t in tasks if (t, "ours") in summary and (t, "recurrent") in summary]
    if pairs:
        print()
        # Reward ratio oriented so that >= 1 means ours is as good or better: ours / theirs for
        # positive rewards (CartPole), theirs / ours for negative ones (Pendulum costs).
        print(
            "| task | reward ours vs RecurrentPPO | reward ratio (>=1: ours >=) | "
            "time ours / RecurrentPPO |"
        )
        print("|---|---:|---:|---:|")
        for task in pairs:
            (r0, s0), (r1, s1) = summary[task, "ours"], summary[task, "recurrent"]
            ratio = r0 / r1 if r1 > 0 else r1 / r0
            print(f"| {task} | {r0:.1f} vs {r1:.1f} | {ratio:.2f} | {s0 / s1:.2f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--algos", nargs="+", default=["ours", "recurrent"], choices=ALGOS)
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="default: CartPole 0-9, Pendulum 0-4"
    )
    parser.add_argument("--steps", type=int, default=None, help="override the env steps")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes (one torch thread each; keep <= cores)"
    )
    parser.add_argument(
        "--perturb-tanh",
        action="store_true",
        help="our policy's hidden tanh computed as 2 sigmoid(2x) - 1 (a rounding check)",
    )
    parser.add_argument(
        "--set",
        default="{}",
        help="JSON settings of ours replacing the task's (an ablation), e.g. '{\"n_epochs\": 20}'",
    )
    parser.add_argument("--label", default="", help="names an ablation's result files")
    parser.add_argument(
        "--freeze-obs-stats-at",
        type=int,
        default=None,
        help="env steps after which VecNormalize's statistics stop updating (needs --label)",
    )
    parser.add_argument("--out", default=None, help="directory of per-run JSON results (reused)")
    parser.add_argument("--report", action="store_true", help="only print the tables of --out")
    args = parser.parse_args(argv)
    if args.report and args.out is None:
        parser.error("--report reads the results of --out DIR")

    overrides = json.loads(args.set)
    if (overrides or args.freeze_obs_stats_at is not None) and not args.label:
        parser.error("--set and --freeze-obs-stats-at need a --label naming the result files")
    jobs = [
        (
            task,
            algo,
            seed,
            args.steps,
            args.perturb_tanh and algo != "recurrent",
            args.out,
            overrides,
            # --set changes ours only; the frozen statistics apply to both algorithms.
            "" if algo == "recurrent" and args.freeze_obs_stats_at is None else args.label,
            args.freeze_obs_stats_at,
        )
        for task in args.tasks
        for seed in (args.seeds if args.seeds is not None else DEFAULT_SEEDS[task])
        for algo in args.algos
    ]
    results, todo = [], []
    for job in jobs:
        name = run_name(*job[:3], job[4], job[7])
        path = None if args.out is None else Path(args.out) / f"{name}.json"
        if path is not None and path.exists():
            results.append(json.loads(path.read_text()))
        elif not args.report:
            todo.append(job)
    if args.out is not None:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        print(f"{len(results)} runs read from {args.out}, {len(todo)} to run", flush=True)
    if todo:
        with ProcessPoolExecutor(args.workers) as pool:
            for r in pool.map(run_one, *zip(*todo, strict=True)):
                results.append(r)
                print(
                    f"  {r['task']} {r['algo']} seed {r['seed']}: reward {r['reward']:.1f} "
                    f"in {r['seconds']:.0f}s ({r['steps']} steps)",
                    flush=True,
                )
    _print_tables(results, args.tasks, args.algos)
    return 0


if __name__ == "__main__":
    sys.exit(main())
