"""Next-bar Value-at-Risk and CVaR of a position, from a GARCH(1,1) volatility forecast.

The model. The unit return of bar t+1 is the instrument's close-to-close simple return
``r_{t+1} = C_{t+1} / C_t - 1`` in percent (what a position of 1 earns over a step, before
costs). It follows a GARCH(1,1) with a constant mean and standardized Student-t innovations
(``arch``'s ``arch_model(r, mean="Constant", vol="GARCH", p=1, q=1, dist="t")``):

    r_{t+1} = mu + sigma_{t+1} z_{t+1},  sigma^2_{t+1} = omega + alpha (r_t - mu)^2
              + beta sigma^2_t,          z ~ Student-t(nu) scaled to unit variance.

Student-t innovations were chosen before any measurement, for the fat tails of daily returns.
(Measured afterwards on the S&P 500 with the demo's splits: on validation 2013-2015 Kupiec
accepts the 5% VaR with either innovation, normal 43/754 exceedances, t 45/754; on the test
years 2016-2018 the normal's 24/755 would be rejected, p = 0.014, the t's 29/755 is accepted.)

Fitting. The parameters are fitted by ``arch`` on the training split's unit returns only, per
instrument (and once on all instruments' training returns together, the *pooled* fit, used for
an instrument the run was not trained on). ``tradingbot train`` stores them in the run
directory (``var_model.json``); for an older run they are refitted, deterministically, from the
run's own training bars.

Forecasting. The fixed parameters are run forward over an instrument's whole history by
``arch``'s GARCH recursion (``GARCH.forecast``, one step ahead), started from the fitted
model's unconditional variance, so the forecast for bar t+1 uses returns up to bar t only:
appending later bars never changes an earlier forecast.

A position q held over bar t+1 returns ``q r_{t+1}``; the innovation is symmetric, so its
``level`` quantile is ``q mu + |q| sigma z_level``: the unit VaR on the side the position loses
(long: the left tail; short: the right tail), scaled by |q|. CVaR (expected shortfall) is the
same with ``E[z | z <= z_level]`` in place of ``z_level``. Both are returns in percent of equity
(negative: a loss), before costs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from arch import arch_model
from scipy import stats

from tradingbot.checkpoint import CheckpointError
from tradingbot.data.market import PreparedMarket
from tradingbot.errors import short_text
from tradingbot.safe_write import write_text

VAR_LEVEL = 0.05  # the 5% VaR and CVaR
DISTRIBUTION = "t"  # standardized Student-t innovations
VAR_MODEL_FILE = "var_model.json"
MIN_FIT_RETURNS = 100
# Bar columns (backtest bars and signals), all in percent of equity, VaR and CVaR at VAR_LEVEL:
UNIT_RETURN = "unit_return_pct"  # realized close-to-close return of a unit long position
UNIT_VAR, UNIT_CVAR = "unit_var_5_pct", "unit_cvar_5_pct"  # of a unit long position
EXPOSURE = "exposure"  # the position held over the bar the forecast is for
VAR, CVAR = "var_5_pct", "cvar_5_pct"  # of that position


@dataclass(frozen=True)
class GarchParams:
    """Fitted GARCH(1,1) parameters of percent unit returns (see the module docstring).

    Parameters
    ----------
    mu: constant mean (% per bar).
    omega, alpha, beta: the variance recursion.
    nu: degrees of freedom of the Student-t innovations (> 2).
    """

    mu: float
    omega: float
    alpha: float
    beta: float
    nu: float

    @property
    def unconditional_variance(self) -> float:
        """omega / (1 - alpha - beta), where the process is stationary."""
        persistence = self.alpha + self.beta
        if persistence >= 1.0:
            raise ValueError(f"GARCH is not stationary: alpha + beta = {persistence:.4f} >= 1")
        return self.omega / (1.0 - persistence)


def percent_returns(close: np.ndarray) -> np.ndarray:
    """Close-to-close simple returns in percent, one fewer than ``close``."""
    close = np.asarray(close, dtype=float)
    return 100.0 * (close[1:] / close[:-1] - 1.0)


def fit_garch(returns_pct: np.ndarray) -> GarchParams:
    """Fit GARCH(1,1) with a constant mean and Student-t innovations by ``arch``.

    Parameters
    ----------
    returns_pct: unit returns in percent (the training split's only).
    """
    r = np.asarray(returns_pct, dtype=float)
    if len(r) < MIN_FIT_RETURNS or not np.isfinite(r).all():
        raise ValueError(
            f"a GARCH fit needs at least {MIN_FIT_RETURNS} finite returns, got {len(r)}"
        )
    model = arch_model(r, mean="Constant", vol="GARCH", p=1, q=1, dist=DISTRIBUTION, rescale=False)
    result = model.fit(disp="off", show_warning=False)
    p = result.params
    return GarchParams(
        mu=float(p["mu"]),
        omega=float(p["omega"]),
        alpha=float(p["alpha[1]"]),
        beta=float(p["beta[1]"]),
        nu=float(p["nu"]),
    )


def next_bar_forecast(params: GarchParams, close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per bar t of ``close``: the mean and standard deviation (%) of the unit return of bar
    t+1, from returns up to bar t. Bar 0 has no return yet: its forecast starts from the
    unconditional variance alone.
    """
    r = percent_returns(close)
    volatility = arch_model(
        r if len(r) else np.zeros(1), mean="Zero", vol="GARCH", p=1, q=1, rescale=False
    ).volatility
    resids = r - params.mu
    backcast = params.unconditional_variance
    bounds = np.column_stack([np.zeros(len(r)), np.full(len(r), np.inf)])
    variance = np.empty(len(close))
    variance[0] = params.omega + (params.alpha + params.beta) * backcast
    if len(r):
        forecast = volatility.forecast(
            np.array([params.omega, params.alpha, params.beta]),
            resids,
            backcast,
            bounds,
            start=0,
            horizon=1,
        )
        variance[1:] = forecast.forecasts[:, 0]
    return np.full(len(close), params.mu), np.sqrt(variance)


def standardized_t_tail(level: float, nu: float) -> tuple[float, float]:
    """The ``level`` quantile of a unit-variance Student-t(nu) and its expected shortfall
    ``E[z | z <= quantile]`` (both negative for level < 0.5).

    With t the quantile of the standard t(nu) and s = sqrt((nu - 2) / nu) the scale to unit
    variance: quantile = s t, shortfall = -s (nu + t^2) / (nu - 1) f(t) / level.
    """
    if nu <= 2:
        raise ValueError(f"a unit-variance Student-t needs nu > 2, got {nu}")
    t = stats.t.ppf(level, nu)
    scale = np.sqrt((nu - 2.0) / nu)
    shortfall = -scale * (nu + t**2) / (nu - 1.0) * stats.t.pdf(t, nu) / level
    return float(scale * t), float(shortfall)


def position_var_cvar(
    exposure: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    nu: float,
    level: float = VAR_LEVEL,
) -> tuple[np.ndarray, np.ndarray]:
    """VaR and CVaR at ``level`` (returns in % of equity) of holding ``exposure`` over a bar
    whose unit return has forecast ``mean`` and ``std``: ``q mean + |q| std z``."""
    z, shortfall = standardized_t_tail(level, nu)
    q = np.asarray(exposure, dtype=float)
    drift = q * mean
    return drift + np.abs(q) * std * z, drift + np.abs(q) * std * shortfall


@dataclass
class VarModel:
    """A run's GARCH parameters: per training instrument, and the pooled fit."""

    instruments: dict[str, GarchParams]
    pooled: GarchParams
    fitted_on: str  # the training span, for the record

    def params_for(self, instrument: str) -> GarchParams:
        """The instrument's own fit, or the pooled one for an instrument not trained on."""
        return self.instruments.get(instrument, self.pooled)

    def save(self, path: Path) -> Path:
        """Write the parameters as JSON (atomically, inside the run directory ``path`` is in)."""
        payload = {
            "model": f"GARCH(1,1), constant mean, {DISTRIBUTION} innovations, percent returns",
            "fitted_on": self.fitted_on,
            "instruments": {k: asdict(v) for k, v in self.instruments.items()},
            "pooled": asdict(self.pooled),
        }
        return write_text(path, json.dumps(payload, indent=1), root=path.parent)

    @classmethod
    def load(cls, path: Path) -> VarModel:
        """Read ``var_model.json``; a malformed file or a parameter outside its range (non-finite,
        negative variance terms, alpha + beta >= 1, nu <= 2) is a :class:`CheckpointError`."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            model = cls(
                instruments={k: GarchParams(**v) for k, v in raw["instruments"].items()},
                pooled=GarchParams(**raw["pooled"]),
                fitted_on=str(raw.get("fitted_on", "")),
            )
        except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError) as err:
            message = f"{path}: not a valid VaR model file ({short_text(str(err))})"
            raise CheckpointError(message) from None
        for name, params in [*model.instruments.items(), ("pooled", model.pooled)]:
            values = [params.mu, params.omega, params.alpha, params.beta, params.nu]
            if not (
                all(isinstance(v, (int, float)) and np.isfinite(v) for v in values)
                and params.omega > 0
                and params.alpha >= 0
                and params.beta >= 0
                and params.alpha + params.beta < 1
                and params.nu > 2
            ):
                message = f"{path}: GARCH parameters of {name!r} out of range: {params}"
                raise CheckpointError(message)
        return model


def fit_var_model(closes: dict[str, pd.Series], start: pd.Timestamp, end: pd.Timestamp) -> VarModel:
    """Fit each instrument's GARCH on its closes in ``[start, end]`` (the training split), and
    the pooled GARCH on all those returns one instrument after the other.

    Parameters
    ----------
    closes: instrument -> close prices indexed by timestamp.
    start, end: the training span (inclusive).
    """
    per_instrument, pooled = {}, []
    for name, close in closes.items():
        inside = close[(close.index >= start) & (close.index <= end)].to_numpy(dtype=float)
        returns = percent_returns(inside)
        pooled.append(returns)
        per_instrument[name] = fit_garch(returns)
    pooled_fit = (
        next(iter(per_instrument.values()))
        if len(per_instrument) == 1
        else fit_garch(np.concatenate(pooled))
    )
    return VarModel(per_instrument, pooled_fit, f"{start} .. {end}")


def next_bar_exposure(targets: np.ndarray, fill: str) -> np.ndarray:
    """The position held over the bar after each decision: the new target with ``next_open``
    fills (held from that bar's open; the gap from the close before is held at the old
    position), the old one with ``next_close`` fills (the target is filled at that bar's close).
    The first decision starts flat."""
    targets = np.asarray(targets, dtype=float)
    return targets if fill == "next_open" else np.append(0.0, targets[:-1])


def risk_columns(
    params: GarchParams,
    close: pd.Series,
    decision: pd.DatetimeIndex,
    exposure: np.ndarray,
) -> pd.DataFrame:
    """Per decision bar: the next bar's VaR and CVaR (% of equity) of a unit long position and
    of ``exposure``, and the unit return that followed (NaN after the last close).

    Parameters
    ----------
    params: the instrument's GARCH parameters.
    close: the instrument's whole close history (the filter runs over all of it).
    decision: the decision bars (timestamps of ``close``).
    exposure: the position held over the bar after each decision.
    """
    mean, std = next_bar_forecast(params, close.to_numpy(dtype=float))
    rows = close.index.get_indexer(decision)
    if (rows < 0).any():
        raise ValueError("decision timestamps missing from the close history")
    unit_var, unit_cvar = position_var_cvar(np.ones(len(rows)), mean[rows], std[rows], params.nu)
    var, cvar = position_var_cvar(exposure, mean[rows], std[rows], params.nu)
    after = np.append(percent_returns(close.to_numpy(dtype=float)), np.nan)
    return pd.DataFrame(
        {
            UNIT_RETURN: after[rows],
            UNIT_VAR: unit_var,
            UNIT_CVAR: unit_cvar,
            EXPOSURE: np.asarray(exposure, dtype=float),
            VAR: var,
            CVAR: cvar,
        },
        index=decision,
    )


def market_closes(market: PreparedMarket) -> dict[str, pd.Series]:
    """Each instrument's close prices, indexed by timestamp (not ``data.train_sources``')."""
    return {
        inst.name: pd.Series(
            market.close[inst.offset : inst.offset + inst.n_bars], index=inst.timestamps
        )
        for inst in market.scored_instruments
    }


def fit_market_var_model(market: PreparedMarket, split: str = "train") -> VarModel:
    """:func:`fit_var_model` on ``split`` (the training split) of a prepared market."""
    span = market.span(split)
    return fit_var_model(market_closes(market), pd.Timestamp(span.start), pd.Timestamp(span.end))


def add_risk_columns(
    bars: pd.DataFrame, params: GarchParams, close: pd.Series, fill: str
) -> pd.DataFrame:
    """A backtest's bars with :func:`risk_columns` for each row's decision bar: the forecast
    made at the decision bar for the bar the row is (``exposure``: the position held over it)."""
    decision = pd.DatetimeIndex(bars["decision_timestamp"])
    exposure = next_bar_exposure(bars["position"].to_numpy(), fill)
    columns = risk_columns(params, close, decision, exposure)
    return bars.assign(**{name: columns[name].to_numpy() for name in columns.columns})
