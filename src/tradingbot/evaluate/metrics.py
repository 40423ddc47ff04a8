"""Performance metrics of a per-bar return series.

Return, risk and ratio metrics come from empyrical-reloaded; what it does not have (turnover,
exposure, hit rate and the probabilistic Sharpe ratio of Bailey & Lopez de Prado, 2012) is
written here as small functions.
"""

from __future__ import annotations

import empyrical
import numpy as np
from scipy import stats

# Annualization follows the data's calendar (weekends: 365 days; intraday: x bars per date).
from tradingbot.data.calendar import periods_per_year  # noqa: F401 (re-exported)


def probabilistic_sharpe_ratio(returns: np.ndarray, benchmark_sharpe: float = 0.0) -> float:
    """Probability that the true per-bar Sharpe ratio exceeds ``benchmark_sharpe``.

    PSR = Phi((SR - SR*) sqrt(n - 1) / sqrt(1 - g3 SR + (g4 - 1) / 4 SR^2)), with SR the
    per-bar (not annualized) Sharpe ratio, g3 the skewness and g4 the (non-excess) kurtosis.
    """
    r = np.asarray(returns, dtype=float)
    if len(r) < 3 or r.std(ddof=1) == 0:
        return float("nan")
    sr = r.mean() / r.std(ddof=1)
    skew = stats.skew(r)
    kurt = stats.kurtosis(r, fisher=False)
    denom = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2
    if denom <= 0:
        return float("nan")
    return float(stats.norm.cdf((sr - benchmark_sharpe) * np.sqrt(len(r) - 1) / np.sqrt(denom)))


def performance_metrics(
    returns: np.ndarray,
    positions: np.ndarray,
    trades: np.ndarray,
    annualization: float,
) -> dict[str, float]:
    """Metrics of one backtest.

    Parameters
    ----------
    returns: simple returns per bar after costs (equity_t / equity_{t-1} - 1).
    positions: the position held over each bar.
    trades: position change at each bar's fill.
    annualization: bars per year.

    A comparison with a benchmark's Sharpe needs the benchmark's uncertainty too: see the
    bootstrap difference in :mod:`tradingbot.evaluate.statistics`.
    """
    r = np.asarray(returns, dtype=float)
    positions = np.asarray(positions, dtype=float)
    held = positions != 0
    years = len(r) / annualization
    out = {
        "total_return": float(empyrical.cum_returns_final(r)),
        "annual_return": float(empyrical.annual_return(r, annualization=annualization)),
        "annual_volatility": float(empyrical.annual_volatility(r, annualization=annualization)),
        "sharpe": float(empyrical.sharpe_ratio(r, annualization=annualization)),
        "sortino": float(empyrical.sortino_ratio(r, annualization=annualization)),
        "calmar": float(empyrical.calmar_ratio(r, annualization=annualization)),
        "max_drawdown": float(empyrical.max_drawdown(r)),
        "cvar_5": float(empyrical.conditional_value_at_risk(r, cutoff=0.05)),
        # Annual turnover: traded notional as a multiple of equity per year.
        "turnover": float(np.abs(trades).sum() / years) if years > 0 else float("nan"),
        "exposure": float(np.abs(positions).mean()),
        "hit_rate": float((r[held] > 0).mean()) if held.any() else float("nan"),
        "psr": probabilistic_sharpe_ratio(r),
    }
    return out
