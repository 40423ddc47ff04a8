"""The LSTM warm-up before a portfolio backtest: which decision bars it runs over (by hand),
that it reaches exactly those bars' observations, and that the scored run starts in cash."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tradingbot.config_loading import load_config
from tradingbot.data.portfolio import PortfolioMarket, load_portfolio
from tradingbot.data.splits import DateRange
from tradingbot.env.portfolio import PortfolioVecEnv
from tradingbot.evaluate.warmup import portfolio_warmup_start
from tradingbot.portfolio_run import agent_targets, allocation_frame
from tradingbot.training_run import build_model

TINY = ["env.n_envs=2", "algo.n_steps=32", "algo.batch_size=64", "algo.lstm_hidden_size=8",
        "algo.net_arch=[8]", "algo.n_quantiles=8", "portfolio.asset_embedding=8"]  # fmt: skip


@pytest.mark.parametrize(
    ("first_valid", "first_scored", "warmup", "h", "expected"),
    [
        (10, 100, 23, 5, 80),  # 23 bars back: 77; 4 whole steps of 5: 80
        (10, 100, 25, 5, 75),
        (95, 100, 50, 5, 95),  # the features start at 95: one step
        (97, 100, 50, 5, 100),  # not one whole step: no warm-up
        (10, 100, 0, 5, 100),
        (10, 100, 3, 1, 97),
    ],
)
def test_warmup_start_by_hand(
    first_valid: int, first_scored: int, warmup: int, h: int, expected: int
) -> None:
    market = dataclasses.replace(_MARKET, first_valid=first_valid)
    assert portfolio_warmup_start(market, first_scored, warmup, h) == expected


_CFG = load_config("configs/universe.yaml", TINY)
_MARKET = load_portfolio(_CFG.data)


def _targets(market: PortfolioMarket, warmup: int) -> tuple[np.ndarray, np.ndarray, DateRange]:
    env = PortfolioVecEnv(market, "train", _CFG.env, _CFG.portfolio, seed=0)
    model = build_model(_CFG, env)  # untrained: its LSTM state still moves its output
    ts = market.timestamps
    span = DateRange(ts[3000], ts[3030])
    rows, targets = agent_targets(model, market, span, _CFG.env, _CFG.portfolio, warmup_bars=warmup)
    return rows, targets, span


def _with_features_changed_at(row: int) -> PortfolioMarket:
    features = _MARKET.features.copy()
    features[row] += 0.5
    return dataclasses.replace(_MARKET, features=features)


def test_warmup_reads_exactly_its_decision_bars() -> None:
    """First scored row 3000, 23 warm-up bars, weekly steps: the warm-up decides at rows 2980,
    2985, 2990 and 2995. Features there change the scored decisions; features at 2979 (before
    the warm-up) or 2999 (between decisions) do not; without a warm-up neither do 2980's."""
    rows, base, _ = _targets(_MARKET, 23)
    assert rows[0] == 3000
    fresh = _targets(_MARKET, 0)[1]
    assert not np.array_equal(base, fresh)
    for row in (2980, 2995):
        assert not np.array_equal(_targets(_with_features_changed_at(row), 23)[1], base), row
    for row in (2979, 2999):
        np.testing.assert_array_equal(_targets(_with_features_changed_at(row), 23)[1], base)
    np.testing.assert_array_equal(_targets(_with_features_changed_at(2980), 0)[1], fresh)


def test_scored_run_starts_in_cash() -> None:
    """After the warm-up the account holds nothing: the first trade is the first target."""
    rows, targets, _ = _targets(_MARKET, 23)
    frame = allocation_frame(_MARKET, rows, targets, _CFG.env, _CFG.portfolio)
    first_trade = frame["trade"].to_numpy()[frame["trade"].to_numpy() > 0][0]
    assert first_trade == pytest.approx(np.abs(targets[0]).sum())
