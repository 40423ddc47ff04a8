"""Real-data benchmark: S&P 500 walk-forward, test years 2008-2018, costs on.

One-year expanding folds (test year Y, trained on every bar before it, feature normalization
fitted on those bars only). For every fold and seed three agents are trained on the fold's
training bars with the same env (costs 1 bp commission + 2 bp slippage, fills at the next
open) and the same budget, then run deterministically over the test year:

- ``mean_cvar``: DistributionalPPO with the CVaR objective (``configs/demo.yaml`` plus
  ``algo.risk.mode=mean_cvar``);
- ``risk_neutral``: the same with ``algo.risk.mode=none``;
- ``sb3_ppo``: Stable-Baselines3 PPO, MLP policy, the same n_steps, batch, epochs, gamma,
  lambda, learning rate and clip range;

and buy-and-hold runs over the same bars with the same costs. The eleven test years of one
seed are stitched into one 2008-2018 out-of-sample series per agent; Sharpe, max drawdown,
CVaR 5% and the probabilistic Sharpe ratio against buy-and-hold's Sharpe are computed on it,
and reported as the mean and 95% t-interval over the seeds. The per-fold Sharpe (mean and CI
over fold x seed) is printed too.

    .venv/bin/python benchmarks/real_data.py                       # 5 seeds, 2 workers
    .venv/bin/python benchmarks/real_data.py --seeds 0 --steps 20000 --folds 2
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from stable_baselines3 import PPO

from tradingbot.config import TradingConfig, load_config
from tradingbot.data.features import feature_lookback
from tradingbot.data.market import prepare_market
from tradingbot.data.sources import load_market
from tradingbot.data.splits import Fold, union_index, walk_forward_folds
from tradingbot.env.simulator import make_action_space
from tradingbot.env.vec_env import MarketVecEnv
from tradingbot.evaluate.backtest import ConstantPolicy, backtest_metrics, run_backtest
from tradingbot.evaluate.walkforward import mean_confidence_interval
from tradingbot.train import build_model

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
WALK_FORWARD = [
    "data.walk_forward.first_test_start=2008-01-01",
    "data.walk_forward.test_length=12MS",  # calendar years: Jan 1 to the next Jan 1
    "data.walk_forward.mode=expanding",
]
AGENTS: dict[str, list[str]] = {
    "mean_cvar": ["algo.risk.mode=mean_cvar"],
    "risk_neutral": ["algo.risk.mode=none"],
    "sb3_ppo": ["algo.risk.mode=none"],
}
METRICS = ("sharpe", "max_drawdown", "cvar_5", "annual_return", "psr_vs_benchmark")


def fold_config(config: str, folds: int, steps: int, extra: list[str]) -> TradingConfig:
    return load_config(
        config,
        [
            *WALK_FORWARD,
            f"data.walk_forward.n_folds={folds}",
            f"run.total_timesteps={steps}",
            *extra,
        ],
    )


def make_folds(cfg: TradingConfig) -> tuple[Any, list[Fold]]:
    min_rows = feature_lookback(cfg.data.features) + cfg.env.window + 1
    data = load_market(cfg.data.source, cfg.data.synthetic, cfg.data.instruments, min_rows)
    stamps = union_index([b.index for b in data.bars.values()])
    return data, walk_forward_folds(stamps, cfg.data.walk_forward)


def sb3_ppo(cfg: TradingConfig, env: MarketVecEnv, seed: int) -> PPO:
    a = cfg.algo
    return PPO(
        "MlpPolicy",
        env,
        n_steps=a.n_steps,
        batch_size=a.batch_size,
        n_epochs=a.n_epochs,
        gamma=a.gamma,
        gae_lambda=a.gae_lambda,
        learning_rate=a.learning_rate,
        clip_range=a.clip_range,
        ent_coef=a.ent_coef,
        max_grad_norm=a.max_grad_norm,
        seed=seed,
        verbose=0,
    )


def run_job(
    config: str, folds: int, steps: int, fold_index: int, seed: int, agent: str
) -> dict[str, Any]:
    """Train one agent on one fold at one seed; its test-year bars (and buy-and-hold's)."""
    torch.set_num_threads(1)
    cfg = fold_config(config, folds, steps, [*AGENTS[agent], f"run.seed={seed}"])
    data, fold_list = make_folds(cfg)
    fold = fold_list[fold_index]
    market = prepare_market(data, cfg.data, cfg.env.window, fit_on=fold.train)
    env = MarketVecEnv(market, fold.train, cfg.env, seed=seed)
    model = sb3_ppo(cfg, env, seed) if agent == "sb3_ppo" else build_model(cfg, env)
    start = time.perf_counter()
    model.learn(cfg.run.total_timesteps)
    seconds = time.perf_counter() - start
    instrument = market.instruments[0].name
    bars = run_backtest(model, market, fold.test, cfg.env, instrument)
    hold = run_backtest(
        ConstantPolicy(1.0, make_action_space(cfg.env)), market, fold.test, cfg.env, instrument
    )
    return {
        "fold": fold_index,
        "seed": seed,
        "agent": agent,
        "bars": bars,
        "buy_and_hold": hold,
        "seconds": seconds,
    }


def stitched_metrics(bars: list[pd.DataFrame], benchmark: pd.DataFrame) -> dict[str, float]:
    """Metrics of consecutive test years joined into one series (equity compounds across)."""
    return backtest_metrics(pd.concat(bars).sort_index(), benchmark)


def fmt(values: list[float], pct: bool = False) -> str:
    mean, low, high = mean_confidence_interval(np.asarray(values))
    scale = 100.0 if pct else 1.0
    if not np.isfinite(low):
        return f"{mean * scale:.2f}"
    return f"{mean * scale:.2f} [{low * scale:.2f}, {high * scale:.2f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int, default=100_000, help="env steps per agent")
    parser.add_argument("--folds", type=int, default=11, help="test years from 2008")
    parser.add_argument("--agents", nargs="+", default=list(AGENTS), choices=list(AGENTS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="CSV of per-fold metrics")
    args = parser.parse_args(argv)

    cfg = fold_config(args.config, args.folds, args.steps, [])
    _, fold_list = make_folds(cfg)
    print(
        f"{len(fold_list)} folds: "
        + ", ".join(f"{f.test.start:%Y-%m-%d}..{f.test.end:%Y-%m-%d}" for f in fold_list)
    )
    jobs = [
        (args.config, args.folds, args.steps, f.index, seed, agent)
        for f in fold_list
        for seed in args.seeds
        for agent in args.agents
    ]
    results: list[dict[str, Any]] = []
    rows = []
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        for r in pool.map(run_job, *zip(*jobs, strict=True)):
            results.append(r)
            m = backtest_metrics(r["bars"], r["buy_and_hold"])
            rows.append({"fold": r["fold"], "seed": r["seed"], "agent": r["agent"], **m})
            print(
                f"  fold {r['fold']} seed {r['seed']} {r['agent']}: sharpe {m['sharpe']:.2f} "
                f"maxdd {m['max_drawdown']:.3f} ({r['seconds']:.0f}s)",
                flush=True,
            )
    print(f"total {time.perf_counter() - start:.0f}s")

    hold_by_fold = {r["fold"]: r["buy_and_hold"] for r in results}
    hold_all = pd.concat([hold_by_fold[i] for i in sorted(hold_by_fold)]).sort_index()
    for i, hold in hold_by_fold.items():
        rows.append({"fold": i, "seed": -1, "agent": "buy_and_hold", **backtest_metrics(hold)})
    per_fold = pd.DataFrame(rows)
    if args.out:
        per_fold.to_csv(args.out, index=False)

    print(
        f"\nS&P 500, {hold_all.index[0]:%Y-%m-%d}..{hold_all.index[-1]:%Y-%m-%d} out of sample, "
        f"{args.steps} env steps per agent and fold, seeds {args.seeds}; stitched test years, "
        "mean [95% CI] over seeds"
    )
    print("| policy | Sharpe | max drawdown % | CVaR 5% (daily) % | annual return % | "
          "PSR vs buy-and-hold | per-fold Sharpe (fold x seed) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for agent in args.agents:
        by_fold = sorted((r for r in results if r["agent"] == agent), key=lambda r: r["fold"])
        stitched = [
            stitched_metrics([r["bars"] for r in by_fold if r["seed"] == seed], hold_all)
            for seed in args.seeds
        ]
        col = {k: [s[k] for s in stitched] for k in METRICS}
        fold_sharpes = per_fold.loc[per_fold["agent"] == agent, "sharpe"].tolist()
        print(
            f"| {agent} | {fmt(col['sharpe'])} | {fmt(col['max_drawdown'], True)} | "
            f"{fmt(col['cvar_5'], True)} | {fmt(col['annual_return'], True)} | "
            f"{fmt(col['psr_vs_benchmark'])} | {fmt(fold_sharpes)} |"
        )
    hold = stitched_metrics([hold_all], hold_all)
    hold_folds = per_fold.loc[per_fold["agent"] == "buy_and_hold", "sharpe"].tolist()
    print(
        f"| buy_and_hold | {hold['sharpe']:.2f} | {hold['max_drawdown'] * 100:.2f} | "
        f"{hold['cvar_5'] * 100:.2f} | {hold['annual_return'] * 100:.2f} | "
        f"{hold['psr_vs_benchmark']:.2f} | {fmt(hold_folds)} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
