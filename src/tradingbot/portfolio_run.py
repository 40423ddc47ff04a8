"""Portfolio runs (a config with a ``portfolio`` section): train, load, backtest, signals.

``tradingbot train`` / ``backtest`` / ``signals`` come here when the run's config has a
``portfolio`` section. The run directory has the same layout as a single-instrument run's:
``config.yaml``, ``run.json``, ``tb/``, ``checkpoints/``, ``model.safetensors``,
``normalization.safetensors`` and ``portfolio.json`` (what close-only data change). A backtest
writes ``backtest/<split>/bars_portfolio_<policy>.csv`` (``return``, ``equity``, ``position`` =
gross exposure, ``trade`` = sum of |trades|, ``cost`` and one weight column per asset),
``metrics.csv`` and the agent beside the allocation baselines with bootstrap intervals, SPA and
the deflated Sharpe (``statistics_portfolio.csv``, ``tests_portfolio.json``), which ``report``
reads like any run's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch as th
from safetensors.numpy import save

from tradingbot.algo.portfolio_policy import policy_for_assets
from tradingbot.algo.ppo import DistributionalPPO
from tradingbot.config import EnvConfig, PortfolioConfig, TradingConfig
from tradingbot.config_loading import load_config
from tradingbot.data.features import FeatureNormalizer
from tradingbot.data.portfolio import (
    PortfolioMarket,
    close_only_note,
    load_portfolio,
    prepare_portfolio,
)
from tradingbot.data.sources import load_market
from tradingbot.data.splits import DateRange
from tradingbot.env.portfolio import PortfolioVecEnv, actions_to_weights, cash_per_bar
from tradingbot.evaluate.allocation import (
    decision_rows,
    index_closes,
    run_allocation_baselines,
    simulate_allocation,
)
from tradingbot.evaluate.backtest import backtest_metrics
from tradingbot.evaluate.comparison import compare_policies
from tradingbot.evaluate.metrics import periods_per_year
from tradingbot.evaluate.selection import run_selection
from tradingbot.evaluate.warmup import deterministic_step, warm_up_portfolio, whole_universe_env
from tradingbot.normalization_file import load_normalizer
from tradingbot.run import create_run_dir
from tradingbot.safe_write import atomic_path, make_dirs, write_bytes, write_text
from tradingbot.training_run import (
    MODEL_FILE,
    NORMALIZATION_FILE,
    TrainResult,
    build_model,
    check_device,
    checkpoints_to_resume,
    learn_with_checkpoints,
    model_policy,
    resume_from,
)

NOTES_FILE = "portfolio.json"
INSTRUMENT = "portfolio"


def portfolio_section(config: TradingConfig) -> PortfolioConfig:
    """The config's portfolio section (a ValueError when the run is single-instrument)."""
    if config.portfolio is None:
        raise ValueError("not a portfolio config: it has no 'portfolio' section")
    return config.portfolio


def load_portfolio_model(path: Path, config: TradingConfig) -> DistributionalPPO:
    """A portfolio model saved by :func:`train_portfolio` (safe loader, never unpickles)."""
    portfolio_section(config)  # a clear error for a single-instrument config
    return DistributionalPPO.load(path, policy=model_policy(config))


def train_portfolio(config: TradingConfig, progress_bar: bool = False) -> TrainResult:
    """Train the portfolio agent on the training split and write the run directory."""
    check_device(config)
    market = load_portfolio(config.data)
    # The environment checks the config against the data before the run directory exists.
    env = PortfolioVecEnv(
        market, "train", config.env, portfolio_section(config), seed=config.run.seed
    )
    run_dir = create_run_dir(config)
    write_portfolio_files(market, run_dir)
    model = build_model(config, env, tensorboard_log=str(run_dir / "tb"))
    learn_with_checkpoints(model, config, run_dir, progress_bar, fresh=True)
    return TrainResult(run_dir=run_dir, model=model, market=market)


def resume_portfolio(
    run_dir: Path, config: TradingConfig, progress_bar: bool = False
) -> TrainResult:
    """Continue an interrupted portfolio run from its newest valid checkpoint (as
    :func:`tradingbot.train.resume` does a single-instrument run's: bit for bit on CPU, the
    config unchanged). The environments are rebuilt as :func:`train_portfolio` built them (the
    normalization is refitted on the same training rows); the checkpoint restores their
    state."""
    found = checkpoints_to_resume(run_dir)
    check_device(config)
    market = load_portfolio(config.data)
    cfg, policy = portfolio_section(config), model_policy(config)

    def load(path: Path) -> DistributionalPPO:
        env = PortfolioVecEnv(market, "train", config.env, cfg, seed=config.run.seed)
        return DistributionalPPO.load(path, env=env, policy=policy)

    model = resume_from(run_dir, run_dir, config, load, found)
    learn_with_checkpoints(model, config, run_dir, progress_bar, fresh=False)
    return TrainResult(run_dir=run_dir, model=model, market=market)


def write_portfolio_files(market: PortfolioMarket, run_dir: Path) -> None:
    """The feature normalization and what the data imply (close-only, assets, features)."""
    payload = save(
        market.normalizer.state_dict(), metadata={"features": ",".join(market.feature_names)}
    )
    write_bytes(run_dir / NORMALIZATION_FILE, payload, root=run_dir)
    notes = {
        "assets": market.names,
        "features": market.feature_names,
        "close_only": market.close_only,
        "note": close_only_note() if market.close_only else "",
    }
    write_text(run_dir / NOTES_FILE, json.dumps(notes, indent=2), root=run_dir)


@dataclass
class LoadedPortfolioRun:
    """A portfolio run directory's config, model and market (with the stored normalization)."""

    run_dir: Path
    config: TradingConfig
    model: DistributionalPPO
    market: PortfolioMarket


def load_portfolio_run(run_dir: str | Path, source: str | None = None) -> LoadedPortfolioRun:
    """Load a portfolio run; ``source`` replaces the data (same assets and features)."""
    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.yaml")
    cfg = config.data if source is None else config.data.model_copy(update={"source": source})
    normalizer: FeatureNormalizer = load_normalizer(run_dir / NORMALIZATION_FILE, cfg.features.clip)
    data = load_market(cfg.source, cfg.synthetic, cfg.instruments, 2, cfg.timestamp_unit)
    market = prepare_portfolio(data, cfg, normalizer=normalizer)
    model = load_portfolio_model(run_dir / MODEL_FILE, config)
    return LoadedPortfolioRun(run_dir, config, model, market)


def agent_targets(
    model: DistributionalPPO,
    market: PortfolioMarket,
    split: str | DateRange,
    env_cfg: EnvConfig,
    cfg: PortfolioConfig,
    include_last: bool = False,
    warmup_bars: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The deterministic agent's decision bars and target weights (D, K) over a split, every
    asset, from the split's first decision bar, in cash, with the LSTM states left by a
    warm-up over ``warmup_bars`` bars before it (0: fresh states; see
    :func:`~tradingbot.evaluate.warmup.warm_up_portfolio`). ``include_last`` adds the
    decision at the bar after the last step (its fill lies beyond the data: signals)."""
    env = whole_universe_env(market, split, env_cfg, cfg)
    obs = env.reset()
    lo, hi = market.rows(split)
    rows = decision_rows(lo, hi, cfg.rebalance_every)
    targets = np.zeros((len(rows), market.n_assets))
    # Trained on random subsets of assets, run on all of them: the same parameters.
    policy = policy_for_assets(model.policy, market.n_assets)  # type: ignore[arg-type]
    states, start = warm_up_portfolio(policy, market, lo, warmup_bars, env_cfg, cfg)
    for i, row in enumerate(rows):
        assert env.row[0] == row
        step = deterministic_step(policy, obs, states, start)
        obs, _, done, infos = env.step(step.action.numpy())
        targets[i] = infos[0]["target"]
        states, start = step.states, th.zeros(1)
        if done[0] and i < len(rows) - 1:
            raise RuntimeError(f"the agent's equity fell below the ruin floor at bar {row}")
    if include_last:
        step = deterministic_step(policy, infos[0]["terminal_observation"], states, start)
        final = actions_to_weights(step.action.numpy(), cfg)
        rows = np.append(rows, rows[-1] + cfg.rebalance_every)
        targets = np.concatenate([targets, final])
    return rows, targets


def allocation_frame(
    market: PortfolioMarket,
    rows: np.ndarray,
    targets: np.ndarray,
    env_cfg: EnvConfig,
    cfg: PortfolioConfig,
) -> pd.DataFrame:
    """:func:`simulate_allocation` with the assets' names as weight columns."""
    frame = simulate_allocation(
        market.close,
        market.timestamps,
        rows,
        targets,
        cfg.rebalance_every,
        (env_cfg.commission_bps + env_cfg.slippage_bps) / 1e4,
        cash_per_bar(market, env_cfg.cash_rate),
        env_cfg.initial_equity,
    )
    return frame.rename(columns={f"w_{i}": f"w_{n}" for i, n in enumerate(market.names)})


def agent_metrics(
    model: DistributionalPPO, market: PortfolioMarket, split: str, config: TradingConfig
) -> dict[str, float]:
    """:func:`~tradingbot.evaluate.backtest.backtest_metrics` of the deterministic agent on
    ``split`` (the agent's row of :func:`backtest_portfolio`; PBT scores members with it)."""
    cfg = portfolio_section(config)
    warmup = config.evaluation.warmup_bars
    rows, targets = agent_targets(model, market, split, config.env, cfg, warmup_bars=warmup)
    return backtest_metrics(allocation_frame(market, rows, targets, config.env, cfg))


def random_policy_frame(
    market: PortfolioMarket, split: str, env_cfg: EnvConfig, cfg: PortfolioConfig, seed: int
) -> pd.DataFrame:
    """A policy whose actions are uniform in [-1, 1]^(K+1) at every decision (the yardstick of
    "learns anything")."""
    lo, hi = market.rows(split)
    rows = decision_rows(lo, hi, cfg.rebalance_every)
    actions = np.random.default_rng(seed).uniform(-1, 1, size=(len(rows), market.n_assets + 1))
    return allocation_frame(market, rows, actions_to_weights(actions, cfg), env_cfg, cfg)


def backtest_portfolio(
    model: DistributionalPPO, market: PortfolioMarket, split: str, config: TradingConfig
) -> dict[str, pd.DataFrame]:
    """The agent and every allocation baseline on the split (same bars, schedule, costs)."""
    cfg = portfolio_section(config)
    warmup = config.evaluation.warmup_bars
    rows, targets = agent_targets(model, market, split, config.env, cfg, warmup_bars=warmup)
    results = {"agent": allocation_frame(market, rows, targets, config.env, cfg)}
    index = index_closes(market) if config.data.source == "sp500_universe" else None
    for name, frame in run_allocation_baselines(market, split, config.env, cfg, index).items():
        if name != "index":
            frame = frame.rename(columns={f"w_{i}": f"w_{n}" for i, n in enumerate(market.names)})
        results[name] = frame
    return results


def backtest_portfolio_run(run_dir: str | Path, split: str, source: str | None = None) -> Path:
    """Backtest a portfolio run's agent and the baselines on ``split``; returns the directory
    (files in the module docstring)."""
    run = load_portfolio_run(run_dir, source)
    out = run.run_dir / "backtest" / split
    make_dirs(out, root=run.run_dir)
    results = backtest_portfolio(run.model, run.market, split, run.config)
    per_year = periods_per_year(pd.DatetimeIndex(results["agent"].index))
    n_trials, trial_sharpes = run_selection(run.run_dir)
    compare_policies(
        results,
        per_year,
        run.config.evaluation.statistics,
        n_trials=n_trials,
        trial_sharpes=np.asarray(trial_sharpes) / np.sqrt(per_year),
    ).write(out, INSTRUMENT)
    rows = []
    for name, frame in results.items():
        frame = frame.assign(instrument=INSTRUMENT)
        with atomic_path(out / f"bars_{INSTRUMENT}_{name}.csv", root=run.run_dir) as tmp:
            frame.to_csv(tmp, index_label="timestamp")
        rows.append({"policy": name, "instrument": INSTRUMENT, **backtest_metrics(frame)})
    with atomic_path(out / "metrics.csv", root=run.run_dir) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    return out
