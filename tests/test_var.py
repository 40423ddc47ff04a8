"""GARCH VaR: parameters from arch, the forecast recursion by hand, tails from scipy."""

import numpy as np
import pandas as pd
import pytest
from arch import arch_model
from arch.univariate import StudentsT
from scipy import integrate, stats

from tradingbot.evaluate.calibration import kupiec_pof
from tradingbot.evaluate.var import (
    GarchParams,
    VarModel,
    fit_garch,
    fit_var_model,
    next_bar_forecast,
    percent_returns,
    position_var_cvar,
    standardized_t_tail,
)

TRUE = GarchParams(mu=0.05, omega=0.02, alpha=0.08, beta=0.9, nu=6.0)


def simulate(params: GarchParams, n: int, seed: int) -> np.ndarray:
    """Percent returns simulated by arch with known parameters."""
    model = arch_model(None, mean="Constant", vol="GARCH", p=1, q=1, dist="t")
    model.distribution = StudentsT(seed=np.random.default_rng(seed))
    sim = model.simulate([params.mu, params.omega, params.alpha, params.beta, params.nu], n)
    return sim["data"].to_numpy()


def prices(returns_pct: np.ndarray) -> np.ndarray:
    return 100.0 * np.cumprod(np.append(1.0, 1.0 + returns_pct / 100.0))


def test_fit_recovers_simulated_parameters():
    fitted = fit_garch(simulate(TRUE, 8000, seed=1))
    assert fitted.alpha == pytest.approx(TRUE.alpha, abs=0.03)
    assert fitted.beta == pytest.approx(TRUE.beta, abs=0.04)
    assert fitted.nu == pytest.approx(TRUE.nu, abs=1.5)
    assert fitted.mu == pytest.approx(TRUE.mu, abs=0.04)


def test_forecast_is_the_garch_recursion_one_step_ahead():
    close = prices(simulate(TRUE, 300, seed=2))
    r = percent_returns(close)
    mean, std = next_bar_forecast(TRUE, close)
    p = TRUE
    variance = [p.omega + (p.alpha + p.beta) * p.omega / (1 - p.alpha - p.beta)]
    for t in range(1, len(close)):  # the forecast made at bar t uses the return of bar t
        variance.append(p.omega + p.alpha * (r[t - 1] - p.mu) ** 2 + p.beta * variance[-1])
    np.testing.assert_allclose(std, np.sqrt(variance), rtol=1e-12)
    np.testing.assert_allclose(mean, p.mu)


def test_forecast_does_not_look_ahead():
    close = prices(simulate(TRUE, 400, seed=3))
    short = next_bar_forecast(TRUE, close[:250])
    changed = close.copy()
    changed[250:] *= 1.3  # a different future
    full = next_bar_forecast(TRUE, changed)
    np.testing.assert_array_equal(short[1], full[1][:250])
    assert full[1][250] != next_bar_forecast(TRUE, close)[1][250]


def test_standardized_t_tail():
    z, shortfall = standardized_t_tail(0.05, 6.0)
    assert z == pytest.approx(StudentsT().ppf(0.05, np.array([6.0])), rel=1e-10)
    scale = np.sqrt(4.0 / 6.0)
    density = stats.t(6.0, scale=scale)
    tail, _ = integrate.quad(lambda x: x * density.pdf(x), -np.inf, z)
    assert shortfall == pytest.approx(tail / 0.05, rel=1e-8)
    # Many degrees of freedom: the normal's -1.645 and -phi(1.645) / 0.05 = -2.0627.
    z, shortfall = standardized_t_tail(0.05, 1e7)
    assert z == pytest.approx(stats.norm.ppf(0.05), rel=1e-5)
    assert shortfall == pytest.approx(-stats.norm.pdf(stats.norm.ppf(0.05)) / 0.05, rel=1e-5)
    with pytest.raises(ValueError, match="nu > 2"):
        standardized_t_tail(0.05, 2.0)


def test_position_var_uses_the_losing_tail():
    mean, std = np.full(3, 0.1), np.full(3, 2.0)
    var, cvar = position_var_cvar(np.array([1.0, -0.5, 0.0]), mean, std, nu=6.0)
    t = StudentsT()
    z05, z95 = (float(t.ppf(q, np.array([6.0]))) for q in (0.05, 0.95))
    assert var[0] == pytest.approx(0.1 + 2.0 * z05)  # long: the left tail
    assert var[1] == pytest.approx(-0.5 * (0.1 + 2.0 * z95))  # short: the right tail
    assert var[2] == 0.0 and cvar[2] == 0.0
    assert (cvar[:2] < var[:2]).all()


def test_true_parameters_are_calibrated_on_simulated_data():
    close = prices(simulate(TRUE, 20000, seed=4))
    mean, std = next_bar_forecast(TRUE, close)
    var, _ = position_var_cvar(np.ones(len(close)), mean, std, TRUE.nu)
    hits = percent_returns(close) < var[:-1]
    assert kupiec_pof(int(hits.sum()), len(hits), 0.05)[1] > 0.05
    assert hits.mean() == pytest.approx(0.05, abs=0.005)


def test_var_model_fits_the_training_span_and_round_trips(tmp_path):
    index = pd.bdate_range("2000-01-03", periods=1201)
    a = pd.Series(prices(simulate(TRUE, 1200, seed=5)), index=index)
    b = pd.Series(prices(simulate(TRUE, 1200, seed=6)), index=index)
    end = index[800]
    model = fit_var_model({"A": a, "B": b}, index[0], end)
    assert model.instruments["A"] == fit_garch(percent_returns(a[:end].to_numpy()))
    pooled = np.concatenate(
        [percent_returns(a[:end].to_numpy()), percent_returns(b[:end].to_numpy())]
    )
    assert model.pooled == fit_garch(pooled)
    assert model.params_for("C") == model.pooled and model.params_for("B") != model.pooled
    assert VarModel.load(model.save(tmp_path / "var.json")) == model


def test_forecast_matches_arch_fixed_model_forecast():
    # arch's own one-step forecasts from the fixed parameters start from a backcast of the
    # first 75 returns (ours: the unconditional variance); after that has decayed (beta^300)
    # the two agree.
    close = prices(simulate(TRUE, 1000, seed=7))
    r = percent_returns(close)
    p = TRUE
    model = arch_model(r, mean="Constant", vol="GARCH", p=1, q=1, dist="t", rescale=False)
    reference = model.fix([p.mu, p.omega, p.alpha, p.beta, p.nu]).forecast(start=0, reindex=False)
    ours = next_bar_forecast(TRUE, close)[1][1:]  # the forecast made at bar k uses r[k - 1]
    np.testing.assert_allclose(
        ours[300:], np.sqrt(reference.variance.to_numpy()[300:, 0]), rtol=1e-9
    )
