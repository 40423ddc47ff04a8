"""The report's risk and data pieces: the VaR chart, the calibration text, the data notes.

Kept apart from :mod:`tradingbot.report` and :mod:`tradingbot.report_charts`; those call in.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from tradingbot.evaluate.var import CVAR, VAR
from tradingbot.report_style import chart_layout

# Bundled sources that are price indices (no dividends reinvested).
PRICE_INDICES = {"sp500": "the S&P 500 price index (arch.data.sp500)"}

CALIBRATION_TEXT = (
    "Each bar's 5% VaR is a one-step forecast of a GARCH(1,1) with Student-t innovations "
    "(arch), fitted on the training split's close-to-close returns only and run forward "
    "causally: the forecast for a bar uses closes up to the bar before. Counted bars: the unit "
    "long position on every bar (the instrument's return against the unit VaR: the model's "
    "own calibration), and each policy on the bars it held a position (its return after "
    "costs, in % of equity, against |position| x the unit VaR on its losing side). Kupiec's "
    "test compares the exceedance rate with 5% (region: the exceedance counts it accepts at "
    "95%); Christoffersen's tests whether an exceedance makes the next one more likely."
)


def var_figure(agent: pd.DataFrame) -> go.Figure:
    """The agent's realized return per bar (% of equity) against the 5% VaR and CVaR forecast
    for it, with the bars where the return fell below the VaR marked.

    Parameters
    ----------
    agent: the agent's bars with ``return``, ``var_5_pct`` and ``cvar_5_pct``.
    """
    realized = 100.0 * agent["return"].to_numpy(dtype=float)
    var = agent[VAR].to_numpy(dtype=float)
    hits = realized < var
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(x=agent.index, y=realized, mode="lines", name="return", line={"width": 0.8})
    )
    fig.add_trace(go.Scatter(x=agent.index, y=var, mode="lines", name="VaR 5%"))
    fig.add_trace(go.Scatter(x=agent.index, y=agent[CVAR], mode="lines", name="CVaR 5%"))
    fig.add_trace(
        go.Scatter(
            x=agent.index[hits],
            y=realized[hits],
            mode="markers",
            name=f"below VaR ({int(hits.sum())} of {int(np.isfinite(var).sum())})",
            marker={"color": "#d62728", "size": 6},
        )
    )
    return chart_layout(fig, "Position's 5% VaR and CVaR (GARCH)", "% of equity")


def data_notes(config: dict[str, Any]) -> str:
    """Plain-text notes on what the prices and the cash leave out, from a run's config."""
    data, env = config.get("data") or {}, config.get("env") or {}
    source = str(data.get("source", ""))
    rate = float(env.get("cash_rate", 0.0) or 0.0)
    if source in PRICE_INDICES:
        prices = (
            f"The data are {PRICE_INDICES[source]}: prices without dividends. Buy-and-hold and "
            "every long position miss the index's dividend yield (about 2% a year), so their "
            "returns are understated against a total-return index."
        )
    else:
        prices = f"Prices are used as given in {source or 'the data'} (dividends only if included)."
    cash = (
        f"The uninvested part of equity earns env.cash_rate = {rate:g} a year "
        "(the same for the agent and every baseline)."
    )
    return f"{prices} {cash}"
