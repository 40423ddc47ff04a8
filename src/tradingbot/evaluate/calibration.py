"""Backtests of a VaR forecast: Kupiec's proportion of failures and Christoffersen's
independence test (likelihood ratios, chi-squared with one degree of freedom).

A *hit* is a bar whose realized return fell below the VaR forecast for it. With n bars, x hits
and VaR level p:

- Kupiec (1995): LR_pof = -2 ln[(1 - p)^(n-x) p^x] + 2 ln[(1 - x/n)^(n-x) (x/n)^x].
- Christoffersen (1998): with n_ij the number of bars in state j after a bar in state i
  (1 = hit), pi_01 = n_01 / (n_00 + n_01), pi_11 = n_11 / (n_10 + n_11) and
  pi = (n_01 + n_11) / (n - 1): LR_ind = -2 ln[(1 - pi)^(n_00+n_10) pi^(n_01+n_11)]
  + 2 ln[(1 - pi_01)^n_00 pi_01^n_01 (1 - pi_11)^n_10 pi_11^n_11].

0 ln 0 is taken as 0 (``scipy.special.xlogy``), so zero hits give LR_pof = -2 n ln(1 - p) and
LR_ind = 0. The p-value is P(chi2_1 > LR); a forecast is accepted at 95% when p > 0.05.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import xlogy

from tradingbot.evaluate.var import EXPOSURE, UNIT_RETURN, UNIT_VAR, VAR

ACCEPT_LEVEL = 0.95


def kupiec_pof(hits: int, n: int, level: float) -> tuple[float, float]:
    """Kupiec's proportion-of-failures LR and its p-value for ``hits`` of ``n`` bars at VaR
    ``level`` (NaN for no bars)."""
    if n <= 0:
        return float("nan"), float("nan")
    if not 0 <= hits <= n:
        raise ValueError(f"hits must lie in [0, n={n}], got {hits}")
    rate = hits / n
    null = xlogy(n - hits, 1.0 - level) + xlogy(hits, level)
    alternative = xlogy(n - hits, 1.0 - rate) + xlogy(hits, rate)
    lr = max(0.0, float(-2.0 * (null - alternative)))
    return lr, float(stats.chi2.sf(lr, df=1))


def kupiec_acceptance_region(n: int, level: float, accept: float = ACCEPT_LEVEL) -> tuple[int, int]:
    """The smallest and largest number of hits in ``n`` bars that Kupiec's test accepts at
    ``accept`` confidence (p-value above 1 - accept)."""
    counts = np.arange(n + 1)
    rate = counts / max(n, 1)
    null = xlogy(n - counts, 1.0 - level) + xlogy(counts, level)
    alternative = xlogy(n - counts, 1.0 - rate) + xlogy(counts, rate)
    lr = np.maximum(0.0, -2.0 * (null - alternative))
    inside = counts[stats.chi2.sf(lr, df=1) > 1.0 - accept]
    return int(inside.min()), int(inside.max())


def christoffersen_independence(hits: np.ndarray) -> tuple[float, float]:
    """Christoffersen's independence LR and its p-value for a sequence of hits (bool, in
    time order); NaN for fewer than two bars."""
    h = np.asarray(hits, dtype=bool)
    if len(h) < 2:
        return float("nan"), float("nan")
    before, after = h[:-1], h[1:]
    n00 = int((~before & ~after).sum())
    n01 = int((~before & after).sum())
    n10 = int((before & ~after).sum())
    n11 = int((before & after).sum())
    pi01 = n01 / (n00 + n01) if n00 + n01 else 0.0
    pi11 = n11 / (n10 + n11) if n10 + n11 else 0.0
    pi = (n01 + n11) / (len(h) - 1)
    null = xlogy(n00 + n10, 1.0 - pi) + xlogy(n01 + n11, pi)
    alternative = xlogy(n00, 1.0 - pi01) + xlogy(n01, pi01) + xlogy(n10, 1.0 - pi11)
    alternative += xlogy(n11, pi11)
    lr = max(0.0, float(-2.0 * (null - alternative)))
    return lr, float(stats.chi2.sf(lr, df=1))


def calibration_row(hits: np.ndarray, level: float) -> dict[str, float | int | str]:
    """One row of a calibration table: bars, hits, rate, expected rate, Kupiec's LR, p and
    acceptance region (in hits), Christoffersen's LR and p, and whether each accepts at 95%."""
    h = np.asarray(hits, dtype=bool)
    n, x = len(h), int(h.sum())
    pof_lr, pof_p = kupiec_pof(x, n, level)
    ind_lr, ind_p = christoffersen_independence(h)
    low, high = kupiec_acceptance_region(n, level) if n else (0, 0)
    return {
        "bars": n,
        "exceedances": x,
        "rate": x / n if n else float("nan"),
        "expected": level,
        "kupiec_lr": pof_lr,
        "kupiec_p": pof_p,
        "kupiec_region": f"{low}-{high}",
        "kupiec_accepts": "yes" if pof_p > 1.0 - ACCEPT_LEVEL else "no",
        "christoffersen_lr": ind_lr,
        "christoffersen_p": ind_p,
        "christoffersen_accepts": "yes" if not ind_p <= 1.0 - ACCEPT_LEVEL else "no",
    }


def calibration_table(bars: dict[str, pd.DataFrame], level: float) -> pd.DataFrame:
    """The VaR calibration of one instrument's backtest bars (policy -> bars with the columns
    ``unit_return_pct``, ``unit_var_5_pct``, ``return``, ``var_5_pct`` and ``exposure``).

    Counted bars: for the unit long position, every bar with a forecast (the instrument's
    close-to-close return against ``unit_var_5_pct``: the model's own calibration, whatever the
    policy); for each policy, the bars on which it held a non-zero exposure (its return after
    costs, in % of equity, against ``var_5_pct``). Hits of a policy are tested for independence in
    the order of those bars.
    """
    rows = []
    first = next(iter(bars.values()), None)
    if first is not None:
        ok = np.isfinite(first[UNIT_VAR].to_numpy())
        hits = first[UNIT_RETURN].to_numpy()[ok] < first[UNIT_VAR].to_numpy()[ok]
        rows.append({"series": "unit long position, every bar", **calibration_row(hits, level)})
    for policy, frame in bars.items():
        held = (frame[EXPOSURE].to_numpy() != 0) & np.isfinite(frame[VAR].to_numpy())
        if not held.any():
            continue
        realized = 100.0 * frame["return"].to_numpy()[held]
        hits = realized < frame[VAR].to_numpy()[held]
        rows.append({"series": f"{policy} position, bars held", **calibration_row(hits, level)})
    return pd.DataFrame(rows)
