"""Evaluating a run directory: load its model safely, backtest it and its baselines."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradingbot.algo.ppo import DistributionalPPO
from tradingbot.config import EnvConfig, TradingConfig
from tradingbot.config_loading import load_config
from tradingbot.data.features import FeatureNormalizer, feature_lookback
from tradingbot.data.market import PreparedMarket, prepare_market
from tradingbot.data.sources import load_market
from tradingbot.errors import UserError
from tradingbot.evaluate.backtest import backtest_metrics, run_backtest
from tradingbot.evaluate.baselines import agent_exposure, run_baselines
from tradingbot.evaluate.calibration import calibration_table
from tradingbot.evaluate.comparison import compare_policies
from tradingbot.evaluate.ensemble import EnsemblePolicy, seed_spread_rows
from tradingbot.evaluate.metrics import periods_per_year
from tradingbot.evaluate.selection import run_selection
from tradingbot.evaluate.var import (
    VAR_LEVEL,
    VAR_MODEL_FILE,
    VarModel,
    add_risk_columns,
    fit_market_var_model,
    market_closes,
)
from tradingbot.normalization_file import load_normalizer
from tradingbot.portfolio_run import backtest_portfolio_run
from tradingbot.safe_write import atomic_path, make_dirs
from tradingbot.train import MODEL_FILE, NORMALIZATION_FILE, check_run_layout, member_dir

SEED_SPREAD_FILE = "seed_spread.csv"  # a seed ensemble's backtest beside its single seeds
SPREAD_METRICS = ("sharpe", "annual_return", "max_drawdown", "cvar_5", "turnover")


@dataclass
class LoadedRun:
    """A run directory's config, policy and feature normalization.

    ``model`` is the run's policy: its model, or for a seed ensemble (``run.seeds``) the
    :class:`~tradingbot.evaluate.ensemble.EnsemblePolicy` of ``members`` (in ``run.seeds``
    order; empty for a plain run), stepped in the environment :attr:`policy_env`.
    """

    run_dir: Path
    config: TradingConfig
    model: DistributionalPPO | EnsemblePolicy
    normalizer: FeatureNormalizer
    members: list[DistributionalPPO] = field(default_factory=list)

    @property
    def policy_env(self) -> EnvConfig:
        """The environment config the run's policy is stepped in (an ensemble's action is its
        target position: :func:`~tradingbot.evaluate.ensemble.position_env_config`)."""
        if isinstance(self.model, EnsemblePolicy):
            return self.model.env_config
        return self.config.env

    @property
    def model_files(self) -> list[Path]:
        """The run's model file, or its ensemble members' in ``run.seeds`` order."""
        return model_files(self.run_dir, self.config)


def model_files(run_dir: Path, config: TradingConfig) -> list[Path]:
    """Where a run's model is (``model.safetensors``), or a seed ensemble's members'
    (``members/seed_<k>/model.safetensors`` for each of ``run.seeds``)."""
    if config.run.seeds is None:
        return [run_dir / MODEL_FILE]
    return [member_dir(run_dir, seed) / MODEL_FILE for seed in config.run.seeds]


def load_run(run_dir: str | Path) -> LoadedRun:
    """Load a run directory written by ``tradingbot train``."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no config.yaml)")
    config = load_config(run_dir / "config.yaml")
    check_run_layout(run_dir, config)
    models = [DistributionalPPO.load(path) for path in model_files(run_dir, config)]
    normalizer = load_normalizer(run_dir / NORMALIZATION_FILE, config.data.features.clip)
    if config.run.seeds is None:
        return LoadedRun(run_dir, config, models[0], normalizer)
    ensemble = EnsemblePolicy(models, config.env, config.run.seeds)
    return LoadedRun(run_dir, config, ensemble, normalizer, members=models)


def prepare_for_run(run: LoadedRun, source: str | None = None) -> PreparedMarket:
    """The run's data (or ``source``) with the run's stored feature normalization."""
    cfg = (
        run.config.data if source is None else run.config.data.model_copy(update={"source": source})
    )
    min_rows = feature_lookback(cfg.features) + run.config.env.window + 1
    data = load_market(
        cfg.source,
        cfg.synthetic,
        cfg.instruments if source is None else None,
        min_rows,
        cfg.timestamp_unit,
    )
    return prepare_market(data, cfg, run.config.env.window, normalizer=run.normalizer)


def var_model_for_run(run: LoadedRun, store: bool = False) -> VarModel | None:
    """The run's GARCH VaR parameters (``var_model.json``), or, for a run that has none,
    refitted from the run's own training split (and written there when ``store``); None when
    the training split is too short for a fit."""
    path = run.run_dir / VAR_MODEL_FILE
    if path.is_file():
        return VarModel.load(path)
    try:
        model = fit_market_var_model(prepare_for_run(run))
    except ValueError:
        return None
    if store:
        model.save(path)
    return model


class RecordingAgent:
    """A run's model as a predictor that keeps what the critic said at each bar.

    ``records`` gets, per call, the twin critics' quantiles averaged and sorted (return units)
    and the value.
    """

    def __init__(self, model: DistributionalPPO | EnsemblePolicy) -> None:
        self.model = model
        self.quantiles: list[np.ndarray] = []
        self.values: list[float] = []
        # an ensemble's flat start after the warm-up (tradingbot.evaluate.warmup)
        self.start_flat = getattr(model, "start_flat", None)

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, Any]:
        actions, new_state, step = self.model.predict_details(
            observation, state, episode_start, deterministic=deterministic
        )
        quantiles = step.quantiles.mean(dim=1).sort(dim=-1).values
        self.quantiles.append(quantiles[0].numpy().astype(np.float64))
        self.values.append(float(step.value[0]))
        return actions, new_state


def backtest_run(
    run_dir: str | Path,
    split: str = "test",
    source: str | None = None,
    attack: str | None = None,
    epsilon: float = 0.1,
    attack_steps: int = 10,
) -> Path:
    """Backtest a run's agent and the baselines on ``split`` of every instrument.

    Writes ``backtest/<split>/bars_<instrument>_<policy>.csv`` (the agent's with the critic's
    quantiles ``q_0..q_{N-1}``; every baseline of :mod:`tradingbot.evaluate.baselines`; each
    bar's GARCH VaR and CVaR, see :mod:`tradingbot.evaluate.var`), ``metrics.csv``,
    ``var_calibration.csv`` (tested by
    :func:`~tradingbot.evaluate.calibration.calibration_table`), and per instrument the agent
    beside the baselines with bootstrap intervals, SPA and deflated Sharpe
    (``statistics_<instrument>.csv``, ``tests_<instrument>.json``, see
    :mod:`tradingbot.evaluate.comparison`); returns that directory. The agent's LSTM is warmed
    up over ``evaluation.warmup_bars`` bars before the split.

    With ``attack`` (``pgd`` or ``random``, see :mod:`tradingbot.evaluate.attack`) the agent is
    also run with its observations perturbed within ``epsilon`` (normalized feature units) as
    policy ``agent_<attack>``, next to the clean agent, in ``backtest/<split>_<attack>_eps<E>``.
    """
    if load_config(Path(run_dir) / "config.yaml").portfolio is not None:
        if attack is not None:
            raise UserError(
                f"{run_dir}: --attack perturbs a single-instrument agent's observations; this "
                "run is a portfolio run (config.portfolio), which it does not cover"
            )
        return backtest_portfolio_run(run_dir, split, source)
    run = load_run(run_dir)
    market = prepare_for_run(run, source)
    out = run.run_dir / "backtest" / split
    if attack is not None:
        from tradingbot.evaluate.attack import ATTACKS

        if attack not in ATTACKS:
            raise UserError(f"unknown attack {attack!r}; choose one of {', '.join(ATTACKS)}")
        if run.members:
            raise UserError(
                f"{run.run_dir}: --attack perturbs one model's observations; this run is a seed "
                "ensemble (run.seeds), which it does not cover"
            )
        out = run.run_dir / "backtest" / f"{split}_{attack}_eps{epsilon:g}"
    make_dirs(out, root=run.run_dir)
    env_cfg = run.config.env
    evaluation = run.config.evaluation
    n_trials, trial_sharpes = selection_of(run)
    rows = []
    warmup = evaluation.warmup_bars
    var_model, closes, calibration = var_model_for_run(run, store=True), market_closes(market), []
    spread: list[dict[str, Any]] = []
    for inst in market.instruments:
        agent = RecordingAgent(run.model)
        bars = run_backtest(agent, market, split, run.policy_env, inst.name, warmup)
        quantiles = np.stack(agent.quantiles)[-len(bars) :]  # the warm-up's calls come first
        for i in range(quantiles.shape[1]):
            bars[f"q_{i}"] = quantiles[:, i]
        baselines = run_baselines(
            market, split, env_cfg, inst.name, evaluation.baselines, agent_exposure(bars)
        )
        results = {"agent": bars, **baselines}
        per_year = periods_per_year(pd.DatetimeIndex(bars.index))
        compare_policies(
            results,
            per_year,
            evaluation.statistics,
            n_trials=n_trials,
            trial_sharpes=np.asarray(trial_sharpes) / np.sqrt(per_year),
        ).write(out, inst.name)
        if attack is not None:
            results[f"agent_{attack}"] = _attacked_bars(
                run, market, split, inst.name, attack, epsilon, attack_steps
            )
        if var_model is not None:
            params = var_model.params_for(inst.name)
            results = {
                name: add_risk_columns(frame, params, closes[inst.name], env_cfg.fill)
                for name, frame in results.items()
            }
            table = calibration_table(results, VAR_LEVEL)
            calibration.append(table.assign(instrument=inst.name))
        members = member_backtests(run, market, split, inst.name)
        for name, frame in (results | members).items():
            with atomic_path(out / f"bars_{inst.name}_{name}.csv", root=run.run_dir) as tmp:
                frame.to_csv(tmp)
            rows.append({"policy": name, "instrument": inst.name, **backtest_metrics(frame)})
        if members:
            spread.extend(
                {"instrument": inst.name, **row}
                for row in seed_spread_rows(
                    backtest_metrics(bars),
                    {s: backtest_metrics(members[f"seed_{s}"]) for s in run.model.seeds},
                    SPREAD_METRICS,
                )
            )
    with atomic_path(out / "metrics.csv", root=run.run_dir) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    if spread:
        with atomic_path(out / SEED_SPREAD_FILE, root=run.run_dir) as tmp:
            pd.DataFrame(spread).to_csv(tmp, index=False)
    if calibration:
        table = pd.concat(calibration, ignore_index=True)
        columns = ["instrument", *(c for c in table.columns if c != "instrument")]
        with atomic_path(out / "var_calibration.csv", root=run.run_dir) as tmp:
            table[columns].to_csv(tmp, index=False)
    return out


def member_backtests(
    run: LoadedRun, market: PreparedMarket, split: str, instrument: str
) -> dict[str, pd.DataFrame]:
    """Each seed ensemble member's own backtest (policy ``seed_<k>``; none for a plain run),
    run alone in the run's environment after the same warm-up as the ensemble."""
    if not isinstance(run.model, EnsemblePolicy):
        return {}
    warmup = run.config.evaluation.warmup_bars
    return {
        f"seed_{seed}": run_backtest(member, market, split, run.config.env, instrument, warmup)
        for seed, member in zip(run.model.seeds, run.members, strict=True)
    }


def selection_of(run: LoadedRun) -> tuple[int, list[float]]:
    """How many configurations were tried to arrive at the run's config, and their annualized
    Sharpe ratios where recorded (:func:`~tradingbot.evaluate.selection.run_selection`)."""
    return run_selection(run.run_dir)


def _attacked_bars(
    run: LoadedRun,
    market: PreparedMarket,
    split: str,
    instrument: str,
    attack: str,
    epsilon: float,
    steps: int,
) -> pd.DataFrame:
    """The agent's backtest bars with its observations under ``attack`` (with the attack's
    per-bar KL(clean || perturbed) of the action distributions as column ``attack_kl``)."""
    from tradingbot.evaluate.attack import AttackedPredictor, ObservationAttack

    threat = ObservationAttack(run.model, epsilon, kind=attack, steps=steps)  # type: ignore[arg-type]
    bars = run_backtest(
        AttackedPredictor(run.model, threat),
        market,
        split,
        run.config.env,
        instrument,
        run.config.evaluation.warmup_bars,
    )
    bars["attack_kl"] = threat.kls[-len(bars) :]  # after the warm-up's
    return bars
