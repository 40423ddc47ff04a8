"""Annualization follows the data's calendar: each convention on a constructed index."""

import pandas as pd
import pytest

from tradingbot.data.calendar import has_weekend_bars, periods_per_year


def test_equity_daily_is_252():
    assert periods_per_year(pd.bdate_range("2020-01-01", periods=30)) == 252


def test_crypto_daily_is_365():
    # Every calendar day, weekends included: the old 0.8-4.5-day rule gave 252.
    days = pd.date_range("2021-01-01", periods=30, freq="D")
    assert has_weekend_bars(days)
    assert periods_per_year(days) == 365


def test_crypto_hourly_is_8760():
    hours = pd.date_range("2021-01-01", periods=24 * 30, freq="h")
    assert periods_per_year(hours) == 24 * 365 == 8760


def test_equity_hourly_is_252_times_bars_per_day():
    # Seven hourly bars a weekday (09:30 ... 15:30), no weekends: 252 x 7 = 1764.
    days = pd.bdate_range("2021-03-01", periods=20)
    hours = pd.DatetimeIndex([d + pd.Timedelta(hours=9.5 + h) for d in days for h in range(7)])
    assert not has_weekend_bars(hours)
    assert periods_per_year(hours) == 252 * 7


def test_fx_hourly_with_sunday_open_keeps_trading_days():
    # FX: 24 bars Monday-Friday plus two Sunday-evening bars; Sundays alone are no weekend.
    hours = pd.date_range("2021-03-07 22:00", "2021-04-02 23:00", freq="h")
    hours = hours[(hours.day_of_week < 5) | ((hours.day_of_week == 6) & (hours.hour >= 22))]
    assert not has_weekend_bars(hours)
    assert periods_per_year(hours) == 252 * 24


def test_weekly_monthly_and_other_spacings():
    assert periods_per_year(pd.date_range("2020-01-03", periods=20, freq="W-FRI")) == 52
    assert periods_per_year(pd.date_range("2020-01-31", periods=20, freq="ME")) == 12
    quarterly = pd.date_range("2000-03-31", periods=41, freq="QE")  # 40 steps over 10 years
    years = (quarterly[-1] - quarterly[0]).days / 365.25
    assert periods_per_year(quarterly) == pytest.approx(40 / years)


def test_too_few_timestamps():
    with pytest.raises(ValueError, match="two timestamps"):
        periods_per_year(pd.DatetimeIndex(["2020-01-01"]))
