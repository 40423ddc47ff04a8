"""A seeded regime-switching market with volatility clustering and an optional known edge.

Regimes (bull, bear, choppy, crash) follow a Markov chain; within a regime the bar volatility
follows a GARCH(1, 1) recursion scaled by the regime's level. With ``predictability > 0`` an
observable AR(1) signal ``s_t`` (column ``signal``, known at the close of bar t) shifts the
expected open-to-close log return of bar t+1 by ``predictability * s_t * sigma_{t+1}``.
Overnight gaps carry no edge, so with next-open fills the best position at the close of bar t is
a function of ``s_t`` alone; :func:`oracle_positions` gives it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

REGIMES = ("bull", "bear", "choppy", "crash")
# Daily drift and volatility level of each regime.
REGIME_DRIFT = np.array([0.0006, -0.0004, 0.0, -0.004])
REGIME_VOL = np.array([0.008, 0.014, 0.011, 0.035])
# Row i: transition probabilities from regime i; persistent regimes, short crashes.
REGIME_TRANSITIONS = np.array(
    [
        [0.985, 0.006, 0.008, 0.001],
        [0.010, 0.975, 0.012, 0.003],
        [0.010, 0.008, 0.980, 0.002],
        [0.050, 0.100, 0.050, 0.800],
    ]
)
GARCH_ALPHA, GARCH_BETA = 0.08, 0.90  # persistence 0.98: clustered volatility
SIGNAL_PERSISTENCE = 0.9  # AR(1) coefficient of the predictive signal
GAP_VOL_FRACTION = 0.2  # overnight gap volatility as a fraction of the bar volatility


@dataclass(frozen=True)
class SyntheticPath:
    """One generated instrument: its bars and the hidden regime and volatility of each bar."""

    bars: pd.DataFrame
    regimes: np.ndarray
    sigma: np.ndarray


def generate_path(
    n_bars: int, rng: np.random.Generator, predictability: float, start: pd.Timestamp
) -> SyntheticPath:
    """Generate one instrument's daily bars (business days from ``start``)."""
    regimes = np.empty(n_bars, dtype=np.int64)
    regimes[0] = 0
    cumulative = REGIME_TRANSITIONS.cumsum(axis=1)
    draws = rng.random(n_bars)
    for t in range(1, n_bars):
        regimes[t] = min(int(np.searchsorted(cumulative[regimes[t - 1]], draws[t])), 3)

    shocks = rng.standard_normal(n_bars)
    omega = 1.0 - GARCH_ALPHA - GARCH_BETA  # unit long-run variance, scaled per regime
    unit_var = np.empty(n_bars)
    unit_var[0] = 1.0
    for t in range(1, n_bars):
        unit_var[t] = omega + GARCH_ALPHA * shocks[t - 1] ** 2 + GARCH_BETA * unit_var[t - 1]
    sigma = REGIME_VOL[regimes] * np.sqrt(unit_var)

    innovations = rng.standard_normal(n_bars) * np.sqrt(1.0 - SIGNAL_PERSISTENCE**2)
    signal = np.empty(n_bars)
    signal[0] = rng.standard_normal()
    for t in range(1, n_bars):
        signal[t] = SIGNAL_PERSISTENCE * signal[t - 1] + innovations[t]

    edge = np.zeros(n_bars)
    edge[1:] = predictability * signal[:-1] * sigma[1:]
    intrabar = REGIME_DRIFT[regimes] + edge + sigma * shocks
    gaps = GAP_VOL_FRACTION * sigma * rng.standard_normal(n_bars)
    log_open = np.cumsum(gaps + np.concatenate([[0.0], intrabar[:-1]])) + np.log(100.0)
    log_close = log_open + intrabar
    wick = np.abs(rng.standard_normal((2, n_bars))) * 0.5 * sigma
    open_, close = np.exp(log_open), np.exp(log_close)
    high = np.maximum(open_, close) * np.exp(wick[0])
    low = np.minimum(open_, close) * np.exp(-wick[1])
    volume = np.exp(13.0 + 20.0 * sigma + 0.3 * rng.standard_normal(n_bars))
    index = pd.bdate_range(start=start, periods=n_bars, name="timestamp")
    bars = pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume},
        index=index,
    )
    if predictability > 0:
        bars["signal"] = signal
    return SyntheticPath(bars=bars, regimes=regimes, sigma=sigma)


def generate_market(
    n_instruments: int, n_bars: int, seed: int, predictability: float, start: object
) -> dict[str, SyntheticPath]:
    """Generate ``n_instruments`` independent paths named SYN0, SYN1, ..."""
    rng = np.random.default_rng(seed)
    start_ts = pd.Timestamp(start)
    return {
        f"SYN{i}": generate_path(n_bars, rng, predictability, start_ts)
        for i in range(n_instruments)
    }


def oracle_positions(signal: np.ndarray) -> np.ndarray:
    """The best position at each close given the signal: long when it predicts a rise.

    The expected next-bar return is proportional to the signal, so before costs the
    return-maximising position in [-1, 1] is its sign.
    """
    return np.sign(signal)
