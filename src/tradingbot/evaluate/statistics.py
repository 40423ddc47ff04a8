"""Statistics over the market path: bootstrap intervals, Hansen's SPA, the deflated Sharpe.

A Sharpe ratio estimated from one price history is uncertain because the history is one draw;
training seeds do not measure that. Everything here resamples the *bars* (keeping the policies'
returns on the same bars together, so a difference between two policies keeps their
correlation) with the stationary bootstrap of Politis & Romano (``arch.bootstrap``). The mean
block length comes from ``arch.bootstrap.optimal_block_length`` (Politis & White, 2004, with
Patton et al.'s correction) on the compared series and their squares (see :func:`block_length`),
unless the config fixes it.

- :func:`sharpe_intervals`: each policy's annualized Sharpe and the agent's Sharpe minus each
  baseline's, with percentile intervals.
- :func:`spa_test`: Hansen's (2005) test of superior predictive ability, the agent against all
  baselines at once. Loss per bar: ``-r_t / sd(r)`` (each series divided by its own standard
  deviation over the bars), so a loss difference has mean ``SR_agent - SR_baseline`` per bar:
  the test compares Sharpe ratios, not raw returns, and a de-levered copy of a baseline is not
  "worse" than the baseline. Null: the agent's Sharpe is no higher than the best baseline's
  (one SPA per baseline, joined by the intersection-union rule, see :func:`spa_test`): a small
  p-value says the agent beats *every* baseline. ``flat`` (all zeros) has loss 0, Sharpe 0.
- :func:`deflated_sharpe_ratio`: Bailey & Lopez de Prado (2014): the probability that the true
  Sharpe exceeds the best Sharpe expected among ``n_trials`` unskilled configurations.
- :func:`clustered_interval`: a t-interval over clusters (folds) of values averaged within each
  cluster (seeds), so repeated values of one fold do not count as independent.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from arch.bootstrap import SPA, StationaryBootstrap, optimal_block_length
from scipy import stats

EULER_GAMMA = float(np.euler_gamma)


def annualized_sharpe(returns: np.ndarray, bars_per_year: float) -> np.ndarray:
    """Sharpe ratio (mean / standard deviation with ddof 1, times sqrt(bars per year)) of each
    column of ``returns`` (a 1-d array gives a 0-d result).

    A column of zeros (flat all along, e.g. a trend rule out of the market for a whole
    resample) has Sharpe 0: no return for no risk. Any other zero-variance column gets NaN.
    """
    r = np.asarray(returns, dtype=float)
    std = r.std(axis=0, ddof=1)
    mean = r.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sharpe = np.where(std > 0, mean / std, np.where(mean == 0, 0.0, np.nan))
    return sharpe * np.sqrt(bars_per_year)


def block_length(returns: pd.DataFrame | np.ndarray) -> int:
    """Mean block length for the stationary bootstrap.

    Per column with non-zero variance, the larger of ``optimal_block_length``'s stationary
    estimates for the returns and for the squared returns (daily returns are nearly
    uncorrelated, so the first is about 1 bar, but a Sharpe ratio also depends on the variance,
    and volatility clusters); the mean over the columns, rounded, at least 1 bar.
    """
    frame = pd.DataFrame(np.asarray(returns, dtype=float))
    frame = frame.loc[:, frame.std(ddof=1) > 0]
    if frame.empty:
        return 1
    x = frame.to_numpy()
    levels = optimal_block_length(x)["stationary"].to_numpy()
    squares = optimal_block_length(x**2)["stationary"].to_numpy()
    return max(1, round(float(np.nanmean(np.fmax(levels, squares)))))


def sharpe_intervals(
    returns: pd.DataFrame,
    agent: str,
    bars_per_year: float,
    reps: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    block: int | None = None,
) -> pd.DataFrame:
    """Bootstrap intervals of every column's Sharpe and of the agent's minus each other's.

    Parameters
    ----------
    returns: per-bar simple returns after costs, one column per policy, on the same bars.
    agent: the agent's column.
    bars_per_year: annualization.
    reps: bootstrap resamples.
    seed: the bootstrap's seed.
    level: the intervals' confidence level.
    block: mean block length (default :func:`block_length` of ``returns``).

    Returns
    -------
    One row per policy (``quantity`` "sharpe") then one per baseline (``quantity``
    "agent - baseline"): ``policy``, ``quantity``, ``estimate``, ``ci_low``, ``ci_high``,
    ``block_length``, ``reps``. A column of zeros (flat) has Sharpe 0.
    """
    if agent not in returns.columns:
        raise ValueError(f"no column {agent!r} among {list(returns.columns)}")
    names = list(returns.columns)
    others = [n for n in names if n != agent]
    data = returns.to_numpy(dtype=float)
    a = names.index(agent)
    rest = [names.index(n) for n in others]
    block = block if block is not None else block_length(data)

    def statistic(x: np.ndarray) -> np.ndarray:
        sharpe = annualized_sharpe(x, bars_per_year)
        return np.concatenate([sharpe, sharpe[a] - sharpe[rest]])

    estimate = statistic(data)
    valid = np.isfinite(estimate)
    low = np.full(len(estimate), np.nan)
    high = np.full(len(estimate), np.nan)
    if valid.any():
        bootstrap = StationaryBootstrap(block, data, seed=seed)
        ci = bootstrap.conf_int(
            lambda x: statistic(x)[valid], reps=reps, method="percentile", size=level
        )
        low[valid], high[valid] = ci[0], ci[1]
    rows = [(n, "sharpe") for n in names] + [(n, "agent - baseline") for n in others]
    table = pd.DataFrame(rows, columns=["policy", "quantity"])
    table["estimate"], table["ci_low"], table["ci_high"] = estimate, low, high
    table["block_length"], table["reps"] = block, reps
    return table


def sharpe_losses(returns: pd.DataFrame) -> pd.DataFrame:
    """Per-bar losses ``-r_t / sd(r)`` (ddof 1) of each column with non-zero variance; a
    column of zeros (flat) has loss 0 (Sharpe 0); other zero-variance columns are dropped."""
    std = returns.std(ddof=1)
    zeros = (returns == 0).all()
    keep = std[(std > 0) | zeros].index
    return -returns[keep] / std[keep].where(std[keep] > 0, 1.0)


def spa_test(
    agent: pd.Series,
    baselines: pd.DataFrame,
    reps: int = 2000,
    seed: int = 0,
    block: int | None = None,
) -> dict[str, object]:
    """Whether the agent's Sharpe beats every baseline's: Hansen's SPA per baseline, joined as
    an intersection-union test.

    For each baseline k, ``arch.bootstrap.SPA`` with the baseline's Sharpe-like losses as the
    benchmark and the agent's as the one model gives ``p_k``, the p-value of "the agent's
    Sharpe is no higher than baseline k's" (Hansen's consistent p-value). The claim of skill is
    that the agent beats *all* baselines, so the joint p-value is ``max_k p_k`` (Berger's
    intersection-union test: level alpha with no multiplicity correction). An agent identical
    to a baseline has ``p_k = 1`` for it. Every test uses the same seed and block length.

    Parameters
    ----------
    agent: the agent's per-bar returns.
    baselines: the baselines' per-bar returns on the same bars (one column each).
    reps: bootstrap resamples.
    seed: the bootstrap's seed.
    block: mean block length (default :func:`block_length` of all the returns).

    Returns
    -------
    ``pvalue`` (the joint p-value), ``pvalues`` (baseline -> p_k), ``n_baselines`` and
    ``block_length``.
    """
    returns = pd.concat([agent.rename("__agent__"), baselines], axis=1)
    if returns.isna().any().any():
        raise ValueError("agent and baseline returns must cover the same bars (NaN after join)")
    losses = sharpe_losses(returns)
    if "__agent__" not in losses.columns:
        raise ValueError("the agent's returns have zero variance: SPA needs a Sharpe-like loss")
    compared = [c for c in losses.columns if c != "__agent__"]
    if not compared:
        raise ValueError("no baseline with a Sharpe ratio to test against")
    block = block if block is not None else block_length(returns.to_numpy())
    model = losses["__agent__"].to_numpy()
    pvalues: dict[str, float] = {}
    for name in compared:
        benchmark = losses[name].to_numpy()
        # A copy (or a re-levered copy: same standardized losses) never beats its original.
        if np.allclose(benchmark, model, rtol=0.0, atol=1e-12):
            pvalues[str(name)] = 1.0
            continue
        spa = SPA(benchmark, model, block_size=block, reps=reps, bootstrap="stationary", seed=seed)
        spa.compute()
        pvalues[str(name)] = float(spa.pvalues["consistent"])
    return {
        "pvalue": max(pvalues.values()),
        "pvalues": pvalues,
        "n_baselines": len(pvalues),
        "block_length": int(block),
    }


def expected_max_sharpe(n_trials: int, variance: float) -> float:
    """Expected maximum of ``n_trials`` Sharpe ratios of unskilled configurations whose
    estimates vary with ``variance`` (Bailey & Lopez de Prado, 2014, eq. 1 with SR0 = 0):
    ``sqrt(V) ((1 - g) Phi^-1(1 - 1/N) + g Phi^-1(1 - 1/(N e)))``, g Euler's constant.
    One trial: 0 (nothing to deflate)."""
    if n_trials < 1:
        raise ValueError(f"n_trials must be at least 1, got {n_trials}")
    if n_trials == 1:
        return 0.0
    z = (1.0 - EULER_GAMMA) * stats.norm.ppf(1.0 - 1.0 / n_trials) + EULER_GAMMA * stats.norm.ppf(
        1.0 - 1.0 / (n_trials * np.e)
    )
    return float(np.sqrt(variance) * z)


def deflated_sharpe_ratio(
    sharpe: float, n_bars: int, skew: float, kurtosis: float, n_trials: int, variance: float
) -> float:
    """The deflated Sharpe ratio (Bailey & Lopez de Prado, 2014, eq. 2), all in per-bar units.

    ``Phi((SR - SR0) sqrt(T - 1) / sqrt(1 - g3 SR + (g4 - 1) / 4 SR^2))`` with SR0 =
    :func:`expected_max_sharpe` ``(n_trials, variance)``.

    Parameters
    ----------
    sharpe: the selected configuration's per-bar (not annualized) Sharpe ratio.
    n_bars: T, the number of returns it was estimated from.
    skew: their skewness g3.
    kurtosis: their (non-excess) kurtosis g4.
    n_trials: N, how many configurations were tried.
    variance: the variance of the per-bar Sharpe ratios across the trials.
    """
    sr0 = expected_max_sharpe(n_trials, variance)
    denominator = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    if n_bars < 2 or denominator <= 0:
        return float("nan")
    return float(stats.norm.cdf((sharpe - sr0) * np.sqrt(n_bars - 1) / np.sqrt(denominator)))


def deflated_sharpe_of_returns(
    returns: np.ndarray, n_trials: int, trial_sharpes: np.ndarray | None = None
) -> dict[str, float]:
    """The deflated Sharpe ratio of a return series given the configurations tried.

    Parameters
    ----------
    returns: the selected configuration's per-bar returns.
    n_trials: how many configurations were tried in all.
    trial_sharpes: per-bar Sharpe ratios of the trials where known; their variance is V. With
        fewer than two, V is ``1 / (T - 1)``: the sampling variance of an unskilled Sharpe
        estimate over T bars (so SR0 is then the best of N pure-noise estimates).

    Returns
    -------
    ``dsr``, ``sharpe`` (per bar), ``sr0`` (per bar), ``n_trials``, ``trial_variance``.
    """
    r = np.asarray(returns, dtype=float)
    std = r.std(ddof=1)
    sharpe = float(r.mean() / std) if std > 0 else float("nan")
    sharpes = np.asarray([] if trial_sharpes is None else trial_sharpes, dtype=float)
    sharpes = sharpes[np.isfinite(sharpes)]
    variance = float(sharpes.var(ddof=1)) if len(sharpes) >= 2 else 1.0 / (len(r) - 1)
    dsr = deflated_sharpe_ratio(
        sharpe,
        len(r),
        float(stats.skew(r)),
        float(stats.kurtosis(r, fisher=False)),
        n_trials,
        variance,
    )
    return {
        "dsr": dsr,
        "sharpe": sharpe,
        "sr0": expected_max_sharpe(n_trials, variance),
        "n_trials": int(n_trials),
        "trial_variance": variance,
    }


def clustered_interval(
    values: np.ndarray, clusters: np.ndarray, level: float = 0.95
) -> tuple[float, float, float, int]:
    """Mean and Student-t interval over clusters of the within-cluster means.

    Returns ``(mean, low, high, n_clusters)``; NaN bounds with fewer than two clusters.
    """
    frame = pd.DataFrame({"value": np.asarray(values, dtype=float), "cluster": clusters})
    means = frame.dropna().groupby("cluster")["value"].mean().to_numpy()
    if len(means) == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(means.mean())
    if len(means) < 2:
        return mean, float("nan"), float("nan"), 1
    half = stats.t.ppf(0.5 + level / 2, len(means) - 1) * means.std(ddof=1) / np.sqrt(len(means))
    return mean, mean - half, mean + half, len(means)


def seed_spread(values: Mapping[int, float]) -> dict[str, float]:
    """Spread of one statistic over training seeds (seed noise, not market uncertainty)."""
    x = np.asarray(list(values.values()), dtype=float)
    return {
        "seeds": len(x),
        "mean": float(np.mean(x)),
        "std": float(np.std(x, ddof=1)) if len(x) > 1 else float("nan"),
        "min": float(np.min(x)),
        "max": float(np.max(x)),
    }
