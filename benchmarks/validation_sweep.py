"""Choose the demo's settings on the validation split (never on the test split).

Each candidate is a list of ``--set`` overrides on top of ``configs/demo.yaml``. For every
candidate and seed an agent is trained on the train split (1999-2012 for the bundled S&P 500)
and run deterministically over the validation split (2013-2015); the candidates are ranked by
their mean validation Sharpe (after costs) over the seeds, with max drawdown and CVaR 5% shown
beside it. Buy-and-hold on the same split is printed for reference. The test split is not
touched. With ``--out DIR`` every trial goes to ``DIR/selection.json`` (for the deflated Sharpe
ratio; it chose the demo's earlier settings; ``configs/demo_selection.json`` now holds the choice
made by ``benchmarks/real_data.py --demo-selection``).

    .venv/bin/python benchmarks/validation_sweep.py                  # 4 candidates x 2 seeds
    .venv/bin/python benchmarks/validation_sweep.py --seeds 0 --steps 50000 --workers 1
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oracle import train_agent  # benchmarks/oracle.py
from tradingbot.config_loading import load_config
from tradingbot.data.market import load_prepared
from tradingbot.env.simulator import make_action_space
from tradingbot.evaluate.backtest import ConstantPolicy, backtest_metrics, run_backtest
from tradingbot.evaluate.selection import write_selection

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"

# Explicit about every setting they vary, so the sweep means the same whatever demo.yaml says.
CANDIDATES: dict[str, list[str]] = {
    "defaults (gamma 0.99, risk-neutral)": ["algo.gamma=0.99", "algo.risk.mode=none"],
    "mean_cvar (alpha 0.05, weight 0.5)": ["algo.gamma=0.99", "algo.risk.mode=mean_cvar"],
    "gamma 0.9": ["algo.gamma=0.9", "algo.risk.mode=none"],
    "gamma 0.9 + mean_cvar": ["algo.gamma=0.9", "algo.risk.mode=mean_cvar"],
    "long only": ["algo.gamma=0.99", "algo.risk.mode=none", "env.long_only=true"],
    "long only + mean_cvar": ["algo.gamma=0.99", "algo.risk.mode=mean_cvar", "env.long_only=true"],
}
METRICS = ("sharpe", "max_drawdown", "cvar_5", "annual_return")


def evaluate(config: str, overrides: list[str], seed: int, steps: int | None) -> dict[str, Any]:
    """Train one candidate at one seed on the train split; metrics on the validation split."""
    torch.set_num_threads(1)
    extra = [f"run.seed={seed}"] + ([f"run.total_timesteps={steps}"] if steps else [])
    cfg = load_config(config, overrides + extra)
    market = load_prepared(cfg.data, window=cfg.env.window)
    model, seconds = train_agent(cfg, market, seed)
    rows = [
        backtest_metrics(run_backtest(model, market, "validation", cfg.env, inst.name))
        for inst in market.scored_instruments  # not data.train_sources' instruments
    ]
    return {m: float(np.mean([r[m] for r in rows])) for m in METRICS} | {"seconds": seconds}


def buy_and_hold(config: str) -> dict[str, float]:
    cfg = load_config(config, [])
    market = load_prepared(cfg.data, window=cfg.env.window)
    policy = ConstantPolicy(1.0, make_action_space(cfg.env))
    rows = [
        backtest_metrics(run_backtest(policy, market, "validation", cfg.env, inst.name))
        for inst in market.instruments
    ]
    return {m: float(np.mean([r[m] for r in rows])) for m in METRICS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=None, help="default: the config's")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, default=None, help="directory for selection.json (every trial)"
    )
    args = parser.parse_args(argv)

    jobs = [(name, seed) for name in CANDIDATES for seed in args.seeds]
    with ProcessPoolExecutor(args.workers) as pool:
        futures = {
            job: pool.submit(evaluate, args.config, CANDIDATES[job[0]], job[1], args.steps)
            for job in jobs
        }
        results = {job: future.result() for job, future in futures.items()}

    print(f"validation split, seeds {args.seeds}, config {args.config}, steps {args.steps}")
    print("| candidate | Sharpe (per seed) | max drawdown | CVaR 5% | annual return | train s |")
    print("|---|---:|---:|---:|---:|---:|")
    means = {}
    for name in CANDIDATES:
        rs = [results[name, seed] for seed in args.seeds]
        mean = {m: float(np.mean([r[m] for r in rs])) for m in (*METRICS, "seconds")}
        means[name] = mean
        per_seed = ", ".join(f"{r['sharpe']:.2f}" for r in rs)
        print(
            f"| {name} | {mean['sharpe']:.2f} ({per_seed}) | {mean['max_drawdown']:.3f} | "
            f"{mean['cvar_5']:.4f} | {mean['annual_return']:.3f} | {mean['seconds']:.0f} |"
        )
    bh = buy_and_hold(args.config)
    print(
        f"| buy-and-hold | {bh['sharpe']:.2f} | {bh['max_drawdown']:.3f} | {bh['cvar_5']:.4f} | "
        f"{bh['annual_return']:.3f} | |"
    )
    best = max(means, key=lambda n: means[n]["sharpe"])
    print(f"\nbest on validation: {best} -> overrides {CANDIDATES[best]}")
    if args.out is not None:
        trials = [
            {"candidate": name, "seed": seed, "scored": "validation split"}
            | {m: results[name, seed][m] for m in METRICS}
            | {"chosen": name == best}
            for name, seed in jobs
        ]
        protocol = "trained on the train split per seed, ranked by mean validation Sharpe"
        sharpes = [means[n]["sharpe"] for n in CANDIDATES]
        write_selection(args.out, CANDIDATES, trials, protocol=protocol, trial_sharpes=sharpes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
