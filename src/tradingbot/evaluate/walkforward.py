"""Walk-forward evaluation over folds and seeds, with confidence intervals and regimes.

For each fold the feature normalization is fitted on the fold's training dates only, an agent
is trained there for every seed, and the agent and the baselines are backtested on the fold's
test dates. Metrics are summarized as mean and 95% confidence interval over (fold, seed), and
the test bars are broken down by volatility regime: VIX < 15, 15-25, 25-40, > 40 where VIX
covers the dates, otherwise terciles of trailing realized volatility.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from tradingbot.config import TradingConfig
from tradingbot.data.features import feature_lookback
from tradingbot.data.market import prepare_market
from tradingbot.data.sources import load_market, load_vix_close
from tradingbot.data.splits import union_index, walk_forward_folds
from tradingbot.env.simulator import make_action_space
from tradingbot.env.vec_env import MarketVecEnv
from tradingbot.evaluate.backtest import ConstantPolicy, backtest_metrics, run_backtest
from tradingbot.evaluate.metrics import performance_metrics, periods_per_year
from tradingbot.evaluate.runs import BASELINES
from tradingbot.run import create_run_dir
from tradingbot.runtime import configure_process
from tradingbot.safe_write import atomic_path, make_dirs
from tradingbot.train import build_model

VIX_BINS = (0.0, 15.0, 25.0, 40.0, np.inf)
VIX_LABELS = ("VIX<15", "VIX 15-25", "VIX 25-40", "VIX>40")
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


def summarize(folds: pd.DataFrame) -> pd.DataFrame:
    """Per policy and metric: mean and 95% CI over every (fold, seed, instrument) row."""
    metric_columns = [
        c
        for c in folds.columns
        if c not in ("fold", "seed", "policy", "instrument", "test_start", "test_end")
    ]
    rows = []
    for policy, group in folds.groupby("policy", sort=False):
        for metric in metric_columns:
            mean, low, high = mean_confidence_interval(group[metric].to_numpy())
            rows.append(
                {
                    "policy": policy,
                    "metric": metric,
                    "n": int(group[metric].notna().sum()),
                    "mean": mean,
                    "ci_low": low,
                    "ci_high": high,
                }
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


def walk_forward(config: TradingConfig, seeds: list[int] | None = None) -> Path:
    """Train and test across walk-forward folds and seeds; write ``evaluation/`` tables.

    Returns the run directory, which holds ``evaluation/folds.csv`` (one row per fold, seed,
    policy and instrument), ``summary.csv`` (mean and 95% CI per policy and metric),
    ``regimes.csv`` and each test backtest's bars under ``evaluation/bars/``.
    """
    seeds = seeds if seeds is not None else config.evaluation.seeds
    configure_process(config.run)
    min_rows = feature_lookback(config.data.features) + config.env.window + 1
    data = load_market(
        config.data.source,
        config.data.synthetic,
        config.data.instruments,
        min_rows,
        config.data.timestamp_unit,
    )
    folds = walk_forward_folds(
        union_index([b.index for b in data.bars.values()]), config.data.walk_forward
    )
    run_dir = create_run_dir(config)
    out = run_dir / "evaluation"
    make_dirs(out / "bars", root=run_dir)
    space = make_action_space(config.env)
    rows, pooled = [], []
    for fold in folds:
        market = prepare_market(data, config.data, config.env.window, fit_on=fold.train)
        for seed in seeds:
            env = MarketVecEnv(market, fold.train, config.env, seed=seed)
            model = build_model(
                config.model_copy(update={"run": config.run.model_copy(update={"seed": seed})}), env
            )
            model.learn(config.run.total_timesteps)
            for inst in market.instruments:
                policies = {"agent": model} | {
                    name: ConstantPolicy(pos, space) for name, pos in BASELINES.items()
                }
                results = {
                    name: run_backtest(
                        p, market, fold.test, config.env, inst.name, config.evaluation.warmup_bars
                    )
                    for name, p in policies.items()
                }
                for name, bars in results.items():
                    name_csv = f"fold{fold.index}_seed{seed}_{inst.name}_{name}.csv"
                    with atomic_path(out / "bars" / name_csv, root=run_dir) as tmp:
                        bars.to_csv(tmp)
                    benchmark = results["buy_and_hold"] if name == "agent" else None
                    rows.append(
                        {
                            "fold": fold.index,
                            "seed": seed,
                            "policy": name,
                            "instrument": inst.name,
                            "test_start": fold.test.start,
                            "test_end": fold.test.end,
                            **backtest_metrics(bars, benchmark),
                        }
                    )
                    pooled.append(
                        bars.assign(
                            policy=name,
                            annualization=periods_per_year(pd.DatetimeIndex(bars.index)),
                        )
                    )
    table = pd.DataFrame(rows)
    with atomic_path(out / "folds.csv", root=run_dir) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(out / "summary.csv", root=run_dir) as tmp:
        summarize(table).to_csv(tmp, index=False)
    test_bars = pd.concat(pooled)
    closes = {name: bars["close"] for name, bars in data.bars.items()}
    test_bars["regime"] = label_regimes(test_bars, closes)
    with atomic_path(out / "regimes.csv", root=run_dir) as tmp:
        regime_table(test_bars).to_csv(tmp, index=False)
    return run_dir
