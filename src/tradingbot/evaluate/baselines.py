"""Baselines: small named policies run through the same simulator and costs as the agent.

An agent is only said to have skill when it beats these on the same bars. Each rule decides its
target position at the close of bar t from the closes up to t (never later), and the simulator
fills it like the agent's order (at the next bar's open by default), with the same costs. The
rules read the instrument's whole price history, so on a test split they are already invested on
the first test bar (the bars before the split are their warm-up, not a cold start). Before a rule
has enough history its position is flat.

- ``buy_and_hold``: always long 1.
- ``flat``: always 0 (the cost-free, risk-free reference; its Sharpe is undefined).
- ``risk_matched``: a constant long position equal to the agent's mean |position| over the same
  bars: as much market risk as the agent takes on average, with no timing.
- ``vol_target``: ``min(cap, target_volatility / sigma_t)``, with sigma_t the annualized standard
  deviation of the last ``volatility_window`` close-to-close log returns up to t. Always long (a
  volatility-scaled buy-and-hold), in long-only and long-short environments alike.
- ``trend``: long when the close is above its ``trend_window``-bar moving average (closes up to
  and including t), otherwise flat when the environment is long-only and short when it is not.
- ``momentum``: time-series momentum 12-1: the sign of ``close[t - skip] / close[t - lookback] - 1``
  (long when positive; otherwise flat when long-only, short when not).

Parameters: :class:`tradingbot.config.BaselineConfig` (fixed in advance, documented there).
In a discrete action space the positions of ``risk_matched`` and ``vol_target`` are not
expressible, so those two are left out there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from gymnasium import spaces

from tradingbot.config import BaselineConfig, EnvConfig, SizingConfig
from tradingbot.data.market import PreparedMarket
from tradingbot.data.splits import DateRange
from tradingbot.env.simulator import make_action_space
from tradingbot.env.sizing import volatility_scale
from tradingbot.evaluate.backtest import (
    ConstantPolicy,
    Predictor,
    SchedulePolicy,
    run_backtest,
)
from tradingbot.evaluate.metrics import periods_per_year

BASELINE_NAMES = ("buy_and_hold", "flat", "risk_matched", "vol_target", "trend", "momentum")
CONSTANT_BASELINES = {"buy_and_hold": 1.0, "flat": 0.0}


def volatility_target_positions(
    close: np.ndarray, bars_per_year: float, target: float, window: int, cap: float
) -> np.ndarray:
    """Per bar t: ``min(cap, target / sigma_t)``, sigma_t the annualized standard deviation
    (ddof 1) of the ``window`` log returns ending at t; 0 before ``window + 1`` closes exist.

    Parameters
    ----------
    close: closes, oldest first.
    bars_per_year: annualization of sigma (252 for daily equity bars).
    target: the annual volatility aimed at.
    window: how many returns sigma is estimated from.
    cap: the largest position.
    """
    return np.minimum(cap, volatility_scale(close, bars_per_year, target, window))


def trend_positions(close: np.ndarray, window: int, long_only: bool) -> np.ndarray:
    """Per bar t: 1 when close[t] is above the mean of close[t - window + 1 .. t]; otherwise 0
    when ``long_only``, -1 when below the average if not (0 on a tie and before ``window`` bars).

    Parameters
    ----------
    close: closes, oldest first.
    window: bars in the moving average.
    long_only: whether the rule may go short.
    """
    close = np.asarray(close, dtype=float)
    average = pd.Series(close).rolling(window).mean().to_numpy()
    return _long_short(close - average, long_only)


def momentum_positions(close: np.ndarray, lookback: int, skip: int, long_only: bool) -> np.ndarray:
    """Per bar t: the sign of ``close[t - skip] / close[t - lookback] - 1`` (12-1 momentum with
    ``lookback`` 252 and ``skip`` 21 on daily bars); negative is flat when ``long_only``; 0
    before ``lookback + 1`` closes exist.

    Parameters
    ----------
    close: closes, oldest first.
    lookback: bars back to the start of the momentum return.
    skip: the most recent bars left out.
    long_only: whether the rule may go short.
    """
    close = pd.Series(np.asarray(close, dtype=float))
    momentum = (close.shift(skip) / close.shift(lookback) - 1.0).to_numpy()
    return _long_short(momentum, long_only)


def _long_short(signal: np.ndarray, long_only: bool) -> np.ndarray:
    """1 where the signal is positive, -1 (or 0 when long-only) where negative, else 0."""
    signal = np.nan_to_num(signal, nan=0.0)
    return np.clip(np.sign(signal), 0.0 if long_only else -1.0, 1.0)


def rule_positions(
    close: np.ndarray, bars_per_year: float, cfg: BaselineConfig, long_only: bool
) -> dict[str, np.ndarray]:
    """The rule baselines' target positions per bar of one instrument (decided at each close).

    Parameters
    ----------
    close: the instrument's closes, oldest first, including the history before the split.
    bars_per_year: the instrument's annualization.
    cfg: the baselines' parameters.
    long_only: the environment's ``long_only``.
    """
    return {
        "vol_target": volatility_target_positions(
            close, bars_per_year, cfg.target_volatility, cfg.volatility_window, cfg.volatility_cap
        ),
        "trend": trend_positions(close, cfg.trend_window, long_only),
        "momentum": momentum_positions(close, cfg.momentum_lookback, cfg.momentum_skip, long_only),
    }


def baseline_policies(
    market: PreparedMarket,
    instrument: str,
    env_cfg: EnvConfig,
    cfg: BaselineConfig,
    agent_exposure: float | None = None,
) -> dict[str, Predictor]:
    """Every baseline of one instrument as a policy for :func:`run_backtest`.

    Parameters
    ----------
    market: the prepared market (its closes include the history before any split).
    instrument: the instrument's name.
    env_cfg: the environment the agent runs in (action space, long-only).
    cfg: the baselines' parameters.
    agent_exposure: the agent's mean |position| over the bars compared; ``risk_matched`` is
        left out when it is None.
    """
    inst = next((i for i in market.instruments if i.name == instrument), None)
    if inst is None:
        names = [i.name for i in market.instruments]
        raise ValueError(f"unknown instrument {instrument!r}; available: {names}")
    space = make_action_space(env_cfg)
    discrete = isinstance(space, spaces.Discrete)
    policies: dict[str, Predictor] = {
        name: ConstantPolicy(position, space) for name, position in CONSTANT_BASELINES.items()
    }
    if agent_exposure is not None and not discrete:
        policies["risk_matched"] = ConstantPolicy(float(agent_exposure), space)
    close = market.close[inst.offset : inst.offset + inst.n_bars]
    rules = rule_positions(close, periods_per_year(inst.timestamps), cfg, env_cfg.long_only)
    for name, positions in rules.items():
        if discrete and name == "vol_target":
            continue
        policies[name] = SchedulePolicy(positions, space)
    return {name: policies[name] for name in BASELINE_NAMES if name in policies}


def run_baselines(
    market: PreparedMarket,
    split: str | DateRange,
    env_cfg: EnvConfig,
    instrument: str,
    cfg: BaselineConfig,
    agent_exposure: float | None = None,
) -> dict[str, pd.DataFrame]:
    """Backtest bars of every baseline on ``split`` of one instrument (see
    :func:`baseline_policies` for the parameters), in :data:`BASELINE_NAMES` order. They run
    with ``env.sizing`` mode ``position`` whatever the agent's: their positions are held as
    they are."""
    # The baselines' positions are positions: never rescaled by the agent's env.sizing.
    env_cfg = env_cfg.model_copy(update={"sizing": SizingConfig()})
    policies = baseline_policies(market, instrument, env_cfg, cfg, agent_exposure)
    return {
        name: run_backtest(policy, market, split, env_cfg, instrument)
        for name, policy in policies.items()
    }


def agent_exposure(bars: pd.DataFrame) -> float:
    """The agent's mean |position| over its bars (the ``risk_matched`` baseline's position)."""
    return float(np.abs(bars["position"].to_numpy()).mean())
