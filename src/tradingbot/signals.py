"""Signals: a trained agent's positions and risk estimates for every bar of new data.

The input is validated like any data source, features are rebuilt with the run's stored
normalization, and the recurrent policy is run through each instrument's history in time
order, feeding back its own previous target position exactly as the simulator does, after
the same LSTM warm-up as ``backtest`` (:mod:`tradingbot.evaluate.warmup`). The signal at bar t
uses bars up to t only. A row is the decision made at the close of its bar
(``decision_timestamp``) for the bar it is filled at (``fill_timestamp``); its VaR and CVaR
are the GARCH forecasts for that next bar (:mod:`tradingbot.evaluate.var`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from tradingbot.algo.losses import cvar_from_quantiles, quantile_at
from tradingbot.checkpoint import model_id
from tradingbot.config_loading import load_config
from tradingbot.data.market import InstrumentSeries
from tradingbot.data.validate import DataError
from tradingbot.env.simulator import actions_to_targets, build_observations
from tradingbot.env.sizing import position_scales
from tradingbot.evaluate.runs import LoadedRun, load_run, prepare_for_run, var_model_for_run
from tradingbot.evaluate.var import (
    CVAR,
    EXPOSURE,
    UNIT_CVAR,
    UNIT_VAR,
    VAR,
    market_closes,
    next_bar_exposure,
    risk_columns,
)
from tradingbot.evaluate.warmup import warm_up
from tradingbot.portfolio_signals import compute_portfolio_signals
from tradingbot.safe_write import atomic_path, check_target

SignalFormat = Literal["csv", "parquet", "json"]
SIGNAL_COLUMNS = (
    "fill_timestamp",
    "instrument",
    "position",
    "action_mean",
    "action_std",
    EXPOSURE,
    VAR,
    CVAR,
    UNIT_VAR,
    UNIT_CVAR,
    "model_id",
)
# A seed ensemble's signals also give the spread of its members' target positions.
MEMBER_SPREAD_COLUMNS = ("position_member_std", "position_member_min", "position_member_max")


def run_model_id(paths: list[Path]) -> str:
    """:func:`model_id` of a run's model, or for a seed ensemble the first 16 hex digits of the
    sha256 of its members' ids in ``run.seeds`` order."""
    if len(paths) == 1:
        return model_id(paths[0])
    joined = ",".join(model_id(path) for path in paths)
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


def critic_columns(gamma: float, alpha: float) -> tuple[str, str, str]:
    """Names of the critic's value, ``alpha`` quantile and CVaR columns, stating what they are:
    the discounted sum of future log equity growth (log returns, not %) under the training
    policy, discount ``gamma`` (a horizon of about 1 / (1 - gamma) bars)."""
    stem = f"critic_log_return_to_go_gamma{gamma:g}"
    return f"{stem}_mean", f"{stem}_q{alpha:g}", f"{stem}_cvar{alpha:g}"


def member_spread(positions: np.ndarray) -> tuple[float, float, float]:
    """A seed ensemble's members' target positions at one bar: their std (ddof 1; NaN for one
    member), min and max (:data:`MEMBER_SPREAD_COLUMNS`)."""
    std = float(np.std(positions, ddof=1)) if len(positions) > 1 else float("nan")
    return std, float(np.min(positions)), float(np.max(positions))


def first_scored_row(
    instrument: InstrumentSeries, start: pd.Timestamp | None, warmup_bars: int, window: int
) -> int:
    """The instrument's first scored (local) row: the first usable bar at or after ``start``,
    or, without ``start``, the first usable bar after ``warmup_bars`` usable bars."""
    first_usable = instrument.first_valid + window - 1
    if start is None:
        return first_usable + warmup_bars
    return max(first_usable, int(instrument.timestamps.searchsorted(start, side="left")))


def compute_signals(
    run: LoadedRun, source: str, start: str | pd.Timestamp | None = None
) -> pd.DataFrame:
    """One row per scored bar of every instrument in ``source`` (a bundled name or a file),
    indexed by the bar the decision is made at (``decision_timestamp``).

    The LSTM is warmed up over ``evaluation.warmup_bars`` bars before the first scored bar
    (:mod:`tradingbot.evaluate.warmup`, exactly as ``backtest`` does), which is the first bar at
    or after ``start``, or else the first bar after the warm-up. Columns: the bar the decision
    is filled at (``fill_timestamp``, NaT after the last bar), instrument, the target position,
    the pre-squash action mean and std (NaN for discrete actions), the position held over the
    next bar (``exposure``), the next bar's 5% VaR and CVaR of that position and of a unit long
    position (% of equity, GARCH, see :mod:`tradingbot.evaluate.var`; NaN without a fitted
    model), the critic's return-to-go value, quantile and CVaR at ``algo.risk.alpha``
    (:func:`critic_columns`), and the model id.

    A seed ensemble (:mod:`tradingbot.evaluate.ensemble`): the position is the mean of its
    members' positions; action mean and std are those of the equal-weight mixture of the
    members' action distributions, the critic columns the members' critics averaged level by
    level, and :data:`MEMBER_SPREAD_COLUMNS` give the members' spread; the model id covers
    every member (:func:`run_model_id`).
    """
    market = prepare_for_run(run, source)
    env_cfg, warmup = run.policy_env, run.config.evaluation.warmup_bars
    alpha = run.config.algo.risk.alpha
    critic_names = critic_columns(run.config.algo.gamma, alpha)
    ident = run_model_id(run.model_files)
    continuous = not run.config.env.action == "discrete"
    spread_names = list(MEMBER_SPREAD_COLUMNS) if run.members else []
    var_model, closes = var_model_for_run(run), market_closes(market)
    begin = None if start is None else pd.Timestamp(start)
    scales = position_scales(market, env_cfg.sizing)  # None unless env.sizing is vol_scaled
    frames = []
    for inst in market.instruments:
        first = first_scored_row(inst, begin, warmup, env_cfg.window)
        if first >= inst.n_bars:
            continue
        state, episode_start = warm_up(run.model, market, inst, first, warmup, env_cfg)
        position = np.zeros(1)
        records = []
        for row in range(inst.offset + first, inst.offset + inst.n_bars):
            obs = build_observations(market.features, np.array([row]), position, env_cfg.window)
            action, state, step = run.model.predict_details(
                obs, state, episode_start, deterministic=True
            )
            position = actions_to_targets(
                action, env_cfg, None if scales is None else scales[[row]]
            )
            quantiles = step.quantiles.mean(dim=1)
            if continuous:
                mean, std = step.dist_params[0].chunk(2)
                mean_std = (float(mean[0]), float(std[0]))
            else:
                mean_std = (np.nan, np.nan)
            spread = member_spread(step.member_positions[:, 0]) if spread_names else ()
            records.append(
                (
                    position[0],
                    *mean_std,
                    float(step.value[0]),
                    float(quantile_at(quantiles, alpha)[0]),
                    float(cvar_from_quantiles(quantiles, alpha)[0]),
                    *spread,
                )
            )
            episode_start = np.zeros(1, dtype=bool)
        decision = inst.timestamps[first:]
        frame = pd.DataFrame(
            records,
            columns=["position", "action_mean", "action_std", *critic_names, *spread_names],
            index=decision,
        )
        frame.insert(0, "fill_timestamp", pd.Series(inst.timestamps[first:]).shift(-1).to_numpy())
        frame.insert(1, "instrument", inst.name)
        exposure = next_bar_exposure(frame["position"].to_numpy(), env_cfg.fill)
        if var_model is not None:
            risk = risk_columns(
                var_model.params_for(inst.name), closes[inst.name], decision, exposure
            )
        else:
            risk = pd.DataFrame(np.nan, index=decision, columns=[UNIT_VAR, UNIT_CVAR, VAR, CVAR])
            risk[EXPOSURE] = exposure
        for name in (EXPOSURE, VAR, CVAR, UNIT_VAR, UNIT_CVAR):
            frame[name] = risk[name].to_numpy()
        frame["model_id"] = ident
        frames.append(frame[[*SIGNAL_COLUMNS[:-1], *critic_names, *spread_names, "model_id"]])
    if not frames:
        raise DataError(
            f"{source}: no bar to score: every instrument has fewer usable bars than "
            f"evaluation.warmup_bars ({warmup}) + 1"
            + ("" if begin is None else f", or none at or after {begin}")
        )
    out = pd.concat(frames)
    out.index.name = "decision_timestamp"
    return out


def write_signals(
    frame: pd.DataFrame,
    out: Path,
    fmt: SignalFormat | None = None,
    protect: Iterable[Path] = (),
) -> Path:
    """Write signals as CSV, Parquet or JSON records (format from ``fmt`` or the suffix).

    The write is atomic and refused onto a link, a directory, a device, or any of ``protect``
    (see :mod:`tradingbot.safe_write`).
    """
    fmt = fmt or {".parquet": "parquet", ".pq": "parquet", ".json": "json"}.get(
        out.suffix.lower(), "csv"
    )
    with atomic_path(out, protect=protect) as tmp:
        if fmt == "parquet":
            frame.to_parquet(tmp)
        elif fmt == "json":
            frame.reset_index().to_json(tmp, orient="records", date_format="iso", indent=1)
        else:
            frame.to_csv(tmp)
    return out


def signals_for_run(
    run_dir: str | Path,
    source: str,
    out: str | Path,
    fmt: SignalFormat | None = None,
    start: str | None = None,
) -> Path:
    """Load a run safely, compute its signals on ``source`` (from ``start``) and write them to
    ``out``.

    ``out`` is checked first: it may not be the input file nor any existing file of the run
    directory (its model, config, checkpoints, backtests).
    """
    out = Path(out)
    protect = [Path(run_dir)] + ([Path(source)] if Path(source).exists() else [])
    check_target(out, protect=protect)
    if load_config(Path(run_dir) / "config.yaml").portfolio is not None:
        frame = compute_portfolio_signals(run_dir, source, start)
        return write_signals(frame, out, fmt, protect)
    return write_signals(compute_signals(load_run(run_dir), source, start), out, fmt, protect)
