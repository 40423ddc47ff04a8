"""The report's charts: small pure functions from DataFrames to plotly Figures.

Each function takes the backtest bars (one DataFrame per policy, as written to
``RUN_DIR/backtest/<split>/bars_<instrument>_<policy>.csv``) or the training scalars and returns
a :class:`plotly.graph_objects.Figure`; :mod:`tradingbot.report` lays them out in one HTML file.
"""

from __future__ import annotations

import math

import empyrical
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tradingbot.evaluate.metrics import periods_per_year
from tradingbot.report_quantiles import (  # noqa: F401  (re-exported for report.py and tests)
    QUANTILE_COLUMN,
    quantile_bands,
    quantile_columns,
    quantile_fan_figure,
)
from tradingbot.report_style import (  # noqa: F401  (POLICY_COLORS: re-exported)
    FALLBACK_COLORS,
    HEIGHT,
    POLICY_COLORS,
    TEMPLATE,
    chart_layout,
    policy_color,
)


def equity_figure(bars: dict[str, pd.DataFrame], title: str = "Equity") -> go.Figure:
    """Equity of each policy over time, with a linear/log scale switch.

    Parameters
    ----------
    bars: policy name -> its bars (needs an ``equity`` column, indexed by timestamp).
    title: the chart's title.
    """
    fig = go.Figure()
    for i, (policy, frame) in enumerate(bars.items()):
        fig.add_trace(
            go.Scatter(
                x=frame.index,
                y=frame["equity"],
                mode="lines",
                name=policy,
                line={"color": policy_color(policy, i), "width": 1.6},
            )
        )
    fig.update_layout(
        updatemenus=[
            {
                "type": "buttons",
                "direction": "right",
                "x": 0.0,
                "y": 1.0,
                "xanchor": "left",
                "yanchor": "bottom",
                "pad": {"t": 0, "b": 2},
                "font": {"size": 11},
                "buttons": [
                    {"label": "linear", "method": "relayout", "args": [{"yaxis.type": "linear"}]},
                    {"label": "log", "method": "relayout", "args": [{"yaxis.type": "log"}]},
                ],
            }
        ]
    )
    chart_layout(fig, title, "equity")
    fig.update_layout(title={"y": 0.97, "yanchor": "top"}, margin={"t": 80})
    return fig


def drawdown_series(equity: pd.Series) -> pd.Series:
    """Drawdown from the running peak, as a (non-positive) fraction of the peak.

    Parameters
    ----------
    equity: the equity curve.
    """
    return equity / equity.cummax() - 1.0


def drawdown_figure(bars: dict[str, pd.DataFrame], title: str = "Drawdown") -> go.Figure:
    """Drawdown of each policy's equity from its running peak.

    Parameters
    ----------
    bars: policy name -> its bars (needs an ``equity`` column).
    title: the chart's title.
    """
    fig = go.Figure()
    for i, (policy, frame) in enumerate(bars.items()):
        color = policy_color(policy, i)
        fig.add_trace(
            go.Scatter(
                x=frame.index,
                y=drawdown_series(frame["equity"]),
                mode="lines",
                name=policy,
                line={"color": color, "width": 1.2},
                fill="tozeroy" if policy == "agent" else None,
            )
        )
    fig.update_yaxes(tickformat=".0%")
    return chart_layout(fig, title, "drawdown")


def position_figure(agent: pd.DataFrame, title: str = "Agent position") -> go.Figure:
    """The agent's position held over each bar, with the close price on a second axis.

    Parameters
    ----------
    agent: the agent's bars (needs ``position``; ``close`` is drawn when present).
    title: the chart's title.
    """
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(
        go.Scatter(
            x=agent.index,
            y=agent["position"],
            mode="lines",
            name="position",
            line={"color": POLICY_COLORS["agent"], "width": 1.4, "shape": "hv"},
            fill="tozeroy",
        ),
        secondary_y=False,
    )
    if "close" in agent.columns:
        fig.add_trace(
            go.Scatter(
                x=agent.index,
                y=agent["close"],
                mode="lines",
                name="close",
                line={"color": "#555555", "width": 1.0, "dash": "dot"},
            ),
            secondary_y=True,
        )
        fig.update_yaxes(title_text="close", secondary_y=True, showgrid=False)
    chart_layout(fig, title, "position")
    # The full position range, without an empty short half when the agent never went short
    # (a long-only run).
    low = -1.05 if bool((agent["position"] < 0).any()) else -0.05
    fig.update_yaxes(range=[low, 1.05], secondary_y=False)
    return fig


def rolling_sharpe_window(n_bars: int, window: int = 63) -> int:
    """The rolling window actually used: ``window``, shortened for short backtests.

    Parameters
    ----------
    n_bars: number of bars in the backtest.
    window: the preferred window (63 bars, about a quarter of daily bars).
    """
    return int(min(window, max(5, n_bars // 3)))


def rolling_sharpe(returns: pd.Series, window: int, annualization: float) -> pd.Series:
    """Annualized Sharpe ratio over a trailing window (empyrical), aligned to ``returns``.

    The first ``window - 1`` bars are NaN; windows with zero volatility are NaN too.

    Parameters
    ----------
    returns: per-bar simple returns, indexed by timestamp.
    window: bars per window.
    annualization: bars per year.
    """
    if len(returns) < window:
        return pd.Series(np.nan, index=returns.index)
    values = np.asarray(
        empyrical.roll_sharpe_ratio(
            returns.to_numpy(dtype=float), window=window, annualization=annualization
        ),
        dtype=float,
    )
    values[~np.isfinite(values)] = np.nan
    out = np.full(len(returns), np.nan)
    out[window - 1 :] = values
    return pd.Series(out, index=returns.index)


def rolling_sharpe_figure(bars: dict[str, pd.DataFrame], window: int = 63) -> go.Figure:
    """Rolling annualized Sharpe ratio of each policy whose returns vary (flat is left out).

    Parameters
    ----------
    bars: policy name -> its bars (needs a ``return`` column, indexed by timestamp).
    window: the preferred window in bars (shortened for short backtests).
    """
    fig = go.Figure()
    any_frame = next(iter(bars.values()))
    used = rolling_sharpe_window(len(any_frame), window)
    annualization = periods_per_year(pd.DatetimeIndex(any_frame.index))
    for i, (policy, frame) in enumerate(bars.items()):
        returns = frame["return"].astype(float)
        if returns.std() == 0 or returns.isna().all():
            continue
        fig.add_trace(
            go.Scatter(
                x=frame.index,
                y=rolling_sharpe(returns, used, annualization),
                mode="lines",
                name=policy,
                line={"color": policy_color(policy, i), "width": 1.4},
            )
        )
    fig.add_hline(y=0.0, line={"color": "#999999", "width": 1})
    return chart_layout(fig, f"Rolling Sharpe ({used}-bar window, annualized)", "Sharpe")


def return_histogram_figure(bars: dict[str, pd.DataFrame]) -> go.Figure:
    """Overlaid histograms of per-bar returns (every policy whose returns vary).

    Parameters
    ----------
    bars: policy name -> its bars (needs a ``return`` column).
    """
    fig = go.Figure()
    series = {p: f["return"].astype(float).dropna() for p, f in bars.items()}
    series = {p: r for p, r in series.items() if len(r) > 1 and r.std() > 0}
    bins: dict[str, float] | None = None
    if series:
        low = min(r.min() for r in series.values())
        high = max(r.max() for r in series.values())
        bins = {"start": low, "end": high, "size": (high - low) / 60 or 1.0}
    for i, (policy, returns) in enumerate(series.items()):
        fig.add_trace(
            go.Histogram(
                x=returns,
                name=policy,
                opacity=0.6,
                xbins=bins,
                marker={"color": policy_color(policy, i)},
            )
        )
    fig.update_layout(barmode="overlay", hovermode="closest")
    fig.update_xaxes(title_text="per-bar return", tickformat=".1%")
    return chart_layout(fig, "Per-bar returns", "bars")


def training_curves_figure(scalars: dict[str, pd.DataFrame]) -> go.Figure:
    """A grid of training curves, one panel per scalar tag and one line per logged run.

    Parameters
    ----------
    scalars: tag (e.g. ``train/value_loss``) -> frame with columns ``run, step, value``.
    """
    tags = sorted(scalars)
    cols = 3 if len(tags) >= 3 else max(len(tags), 1)
    rows = max(1, math.ceil(len(tags) / cols))
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=tags,
        vertical_spacing=min(0.12, 0.3 / rows),
        horizontal_spacing=0.07,
    )
    runs = sorted({run for frame in scalars.values() for run in frame["run"].unique()})
    for k, tag in enumerate(tags):
        frame = scalars[tag]
        for j, run in enumerate(runs):
            part = frame[frame["run"] == run].sort_values("step")
            if part.empty:
                continue
            fig.add_trace(
                go.Scatter(
                    x=part["step"],
                    y=part["value"],
                    mode="lines+markers" if len(part) < 20 else "lines",
                    marker={"size": 4},
                    name=run,
                    legendgroup=run,
                    showlegend=k == 0,
                    line={"color": FALLBACK_COLORS[j % len(FALLBACK_COLORS)], "width": 1.4},
                ),
                row=k // cols + 1,
                col=k % cols + 1,
            )
    height, top, bottom = 260 * rows + 110, 100, 40
    fig.update_layout(
        template=TEMPLATE,
        height=height,
        margin={"l": 50, "r": 20, "t": top, "b": bottom},
        title={"text": "Training curves (x: environment steps)", "x": 0.01, "y": 0.99},
        # the legend sits 30 px above the panels' titles, below the figure's title
        legend={
            "orientation": "h",
            "yanchor": "bottom",
            "y": 1.0 + 30 / (height - top - bottom),
            "xanchor": "left",
            "x": 0.0,
        },
    )
    return fig
