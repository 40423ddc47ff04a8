"""Position sizing: how the policy's action becomes a target position.

``env.sizing.mode``:

- ``position``: the action is the target position (clipped to the action range).
- ``vol_scaled``: the action is a risk budget. At the close of bar t the target position is

      q_t = clip(a_t * target_volatility / sigma_t, -cap, cap)   (0 .. cap when long-only)

  with sigma_t the annualized standard deviation (ddof 1) of the ``window`` close-to-close log
  returns ending at bar t, annualized by the instrument's bars per year
  (:func:`tradingbot.data.calendar.periods_per_year`). sigma_t uses closes up to t only, the
  bar the decision is made at, so the forecast is causal. Before ``window + 1`` closes exist
  sigma_t is unknown and the position is 0. An action of 1 is then a volatility-targeted
  holding; the position goes through the simulator's fills and costs like a raw one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tradingbot.config import SizingConfig
from tradingbot.data.calendar import periods_per_year
from tradingbot.data.market import PreparedMarket

MIN_VOLATILITY = 1e-12  # a flat price series: the scale stays finite (and is capped anyway)


def volatility_scale(
    close: np.ndarray, bars_per_year: float, target: float, window: int
) -> np.ndarray:
    """Per bar t: ``target / sigma_t`` (see the module docstring); 0 before ``window + 1``
    closes exist.

    Parameters
    ----------
    close: closes, oldest first.
    bars_per_year: annualization of sigma (252 for daily equity bars).
    target: the annual volatility aimed at.
    window: how many log returns sigma is estimated from.
    """
    log_returns = pd.Series(np.log(np.asarray(close, dtype=float))).diff()
    sigma = log_returns.rolling(window).std(ddof=1).to_numpy() * np.sqrt(bars_per_year)
    scale = target / np.maximum(np.nan_to_num(sigma, nan=np.inf), MIN_VOLATILITY)
    return np.where(np.isfinite(sigma), scale, 0.0)


def position_scales(market: PreparedMarket, cfg: SizingConfig) -> np.ndarray | None:
    """Per row of the market's concatenated arrays: the factor an action is multiplied by to
    give the target position (each instrument by its own closes and calendar); None for
    ``position`` sizing."""
    if cfg.mode == "position":
        return None
    out = np.zeros(len(market.close))
    for inst in market.instruments:
        rows = slice(inst.offset, inst.offset + inst.n_bars)
        per_year = periods_per_year(inst.timestamps)
        out[rows] = volatility_scale(
            market.close[rows], per_year, cfg.target_volatility, cfg.window
        )
    return out


def scale_targets(
    targets: np.ndarray, scale: np.ndarray, cfg: SizingConfig, long_only: bool
) -> np.ndarray:
    """``clip(targets * scale, -cap, cap)`` (``0 .. cap`` when ``long_only``)."""
    return np.clip(targets * scale, 0.0 if long_only else -cfg.cap, cfg.cap)
