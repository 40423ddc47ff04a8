"""Portfolio benchmark: the agent of configs/universe.yaml against the allocation baselines,
yearly walk-forward 2005-2022 on skfolio's 20 US large caps; and training throughput against SB3.

Walk-forward. Test year Y (2005 ... 2022): the feature normalization is fitted on every bar
before Y, the agent (seed s) is trained there for ``--steps`` environment steps (episodes of
random 10-asset subsets), then run deterministically on all 20 assets through Y, starting in
cash after the LSTM warm-up over ``evaluation.warmup_bars`` bars before Y (before that warm-up
existed, at d4fc807: fresh LSTM states). The years of one seed are stitched into one series.
The baselines (equal weight, inverse volatility, HRP, minimum variance, 12-1 momentum, the
S&P 500 index) run once, continuously, over the same years on the same weekly schedule with
the same costs; their estimation windows use past bars only. Per seed: stationary-bootstrap
intervals of every Sharpe and of the agent's minus each baseline's, Hansen's SPA p-value
against all baselines, the deflated Sharpe (:mod:`tradingbot.evaluate.comparison`); the seed
spread apart.

Selection protocol: by default one configuration, configs/universe.yaml as committed, fixed
before any walk-forward number was seen (no choice is made, so no validation window is needed);
it is the only configuration recorded in ``selection.json``, and the deflated Sharpe counts 1
trial. ``--selection FILE`` runs the configuration chosen by ``benchmarks/portfolio_selection.py``
on validation years before the first test year, and the deflated Sharpe counts every
configuration that file records.

    nice -n 10 .venv/bin/python benchmarks/portfolio.py walkforward --seeds 0 1 2 3 4 \
        --steps 100000 --workers 2 --out out/portfolio_wf
    .venv/bin/python benchmarks/portfolio.py analyze out/portfolio_wf
    .venv/bin/python benchmarks/portfolio.py throughput --steps 20000
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import torch

from tradingbot.config import StatisticsConfig, TradingConfig
from tradingbot.config_loading import load_config
from tradingbot.data.portfolio import PortfolioMarket, prepare_portfolio
from tradingbot.data.sources import load_market
from tradingbot.data.splits import DateRange
from tradingbot.env.portfolio import PortfolioVecEnv
from tradingbot.evaluate.allocation import index_closes, run_allocation_baselines
from tradingbot.evaluate.comparison import aligned_returns, compare_policies
from tradingbot.evaluate.metrics import periods_per_year
from tradingbot.evaluate.selection import read_selection, write_selection
from tradingbot.evaluate.statistics import seed_spread
from tradingbot.portfolio_run import agent_targets, allocation_frame
from tradingbot.training_run import build_model

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "universe.yaml"
FIRST_YEAR, LAST_YEAR = 2005, 2022


def year_span(year: int) -> DateRange:
    return DateRange(pd.Timestamp(f"{year}-01-01"), pd.Timestamp(f"{year}-12-31"))


def fold_market(cfg: TradingConfig, year: int) -> PortfolioMarket:
    """The universe with its normalization fitted on the bars before ``year``."""
    data = load_market(cfg.data.source)
    before = DateRange(pd.Timestamp("1990-01-01"), pd.Timestamp(f"{year - 1}-12-31"))
    return prepare_portfolio(data, cfg.data, fit_on=before)


def train_and_run(
    cfg: TradingConfig, seed: int, steps: int, train: DateRange, scored: DateRange
) -> pd.DataFrame:
    """Fit the normalization and train the agent (seed ``seed``) on ``train``; its bars on
    ``scored`` (after the LSTM warm-up over ``evaluation.warmup_bars`` bars before it)."""
    torch.set_num_threads(1)
    market = prepare_portfolio(load_market(cfg.data.source), cfg.data, fit_on=train)
    env = PortfolioVecEnv(market, train, cfg.env, cfg.portfolio, seed=seed)
    model = build_model(cfg, env)
    model.learn(steps)
    warmup = cfg.evaluation.warmup_bars
    rows, targets = agent_targets(model, market, scored, cfg.env, cfg.portfolio, warmup_bars=warmup)
    return allocation_frame(market, rows, targets, cfg.env, cfg.portfolio)


def run_fold(year: int, seed: int, steps: int, out: Path, overrides: list[str]) -> str:
    """Train on the bars before ``year`` and run the agent through it; bars to out/bars/."""
    path = out / "bars" / f"agent_{year}_seed{seed}.csv"
    if path.exists():
        return f"{path.name} (cached)"
    cfg = load_config(CONFIG, [*overrides, f"run.seed={seed}", f"run.total_timesteps={steps}"])
    train = DateRange(pd.Timestamp("1990-01-01"), pd.Timestamp(f"{year - 1}-12-31"))
    start = time.time()
    frame = train_and_run(cfg, seed, steps, train, year_span(year))
    tmp = path.with_suffix(".tmp")
    frame.to_csv(tmp, index_label="timestamp")
    tmp.rename(path)
    return f"{path.name} {time.time() - start:.0f}s"


def run_baselines(out: Path) -> None:
    cfg = load_config(CONFIG)
    market = fold_market(cfg, FIRST_YEAR)
    span = DateRange(year_span(FIRST_YEAR).start, year_span(LAST_YEAR).end)
    results = run_allocation_baselines(market, span, cfg.env, cfg.portfolio, index_closes(market))
    for name, frame in results.items():
        frame.to_csv(out / "bars" / f"baseline_{name}.csv", index_label="timestamp")


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, index_col="timestamp", parse_dates=True)


def walkforward(args: argparse.Namespace) -> None:
    out = Path(args.out)
    (out / "bars").mkdir(parents=True, exist_ok=True)
    overrides: list[str] = []
    if args.selection is not None:  # the chosen candidate; every candidate counted
        record = json.loads(Path(args.selection).read_text())
        overrides = record["candidates"][record["chosen"]]
        (out / "selection.json").write_text(json.dumps(record, indent=2))
    else:
        write_selection(
            out,
            {"configs/universe.yaml": []},
            [{"name": "configs/universe.yaml", "steps": args.steps}],
            protocol="one configuration fixed in advance (configs/universe.yaml)",
        )
    if not (out / "bars" / "baseline_equal_weight.csv").exists():
        run_baselines(out)
        print("baselines done", flush=True)
    years = [y for y in range(args.first, args.last + 1)]
    jobs = [(y, s) for s in args.seeds for y in years]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(run_fold, y, s, args.steps, out, overrides) for y, s in jobs]
        for future in futures:
            print(future.result(), flush=True)
    analyze(argparse.Namespace(out=args.out))


def analyze(args: argparse.Namespace) -> None:
    out = Path(args.out)
    baselines = {
        p.stem.removeprefix("baseline_"): read(p) for p in sorted(out.glob("bars/baseline_*.csv"))
    }
    found = sorted({int(p.stem.split("seed")[1]) for p in out.glob("bars/agent_*_seed*.csv")})
    n_years = max(len(list(out.glob(f"bars/agent_*_seed{s}.csv"))) for s in found)
    # Only seeds with every year done (an interrupted run leaves the last seed partial).
    seeds = [s for s in found if len(list(out.glob(f"bars/agent_*_seed{s}.csv"))) == n_years]
    n_trials, _ = read_selection(out / "selection.json")
    rows, tests, sharpes = [], {}, {}
    for seed in seeds:
        parts = sorted(out.glob(f"bars/agent_*_seed{seed}.csv"))
        agent = pd.concat([read(p) for p in parts]).sort_index()
        bars = {"agent": agent, **baselines}
        returns = aligned_returns(bars)
        per_year = periods_per_year(pd.DatetimeIndex(returns.index))
        comparison = compare_policies(bars, per_year, StatisticsConfig(), n_trials=n_trials)
        table = comparison.table.assign(seed=seed, years=f"{parts[0].stem[6:10]}..")
        rows.append(table)
        tests[seed] = {
            "spa_pvalue": comparison.tests["spa"]["pvalue"],
            "spa_pvalues": comparison.tests["spa"].get("pvalues"),
            "dsr": comparison.tests["deflated_sharpe"]["dsr"],
            "bars": comparison.tests["bars"],
            "start": comparison.tests["start"],
            "end": comparison.tests["end"],
            "folds": len(parts),
            "n_trials": n_trials,
        }
        sharpes[seed] = float(table.set_index("policy").loc["agent", "sharpe"])
    table = pd.concat(rows, ignore_index=True)
    table.to_csv(out / "comparison.csv", index=False)
    summary = {"tests": tests, "agent_sharpe_seed_spread": seed_spread(sharpes)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    pd.set_option("display.width", 200)
    cols = [
        "seed",
        "policy",
        "sharpe",
        "sharpe_low",
        "sharpe_high",
        "agent_minus",
        "agent_minus_low",
        "agent_minus_high",
        "annual_return",
        "max_drawdown",
        "turnover",
    ]
    print(table[cols].round(3).to_string(index=False))
    print(json.dumps(summary, indent=2, default=str))


def throughput(args: argparse.Namespace) -> None:
    """Environment steps per second of DistributionalPPO (portfolio policy) and SB3 PPO (MLP)
    training on the same PortfolioVecEnv (16 envs, 10 assets per episode, same rollout)."""
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    cfg = load_config(CONFIG)
    market = fold_market(cfg, 2013)
    results = {}
    for name in ("distributional_ppo", "sb3_ppo_mlp"):
        env = PortfolioVecEnv(market, "train", cfg.env, cfg.portfolio, seed=0)
        if name == "sb3_ppo_mlp":
            model = PPO(
                "MlpPolicy",
                env,
                n_steps=cfg.algo.n_steps,
                batch_size=cfg.algo.batch_size,
                n_epochs=cfg.algo.n_epochs,
                seed=0,
                device="cpu",
            )
        else:
            model = build_model(cfg, env)
        model.learn(2 * cfg.algo.n_steps * cfg.env.n_envs)  # warm-up
        start, cpu = time.perf_counter(), time.process_time()
        model.learn(args.steps)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        # Steps per CPU second of this (single-threaded) process: robust to other processes
        # sharing the cores; wall-clock steps per second beside it.
        results[name] = args.steps / cpu
        print(f"{name}: {args.steps / cpu:.0f} steps/CPU-s, {args.steps / wall:.0f} steps/s wall")
    ratio = results["distributional_ppo"] / results["sb3_ppo_mlp"]
    print(f"ratio distributional/sb3 (CPU time): {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    wf = sub.add_parser("walkforward")
    wf.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    wf.add_argument("--steps", type=int, default=200_000)
    wf.add_argument("--first", type=int, default=FIRST_YEAR)
    wf.add_argument("--last", type=int, default=LAST_YEAR)
    wf.add_argument("--workers", type=int, default=2)
    wf.add_argument("--out", default="out/portfolio_wf")
    wf.add_argument("--selection", help="selection.json of benchmarks/portfolio_selection.py")
    an = sub.add_parser("analyze")
    an.add_argument("out")
    tp = sub.add_parser("throughput")
    tp.add_argument("--steps", type=int, default=20_000)
    args = parser.parse_args()
    {"walkforward": walkforward, "analyze": analyze, "throughput": throughput}[args.command](args)


if __name__ == "__main__":
    main()
