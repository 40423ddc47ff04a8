"""The chart of the critic's quantile fan over the agent's bars: which columns hold the
quantiles, which symmetric pairs to shade, and the figure. (Re-exported by
:mod:`tradingbot.report_charts`.)"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from tradingbot.report_style import chart_layout

QUANTILE_COLUMN = re.compile(r"^q_(\d+)$")


def quantile_columns(frame: pd.DataFrame) -> list[str]:
    """The critic's quantile columns ``q_0 ... q_{N-1}`` of a bars frame, in index order.

    Parameters
    ----------
    frame: the agent's bars.
    """
    found = [(int(m.group(1)), c) for c in frame.columns if (m := QUANTILE_COLUMN.match(str(c)))]
    return [c for _, c in sorted(found)]


def quantile_bands(n_quantiles: int, targets: tuple[float, ...] = (0.05, 0.25)) -> list[tuple]:
    """Symmetric quantile pairs to shade: for each target tau, the pair nearest to it.

    Quantile ``i`` of ``N`` sits at tau ``(i + 0.5) / N``; the pair for target ``t`` is
    ``(i, N - 1 - i)`` with ``tau_i`` nearest to ``t``. Duplicate pairs are dropped.

    Parameters
    ----------
    n_quantiles: N, the number of quantiles the critic predicts.
    targets: the lower taus wanted (0.05 for a 5-95 band, 0.25 for 25-75).

    Returns
    -------
    ``(low_index, high_index, low_tau, high_tau)`` tuples, widest band first.
    """
    taus = (np.arange(n_quantiles) + 0.5) / n_quantiles
    lower = np.flatnonzero(taus < 0.5)
    pairs: list[tuple] = []
    for target in sorted(targets):
        if lower.size == 0:
            break
        i = int(lower[np.argmin(np.abs(taus[lower] - target))])
        pair = (i, n_quantiles - 1 - i, float(taus[i]), float(taus[n_quantiles - 1 - i]))
        if pair not in pairs:
            pairs.append(pair)
    return pairs


def quantile_fan_figure(agent: pd.DataFrame) -> go.Figure:
    """Fan chart of the critic's predicted return-to-go quantiles over time.

    Shaded bands between symmetric quantile pairs (about 5-95% and 25-75%) and the median.

    Parameters
    ----------
    agent: the agent's bars with quantile columns ``q_0 ... q_{N-1}`` sorted ascending at taus
        ``(i + 0.5) / N``.
    """
    columns = quantile_columns(agent)
    if not columns:
        raise ValueError("the agent's bars have no quantile columns q_0 ... q_{N-1}")
    values = agent[columns].to_numpy(dtype=float)
    n = len(columns)
    fig = go.Figure()
    for k, (lo, hi, tau_lo, tau_hi) in enumerate(quantile_bands(n)):
        name = f"{tau_lo:.0%}-{tau_hi:.0%}"
        fill = f"rgba(31, 119, 180, {0.18 + 0.17 * k:.2f})"
        fig.add_trace(
            go.Scatter(
                x=agent.index,
                y=values[:, lo],
                mode="lines",
                line={"width": 0},
                showlegend=False,
                legendgroup=name,
                name=f"q {tau_lo:.3f}",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=agent.index,
                y=values[:, hi],
                mode="lines",
                line={"width": 0},
                fill="tonexty",
                fillcolor=fill,
                legendgroup=name,
                name=name,
            )
        )
    median = np.median(values, axis=1) if n % 2 else values[:, n // 2 - 1 : n // 2 + 1].mean(1)
    fig.add_trace(
        go.Scatter(
            x=agent.index,
            y=median,
            mode="lines",
            name="median",
            line={"color": "#0b3d66", "width": 1.6},
        )
    )
    # What the critic predicts: the discounted sum of future log returns (about 1/(1-gamma)
    # bars ahead) under the training policy, not a next-bar return.
    title = f"Critic's return-to-go quantiles (N={n})"
    return chart_layout(fig, title, "discounted log return, ~1/(1-gamma) bars")
