"""Real-data benchmark: S&P 500 walk-forward 2008-2018, costs on, under one selection protocol.

One-year expanding folds (test year Y, trained on every bar before it). Within each fold and
seed the choice between the candidates (long-only or long-short positions for the
DistributionalPPO ``mean_cvar`` agent of ``configs/demo.yaml``) is made on the fold's own
validation window, the last year of its training bars (:mod:`tradingbot.evaluate.selection`):
each candidate is trained on the bars before that year (normalization fitted there), scored by
its validation Sharpe, and the chosen one is retrained on the whole training period and run
deterministically over the test year. The test years take no part in any choice. Every
candidate scored, and the configurations tried on these years before this protocol existed,
go to ``selection.json``; the deflated Sharpe ratio counts them all.

The eleven test years of a seed are stitched into one 2008-2018 series. The baselines of
:mod:`tradingbot.evaluate.baselines` (long-only forms, parameters fixed in the config) run once,
continuously, over the same bars with the same costs; ``risk_matched`` per seed at that seed's
mean |position|. Per seed: stationary-bootstrap intervals of every Sharpe and of the agent's
minus each baseline's, Hansen's SPA p-value against all baselines, the deflated Sharpe. The
seed spread and the per-fold Sharpe (seeds averaged within a fold, t-interval over folds) are
reported apart.

    .venv/bin/python benchmarks/real_data.py --out runs/real_data          # 3 seeds, 2 workers
    .venv/bin/python benchmarks/real_data.py --seeds 0 --steps 20000 --folds 2 --out /tmp/rd
    .venv/bin/python benchmarks/real_data.py --analyze runs/real_data     # tables only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tradingbot.config import TradingConfig, load_config
from tradingbot.data.features import feature_lookback
from tradingbot.data.market import prepare_market
from tradingbot.data.sources import load_market
from tradingbot.data.splits import DateRange, Fold, union_index, walk_forward_folds
from tradingbot.env.vec_env import MarketVecEnv
from tradingbot.evaluate.backtest import backtest_metrics, run_backtest
from tradingbot.evaluate.baselines import agent_exposure, run_baselines
from tradingbot.evaluate.comparison import compare_policies
from tradingbot.evaluate.metrics import periods_per_year
from tradingbot.evaluate.selection import choose, scored_span, validation_window, write_selection
from tradingbot.evaluate.statistics import annualized_sharpe, clustered_interval, seed_spread
from tradingbot.train import build_model

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
WALK_FORWARD = [
    "data.walk_forward.first_test_start=2008-01-01",
    "data.walk_forward.test_length=12MS",  # calendar years: Jan 1 to the next Jan 1
    "data.walk_forward.mode=expanding",
]
AGENT = ["algo.risk.mode=mean_cvar"]
CANDIDATES: dict[str, list[str]] = {
    "long_only": ["env.long_only=true"],
    "long_short": ["env.long_only=false"],
}
VALIDATION_LENGTH = "365D"
# Configurations whose results on these same test years were seen before this protocol
# (docs/benchmarks.md, 2026-12-01, 100k steps unless named; stitched Sharpe, mean over 5 seeds),
# and the demo's validation sweep on 2013-2015, three of these test years.
HISTORY: list[dict[str, Any]] = [
    {"name": f"{agent} {space} {steps}", "seen_on": "test years 2008-2018", "sharpe": sharpe}
    for agent, space, steps, sharpe in (
        ("mean_cvar", "long-only", "100k", 0.27),
        ("risk_neutral", "long-only", "100k", 0.13),
        ("sb3_ppo", "long-only", "100k", 0.14),
        ("mean_cvar", "long-short", "100k", 0.22),
        ("risk_neutral", "long-short", "100k", 0.20),
        ("sb3_ppo", "long-short", "100k", 0.09),
        ("mean_cvar", "long-only", "200k", 0.10),
        ("risk_neutral", "long-only", "200k", 0.12),
    )
] + [
    {"name": f"demo validation sweep: {name}", "seen_on": "2013-2015 (demo validation split)"}
    for name in (
        "gamma 0.99 risk-neutral",
        "gamma 0.99 mean_cvar",
        "gamma 0.9 risk-neutral",
        "gamma 0.9 mean_cvar",
        "long-only risk-neutral",
        "long-only mean_cvar",
    )
]
PROTOCOL = (
    "per fold and seed: each candidate trained on the fold's training bars before its last "
    f"{VALIDATION_LENGTH} (normalization fitted there), scored by Sharpe on those last "
    f"{VALIDATION_LENGTH}; the best retrained on the whole training period and tested"
)


def fold_config(config: str, folds: int, steps: int, extra: list[str]) -> TradingConfig:
    return load_config(
        config,
        [
            *WALK_FORWARD,
            f"data.walk_forward.n_folds={folds}",
            f"run.total_timesteps={steps}",
            *AGENT,
            *extra,
        ],
    )


def make_folds(cfg: TradingConfig) -> tuple[Any, pd.DatetimeIndex, list[Fold]]:
    min_rows = feature_lookback(cfg.data.features) + cfg.env.window + 1
    data = load_market(cfg.data.source, cfg.data.synthetic, cfg.data.instruments, min_rows)
    stamps = union_index([b.index for b in data.bars.values()])
    return data, stamps, walk_forward_folds(stamps, cfg.data.walk_forward)


def train_and_run(
    config: str,
    folds: int,
    steps: int,
    fold_index: int,
    seed: int,
    candidate: str,
    phase: str,
    out: Path,
) -> dict[str, Any]:
    """Train one candidate at one seed and run it: ``phase`` "validation" trains on the fold's
    training bars before its validation window and scores the window; "test" trains on the
    whole training period and runs over the test year. The bars and the record are written to
    ``out/bars/`` at once, and a job found there is not run again."""
    stem = out / "bars" / f"fold{fold_index}_seed{seed}_{candidate}_{phase}"
    if stem.with_suffix(".json").exists():  # done by an earlier, interrupted invocation
        record = json.loads(stem.with_suffix(".json").read_text())
        return record | {"bars": read_bars(stem.with_suffix(".csv")), "cached": True}
    torch.set_num_threads(1)
    cfg = fold_config(config, folds, steps, [*CANDIDATES[candidate], f"run.seed={seed}"])
    data, stamps, fold_list = make_folds(cfg)
    fold = fold_list[fold_index]
    if phase == "validation":
        train, scored = validation_window(fold, stamps, VALIDATION_LENGTH)
    else:
        train, scored = fold.train, fold.test
    market = prepare_market(data, cfg.data, cfg.env.window, fit_on=train)
    env = MarketVecEnv(market, train, cfg.env, seed=seed)
    model = build_model(cfg, env)
    start = time.perf_counter()
    model.learn(cfg.run.total_timesteps)
    seconds = time.perf_counter() - start
    span = scored_span(stamps, scored)
    bars = run_backtest(model, market, span, cfg.env, market.instruments[0].name)
    record = {
        "fold": fold_index,
        "seed": seed,
        "candidate": candidate,
        "phase": phase,
        "train": str(train),
        "scored": str(scored),
        "sharpe": backtest_metrics(bars)["sharpe"],
        "seconds": seconds,
    }
    stem.parent.mkdir(parents=True, exist_ok=True)
    bars.to_csv(stem.with_suffix(".csv"))
    stem.with_suffix(".json").write_text(json.dumps(record))
    return record | {"bars": bars}


def run_jobs(jobs: list[tuple[Any, ...]], workers: int) -> list[dict[str, Any]]:
    results = []
    with ProcessPoolExecutor(workers) as pool:
        for r in pool.map(train_and_run, *zip(*jobs, strict=True)):
            print(
                f"  fold {r['fold']} seed {r['seed']} {r['candidate']} {r['phase']}: "
                f"sharpe {r['sharpe']:.2f} ({r['seconds']:.0f}s"
                + (", cached)" if "cached" in r else ")"),
                flush=True,
            )
            results.append(r)
    return results


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def train_all(args: argparse.Namespace) -> None:
    """Both phases of the protocol; bars and ``selection.json`` into ``args.out``."""
    cfg = fold_config(args.config, args.folds, args.steps, [])
    _, _, fold_list = make_folds(cfg)
    print(
        f"{len(fold_list)} folds: "
        + ", ".join(f"{f.test.start:%Y-%m-%d}..{f.test.end:%Y-%m-%d}" for f in fold_list),
        flush=True,
    )
    commit = git_commit()
    common = (args.config, args.folds, args.steps)
    start = time.perf_counter()
    validation = run_jobs(
        [
            (*common, f.index, seed, name, "validation", args.out)
            for f in fold_list
            for seed in args.seeds
            for name in CANDIDATES
        ],
        args.workers,
    )
    chosen = {}
    for f in fold_list:
        for seed in args.seeds:
            scores = {
                r["candidate"]: r["sharpe"]
                for r in validation
                if r["fold"] == f.index and r["seed"] == seed
            }
            chosen[f.index, seed] = choose({n: scores[n] for n in CANDIDATES})
    trials = [
        {k: r[k] for k in ("fold", "seed", "candidate", "train", "scored", "sharpe", "seconds")}
        | {"chosen": chosen[r["fold"], r["seed"]] == r["candidate"]}
        for r in validation
    ]
    write_selection(
        args.out,
        {n: AGENT + o for n, o in CANDIDATES.items()},
        trials,
        HISTORY,
        PROTOCOL,
        trial_sharpes=[h["sharpe"] for h in HISTORY if "sharpe" in h],
    )
    run_jobs(
        [
            (*common, f.index, seed, chosen[f.index, seed], "test", args.out)
            for f in fold_list
            for seed in args.seeds
        ],
        args.workers,
    )
    meta = {
        "commit": commit,
        "config": args.config,
        "seeds": args.seeds,
        "steps": args.steps,
        "folds": args.folds,
        "seconds": round(time.perf_counter() - start),
    }
    (args.out / "run.json").write_text(json.dumps(meta, indent=2))
    print(f"total {meta['seconds']}s", flush=True)


def read_bars(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, index_col="timestamp")
    frame.index = pd.DatetimeIndex(pd.to_datetime(frame.index), name="timestamp")
    return frame


def ci(mean: float, low: float, high: float, pct: bool = False) -> str:
    s = 100.0 if pct else 1.0
    if not np.isfinite(low):
        return f"{mean * s:.2f}"
    return f"{mean * s:.2f} [{low * s:.2f}, {high * s:.2f}]"


def analyze(out: Path, config: str) -> str:
    """The tables of a finished run in ``out`` (markdown), also written to ``out/tables.md``."""
    meta = json.loads((out / "run.json").read_text())
    selection = json.loads((out / "selection.json").read_text())
    cfg = fold_config(config, meta["folds"], meta["steps"], CANDIDATES["long_only"])
    data, stamps, fold_list = make_folds(cfg)
    market = prepare_market(data, cfg.data, cfg.env.window, fit_on=fold_list[0].train)
    instrument = market.instruments[0].name
    whole = scored_span(stamps, DateRange(fold_list[0].test.start, fold_list[-1].test.end))
    agents = {
        seed: pd.concat(
            [read_bars(p) for p in sorted(out.glob(f"bars/fold*_seed{seed}_*_test.csv"))]
        ).sort_index()
        for seed in meta["seeds"]
    }
    trial_sharpes = np.array(
        selection.get("trial_sharpes")
        or [h["sharpe"] for h in selection["history"] if "sharpe" in h]
    )
    n_trials = int(selection["n_configurations"])
    stats_cfg = cfg.evaluation.statistics
    base = run_baselines(market, whole, cfg.env, instrument, cfg.evaluation.baselines)
    per_year = periods_per_year(pd.DatetimeIndex(base["buy_and_hold"].index))
    comparisons = {}
    for seed, bars in agents.items():
        matched = run_baselines(
            market, whole, cfg.env, instrument, cfg.evaluation.baselines, agent_exposure(bars)
        )["risk_matched"]
        policies = {"agent": bars, **base, "risk_matched": matched}
        comparisons[seed] = compare_policies(
            policies, per_year, stats_cfg, "agent", n_trials, trial_sharpes / np.sqrt(per_year)
        )
        comparisons[seed].write(out, f"seed{seed}")
    lines = [
        f"S&P 500 walk-forward {whole.start:%Y-%m-%d}..{whole.end:%Y-%m-%d}, "
        f"{meta['steps']} env steps per agent, seeds {meta['seeds']}, commit {meta['commit'][:10]}",
        "",
        "| policy | Sharpe [95% bootstrap CI] | max drawdown % | CVaR 5% (daily) % | "
        "annual return % | exposure | turnover /yr |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for seed, comparison in comparisons.items():
        table = comparison.table.set_index("policy")
        names = ["agent", "risk_matched"] if seed != meta["seeds"][0] else list(table.index)
        for name in names:
            row = table.loc[name]
            label = f"agent seed {seed}" if name == "agent" else name
            if name == "risk_matched":
                label = f"risk_matched (seed {seed})"
            lines.append(
                f"| {label} | {ci(row.sharpe, row.sharpe_low, row.sharpe_high)} | "
                f"{row.max_drawdown * 100:.1f} | {row.cvar_5 * 100:.2f} | "
                f"{row.annual_return * 100:.2f} | {row.exposure:.2f} | {row.turnover:.1f} |"
            )
    baselines = [n for n in comparisons[meta["seeds"][0]].table["policy"] if n != "agent"]
    lines += [
        "",
        "Agent's Sharpe minus each baseline's on the same bars [95% stationary-bootstrap CI]:",
        "",
        "| baseline | " + " | ".join(f"seed {s}" for s in comparisons) + " |",
        "|---|" + "---:|" * len(comparisons),
    ]
    for name in baselines:
        cells = []
        for comparison in comparisons.values():
            row = comparison.table.set_index("policy").loc[name]
            cells.append(ci(row.agent_minus, row.agent_minus_low, row.agent_minus_high))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| seed | SPA p-value (agent vs all baselines) | deflated Sharpe | block |",
        "|---|---:|---:|---:|",
    ]
    for seed, comparison in comparisons.items():
        t = comparison.tests
        lines.append(
            f"| {seed} | {t['spa']['pvalue']:.3f} | {t['deflated_sharpe']['dsr']:.3f} | "
            f"{t['block_length']} |"
        )
    spread = seed_spread(
        {
            s: float(c.table.set_index("policy").loc["agent", "sharpe"])
            for s, c in comparisons.items()
        }
    )
    lines += [
        "",
        f"Seed spread of the agent's stitched Sharpe: mean {spread['mean']:.2f}, sd "
        f"{spread['std']:.2f}, min {spread['min']:.2f}, max {spread['max']:.2f} "
        f"({spread['seeds']} seeds). Deflated Sharpe: {n_trials} configurations counted.",
    ]
    lines += per_fold_lines(fold_list, agents, base, selection, per_year)
    text = "\n".join(lines)
    (out / "tables.md").write_text(text + "\n")
    return text


def per_fold_lines(
    fold_list: list[Fold],
    agents: dict[int, pd.DataFrame],
    base: dict[str, pd.DataFrame],
    selection: dict[str, Any],
    per_year: float,
) -> list[str]:
    """Per-fold Sharpe: seeds averaged within a fold, t-interval over the folds; and which
    candidate each fold chose."""
    rows = []
    for f in fold_list:
        for name, bars in [*((f"agent:{s}", b) for s, b in agents.items()), *base.items()]:
            part = bars.loc[f.test.start : f.test.end]
            if len(part) > 2:
                sharpe = float(annualized_sharpe(part["return"].to_numpy(), per_year))
                rows.append({"fold": f.index, "policy": name.split(":")[0], "sharpe": sharpe})
    table = pd.DataFrame(rows)
    lines = ["", "Per-fold Sharpe (seeds averaged within a fold; mean [95% t-CI] over folds):", ""]
    for policy, group in table.groupby("policy", sort=False):
        mean, low, high, n = clustered_interval(
            group["sharpe"].to_numpy(), group["fold"].to_numpy()
        )
        lines.append(f"- {policy}: {ci(mean, low, high)} ({n} folds)")
    picks = pd.DataFrame([t for t in selection["trials"] if t["chosen"]])
    if len(picks):
        counts = picks.groupby("fold")["candidate"].apply(lambda c: ", ".join(sorted(c)))
        lines += [
            "",
            "Chosen on validation, per fold (one per seed): "
            + "; ".join(f"{fold_list[i].test.start:%Y}: {c}" for i, c in counts.items()),
        ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=100_000, help="env steps per agent")
    parser.add_argument("--folds", type=int, default=11, help="test years from 2008")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/real_data"))
    parser.add_argument("--analyze", type=Path, default=None, help="tables of a finished run")
    args = parser.parse_args(argv)
    if args.analyze is None:
        train_all(args)
    print(analyze(args.analyze or args.out, args.config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
