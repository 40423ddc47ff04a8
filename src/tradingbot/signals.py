"""Signals: a trained agent's positions and risk estimates for every bar of new data.

The input is validated like any data source, features are rebuilt with the run's stored
normalization, and the recurrent policy is run through each instrument's history in time
order, feeding back its own previous target position exactly as the simulator does. The
signal at bar t uses bars up to t only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from tradingbot.algo.losses import cvar_from_quantiles, quantile_at
from tradingbot.env.simulator import actions_to_targets, build_observations
from tradingbot.evaluate.runs import LoadedRun, load_run, prepare_for_run
from tradingbot.safe_write import atomic_path, check_target
from tradingbot.train import MODEL_FILE

SignalFormat = Literal["csv", "parquet", "json"]
SIGNAL_COLUMNS = (
    "instrument",
    "position",
    "action_mean",
    "action_std",
    "value",
    "var",
    "cvar",
    "model_id",
)


def model_id(path: Path) -> str:
    """The first 16 hex digits of the checkpoint's sha256: which model made a signal."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def compute_signals(run: LoadedRun, source: str) -> pd.DataFrame:
    """One row per usable bar of every instrument in ``source`` (a bundled name or a file).

    Columns: instrument, the target position for the next bar, the pre-squash action mean and
    std (NaN for discrete actions), the critic's value, VaR and CVaR at ``algo.risk.alpha``
    (return units, from the twin critics' averaged quantiles), and the model id.
    """
    market = prepare_for_run(run, source)
    window, env_cfg = run.config.env.window, run.config.env
    alpha = run.config.algo.risk.alpha
    ident = model_id(run.run_dir / MODEL_FILE)
    continuous = not env_cfg.action == "discrete"
    frames = []
    for inst in market.instruments:
        first = inst.first_valid + window - 1
        rows = np.arange(inst.offset + first, inst.offset + inst.n_bars)
        if len(rows) == 0:
            continue
        state, start = None, np.ones(1, dtype=bool)
        position = np.zeros(1)
        records = np.empty((len(rows), 6))
        for i, row in enumerate(rows):
            obs = build_observations(market.features, row[None], position, window)
            action, state, step = run.model.predict_details(obs, state, start, deterministic=True)
            position = actions_to_targets(action, env_cfg)
            quantiles = step.quantiles.mean(dim=1)
            if continuous:
                mean, std = step.dist_params[0].chunk(2)
                mean_std = (float(mean[0]), float(std[0]))
            else:
                mean_std = (np.nan, np.nan)
            records[i] = (
                position[0],
                *mean_std,
                float(step.value[0]),
                float(quantile_at(quantiles, alpha)[0]),
                float(cvar_from_quantiles(quantiles, alpha)[0]),
            )
            start = np.zeros(1, dtype=bool)
        frame = pd.DataFrame(
            records, columns=list(SIGNAL_COLUMNS[1:7]), index=inst.timestamps[first:]
        )
        frame.insert(0, "instrument", inst.name)
        frame["model_id"] = ident
        frames.append(frame)
    out = pd.concat(frames)
    out.index.name = "timestamp"
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
    run_dir: str | Path, source: str, out: str | Path, fmt: SignalFormat | None = None
) -> Path:
    """Load a run safely, compute its signals on ``source`` and write them to ``out``.

    ``out`` is checked first: it may not be the input file nor any existing file of the run
    directory (its model, config, checkpoints, backtests).
    """
    out = Path(out)
    protect = [Path(run_dir)] + ([Path(source)] if Path(source).exists() else [])
    check_target(out, protect=protect)
    return write_signals(compute_signals(load_run(run_dir), source), out, fmt, protect)
