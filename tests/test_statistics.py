"""Statistics over the market path, against direct calls of ``arch`` and known answers."""

import numpy as np
import pandas as pd
import pytest
from arch.bootstrap import SPA, StationaryBootstrap, optimal_block_length
from scipy import stats

from tradingbot.evaluate.statistics import (
    annualized_sharpe,
    block_length,
    clustered_interval,
    deflated_sharpe_of_returns,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    sharpe_intervals,
    sharpe_losses,
    spa_test,
)


def market(n: int = 2500, seed: int = 0) -> pd.DataFrame:
    """Baselines on the same bars: a market (Sharpe 0.1 per bar), half of it, an unrelated
    strategy with no edge, and flat."""
    rng = np.random.default_rng(seed)
    m = rng.normal(0.001, 0.01, n)
    return pd.DataFrame(
        {"buy_and_hold": m, "half": 0.5 * m, "other": rng.normal(0.0, 0.008, n), "flat": 0.0}
    )


def test_sharpe_intervals_equal_a_direct_arch_call():
    returns = market()
    returns.insert(0, "agent", returns["buy_and_hold"] * 0.3 + 0.0001)
    table = sharpe_intervals(returns, "agent", 252, reps=300, seed=7, block=5)

    def by_hand(x):
        with np.errstate(invalid="ignore"):
            sharpe = x.mean(0) / x.std(0, ddof=1) * np.sqrt(252)
        sharpe[-1] = 0.0  # flat: zeros
        return np.concatenate([sharpe, sharpe[0] - sharpe[1:]])

    direct = StationaryBootstrap(5, returns.to_numpy(), seed=7).conf_int(
        by_hand, reps=300, method="percentile"
    )
    np.testing.assert_allclose(table["ci_low"], direct[0], rtol=1e-10)
    np.testing.assert_allclose(table["ci_high"], direct[1], rtol=1e-10)
    np.testing.assert_allclose(table["estimate"], by_hand(returns.to_numpy()), rtol=1e-10)
    assert list(table["quantity"]) == ["sharpe"] * 5 + ["agent - baseline"] * 4


def test_sharpe_interval_width_matches_the_asymptotic_standard_error():
    """IID normal returns: the Sharpe estimate's standard error is sqrt((1 + SR^2 / 2) / T)
    per bar (Lo, 2002); the 95% interval is about 2 x 1.96 of it, annualized, and covers the
    true Sharpe."""
    rng = np.random.default_rng(3)
    n, sr = 5000, 0.05
    returns = pd.DataFrame({"agent": rng.normal(sr * 0.01, 0.01, n), "b": rng.normal(0, 0.01, n)})
    table = sharpe_intervals(returns, "agent", 252, reps=2000, seed=1, block=1)
    row = table.iloc[0]
    width = 2 * 1.96 * np.sqrt((1 + sr**2 / 2) / n) * np.sqrt(252)
    assert row["ci_high"] - row["ci_low"] == pytest.approx(width, rel=0.1)
    assert row["ci_low"] < sr * np.sqrt(252) < row["ci_high"]


def test_difference_intervals_on_constructed_series():
    returns = market()
    copy = returns.assign(agent=returns["buy_and_hold"])
    table = sharpe_intervals(copy, "agent", 252, reps=500, seed=0, block=5).set_index(
        ["policy", "quantity"]
    )
    same = table.loc[("buy_and_hold", "agent - baseline")]
    assert same["estimate"] == 0 and same["ci_low"] == 0 and same["ci_high"] == 0
    # Half the position: the same Sharpe on every resample, so the difference is 0 too.
    assert table.loc[("half", "agent - baseline"), "ci_high"] == pytest.approx(0, abs=1e-9)
    drift = returns.assign(agent=returns["buy_and_hold"] + 0.001)  # +1.6 Sharpe a year
    table = sharpe_intervals(drift, "agent", 252, reps=500, seed=0, block=5).set_index(
        ["policy", "quantity"]
    )
    assert table.loc[("buy_and_hold", "agent - baseline"), "ci_low"] > 0


def test_block_length_is_the_larger_estimate_of_levels_and_squares():
    returns = market().drop(columns="flat")
    levels = optimal_block_length(returns.to_numpy())["stationary"].to_numpy()
    squares = optimal_block_length(returns.to_numpy() ** 2)["stationary"].to_numpy()
    assert block_length(market()) == max(1, round(np.maximum(levels, squares).mean()))


def test_spa_equals_a_direct_arch_call():
    returns = market()
    agent = returns["buy_and_hold"] * 0.5 + np.random.default_rng(9).normal(0.0002, 0.004, 2500)
    result = spa_test(agent, returns, reps=500, seed=11, block=4)
    losses = sharpe_losses(pd.concat([agent.rename("agent"), returns], axis=1))
    for name in ("buy_and_hold", "half", "other", "flat"):
        direct = SPA(
            losses[name].to_numpy(), losses["agent"].to_numpy(), block_size=4, reps=500, seed=11
        )
        direct.compute()
        assert result["pvalues"][name] == pytest.approx(direct.pvalues["consistent"])
    assert result["pvalue"] == max(result["pvalues"].values())
    # The Sharpe-like loss: -r / sd(r), so its mean is minus the per-bar Sharpe.
    assert -losses["agent"].mean() == pytest.approx(agent.mean() / agent.std(ddof=1))
    assert (losses["flat"] == 0).all()


def test_spa_rejects_a_baseline_plus_drift_and_not_a_copy():
    returns = market()
    better = spa_test(returns["buy_and_hold"] + 0.001, returns, reps=1000, seed=0)
    assert better["pvalue"] < 0.01
    for name in ("buy_and_hold", "other"):
        copy = spa_test(returns[name], returns, reps=1000, seed=0)
        assert copy["pvalues"][name] == 1.0 and copy["pvalue"] == 1.0
    # Beating some baselines is not enough: half the market plus noise beats "other" and flat
    # clearly, but not the market's own Sharpe.
    returns = market(n=10_000)
    noisy = returns["half"] + np.random.default_rng(5).normal(0.0, 0.002, len(returns))
    some = spa_test(noisy, returns.drop(columns="half"), reps=1000, seed=0)
    assert some["pvalues"]["other"] < 0.01 and some["pvalues"]["flat"] < 0.01
    assert some["pvalues"]["buy_and_hold"] > 0.05 and some["pvalue"] > 0.05


def test_expected_max_sharpe_and_deflated_sharpe_by_hand():
    """Bailey & Lopez de Prado (2014), section 'A numerical example': 100 trials with an
    annualized Sharpe variance of 1/2, a selected annualized Sharpe of 2.5 over 5 years of daily
    returns (T = 1250) with skew -3 and kurtosis 10: SR0 ~ 0.1132 per day and DSR ~ 0.90."""
    variance = 0.5 / 252
    # (1 - 0.5772) * Phi^-1(0.99) + 0.5772 * Phi^-1(1 - 1/(100 e)) = 0.4228 * 2.3263 +
    # 0.5772 * 2.6804 = 2.5307; times sqrt(0.5 / 252) = 0.044544 -> 0.11273
    assert expected_max_sharpe(100, variance) == pytest.approx(0.11273, abs=2e-5)
    sr = 2.5 / np.sqrt(252)  # 0.157485
    # (0.157485 - 0.11273) sqrt(1249) / sqrt(1 + 3 * 0.157485 + 9/4 * 0.157485^2)
    #   = 0.044755 * 35.3412 / 1.236227 = 1.2795
    dsr = deflated_sharpe_ratio(sr, 1250, -3.0, 10.0, 100, variance)
    assert dsr == pytest.approx(stats.norm.cdf(1.2795), abs=2e-4)
    assert dsr == pytest.approx(0.90, abs=0.01)  # the paper's rounded answer
    assert expected_max_sharpe(1, variance) == 0.0
    assert deflated_sharpe_ratio(sr, 1250, -3.0, 10.0, 1, variance) > 0.99  # nothing to deflate


def test_deflated_sharpe_of_returns_falls_with_more_trials():
    r = np.random.default_rng(0).normal(0.0005, 0.01, 2000)
    one, many = deflated_sharpe_of_returns(r, 1), deflated_sharpe_of_returns(r, 50)
    assert one["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1))
    assert many["trial_variance"] == pytest.approx(1 / 1999)  # no trial Sharpes given
    assert many["dsr"] < one["dsr"]
    with pytest.raises(ValueError, match="n_trials"):
        expected_max_sharpe(0, 1.0)


def test_clustered_interval_averages_seeds_within_a_fold_first():
    """Eleven folds with five identical seeds each: the interval is the t-interval of the
    eleven fold values, not of 55 'independent' ones."""
    fold_values = np.array([-0.9, 2.1, 1.0, 0.1, 1.5, 2.6, 0.8, -0.1, 0.9, 1.7, -0.6])
    values, folds = np.repeat(fold_values, 5), np.repeat(np.arange(11), 5)
    mean, low, high, n = clustered_interval(values, folds)
    half = stats.t.ppf(0.975, 10) * fold_values.std(ddof=1) / np.sqrt(11)
    assert n == 11 and mean == pytest.approx(fold_values.mean())
    assert (low, high) == pytest.approx((mean - half, mean + half))


def test_annualized_sharpe_conventions():
    x = np.array([[0.01, 0.0], [-0.005, 0.0], [0.02, 0.0]])
    expected = np.mean(x[:, 0]) / np.std(x[:, 0], ddof=1) * np.sqrt(252)
    np.testing.assert_allclose(annualized_sharpe(x, 252), [expected, 0.0])
    assert np.isnan(annualized_sharpe(np.full(4, 0.01), 252))  # riskless non-zero return
