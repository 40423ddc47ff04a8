"""Policies and helpers for the oracle market (the synthetic market with an observable
signal, ``data.synthetic.predictability > 0``): the oracle's sign and no-trade-band policies, a
seeded random policy, the mean Sharpe of a policy over a split, and training the agent. Used by
``benchmarks/oracle.py`` and the learning test."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tradingbot.config import TradingConfig
from tradingbot.data.market import PreparedMarket
from tradingbot.env.vec_env import MarketVecEnv
from tradingbot.evaluate.backtest import MemorylessPolicy, backtest_metrics, run_backtest
from tradingbot.train import build_model, member_config


class SignalPolicy(MemorylessPolicy):
    """The oracle: ``sign(s_t)`` of the raw signal at the decision bar, optionally with a
    no-trade band (keep the previous position while ``|s_t| <= threshold``); or, with
    ``scale``, the linear position ``clip(s_t / scale, -1, 1)``.

    :func:`run_backtest` starts at the split's first usable row of the instrument and steps one
    row per call, so the decision bar is that row plus the number of calls so far.
    """

    def __init__(
        self,
        market: PreparedMarket,
        split: str,
        instrument: str,
        threshold: float = 0.0,
        scale: float | None = None,
    ) -> None:
        index = next(i for i, inst in enumerate(market.instruments) if inst.name == instrument)
        self.first_row = market.ranges(split)[index][0]
        self.signal = market.data.bars[instrument]["signal"].to_numpy()
        self.threshold = threshold
        self.scale = scale
        self.calls = 0
        self.position = 0.0

    def actions(self, observation: np.ndarray) -> np.ndarray:
        """The position for the decision bar (one call per bar, a batch of one)."""
        s = self.signal[self.first_row + self.calls]
        self.calls += 1
        if self.scale is not None:
            self.position = float(np.clip(s / self.scale, -1.0, 1.0))
        elif abs(s) > self.threshold or self.threshold == 0.0:
            self.position = float(np.sign(s))
        return np.array([[self.position]], dtype=np.float32)


class RandomPolicy(MemorylessPolicy):
    """Uniform random target positions in [-1, 1] from a seeded generator."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def actions(self, observation: np.ndarray) -> np.ndarray:
        """Uniform random positions, one per observation."""
        n = len(np.atleast_2d(observation))
        return self.rng.uniform(-1.0, 1.0, size=(n, 1)).astype(np.float32)


def instrument_names(market: PreparedMarket) -> list[str]:
    """The market's instrument names, in order."""
    return [inst.name for inst in market.instruments]


def split_sharpe(
    make_policy: Callable[[str], Any], market: PreparedMarket, cfg: TradingConfig, split: str
) -> dict:
    """Run a fresh policy per instrument over ``split``; mean Sharpe and diagnostics."""
    sharpes, turnovers, exposures, corrs = [], [], [], []
    for name in instrument_names(market):
        bars = run_backtest(make_policy(name), market, split, cfg.env, name)
        m = backtest_metrics(bars)
        # A flat book has zero returns, whose Sharpe empyrical leaves undefined: call it 0.
        no_risk = not np.isfinite(m["sharpe"]) and (bars["return"] == 0).all()
        sharpes.append(0.0 if no_risk else m["sharpe"])
        turnovers.append(m["turnover"])
        exposures.append(m["exposure"])
        if "signal" in market.data.bars[name]:
            # The position held over bar t was decided at the close of bar t-1 on s_{t-1}.
            signal = market.data.bars[name]["signal"].shift(1).reindex(bars.index).to_numpy()
            pos = bars["position"].to_numpy()
            ok = np.isfinite(signal)
            corrs.append(
                float(np.corrcoef(pos[ok], np.sign(signal[ok]))[0, 1])
                if pos[ok].std() > 0
                else float("nan")
            )
    return {
        "sharpe": float(np.nanmean(sharpes)),
        "sharpes": sharpes,
        "turnover": float(np.mean(turnovers)),
        "exposure": float(np.mean(exposures)),
        "corr_sign_signal": (
            float(np.nanmean(corrs)) if np.isfinite(corrs).any() else float("nan")
        ),
    }


def train_agent(
    cfg: TradingConfig, market: PreparedMarket, seed: int, verbose: bool = False
) -> tuple[Any, float]:
    """Train DistributionalPPO on the train split as the plain run seeded by ``seed``
    (:func:`tradingbot.train.member_config`, what a walk-forward job trains)."""
    cfg = member_config(cfg, seed)
    env = MarketVecEnv(market, "train", cfg.env, seed=seed)
    model = build_model(cfg, env)
    start = time.time()
    model.learn(cfg.run.total_timesteps)
    return model, time.time() - start
