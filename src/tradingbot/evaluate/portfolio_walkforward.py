"""Walk-forward evaluation of a portfolio config (``tradingbot walkforward`` with a
``portfolio`` section).

For each fold of ``data.walk_forward`` and each seed of ``evaluation.seeds`` a job
(:func:`tradingbot.evaluate.jobs.portfolio_agent_bars`) fits the feature normalization on the
fold's training dates, trains the agent there (``run.total_timesteps`` steps), then runs it
deterministically on all assets through the fold's test dates, starting in cash after the LSTM
warm-up over ``evaluation.warmup_bars`` bars before them
(:func:`tradingbot.evaluate.warmup.warm_up_portfolio`). The jobs run as Ray tasks, as for
single-instrument configs (:mod:`tradingbot.evaluate.distribute`: an embedded local Ray or the
cluster at ``address``, ``evaluation.workers`` at once, ``evaluation.max_retries``). The
allocation baselines run once, in this process, continuously over the test folds' whole span
(same schedule and costs). Writes under ``evaluation/``: ``folds.csv`` (per fold, seed and
policy: the metrics on the fold's test bars), ``summary.csv`` (mean and t-interval over folds,
seeds averaged within a fold, as :func:`tradingbot.evaluate.walkforward.summarize`),
``stitched.csv`` (each seed's folds joined, beside the baselines on the same bars),
``seed_spread.csv``, ``statistics_portfolio_seed<s>.csv`` / ``tests_portfolio_seed<s>.json``
(bootstrap intervals, SPA, deflated Sharpe), the bars under ``bars/``
(``fold<F>_seed<S>_portfolio_agent.csv``, ``baseline_<name>.csv``) and each job's saved
results under ``jobs/``.

``resume``: an interrupted run directory (started with the same config, checked as for
single-instrument runs). Its finished jobs are read back instead of trained again; the tables
are rebuilt from all of them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tradingbot.config import TradingConfig
from tradingbot.data.portfolio import prepare_portfolio
from tradingbot.data.sources import load_market
from tradingbot.data.splits import DateRange, walk_forward_folds
from tradingbot.evaluate.allocation import index_closes, run_allocation_baselines
from tradingbot.evaluate.backtest import backtest_metrics
from tradingbot.evaluate.distribute import check_resumable, run_walkforward_jobs
from tradingbot.evaluate.jobs import JobFault
from tradingbot.evaluate.selection import read_selection
from tradingbot.evaluate.walkforward import compare_stitched, seed_spread_table, summarize
from tradingbot.portfolio_run import INSTRUMENT, portfolio_section
from tradingbot.safe_write import atomic_path


def portfolio_walk_forward(
    config: TradingConfig,
    seeds: list[int] | None = None,
    address: str | None = None,
    resume: Path | None = None,
    fault: JobFault | None = None,
) -> Path:
    """
    Run every fold x seed job (those not finished in ``resume``) on Ray and write the
    ``evaluation/`` tables.

    Parameters
    ----------
    config : TradingConfig
        A config with a ``portfolio`` section.
    seeds : list of int, optional
        The agents' seeds (``None``: ``evaluation.seeds``).
    address : str, optional
        A Ray cluster to join (``None``: an embedded local Ray).
    resume : Path, optional
        An interrupted run directory whose finished jobs are kept.
    fault : JobFault, optional
        For tests: a job that kills its own process.

    Returns
    -------
    Path
        The run directory.
    """
    seeds = seeds if seeds is not None else config.evaluation.seeds
    cfg = portfolio_section(config)
    if resume is not None:
        check_resumable(resume, config)
    data = load_market(config.data.source, config.data.synthetic, config.data.instruments)
    stamps = next(iter(data.bars.values())).index
    folds = walk_forward_folds(stamps, config.data.walk_forward)
    run_dir, outcome = run_walkforward_jobs(config, folds, seeds, address, resume, fault)
    out = run_dir / "evaluation"
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
            agent = outcome.results[(fold.index, seed)].bars[INSTRUMENT]["agent"]
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
