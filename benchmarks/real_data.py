"""Real-data benchmark: S&P 500 walk-forward 2008-2018, costs on, under one selection protocol,
and the same procedure unchanged on two bundled instruments it was not tuned on.

One-year expanding folds (test year Y, trained on every bar before it). The agent is
DistributionalPPO with the ``mean_cvar`` objective on ``configs/demo.yaml``'s env, long-only.
Eight candidates (:data:`CANDIDATES`) cross three choices of issue 20: the feature set
(``base``: returns up to 20 bars; ``long_horizon``: also 60-250-bar returns, moving-average
gaps, volatility regime, drawdown), the action (``position``; ``vol_scaled``: a risk budget
times 10% / the 20-bar forecast volatility) and the training data (the instrument alone; or
with the other bundled US index as a training-only instrument, ``data.train_sources``).

Within each fold and seed the candidate is chosen on the fold's own validation window, the last
year of its training bars, on the S&P 500 (:mod:`tradingbot.evaluate.selection`): each is
trained on the bars before that year (normalization fitted there), scored by its validation
Sharpe, and the chosen one is retrained on the whole training period and run deterministically
over the test year (after the LSTM warm-up of ``evaluation.warmup_bars``). The test years take
no part in any choice. Every candidate scored, and every configuration tried on these years
before, go to ``selection.json``; the deflated Sharpe ratio counts them all.

The other instruments (NASDAQ Composite, GOOGL) get the S&P's choice of each fold and seed,
unchanged: the candidate is retrained on their own training years (with the S&P 500 as the
training-only instrument where the choice pools) and tested on their test years (GOOGL: 2011
on, it is listed from 2009-05).

The test years of a seed are stitched into one series. The baselines of
:mod:`tradingbot.evaluate.baselines` run once, continuously, over the same bars with the same
costs; ``risk_matched`` per seed at that seed's mean |position|. Per seed: stationary-bootstrap
intervals of every Sharpe and of the agent's minus each baseline's, Hansen's SPA p-value
against all baselines, the deflated Sharpe.

    nice -n 10 .venv/bin/python benchmarks/real_data.py --seeds 0 1 --out runs/real_data
    .venv/bin/python benchmarks/real_data.py --seeds 0 --steps 20000 --folds 2 --out /tmp/rd
    .venv/bin/python benchmarks/real_data.py --analyze runs/real_data     # tables only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tradingbot.config import TradingConfig
from tradingbot.config_loading import load_config
from tradingbot.data.market import load_training_data, prepare_market
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
# Fixed for every candidate, explicit so that a later change of a default does not change them.
AGENT = [
    "algo.risk.mode=mean_cvar",
    "algo.risk.alpha=0.05",
    "algo.risk.weight=0.5",
    "algo.gamma=0.99",
    "env.long_only=true",
    "env.sizing.target_volatility=0.10",
    "env.sizing.window=20",
    "env.sizing.cap=1.0",
]
FEATURES = {"base": "data.features.set=base", "long": "data.features.set=long_horizon"}
ACTIONS = {"position": "env.sizing.mode=position", "volscaled": "env.sizing.mode=vol_scaled"}
POOLS = ("alone", "pooled")
CANDIDATES = [f"{f}-{a}-{p}" for f in FEATURES for a in ACTIONS for p in POOLS]
INDICES = ("sp500", "nasdaq")  # the pool: the bundled US indices
TARGETS = {"sp500": ("SPX", 2008), "nasdaq": ("IXIC", 2008), "googl": ("GOOGL", 2011)}
VALIDATION_LENGTH = "365D"
# Configurations whose results on these same test years were seen before this protocol
# (docs/benchmarks.md: 2026-12-01, 100k steps unless named, stitched Sharpe, mean over 5 seeds;
# the protocol run at 77925bc, 2 seeds), and the demo's validation sweep on 2013-2015.
HISTORY: list[dict[str, Any]] = (
    [
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
    ]
    + [
        {
            "name": f"protocol run 77925bc: candidate {name}",
            "seen_on": "test years 2008-2018 (chosen per fold on validation years)",
        }
        for name in ("long_only", "long_short")
    ]
    + [
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
)
# The protocol run's stitched Sharpes (seeds 0, 1) are trials on these bars too.
PROTOCOL_SHARPES = [-0.17, 0.04]
PROTOCOL = (
    "per fold and seed, on the S&P 500: each candidate trained on the fold's training bars "
    f"before its last {VALIDATION_LENGTH} (normalization fitted there), scored by Sharpe on "
    f"those last {VALIDATION_LENGTH}; the best retrained on the whole training period and "
    "tested; NASDAQ and GOOGL take the S&P's choice of the fold and seed unchanged"
)


def candidate_overrides(candidate: str, target: str) -> list[str]:
    """The config overrides of ``candidate`` trained for ``target``: ``pooled`` adds the
    bundled US indices other than the target as training-only instruments."""
    features, action, pool = candidate.split("-")
    sources = [s for s in INDICES if s != target] if pool == "pooled" else []
    return [FEATURES[features], ACTIONS[action], f"data.train_sources=[{','.join(sources)}]"]


def make_config(config: str, steps: int, target: str, extra: list[str]) -> TradingConfig:
    return load_config(
        config,
        [
            *WALK_FORWARD,
            f"data.source={target}",
            f"run.total_timesteps={steps}",
            *AGENT,
            *extra,
        ],
    )


def folds_by_year(cfg: TradingConfig, target: str) -> tuple[Any, pd.DatetimeIndex, dict[int, Fold]]:
    """The target's data (with its training sources), its timestamps, and its folds by test
    year (from the target's first test year on)."""
    data = load_training_data(cfg.data, cfg.env.window)
    stamps = union_index([b.index for k, b in data.bars.items() if k not in data.train_only])
    folds = walk_forward_folds(stamps, cfg.data.walk_forward)
    first_year = TARGETS[target][1]
    return data, stamps, {f.test.start.year: f for f in folds if f.test.start.year >= first_year}


def train_and_run(
    config: str,
    steps: int,
    target: str,
    year: int,
    seed: int,
    candidate: str,
    phase: str,
    out: Path,
) -> dict[str, Any]:
    """Train one candidate at one seed for ``target`` and run it: ``phase`` "validation"
    trains on the fold's training bars before its validation window and scores the window;
    "test" trains on the whole training period and runs over the test year. The bars and the
    record are written to ``out/bars/`` at once, and a job found there is not run again."""
    stem = out / "bars" / f"{target}_{year}_seed{seed}_{candidate}_{phase}"
    if stem.with_suffix(".json").exists():  # done by an earlier, interrupted invocation
        return json.loads(stem.with_suffix(".json").read_text()) | {"cached": True}
    torch.set_num_threads(1)
    overrides = [*candidate_overrides(candidate, target), f"run.seed={seed}"]
    cfg = make_config(config, steps, target, overrides)
    data, stamps, folds = folds_by_year(cfg, target)
    fold = folds[year]
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
    name = market.scored_instruments[0].name
    bars = run_backtest(model, market, span, cfg.env, name, cfg.evaluation.warmup_bars)
    record = {
        "target": target,
        "year": year,
        "seed": seed,
        "candidate": candidate,
        "phase": phase,
        "train": str(train),
        "scored": str(scored),
        "instruments_trained": [i.name for i in market.instruments],
        "sharpe": backtest_metrics(bars)["sharpe"],
        "seconds": seconds,
    }
    stem.parent.mkdir(parents=True, exist_ok=True)
    bars.to_csv(stem.with_suffix(".csv"))
    stem.with_suffix(".json").write_text(json.dumps(record))
    return record


def run_jobs(jobs: list[tuple[Any, ...]], workers: int) -> list[dict[str, Any]]:
    results = []
    with ProcessPoolExecutor(workers) as pool:
        futures = [pool.submit(train_and_run, *job) for job in jobs]
        for future in as_completed(futures):
            r = future.result()
            print(
                f"  {r['target']} {r['year']} seed {r['seed']} {r['candidate']} {r['phase']}: "
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


def choices(validation: list[dict[str, Any]]) -> dict[tuple[int, int], str]:
    """(year, seed) -> the candidate with the best validation Sharpe (ties: the first)."""
    scores: dict[tuple[int, int], dict[str, float]] = {}
    for r in validation:
        scores.setdefault((r["year"], r["seed"]), {})[r["candidate"]] = r["sharpe"]
    return {
        key: choose({c: by[c] for c in CANDIDATES if c in by})
        for key, by in scores.items()
        if set(CANDIDATES) <= set(by)
    }


def train_all(args: argparse.Namespace) -> None:
    """Both phases of the protocol; bars and ``selection.json`` into ``args.out``."""
    args.out.mkdir(parents=True, exist_ok=True)
    years = list(range(2008, 2008 + args.folds))
    print(f"test years {years[0]}-{years[-1]}, seeds {args.seeds}", flush=True)
    commit = git_commit()
    common = (args.config, args.steps)
    start = time.perf_counter()
    validation = run_jobs(
        [
            (*common, "sp500", year, seed, name, "validation", args.out)
            for year in years
            for seed in args.seeds
            for name in CANDIDATES
        ],
        args.workers,
    )
    every = [json.loads(p.read_text()) for p in sorted(args.out.glob("bars/*_validation.json"))]
    chosen = choices(every)
    trials = [
        {k: r[k] for k in ("year", "seed", "candidate", "train", "scored", "sharpe", "seconds")}
        | {"chosen": chosen.get((r["year"], r["seed"])) == r["candidate"]}
        for r in sorted(every, key=lambda r: (r["year"], r["seed"], r["candidate"]))
    ]
    write_selection(
        args.out,
        {n: AGENT + candidate_overrides(n, "sp500") for n in CANDIDATES},
        trials,
        HISTORY,
        PROTOCOL,
        trial_sharpes=[h["sharpe"] for h in HISTORY if "sharpe" in h] + PROTOCOL_SHARPES,
    )
    tests = []
    for target, (_, first_year) in TARGETS.items():
        if target != "sp500" and args.primary_only:
            continue
        for year in years:
            if year < first_year:
                continue
            for seed in args.seeds:
                tests.append((*common, target, year, seed, chosen[year, seed], "test", args.out))
    run_jobs(tests, args.workers)
    resolved = make_config(
        args.config, args.steps, "sp500", candidate_overrides(CANDIDATES[0], "sp500")
    )
    meta = {
        "commit": commit,
        "config": args.config,
        "resolved_config_of_first_candidate": resolved.to_dict(),
        "seeds": args.seeds,
        "steps": args.steps,
        "folds": args.folds,
        "validation_jobs": len(validation),
        "seconds": round(time.perf_counter() - start)
        + (
            json.loads((args.out / "run.json").read_text())["seconds"]
            if (args.out / "run.json").exists()
            else 0
        ),
    }
    (args.out / "run.json").write_text(json.dumps(meta, indent=2))
    print(f"total {meta['seconds']}s", flush=True)


def read_bars(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, index_col="timestamp")
    frame.index = pd.DatetimeIndex(pd.to_datetime(frame.index), name="timestamp")
    return frame


def ci(mean: float, low: float, high: float) -> str:
    if not np.isfinite(low):
        return f"{mean:.2f}"
    return f"{mean:.2f} [{low:.2f}, {high:.2f}]"


def analyze_target(out: Path, config: str, target: str, meta: dict[str, Any]) -> list[str]:
    """The tables of one instrument's stitched test years (markdown lines)."""
    selection = json.loads((out / "selection.json").read_text())
    cfg = make_config(config, meta["steps"], target, candidate_overrides(CANDIDATES[0], target))
    data, stamps, folds = folds_by_year(cfg, target)
    agents = {}
    for seed in meta["seeds"]:
        paths = sorted(out.glob(f"bars/{target}_*_seed{seed}_*_test.csv"))
        if paths:
            agents[seed] = pd.concat([read_bars(p) for p in paths]).sort_index()
    if not agents:
        return [f"({target}: no test results)"]
    years = sorted({int(p.name.split("_")[1]) for p in out.glob(f"bars/{target}_*_test.csv")})
    fold_list = [folds[y] for y in years]
    market = prepare_market(data, cfg.data, cfg.env.window, fit_on=fold_list[0].train)
    instrument = TARGETS[target][0]
    whole = scored_span(stamps, DateRange(fold_list[0].test.start, fold_list[-1].test.end))
    n_trials = int(selection["n_configurations"])
    trial_sharpes = np.asarray(selection["trial_sharpes"])
    base = run_baselines(market, whole, cfg.env, instrument, cfg.evaluation.baselines)
    per_year = periods_per_year(pd.DatetimeIndex(base["buy_and_hold"].index))
    comparisons = {}
    for seed, bars in agents.items():
        matched = run_baselines(
            market, whole, cfg.env, instrument, cfg.evaluation.baselines, agent_exposure(bars)
        )["risk_matched"]
        policies = {"agent": bars, **base, "risk_matched": matched}
        comparisons[seed] = compare_policies(
            policies,
            per_year,
            cfg.evaluation.statistics,
            "agent",
            n_trials,
            trial_sharpes / np.sqrt(per_year),
        )
        comparisons[seed].write(out, f"{target}_seed{seed}")
    first = next(iter(comparisons))
    lines = [
        f"### {instrument} ({target}): walk-forward {whole.start:%Y-%m-%d}..{whole.end:%Y-%m-%d}",
        "",
        f"{meta['steps']} env steps per agent, seeds {sorted(agents)}, commit "
        f"{meta['commit'][:10]}; test years {years[0]}-{years[-1]}.",
        "",
        "| policy | Sharpe [95% bootstrap CI] | max drawdown % | CVaR 5% (daily) % | "
        "annual return % | exposure | turnover /yr |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for seed, comparison in comparisons.items():
        table = comparison.table.set_index("policy")
        names = ["agent", "risk_matched"] if seed != first else list(table.index)
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
    baselines = [n for n in comparisons[first].table["policy"] if n != "agent"]
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
    lines += per_fold_lines(fold_list, agents, base, per_year)
    return lines


def per_fold_lines(
    fold_list: list[Fold],
    agents: dict[int, pd.DataFrame],
    base: dict[str, pd.DataFrame],
    per_year: float,
) -> list[str]:
    """Per-fold Sharpe: seeds averaged within a fold, t-interval over the folds."""
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
    return lines


def selection_lines(out: Path) -> list[str]:
    """Which candidate each fold and seed chose, and each candidate's mean validation Sharpe."""
    selection = json.loads((out / "selection.json").read_text())
    trials = pd.DataFrame(selection["trials"])
    lines = [
        "### Selection on the validation years (S&P 500)",
        "",
        "| candidate | mean validation Sharpe | chosen (fold x seed) |",
        "|---|---:|---:|",
    ]
    for name in CANDIDATES:
        mine = trials[trials["candidate"] == name]
        lines.append(f"| {name} | {mine['sharpe'].mean():.2f} | {int(mine['chosen'].sum())} |")
    picks = trials[trials["chosen"]].groupby("year")["candidate"].apply(lambda c: ", ".join(c))
    lines += [
        "",
        "Chosen per test year (one per seed): " + "; ".join(f"{y}: {c}" for y, c in picks.items()),
    ]
    lines += [
        "",
        f"Configurations counted in the deflated Sharpe: {selection['n_configurations']}.",
    ]
    return lines


def analyze(out: Path, config: str) -> str:
    """The tables of a finished run in ``out`` (markdown), also written to ``out/tables.md``."""
    meta = json.loads((out / "run.json").read_text())
    lines = selection_lines(out)
    for target in TARGETS:
        lines += ["", *analyze_target(out, config, target, meta)]
    text = "\n".join(lines)
    (out / "tables.md").write_text(text + "\n")
    return text


def demo_selection(out: Path, path: Path, meta: dict[str, Any], before_year: int = 2016) -> str:
    """Choose the demo's candidate from this run's validation years that end before the demo's
    test split (``before_year``): the best mean validation Sharpe over those years and seeds on
    the S&P 500. Writes the selection record to ``path`` and returns the candidate."""
    every = [json.loads(p.read_text()) for p in sorted(out.glob("bars/sp500_*_validation.json"))]
    used = [r for r in every if r["year"] <= before_year]  # validation year = test year - 1
    means = {
        c: float(np.mean([r["sharpe"] for r in used if r["candidate"] == c])) for c in CANDIDATES
    }
    best = choose(means)
    trials = [
        {k: r[k] for k in ("year", "seed", "candidate", "train", "scored", "sharpe")}
        | {"chosen": r["candidate"] == best}
        for r in sorted(used, key=lambda r: (r["year"], r["seed"], r["candidate"]))
    ]
    protocol = (
        f"benchmarks/real_data.py at {meta['commit'][:10]} ({meta['steps']} steps, seeds "
        f"{meta['seeds']}): each candidate trained on the S&P 500 bars before each validation "
        f"year 2007-{before_year - 1} and scored by its Sharpe on that year; the demo takes "
        "the best mean over years and seeds. Every validation window ends before the demo's "
        f"test split ({before_year}-2018). Mean validation Sharpes: "
        + ", ".join(f"{c} {v:.3f}" for c, v in means.items())
    )
    write_selection(
        path.parent,
        {n: AGENT + candidate_overrides(n, "sp500") for n in CANDIDATES},
        trials,
        HISTORY,
        protocol,
        trial_sharpes=list(means.values()),
    )
    (path.parent / "selection.json").replace(path)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=100_000, help="env steps per agent")
    parser.add_argument("--folds", type=int, default=11, help="test years from 2008")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--primary-only", action="store_true", help="S&P 500 tests only")
    parser.add_argument("--out", type=Path, default=Path("runs/real_data"))
    parser.add_argument("--analyze", type=Path, default=None, help="tables of a finished run")
    parser.add_argument(
        "--demo-selection", type=Path, default=None, help="write the demo's selection record"
    )
    args = parser.parse_args(argv)
    if args.demo_selection is not None:
        out = args.analyze or args.out
        meta = {"commit": git_commit(), "steps": args.steps, "seeds": args.seeds}
        if (out / "run.json").exists():
            meta = json.loads((out / "run.json").read_text())
        print(demo_selection(out, args.demo_selection, meta))
        return 0
    if args.analyze is None:
        train_all(args)
    print(analyze(args.analyze or args.out, args.config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
