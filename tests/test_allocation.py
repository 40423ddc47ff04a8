"""Allocation baselines against skfolio called directly on the same window; momentum by hand."""

from __future__ import annotations

import numpy as np
import pytest

from tradingbot.config import DataConfig, EnvConfig, PortfolioConfig
from tradingbot.config_portfolio import AllocationBaselineConfig
from tradingbot.data.portfolio import load_portfolio
from tradingbot.evaluate.allocation import (
    baseline_rules,
    decision_rows,
    index_closes,
    momentum_weights,
    run_allocation_baselines,
)


@pytest.fixture(scope="module")
def universe():
    return load_portfolio(DataConfig(source="sp500_universe"))


def test_baselines_match_skfolio_on_the_same_window(universe) -> None:
    from skfolio.datasets import load_sp500_dataset
    from skfolio.optimization import (
        EqualWeighted,
        HierarchicalRiskParity,
        InverseVolatility,
        MeanRisk,
    )
    from skfolio.preprocessing import prices_to_returns

    prices = load_sp500_dataset()
    t, window = 4000, 252
    # skfolio's own returns of the window that ends at the close of bar t (inclusive).
    returns = prices_to_returns(prices.iloc[t - window : t + 1])
    assert len(returns) == window
    rules = baseline_rules(AllocationBaselineConfig(estimation_window=window))
    reference = {
        "equal_weight": EqualWeighted(),
        "inverse_volatility": InverseVolatility(),
        "hrp": HierarchicalRiskParity(),
        "min_variance": MeanRisk(),
    }
    for name, estimator in reference.items():
        expected = estimator.fit(returns).weights_
        got = rules[name](universe.close, t)
        assert got == pytest.approx(expected, abs=1e-6), name
        assert got.sum() == pytest.approx(1.0)
    # 60 bars later the window has moved: the estimate changes (a window fixed by mistake fails).
    assert not np.allclose(
        rules["min_variance"](universe.close, t + 60), rules["min_variance"](universe.close, t)
    )


def test_momentum_is_twelve_minus_one_top_third() -> None:
    # 6 assets, lookback 4, skip 1: return from close[t-4] to close[t-1]; the last bar is ignored.
    close = np.ones((6, 6))
    close[1] = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # t - 4 = 1 for t = 5
    close[4] = [1.5, 0.9, 1.2, 2.0, 1.1, 1.0]  # t - 1 = 4
    close[5] = [0.1, 9.0, 9.0, 0.1, 9.0, 9.0]  # bar t itself (skipped)
    weights = momentum_weights(close, 5, lookback=4, skip=1, fraction=1 / 3)
    assert weights == pytest.approx([0.5, 0, 0, 0.5, 0, 0])  # top 2 of 6: assets 3 and 0


def test_baselines_use_past_bars_only(universe) -> None:
    rules = baseline_rules(AllocationBaselineConfig())
    t = 5000
    changed = universe.close.copy()
    changed[t + 1 :] *= np.random.default_rng(0).uniform(0.5, 1.5, size=changed[t + 1 :].shape)
    for name, rule in rules.items():
        assert rule(changed, t) == pytest.approx(rule(universe.close, t)), name


def test_baseline_backtests_share_bars_and_schedule(universe) -> None:
    cfg = PortfolioConfig(rebalance_every=21)
    env_cfg = EnvConfig(commission_bps=5.0, slippage_bps=5.0)
    out = run_allocation_baselines(universe, "test", env_cfg, cfg, index_closes(universe))
    assert set(out) == {
        "equal_weight",
        "inverse_volatility",
        "hrp",
        "min_variance",
        "momentum",
        "index",
    }
    lo, hi = universe.rows("test")
    rows = decision_rows(lo, hi, 21)
    for name, frame in out.items():
        assert frame.index.equals(out["equal_weight"].index), name
        # Trades happen only at the fills (the close after each decision bar).
        traded = np.flatnonzero(frame["trade"].to_numpy() > 0)
        assert set(traded) <= set(rows - rows[0]), name
    # The index held fully: its returns are the index's own after one entry cost of 10 bps.
    index = index_closes(universe)
    frame = out["index"]
    first = universe.timestamps.get_loc(frame.index[1])
    assert frame["return"].iloc[1:5].to_numpy() == pytest.approx(
        index[first : first + 4] / index[first - 1 : first + 3] - 1
    )
    assert frame["equity"].iloc[0] == pytest.approx(1 - 0.001)
