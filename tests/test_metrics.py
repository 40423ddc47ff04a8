"""Metrics on a short hand-written return series, each worked out by hand."""

import math

import numpy as np
import pytest
from scipy.stats import norm

from tradingbot.evaluate.metrics import (
    performance_metrics,
    probabilistic_sharpe_ratio,
)

R = np.array([0.01, -0.02, 0.03, 0.0, -0.01, 0.02])
POS = np.array([1.0, 1.0, 0.5, 0.0, -1.0, 1.0])
TRADES = np.array([1.0, 0.0, -0.5, -0.5, -1.0, 2.0])


@pytest.fixture
def m():
    return performance_metrics(R, POS, TRADES, annualization=252)


def test_return_metrics(m):
    total = 1.01 * 0.98 * 1.03 * 1.0 * 0.99 * 1.02 - 1
    assert m["total_return"] == pytest.approx(total, rel=1e-12)
    assert m["annual_return"] == pytest.approx((1 + total) ** (252 / 6) - 1, rel=1e-9)


def test_risk_metrics(m):
    mean = sum(R) / 6  # 0.005
    var = sum((x - mean) ** 2 for x in R) / 5
    assert m["annual_volatility"] == pytest.approx(math.sqrt(var) * math.sqrt(252), rel=1e-12)
    assert m["sharpe"] == pytest.approx(mean / math.sqrt(var) * math.sqrt(252), rel=1e-12)
    downside = math.sqrt((0.02**2 + 0.01**2) / 6) * math.sqrt(252)
    assert m["sortino"] == pytest.approx(mean * 252 / downside, rel=1e-12)
    # Equity 1.01, 0.9898, 1.019494, 1.019494, 1.00929906, 1.0294850...: the worst fall is
    # from the peak 1.01 to 0.9898.
    assert m["max_drawdown"] == pytest.approx(0.9898 / 1.01 - 1, rel=1e-12)
    assert m["calmar"] == pytest.approx(m["annual_return"] / (1 - 0.9898 / 1.01), rel=1e-12)
    assert m["cvar_5"] == pytest.approx(-0.02)  # the worst 5% of six bars: the single worst


def test_trading_metrics(m):
    assert m["turnover"] == pytest.approx(5.0 / (6 / 252))  # 5 units traded in 6/252 years
    assert m["exposure"] == pytest.approx(4.5 / 6)
    # Bars with a position: returns 0.01, -0.02, 0.03, -0.01, 0.02 -> 3 of 5 positive.
    assert m["hit_rate"] == pytest.approx(3 / 5)


def test_psr_symmetric_series_known_value():
    # Symmetric around its mean: skewness 0, so PSR = Phi(SR sqrt(n-1) / sqrt(1 + (k-1)/4 SR^2)).
    r = np.array([0.03, -0.01, 0.01, 0.01, 0.05, -0.03, 0.01, 0.01])
    mean = r.mean()
    z = r - mean
    sr = mean / math.sqrt((z**2).sum() / 7)
    kurt = (z**4).mean() / (z**2).mean() ** 2
    expected = norm.cdf(sr * math.sqrt(7) / math.sqrt(1 + (kurt - 1) / 4 * sr**2))
    assert probabilistic_sharpe_ratio(r) == pytest.approx(expected, rel=1e-12)
    assert probabilistic_sharpe_ratio(r, benchmark_sharpe=sr) == pytest.approx(0.5)
