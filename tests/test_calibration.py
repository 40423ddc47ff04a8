"""VaR backtests against published tables and likelihood ratios worked by hand."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tradingbot.evaluate.calibration import (
    calibration_row,
    calibration_table,
    christoffersen_independence,
    kupiec_acceptance_region,
    kupiec_pof,
)


@pytest.mark.parametrize(
    ("n", "level", "region"),
    [
        # Kupiec's non-rejection regions at 95% confidence as tabulated in Jorion, "Value at
        # Risk" (3rd ed., table 6-3): e.g. p = 5%, T = 255 days: 6 < N < 21. (Its cell
        # p = 1%, T = 255, "N < 7", admits N = 0, which the LR rejects: -510 ln 0.99 = 5.13.)
        (255, 0.05, (7, 20)),
        (510, 0.05, (17, 35)),
        (1000, 0.05, (38, 64)),
        (510, 0.01, (2, 10)),
        (1000, 0.01, (5, 16)),
    ],
)
def test_kupiec_region_matches_jorions_table(n, level, region):
    assert kupiec_acceptance_region(n, level) == region


def test_kupiec_lr_by_hand():
    # 5 hits in 250 bars at p = 5%: -2 ln[0.95^245 0.05^5] + 2 ln[0.98^245 0.02^5].
    expected = -2 * (245 * math.log(0.95) + 5 * math.log(0.05)) + 2 * (
        245 * math.log(0.98) + 5 * math.log(0.02)
    )
    lr, p = kupiec_pof(5, 250, 0.05)
    assert lr == pytest.approx(expected, rel=1e-12)
    assert p == pytest.approx(stats.chi2.sf(expected, 1), rel=1e-12)
    # As many hits as expected: LR 0, p 1.
    assert kupiec_pof(25, 500, 0.05) == pytest.approx((0.0, 1.0), abs=1e-12)


def test_kupiec_with_zero_and_all_hits():
    # No hit in 100 bars: 0 ln 0 = 0, so LR = -2 * 100 ln 0.95 = 10.2587; rejected.
    lr, p = kupiec_pof(0, 100, 0.05)
    assert lr == pytest.approx(10.258658877510115, rel=1e-12)
    assert p == pytest.approx(stats.chi2.sf(10.258658877510115, 1)) and p < 0.05
    # Every bar a hit: LR = -2 * 100 ln 0.05.
    assert kupiec_pof(100, 100, 0.05)[0] == pytest.approx(-200 * math.log(0.05), rel=1e-12)
    assert all(math.isnan(v) for v in kupiec_pof(0, 0, 0.05))
    with pytest.raises(ValueError, match="hits"):
        kupiec_pof(5, 4, 0.05)


def test_christoffersen_by_hand():
    # Clustered: n00 = 6, n01 = 1, n10 = 1, n11 = 3; pi01 = 1/7, pi11 = 3/4, pi = 4/11.
    hits = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    null = 7 * math.log(7 / 11) + 4 * math.log(4 / 11)
    alt = 6 * math.log(6 / 7) + math.log(1 / 7) + math.log(1 / 4) + 3 * math.log(3 / 4)
    lr, p = christoffersen_independence(hits)
    assert lr == pytest.approx(-2 * (null - alt), rel=1e-12)  # 4.1803
    assert lr == pytest.approx(4.180289412842447)
    assert p == pytest.approx(stats.chi2.sf(lr, 1)) and p < 0.05
    # A hit as likely after a hit as after none (pi01 = pi11 = pi = 1/3): LR 0.
    even = np.array([0, 0, 1, 1, 0, 0, 0, 1, 0, 0], dtype=bool)
    assert christoffersen_independence(even) == pytest.approx((0.0, 1.0), abs=1e-12)


def test_christoffersen_with_zero_hits_and_short_series():
    assert christoffersen_independence(np.zeros(50, dtype=bool)) == (0.0, 1.0)
    assert christoffersen_independence(np.ones(50, dtype=bool)) == (0.0, 1.0)
    assert all(math.isnan(v) for v in christoffersen_independence(np.zeros(1, dtype=bool)))


def test_calibration_row_and_table():
    # n = 100, p = 5%: 1 hit gives LR 4.95 (rejected), 2 hits 2.43, 9 hits 2.75, 10 hits 4.13.
    row = calibration_row(np.zeros(100, dtype=bool), 0.05)
    assert row["exceedances"] == 0 and row["rate"] == 0.0 and row["kupiec_accepts"] == "no"
    assert row["christoffersen_accepts"] == "yes" and row["kupiec_region"] == "2-9"
    # A policy's hits are counted on the bars it held a position only.
    bars = pd.DataFrame(
        {
            "unit_return_pct": [-3.0, 1.0, -0.5, 2.0],
            "unit_var_5_pct": [-2.0, -2.0, -2.0, np.nan],
            "exposure": [0.5, 0.0, 1.0, 1.0],
            "return": [-0.015, 0.0, -0.03, 0.02],
            "var_5_pct": [-1.0, 0.0, -2.0, np.nan],
        }
    )
    table = calibration_table({"agent": bars}, 0.05).set_index("series")
    assert table.loc["unit long position, every bar", "bars"] == 3
    assert table.loc["unit long position, every bar", "exceedances"] == 1  # -3 < -2
    assert table.loc["agent position, bars held", "bars"] == 2  # exposure 0 and NaN left out
    assert table.loc["agent position, bars held", "exceedances"] == 2  # -1.5 < -1, -3 < -2
