"""Report charts of portfolio runs: the agent's weights over time, stacked."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from tradingbot.report_style import chart_layout

WEIGHT_PREFIX = "w_"


def weight_columns(bars: pd.DataFrame) -> list[str]:
    """The per-asset weight columns (``w_<asset>``) of a portfolio backtest's bars."""
    return [c for c in bars.columns if c.startswith(WEIGHT_PREFIX)]


def weights_figure(
    agent: pd.DataFrame, title: str = "Agent weights (stacked; rest is cash)"
) -> go.Figure:
    """Stacked areas of the agent's weight in each asset after each bar's close; the gap up
    to 1 is cash (long-only), so the top edge is the invested fraction."""
    fig = go.Figure()
    for column in weight_columns(agent):
        fig.add_trace(
            go.Scatter(
                x=agent.index,
                y=agent[column],
                mode="lines",
                name=column.removeprefix(WEIGHT_PREFIX),
                stackgroup="weights",
                line={"width": 0.5},
            )
        )
    return chart_layout(fig, title, "weight (fraction of equity)")
