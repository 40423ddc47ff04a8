"""Walk-forward evaluation of a portfolio config (``tradingbot walkforward`` with a
``portfolio`` section), run sequentially in this process.

For each fold of ``data.walk_forward`` and each seed of ``evaluation.seeds``: the feature
normalization is fitted on the fold's training dates, the agent is trained there
(``run.total_timesteps`` steps), then run deterministically on all assets through the fold's
test dates, starting in cash after the LSTM warm-up over ``evaluation.warmup_bars`` bars
before them (:func:`tradingbot.evaluate.warmup.warm_up_portfolio`). The allocation baselines
run once, continuously, over the test folds' whole span (same schedule and costs). Writes under
``evaluation/``: ``folds.csv`` (per fold, seed and policy: the metrics on the fold's test bars),
``summary.csv`` (mean and t-interval over folds, seeds averaged within a fold, as
:func:`tradingbot.evaluate.walkforward.summarize`), ``stitched.csv`` (each seed's folds joined,
beside the baselines on the same bars), ``seed_spread.csv``,
``statistics_portfolio_seed<s>.csv`` / ``tests_portfolio_seed<s>.json`` (bootstrap intervals,
SPA, deflated Sharpe) and the bars under ``bars/``.

``resume``: an interrupted run directory (started with the same config, checked as for
single-instrument runs). A fold x seed whose agent bars ``bars/agent_fold<F>_seed<S>.csv``
exist (each is written atomically once its job is done) is read back instead of trained
again; the tables are rebuilt from all of them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tradingbot.config import TradingConfig
from tradingbot.data.portfolio import prepare_portfolio
from tradingbot.data.sources import MarketData, load_market
from tradingbot.data.splits import DateRange, Fold, walk_forward_folds
from tradingbot.env.portfolio import PortfolioVecEnv
from tradingbot.evaluate.allocation import index_closes, run_allocation_baselines
from tradingbot.evaluate.backtest import backtest_metrics
from tradingbot.evaluate.distribute import check_resumable
from tradingbot.evaluate.selection import read_selection
from tradingbot.evaluate.walkforward import compare_stitched, seed_spread_table, summarize
from tradingbot.portfolio_run import (
    INSTRUMENT,
    agent_targets,
    allocation_frame,
    portfolio_section,
)
from tradingbot.run import create_run_dir
from tradingbot.safe_write import atomic_path, make_dirs
from tradingbot.training_run import build_model


def fold_agent_bars(config: TradingConfig, data: MarketData, fold: Fold, seed: int) -> pd.DataFrame:
    """Train the agent (seed ``seed``) on the fold's training dates and backtest it on its
    test dates."""
    cfg = config.model_copy(update={"run": config.run.model_copy(update={"seed": seed})})
    market = prepare_portfolio(data, cfg.data, fit_on=fold.train)
    env = PortfolioVecEnv(market, fold.train, cfg.env, portfolio_section(cfg), seed=seed)
    model = build_model(cfg, env)
    model.learn(cfg.run.total_timesteps)
    warmup = cfg.evaluation.warmup_bars  # bars before the test year, as single-instrument runs
    rows, targets = agent_targets(
        model, market, fold.test, cfg.env, portfolio_section(cfg), warmup_bars=warmup
    )
    return allocation_frame(market, rows, targets, cfg.env, portfolio_section(cfg))


def read_agent_bars(path: Path) -> pd.DataFrame:
    """Agent bars saved by an earlier, interrupted run (float64 round-trips through CSV)."""
    return pd.read_csv(path, index_col="timestamp", parse_dates=["timestamp"])


def portfolio_walk_forward(
    config: TradingConfig, seeds: list[int] | None = None, resume: Path | None = None
) -> Path:
    """Run every fold x seed (those not finished in ``resume``) and write the ``evaluation/``
    tables; returns the run directory."""
    seeds = seeds if seeds is not None else config.evaluation.seeds
    cfg = portfolio_section(config)
    if resume is not None:
        check_resumable(resume, config)
    data = load_market(config.data.source, config.data.synthetic, config.data.instruments)
    stamps = next(iter(data.bars.values())).index
    folds = walk_forward_folds(stamps, config.data.walk_forward)
    run_dir = Path(resume) if resume is not None else create_run_dir(config)
    out = run_dir / "evaluation"
    make_dirs(out / "bars", root=run_dir)
    whole = DateRange(folds[0].test.start, folds[-1].test.end)
    market = prepare_portfolio(data, config.data, fit_on=folds[0].train)
    index = index_closes(market) if config.data.source == "sp500_universe" else None
    baselines = run_allocation_baselines(market, whole, config.env, cfg, index)
    for name, bars in baselines.items():
        with atomic_path(out / "bars" / f"baseline_{name}.csv", root=run_dir) as tmp:
            bars.to_csv(tmp, index_label="timestamp")
    rows, stitched = [], {}
    for seed in seeds:
        parts = []
        for fold in folds:
            saved = out / "bars" / f"agent_fold{fold.index}_seed{seed}.csv"
            if resume is not None and saved.is_file():
                agent = read_agent_bars(saved)
            else:
                agent = fold_agent_bars(config, data, fold, seed)
                with atomic_path(saved, root=run_dir) as tmp:
                    agent.to_csv(tmp, index_label="timestamp")
            parts.append(agent)
            for name, bars in {"agent": agent, **baselines}.items():
                same = bars.loc[bars.index.isin(agent.index)]
                rows.append(
                    {"fold": fold.index, "seed": seed, "policy": name, "instrument": INSTRUMENT,
                     "test_start": fold.test.start, "test_end": fold.test.end,
                     **backtest_metrics(same)}
                )  # fmt: skip
        stitched[seed] = pd.concat(parts).sort_index()
    table = pd.DataFrame(rows)
    with atomic_path(out / "folds.csv", root=run_dir) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(out / "summary.csv", root=run_dir) as tmp:
        summarize(table, config.evaluation.statistics.level).to_csv(tmp, index=False)
    stitched_table = stitched_comparisons(config, stitched, baselines, out)
    with atomic_path(out / "stitched.csv", root=run_dir) as tmp:
        stitched_table.to_csv(tmp, index=False)
    with atomic_path(out / "seed_spread.csv", root=run_dir) as tmp:
        seed_spread_table(stitched_table).to_csv(tmp, index=False)
    return run_dir


def stitched_comparisons(
    config: TradingConfig,
    stitched: dict[int, pd.DataFrame],
    baselines: dict[str, pd.DataFrame],
    out: Path,
) -> pd.DataFrame:
    """Each seed's stitched agent beside the baselines on the same bars: writes the comparison
    files and returns one row of metrics per seed and policy."""
    selection = config.evaluation.selection_file
    n_trials, trial_sharpes = read_selection(selection) if selection is not None else (1, [])
    rows = []
    for seed, agent in stitched.items():
        rows += compare_stitched(
            {"agent": agent} | baselines,
            "agent",
            config,
            (n_trials, trial_sharpes),
            out,
            f"seed{seed}",
            seed,
            INSTRUMENT,
        )
    return pd.DataFrame(rows)
