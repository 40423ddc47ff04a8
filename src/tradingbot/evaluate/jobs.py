"""One walk-forward job: train an agent on one fold's training dates with one seed, backtest it
and the baselines on the fold's test dates (a portfolio config: the agent only; its allocation
baselines run once over all test folds, in the driver).

:func:`run_fold_seed` depends only on (config, fold, seed), so a job gives the same numbers in
any process, on any node, in any order. The driver (:mod:`tradingbot.evaluate.distribute`)
saves each finished job under ``evaluation/jobs/fold<F>_seed<S>/`` (one Parquet file per
instrument and policy, exact float64, then ``done.json``), which is what ``--resume`` reuses.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tradingbot.config import TradingConfig
from tradingbot.data.market import load_training_data, prepare_market
from tradingbot.data.portfolio import prepare_portfolio
from tradingbot.data.sources import MarketData, load_market
from tradingbot.data.splits import Fold, union_index
from tradingbot.env.portfolio import PortfolioVecEnv
from tradingbot.env.vec_env import MarketVecEnv
from tradingbot.evaluate.backtest import run_backtest
from tradingbot.evaluate.baselines import agent_exposure, run_baselines
from tradingbot.evaluate.selection import scored_span
from tradingbot.portfolio_run import INSTRUMENT, agent_targets, allocation_frame, portfolio_section
from tradingbot.safe_write import atomic_path, write_text
from tradingbot.train import build_model, member_config

JOBS_DIR = "jobs"
DONE_FILE = "done.json"


@dataclass(frozen=True)
class JobFault:
    """For tests: the job (``fold``, ``seed``) kills its own process.

    Parameters
    ----------
    fold, seed: the job that dies.
    marker: a file created just before the kill; once it exists the fault is disarmed (the
        job dies once). ``None``: the job dies on every attempt.
    """

    fold: int
    seed: int
    marker: str | None = None

    def maybe_fire(self, fold: int, seed: int) -> None:
        """SIGKILL this process if it runs the chosen job (and the marker does not exist)."""
        if (fold, seed) != (self.fold, self.seed):
            return
        if self.marker is not None:
            marker = Path(self.marker)
            if marker.exists():
                return
            marker.write_text(f"killed job fold {fold} seed {seed}\n")
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class JobResult:
    """The bars of one fold x seed job.

    Parameters
    ----------
    fold: the fold's index.
    seed: the agent's seed.
    bars: instrument -> policy (``agent`` first, then the baselines) -> test bars.
    node: the Ray node that ran it (not part of the results; empty when run in-process).
    """

    fold: int
    seed: int
    bars: dict[str, dict[str, pd.DataFrame]]
    node: str = field(default="", compare=False)


def job_name(fold: int, seed: int) -> str:
    """The job's directory name under ``evaluation/jobs/``."""
    return f"fold{fold}_seed{seed}"


def load_walkforward_data(config: TradingConfig) -> MarketData:
    """The market data of the walk-forward, with enough rows for the features and window
    (``data.train_sources``' instruments included, for training only)."""
    return load_training_data(config.data, config.env.window)


def run_fold_seed(
    config: TradingConfig, fold: Fold, seed: int, fault: JobFault | None = None
) -> JobResult:
    """Train on ``fold.train`` with ``seed``; backtest the agent and the baselines on
    ``fold.test`` (from the bar before it: its close decides the first test bar's position).

    The feature normalization is fitted on the fold's training dates only. A portfolio config
    gives the agent's bars only (:func:`portfolio_agent_bars`), under instrument
    ``INSTRUMENT``.
    """
    if fault is not None:
        fault.maybe_fire(fold.index, seed)
    if config.portfolio is not None:
        return JobResult(
            fold.index, seed, {INSTRUMENT: {"agent": portfolio_agent_bars(config, fold, seed)}}
        )
    data = load_walkforward_data(config)
    stamps = union_index([b.index for k, b in data.bars.items() if k not in data.train_only])
    market = prepare_market(data, config.data, config.env.window, fit_on=fold.train)
    span = scored_span(stamps, fold.test)
    env = MarketVecEnv(market, fold.train, config.env, seed=seed)
    model = build_model(member_config(config, seed), env)
    model.learn(config.run.total_timesteps)
    bars: dict[str, dict[str, pd.DataFrame]] = {}
    for inst in market.scored_instruments:
        agent = run_backtest(
            model, market, span, config.env, inst.name, config.evaluation.warmup_bars
        )
        bars[inst.name] = {"agent": agent} | run_baselines(
            market, span, config.env, inst.name, config.evaluation.baselines, agent_exposure(agent)
        )
    return JobResult(fold.index, seed, bars)


def portfolio_agent_bars(config: TradingConfig, fold: Fold, seed: int) -> pd.DataFrame:
    """Train a portfolio agent (seed ``seed``) on the fold's training dates and backtest it on
    its test dates, starting in cash after the LSTM warm-up of ``evaluation.warmup_bars``."""
    cfg = member_config(config, seed)
    data = load_market(cfg.data.source, cfg.data.synthetic, cfg.data.instruments)
    market = prepare_portfolio(data, cfg.data, fit_on=fold.train)
    section = portfolio_section(cfg)
    env = PortfolioVecEnv(market, fold.train, cfg.env, section, seed=seed)
    model = build_model(cfg, env)
    model.learn(cfg.run.total_timesteps)
    warmup = cfg.evaluation.warmup_bars  # bars before the test year, as single-instrument runs
    rows, targets = agent_targets(model, market, fold.test, cfg.env, section, warmup_bars=warmup)
    return allocation_frame(market, rows, targets, cfg.env, section)


def save_job_result(result: JobResult, jobs_dir: Path, root: Path) -> Path:
    """Write ``result`` under ``jobs_dir/fold<F>_seed<S>/``; ``done.json`` (written last)
    lists the files in order, so a job without it is not finished."""
    directory = jobs_dir / job_name(result.fold, result.seed)
    files = []
    for instrument, policies in result.bars.items():
        for policy, bars in policies.items():
            name = f"{len(files):03d}.parquet"
            with atomic_path(directory / name, root=root) as tmp:
                bars.to_parquet(tmp)
            files.append({"instrument": instrument, "policy": policy, "file": name})
    record = {"fold": result.fold, "seed": result.seed, "node": result.node, "files": files}
    write_text(directory / DONE_FILE, json.dumps(record, indent=1) + "\n", root=root)
    return directory


def load_job_result(jobs_dir: Path, fold: int, seed: int) -> JobResult | None:
    """The saved result of job (``fold``, ``seed``), or None when it did not finish."""
    directory = jobs_dir / job_name(fold, seed)
    done = directory / DONE_FILE
    if not done.is_file():
        return None
    record = json.loads(done.read_text())
    bars: dict[str, dict[str, pd.DataFrame]] = {}
    for entry in record["files"]:
        frame = pd.read_parquet(directory / Path(entry["file"]).name)
        bars.setdefault(str(entry["instrument"]), {})[str(entry["policy"])] = frame
    return JobResult(fold, seed, bars)
