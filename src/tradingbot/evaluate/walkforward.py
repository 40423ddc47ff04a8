"""Walk-forward evaluation over folds and seeds, with confidence intervals and regimes.

For each fold the feature normalization is fitted on the fold's training dates only, an agent
is trained there for every seed, and the agent and the baselines
(:mod:`tradingbot.evaluate.baselines`) are backtested on the fold's test dates. Metrics are
summarized as mean and 95% confidence interval over folds (seeds averaged within a fold first);
each seed's folds are stitched into one series and compared with the baselines run continuously
over the same bars (bootstrap intervals, SPA, deflated Sharpe), and the test bars are broken
down by volatility regime: VIX < 15, 15-25, 25-40, > 40 where VIX
covers the dates, otherwise terciles of trailing realized volatility.

With several seeds, their seed ensemble is one more policy, ``ensemble``: in each fold the mean
of the seeds' test positions, run through the same simulator and costs
(:func:`tradingbot.evaluate.ensemble.mean_position_bars`; what ``train`` with ``run.seeds``
holds), reported beside the single seeds and stitched and compared with the baselines alike.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from tradingbot.config import ConfigError, TradingConfig
from tradingbot.data.bundled import load_vix_close
from tradingbot.data.market import PreparedMarket, prepare_market
from tradingbot.data.sources import MarketData
from tradingbot.data.splits import DateRange, Fold, union_index, walk_forward_folds
from tradingbot.evaluate.backtest import backtest_metrics
from tradingbot.evaluate.baselines import agent_exposure, run_baselines
from tradingbot.evaluate.comparison import compare_policies
from tradingbot.evaluate.distribute import check_resumable, run_walkforward_jobs
from tradingbot.evaluate.ensemble import mean_position_bars
from tradingbot.evaluate.jobs import JobFault, JobResult, load_walkforward_data
from tradingbot.evaluate.metrics import performance_metrics, periods_per_year
from tradingbot.evaluate.selection import read_selection, scored_span
from tradingbot.evaluate.statistics import clustered_interval, seed_spread
from tradingbot.safe_write import atomic_path

log = logging.getLogger(__name__)

VIX_BINS = (0.0, 15.0, 25.0, 40.0, np.inf)
VIX_LABELS = ("VIX<15", "VIX 15-25", "VIX 25-40", "VIX>40")
ENSEMBLE = "ensemble"  # the policy name of the seeds' mean position (more than one seed)
REGIME_METRICS = ("annual_return", "annual_volatility", "sharpe", "max_drawdown", "cvar_5")


def mean_confidence_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and the Student-t confidence interval of the mean (NaN bounds for one value)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if len(x) < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return mean, mean - half, mean + half


def summarize(folds: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per policy and metric: mean and t-interval over folds, clustered by fold.

    The values of one fold (its seeds and instruments) are averaged first, so ``n`` is the
    number of folds: seeds trained on the same market path are not independent evidence (seed
    spread is reported apart, see :func:`seed_spread_table`).
    """
    metric_columns = [
        c
        for c in folds.columns
        if c not in ("fold", "seed", "policy", "instrument", "test_start", "test_end")
    ]
    rows = []
    for policy, group in folds.groupby("policy", sort=False):
        for metric in metric_columns:
            mean, low, high, n = clustered_interval(
                group[metric].to_numpy(), group["fold"].to_numpy(), level
            )
            rows.append(
                {
                    "policy": policy,
                    "metric": metric,
                    "n": n,
                    "mean": mean,
                    "ci_low": low,
                    "ci_high": high,
                }
            )
    return pd.DataFrame(rows)


def seed_spread_table(stitched: pd.DataFrame) -> pd.DataFrame:
    """Spread over seeds of each policy's stitched metrics (seed noise on one market path).

    Parameters
    ----------
    stitched: one row per seed, instrument and policy with metric columns.
    """
    rows = []
    for (policy, instrument), group in stitched.groupby(["policy", "instrument"], sort=False):
        for metric in ("sharpe", "max_drawdown", "cvar_5", "annual_return"):
            values = dict(zip(group["seed"], group[metric], strict=True))
            rows.append(
                {"policy": policy, "instrument": instrument, "metric": metric} | seed_spread(values)
            )
    return pd.DataFrame(rows)


def label_regimes(bars: pd.DataFrame, closes: dict[str, pd.Series], window: int = 20) -> np.ndarray:
    """A regime label per bar of ``bars`` (any instruments, column ``instrument``).

    VIX bands where VIX has a close on every bar's date; otherwise terciles, over all the
    bars, of each instrument's trailing ``window``-bar realized volatility (known at the bar).
    """
    index = pd.DatetimeIndex(bars.index)
    vix = load_vix_close()
    if index.normalize().isin(vix.index.normalize()).all():
        levels = vix.reindex(index.normalize()).to_numpy()
        return np.asarray(pd.cut(levels, VIX_BINS, labels=VIX_LABELS, right=False)).astype(str)
    vol = np.empty(len(bars))
    for name, close in closes.items():
        mine = (bars["instrument"] == name).to_numpy()
        trailing = np.log(close).diff().rolling(window).std()
        vol[mine] = trailing.reindex(index[mine]).to_numpy()
    low, high = np.nanquantile(vol, [1 / 3, 2 / 3])
    return np.where(vol <= low, "low vol", np.where(vol <= high, "mid vol", "high vol"))


def regime_table(bars: pd.DataFrame) -> pd.DataFrame:
    """Metrics of every policy's pooled test bars within each regime."""
    rows = []
    for (policy, regime), group in bars.groupby(["policy", "regime"], sort=False, observed=True):
        metrics = performance_metrics(
            group["return"].to_numpy(),
            group["position"].to_numpy(),
            group["trade"].to_numpy(),
            annualization=group["annualization"].iloc[0],
        )
        rows.append(
            {
                "policy": policy,
                "regime": str(regime),
                "bars": len(group),
                **{k: metrics[k] for k in REGIME_METRICS},
            }
        )
    return pd.DataFrame(rows)


def walk_forward(
    config: TradingConfig,
    seeds: list[int] | None = None,
    address: str | None = None,
    resume: Path | None = None,
    fault: JobFault | None = None,
) -> Path:
    """Train and test across walk-forward folds and seeds; write ``evaluation/`` tables.

    Every fold x seed is a job (:func:`tradingbot.evaluate.jobs.run_fold_seed`) run as a Ray
    task (:mod:`tradingbot.evaluate.distribute`): on an embedded local Ray, or on the cluster
    at ``address``. ``resume``: an interrupted run directory whose finished jobs are kept;
    only the missing ones run. ``fault``: for tests, a job that kills its own process.

    Returns the run directory, which holds under ``evaluation/``: ``folds.csv`` (one row per
    fold, seed, policy and instrument: the agent and every baseline on the fold's test bars),
    ``summary.csv`` (mean and 95% CI over folds, seeds averaged within a fold), ``regimes.csv``,
    ``stitched.csv`` (each seed's test folds joined into one series, beside the baselines run
    continuously over the same bars), ``seed_spread.csv``, ``statistics_<instrument>_seed<s>.csv``
    and ``tests_<instrument>_seed<s>.json`` (bootstrap intervals, SPA, deflated Sharpe of the
    stitched series, :mod:`tradingbot.evaluate.comparison`), the bars under ``bars/`` and each
    job's saved results under ``jobs/``. With several seeds the tables also hold policy
    ``ensemble`` (seed empty; ``statistics_<instrument>_ensemble.csv``, ...; not in
    ``seed_spread.csv``).
    """
    if config.run.seeds is not None:
        raise ConfigError(
            f"run.seeds ({config.run.seeds}) is for train: a walk-forward trains "
            "evaluation.seeds in every fold (and reports their ensemble as policy "
            f"'{ENSEMBLE}'); set the seeds there"
        )
    seeds = seeds if seeds is not None else config.evaluation.seeds
    data = load_walkforward_data(config)
    stamps = union_index([b.index for k, b in data.bars.items() if k not in data.train_only])
    folds = walk_forward_folds(stamps, config.data.walk_forward)
    if resume is not None:
        check_resumable(resume, config)
    run_dir, outcome = run_walkforward_jobs(config, folds, seeds, address, resume, fault)
    write_tables(config, data, stamps, folds, seeds, outcome.results, run_dir)
    return run_dir


def write_tables(
    config: TradingConfig,
    data: MarketData,
    stamps: pd.DatetimeIndex,
    folds: list[Fold],
    seeds: list[int],
    results: dict[tuple[int, int], JobResult],
    run_dir: Path,
) -> None:
    """The ``evaluation/`` tables from the jobs' results, assembled in fold, seed, instrument
    and policy order whatever order the jobs finished in."""
    out = run_dir / "evaluation"
    rows, pooled = [], []
    stitched: dict[tuple[int | None, str], list[pd.DataFrame]] = {}
    market = prepare_market(data, config.data, config.env.window, fit_on=folds[0].train)
    for fold in folds:
        entries = [
            (seed, name, instrument, bars)
            for seed in seeds
            for instrument, policies in results[(fold.index, seed)].bars.items()
            for name, bars in policies.items()
        ]
        ensemble = fold_ensemble(config, market, stamps, fold, seeds, results)
        for instrument, bars in ensemble.items():
            entries.append((None, ENSEMBLE, instrument, bars))
            with atomic_path(
                out / "bars" / f"fold{fold.index}_{ENSEMBLE}_{instrument}.csv", root=run_dir
            ) as tmp:
                bars.to_csv(tmp)
        for seed, name, instrument, bars in entries:
            if name in ("agent", ENSEMBLE):
                stitched.setdefault((seed, instrument), []).append(bars)
            rows.append(
                {
                    "fold": fold.index,
                    "seed": seed,
                    "policy": name,
                    "instrument": instrument,
                    "test_start": fold.test.start,
                    "test_end": fold.test.end,
                    **backtest_metrics(bars),
                }
            )
            pooled.append(
                bars.assign(
                    policy=name, annualization=periods_per_year(pd.DatetimeIndex(bars.index))
                )
            )
    table = pd.DataFrame(rows).astype({"seed": "Int64"})  # the ensemble's rows have none
    with atomic_path(out / "folds.csv", root=run_dir) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(out / "summary.csv", root=run_dir) as tmp:
        summarize(table, config.evaluation.statistics.level).to_csv(tmp, index=False)
    whole = scored_span(stamps, DateRange(folds[0].test.start, folds[-1].test.end))
    stitched_table = stitched_comparisons(config, market, whole, stitched, out)
    with atomic_path(out / "stitched.csv", root=run_dir) as tmp:
        stitched_table.to_csv(tmp, index=False)
    with atomic_path(out / "seed_spread.csv", root=run_dir) as tmp:
        seed_spread_table(stitched_table[stitched_table["seed"].notna()]).to_csv(tmp, index=False)
    test_bars = pd.concat(pooled)
    closes = {name: bars["close"] for name, bars in data.bars.items()}
    test_bars["regime"] = label_regimes(test_bars, closes)
    with atomic_path(out / "regimes.csv", root=run_dir) as tmp:
        regime_table(test_bars).to_csv(tmp, index=False)


def stitched_comparisons(
    config: TradingConfig,
    market: PreparedMarket,
    whole: DateRange,
    stitched: dict[tuple[int, str], list[pd.DataFrame]],
    out: Path,
) -> pd.DataFrame:
    """Each seed's test folds joined into one series per instrument, beside the baselines run
    once, continuously, over ``whole`` (buy-and-hold holds across fold boundaries); writes the
    comparison files (the deflated Sharpe counts ``evaluation.selection_file``'s configurations)
    and returns one row of metrics per seed, instrument and policy."""
    selection = config.evaluation.selection_file
    n_trials, trial_sharpes = read_selection(selection) if selection is not None else (1, [])
    rows = []
    for (seed, instrument), parts in stitched.items():
        tag = f"seed{seed}" if seed is not None else ENSEMBLE  # None: the seeds' ensemble
        agent = pd.concat(parts).sort_index()
        baselines = run_baselines(
            market,
            whole,
            config.env,
            instrument,
            config.evaluation.baselines,
            agent_exposure(agent),
        )
        for name, bars in baselines.items():
            name_csv = f"stitched_{tag}_{instrument}_{name}.csv"
            with atomic_path(out / "bars" / name_csv, root=out) as tmp:
                bars.to_csv(tmp)
        name = "agent" if seed is not None else ENSEMBLE
        rows += compare_stitched(
            {name: agent} | baselines,
            name,
            config,
            (n_trials, trial_sharpes),
            out,
            tag,
            seed,
            instrument,
        )
    return pd.DataFrame(rows).astype({"seed": "Int64"})


def fold_ensemble(
    config: TradingConfig,
    market: PreparedMarket,
    stamps: pd.DatetimeIndex,
    fold: Fold,
    seeds: list[int],
    results: dict[tuple[int, int], JobResult],
) -> dict[str, pd.DataFrame]:
    """The seeds' ensemble on one fold's test bars, per instrument: the mean of the seeds'
    positions (:func:`tradingbot.evaluate.ensemble.mean_position_bars`); none for one seed, or
    where the seeds' bars differ (a seed ruined early: logged)."""
    if len(seeds) < 2:
        return {}
    span = scored_span(stamps, fold.test)
    out = {}
    for instrument in results[(fold.index, seeds[0])].bars:
        members = [results[(fold.index, s)].bars[instrument]["agent"] for s in seeds]
        try:
            out[instrument] = mean_position_bars(members, market, span, config.env, instrument)
        except ValueError as err:
            log.warning("walk-forward fold %d: no seed ensemble (%s)", fold.index, err)
    return out


def compare_stitched(
    policies: dict[str, pd.DataFrame],
    agent: str,
    config: TradingConfig,
    trials: tuple[int, list[float]],
    out: Path,
    tag: str,
    seed: int | None,
    instrument: str,
) -> list[dict[str, Any]]:
    """Compare a stitched agent with the baselines over the same bars (bootstrap intervals,
    SPA, deflated Sharpe counting ``trials``: the number of configurations tried and their
    Sharpe ratios per year, from the selection file), write the tables under ``out`` as
    ``<instrument>_<tag>``, and return one row of metrics per policy."""
    n_trials, trial_sharpes = trials
    bars = policies[agent]
    per_year = periods_per_year(pd.DatetimeIndex(bars.index))
    compare_policies(
        policies,
        per_year,
        config.evaluation.statistics,
        agent=agent,
        n_trials=n_trials,
        trial_sharpes=np.asarray(trial_sharpes) / np.sqrt(per_year),
    ).write(out, f"{instrument}_{tag}")
    return [
        {
            "seed": seed,
            "instrument": instrument,
            "policy": name,
            **backtest_metrics(policy_bars.loc[policy_bars.index.isin(bars.index)]),
        }
        for name, policy_bars in policies.items()
    ]
