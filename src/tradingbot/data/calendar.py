"""The calendar of a bar series: how many bars make a year.

Annualization follows the data's own calendar, read from its timestamps:

- bars on weekends (Saturday and Sunday both appear, at least 20% of the dates: a 7-day market
  such as crypto has 2/7 = 29%) -> 365 days a year; otherwise 252 trading days;
- one bar a day -> that many bars a year (daily crypto: 365; daily equity: 252);
- several bars a day -> days a year x the median number of bars per date (hourly 24/7: 8,760;
  equity hourly at 7 bars a day: 1,764; FX hourly without weekend dates: 252 x 24);
- weekly (5-8 days apart) -> 52, monthly (25-35 days) -> 12;
- any other spacing -> bars per year of the series' span.

The calendar is decided on a series' timestamps alone, so a backtest and its baselines on the
same bars always share it.
"""

from __future__ import annotations

import pandas as pd

TRADING_DAYS = 252
CALENDAR_DAYS = 365
WEEKEND_SHARE = 0.2  # of the distinct dates; 2/7 in a 7-day market, 0 on an exchange


def has_weekend_bars(timestamps: pd.DatetimeIndex) -> bool:
    """Whether the series trades on weekends: both Saturday and Sunday dates occur and make
    up at least ``WEEKEND_SHARE`` of the distinct dates (FX's Sunday-evening open does not)."""
    days = pd.DatetimeIndex(timestamps).normalize().unique()
    weekday = days.day_of_week
    saturday, sunday = (weekday == 5).sum(), (weekday == 6).sum()
    return bool(saturday > 0 and sunday > 0 and (saturday + sunday) >= WEEKEND_SHARE * len(days))


def periods_per_year(timestamps: pd.DatetimeIndex) -> float:
    """Bars per year by the calendar of ``timestamps`` (see the module docstring).

    Parameters
    ----------
    timestamps: the bars' timestamps, sorted, at least two.
    """
    if len(timestamps) < 2:
        raise ValueError("need at least two timestamps to infer the bar frequency")
    index = pd.DatetimeIndex(timestamps)
    days = pd.Series(index).diff().median() / pd.Timedelta(days=1)
    days_per_year = CALENDAR_DAYS if has_weekend_bars(index) else TRADING_DAYS
    if days < 0.8:  # intraday: bars per date x dates per year
        bars_per_date = float(pd.Series(index.normalize()).value_counts().median())
        return days_per_year * bars_per_date
    if days <= 4.5:
        return float(days_per_year)
    for low, high, per_year in ((5, 8, 52), (25, 35, 12)):
        if low <= days <= high:
            return float(per_year)
    years = (index[-1] - index[0]) / pd.Timedelta(days=365.25)
    return float((len(index) - 1) / years)
