"""Robustness benchmark: how much Sharpe does an agent lose under a PGD observation attack,
with and without state-adversarial (SA-PPO) robust training?

On the synthetic oracle market (``configs/oracle.yaml``: an observable AR(1) signal shifts the
next bar's expected return; costs on), for each seed a plain agent and a robust agent
(``algo.robust``: PGD-KL regularizer, epsilon ``--train-epsilon``, kappa ``--kappa``) are
trained on the train split with the same seed and budget, then run deterministically over the
test split of every instrument: clean, under uniform random noise and under the PGD attack of
:mod:`tradingbot.evaluate.attack` at each ``--epsilons`` (L-infinity, normalized feature units;
the position entry never perturbed). Sharpe (annualized, after costs) is averaged over the
instruments; the table shows, per agent, the mean over seeds and the Sharpe lost to the attack
(clean - attacked), per seed and on average.

    .venv/bin/python benchmarks/robustness.py        # 3 seeds, 2 workers, ~10 min on 2 cores
    .venv/bin/python benchmarks/robustness.py --seeds 0 --epsilons 0.2 --kappa 1.0
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oracle import train_agent  # benchmarks/oracle.py
from tradingbot.config import TradingConfig
from tradingbot.config_loading import load_config
from tradingbot.data.market import PreparedMarket, load_prepared
from tradingbot.evaluate.attack import AttackedPredictor, ObservationAttack
from tradingbot.evaluate.backtest import Predictor, backtest_metrics, run_backtest

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "oracle.yaml"


def mean_sharpe(make_policy, market: PreparedMarket, cfg: TradingConfig) -> float:
    """Mean over instruments of the test-split Sharpe of a fresh policy per instrument."""
    sharpes = []
    for inst in market.instruments:
        bars = run_backtest(make_policy(), market, "test", cfg.env, inst.name)
        sharpe = backtest_metrics(bars)["sharpe"]
        sharpes.append(0.0 if not np.isfinite(sharpe) else sharpe)
    return float(np.mean(sharpes))


def job(args: tuple[str, list[str], int, bool, dict[str, Any]]) -> dict[str, Any]:
    """Train one agent (plain or robust) and evaluate it clean and under attack."""
    config_path, overrides, seed, robust, opts = args
    torch.set_num_threads(1)
    robust_overrides = [
        "algo.robust.enabled=true",
        f"algo.robust.epsilon={opts['train_epsilon']}",
        f"algo.robust.kappa={opts['kappa']}",
        f"algo.robust.fraction={opts['fraction']}",
        f"algo.robust.pgd_steps={opts['train_steps']}",
        f"algo.robust.warmup_fraction={opts['warmup']}",
    ]
    cfg = load_config(
        config_path,
        [
            *overrides,
            f"run.seed={seed}",
            f"run.total_timesteps={opts['steps']}",
            *(robust_overrides if robust else []),
        ],
    )
    market = load_prepared(cfg.data, window=cfg.env.window)
    start = time.time()
    model, train_s = train_agent(cfg, market, seed)

    def attacked(kind: str, eps: float) -> float:
        def make() -> Predictor:
            threat = ObservationAttack(model, eps, kind=kind, steps=opts["attack_steps"], seed=seed)  # type: ignore[arg-type]
            return AttackedPredictor(model, threat)

        return mean_sharpe(make, market, cfg)

    result: dict[str, Any] = {
        "seed": seed,
        "agent": "robust" if robust else "plain",
        "train_s": train_s,
        "clean": mean_sharpe(lambda: model, market, cfg),
    }
    for eps in opts["epsilons"]:
        result[f"random@{eps:g}"] = attacked("random", eps)
        result[f"pgd@{eps:g}"] = attacked("pgd", eps)
    result["total_s"] = time.time() - start
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=30_000, help="training steps per agent")
    parser.add_argument("--epsilons", type=float, nargs="+", default=[0.5, 1.0])
    parser.add_argument("--train-epsilon", type=float, default=0.5)
    parser.add_argument("--kappa", type=float, default=0.1)
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--train-steps", type=int, default=5, help="PGD steps in training")
    parser.add_argument("--warmup", type=float, default=0.2, help="epsilon warm-up fraction")
    parser.add_argument("--attack-steps", type=int, default=5, help="PGD steps per bar")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)

    opts = {
        "steps": args.steps,
        "epsilons": args.epsilons,
        "train_epsilon": args.train_epsilon,
        "kappa": args.kappa,
        "fraction": args.fraction,
        "train_steps": args.train_steps,
        "warmup": args.warmup,
        "attack_steps": args.attack_steps,
    }
    cfg = load_config(args.config, args.overrides)
    syn = cfg.data.synthetic
    print(
        f"market: synthetic, {syn.n_instruments} instruments x {syn.n_bars} bars, "
        f"predictability {syn.predictability}, costs {cfg.env.commission_bps}+"
        f"{cfg.env.slippage_bps} bp; {args.steps} steps/agent; robust: epsilon "
        f"{args.train_epsilon} (warm-up {args.warmup}), kappa {args.kappa}, fraction "
        f"{args.fraction}, {args.train_steps} PGD steps; attack: {args.attack_steps} PGD steps"
    )
    jobs = [
        (args.config, args.overrides, seed, robust, opts)
        for seed in args.seeds
        for robust in (False, True)
    ]
    start = time.time()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        results = list(pool.map(job, jobs))
    columns = ["clean"] + [f"{k}@{e:g}" for e in args.epsilons for k in ("random", "pgd")]

    print("\nTest-split Sharpe (mean over instruments), per seed:")
    print(f"{'seed':>4} {'agent':>7} " + " ".join(f"{c:>10}" for c in columns) + "  train_s")
    for r in results:
        cells = " ".join(f"{r[c]:>10.2f}" for c in columns)
        print(f"{r['seed']:>4} {r['agent']:>7} {cells}  {r['train_s']:>7.0f}")

    print(f"\nMean over seeds {args.seeds} (Sharpe; drop = clean - attacked, mean of per-seed):")
    header = "| agent | clean | " + " | ".join(
        f"{k}@{e:g} (drop)" for e in args.epsilons for k in ("random", "pgd")
    )
    print(header + " |")
    print("|" + "---|" * (2 + 2 * len(args.epsilons)))
    for agent in ("plain", "robust"):
        rows = [r for r in results if r["agent"] == agent]
        clean = np.mean([r["clean"] for r in rows])
        cells = [f"{clean:.2f}"]
        for e in args.epsilons:
            for k in ("random", "pgd"):
                key = f"{k}@{e:g}"
                value = np.mean([r[key] for r in rows])
                drop = np.mean([r["clean"] - r[key] for r in rows])
                cells.append(f"{value:.2f} ({drop:+.2f})")
        print(f"| {agent} | " + " | ".join(cells) + " |")
    print(f"\ntotal {time.time() - start:.0f} s with {args.workers} workers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
