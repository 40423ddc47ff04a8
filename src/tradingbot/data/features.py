"""Causal features and their normalization.

Every feature at bar t is computed from bars 0..t only (trailing windows, no centring, no
back-fill); the first bars, before a window is full, are NaN and are never used as
observations. Normalization statistics are fitted on training rows only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tradingbot.config import FeatureConfig

# The long_horizon feature set (FeatureConfig.set): the horizons at which trend, volatility
# regimes and drawdowns are documented on equity indices, fixed here rather than tuned.
LONG_RETURN_WINDOWS = (60, 120, 250)
MOVING_AVERAGE_WINDOWS = (50, 200)
VOLATILITY_WINDOWS = (20, 60)  # short, long: the ratio is short / long
DRAWDOWN_WINDOW = 250
# The per-bar volatility below which a window counts as flat: the ratio and the gaps divide by
# at least this much. A thinly traded stock can close unchanged for a whole window (RRC in 1991,
# 60 closes at 2.491 in the bundled universe); 1 bp per bar is far below any traded series'.
MIN_BAR_VOLATILITY = 1e-4


def feature_lookback(cfg: FeatureConfig) -> int:
    """Bars needed before the first bar whose features are all defined."""
    base = max(*cfg.return_windows, cfg.volatility_window, cfg.volume_window + 1, 2)
    if cfg.set == "long_horizon":
        return max(
            base,
            *LONG_RETURN_WINDOWS,
            *MOVING_AVERAGE_WINDOWS,
            VOLATILITY_WINDOWS[1],
            DRAWDOWN_WINDOW,
        )
    return base


def long_horizon_features(
    close: pd.Series,
    return_windows: tuple[int, ...] = LONG_RETURN_WINDOWS,
    average_windows: tuple[int, ...] = MOVING_AVERAGE_WINDOWS,
    volatility_windows: tuple[int, int] = VOLATILITY_WINDOWS,
    drawdown_window: int = DRAWDOWN_WINDOW,
) -> pd.DataFrame:
    """Trend, volatility-regime and drawdown features of one close series, causal.

    With c_t = log close and r_t = c_t - c_{t-1}; every window ends at bar t (included):

    - ``ret_k`` = c_t - c_{t-k} for k in ``return_windows`` (NaN for t < k);
    - ``vol_n``: the standard deviation (ddof 1) of r over the last n bars, per bar (not
      annualized: the features are z-scored afterwards), for n in ``volatility_windows``;
    - ``vol_ratio`` = vol_short / vol_long (volatility regime: above 1 when volatility rises);
    - ``ma_gap_n`` = (c_t - log(mean of the last n closes)) / vol_long_t: the distance of the
      close from its n-bar moving average in units of per-bar volatility;
    - in ``vol_ratio`` and ``ma_gap_n`` each volatility is at least :data:`MIN_BAR_VOLATILITY`,
      so a window of unchanged closes gives a ratio of 1 and a finite gap;
    - ``drawdown_n`` = c_t - log(max of the last n closes) (<= 0) for n = ``drawdown_window``.

    Parameters
    ----------
    close: closes, oldest first.
    return_windows, average_windows, volatility_windows, drawdown_window: the horizons.
    """
    log_close = np.log(close.astype(float))
    one_bar = log_close.diff()
    out = pd.DataFrame(index=close.index)
    for k in return_windows:
        out[f"ret_{k}"] = log_close - log_close.shift(k)
    short, long = volatility_windows
    vol_short = one_bar.rolling(short).std(ddof=1)
    vol_long = one_bar.rolling(long).std(ddof=1)
    out[f"vol_{short}"] = vol_short
    out[f"vol_{long}"] = vol_long
    vol_long_floored = vol_long.clip(lower=MIN_BAR_VOLATILITY)
    out["vol_ratio"] = vol_short.clip(lower=MIN_BAR_VOLATILITY) / vol_long_floored
    for n in average_windows:
        average = close.astype(float).rolling(n).mean()
        out[f"ma_gap_{n}"] = (log_close - np.log(average)) / vol_long_floored
    high = close.astype(float).rolling(drawdown_window).max()
    out[f"drawdown_{drawdown_window}"] = log_close - np.log(high)
    return out


def vix_covers(index: pd.DatetimeIndex, vix: pd.Series) -> bool:
    """Whether VIX has a close on every date of ``index`` (from its second bar on)."""
    days = index.normalize()
    return bool(days[1:].isin(vix.index.normalize()).all()) if len(days) > 1 else False


def is_intraday(index: pd.DatetimeIndex) -> bool:
    """Whether ``index`` holds several bars per date (any date with more than one bar)."""
    return bool(pd.DatetimeIndex(index).normalize().duplicated().any())


def vix_known_at(index: pd.DatetimeIndex, vix: pd.Series) -> np.ndarray:
    """The VIX close a bar of ``index`` may use: the last close published before it.

    VIX's daily close of day d is published after the US close of day d (16:15 ET). A daily
    bar's features are read after its close and its decision is filled at the next bar, so a
    daily bar of day d uses day d's VIX close (published before that fill). An intraday bar of
    day d closes before it: it uses the last VIX close of a day before d. NaN where none is
    known (before the first VIX date, or a daily bar on a date without a VIX close).
    """
    days = pd.DatetimeIndex(index).normalize()
    if not is_intraday(index):
        return vix.reindex(days).to_numpy(dtype=float)
    vix_days = pd.DatetimeIndex(vix.index).normalize()
    before = vix_days.searchsorted(days, side="left") - 1  # the last VIX date < d
    values = vix.to_numpy(dtype=float)[np.maximum(before, 0)]
    return np.where(before >= 0, values, np.nan)


def compute_features(
    bars: pd.DataFrame, cfg: FeatureConfig, vix: pd.Series | None = None
) -> pd.DataFrame:
    """Compute the default causal feature set for one instrument.

    Columns: ``ret_k`` (log return over k bars), ``volatility`` (trailing std of 1-bar log
    returns), ``range`` (log high/low), ``volume_z`` (z-score of log volume against its trailing
    window, when volume exists and varies), ``vix_level``/``vix_change`` (log VIX and its 1-bar
    change, when ``vix`` is given: intraday bars use the previous day's close, see
    :func:`vix_known_at`), with ``cfg.set`` "long_horizon" the columns of
    :func:`long_horizon_features`, and ``signal`` (the synthetic market's observable signal,
    when present and enabled).
    """
    close = np.log(bars["close"])
    one_bar = close.diff()
    out = pd.DataFrame(index=bars.index)
    for k in cfg.return_windows:
        out[f"ret_{k}"] = close - close.shift(k)
    out["volatility"] = one_bar.rolling(cfg.volatility_window).std()
    out["range"] = np.log(bars["high"] / bars["low"])
    if "volume" in bars and bars["volume"].nunique() > 1:
        log_volume = np.log1p(bars["volume"])
        # Compare today's volume with the window that ends yesterday, so a spike stands out.
        past = log_volume.shift(1).rolling(cfg.volume_window)
        spread = past.std()
        out["volume_z"] = (log_volume - past.mean()) / spread.where(spread > 0)
    if vix is not None:
        level = np.log(vix_known_at(bars.index, vix))
        out["vix_level"] = level
        out["vix_change"] = np.concatenate([[np.nan], np.diff(level)])
    if cfg.set == "long_horizon":
        extra = long_horizon_features(bars["close"])
        out = out.join(extra.drop(columns=[c for c in extra.columns if c in out.columns]))
    if cfg.include_signal and "signal" in bars:
        out["signal"] = bars["signal"]
    return out


def first_valid_row(features: pd.DataFrame) -> int:
    """The first row at which every feature is finite (the end of the warm-up)."""
    finite = np.isfinite(features.to_numpy()).all(axis=1)
    if not finite.any():
        raise ValueError("no row has every feature defined; the data are shorter than the lookback")
    first = int(np.argmax(finite))
    if not finite[first:].all():
        row = first + int(np.argmin(finite[first:]))
        col = features.columns[~np.isfinite(features.iloc[row].to_numpy())][0]
        raise ValueError(f"feature {col!r} is not finite at row {row} ({features.index[row]})")
    return first


@dataclass
class FeatureNormalizer:
    """Per-feature mean and standard deviation fitted on training rows, with clipping.

    Parameters
    ----------
    names: the feature columns, in order.
    mean, std: float64 arrays of the statistics.
    clip: normalized values are clipped to [-clip, clip].
    """

    names: list[str]
    mean: np.ndarray
    std: np.ndarray
    clip: float

    @classmethod
    def fit(cls, rows: list[np.ndarray], names: list[str], clip: float) -> FeatureNormalizer:
        """Fit on the stacked training rows of every instrument."""
        data = np.concatenate(rows, axis=0)
        if len(data) < 2:
            raise ValueError("too few training rows to fit feature normalization")
        std = data.std(axis=0)
        return cls(
            names=list(names), mean=data.mean(axis=0), std=np.where(std > 0, std, 1.0), clip=clip
        )

    def transform(self, values: np.ndarray) -> np.ndarray:
        scaled = (values - self.mean) / self.std
        return np.clip(scaled, -self.clip, self.clip).astype(np.float32)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean.copy(), "std": self.std.copy()}
