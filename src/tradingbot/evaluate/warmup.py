"""The LSTM warm-up before the first scored bar, shared by ``backtest`` and ``signals``.

A recurrent policy's decision at a bar depends on its hidden state, so where that state comes
from must be the same wherever the policy is scored. The definition, used by both commands:

- the *first scored bar* is the first bar whose decision is scored (a backtest: the split's
  first usable bar; signals: the ``start`` date, or the first usable bar after the warm-up);
- the LSTM first runs over the ``evaluation.warmup_bars`` bars before it (fewer when the data
  have fewer usable bars before it: features and the observation window must be defined), as a
  paper run: each warm-up observation carries the target position the policy chose at the bar
  before, exactly as the simulator feeds it back (sized by ``env.sizing`` as in the simulator);
- the scored run then starts flat (position 0 in the first scored observation: the account
  holds nothing yet) with the hidden state the warm-up left, not a reset one.

With ``warmup_bars: 0`` the state starts from zeros at the first scored bar. A seed ensemble
(:mod:`tradingbot.evaluate.ensemble`) keeps each member's own position in its state: its
``start_flat`` sets them to 0 for the scored run, as each member's own account would start.

A portfolio agent (:mod:`tradingbot.portfolio_run`) warms up the same way at its decision
bars: from the earliest decision bar within ``warmup_bars`` bars before the first scored one
(and a whole number of ``portfolio.rebalance_every`` steps before it, so the warm-up keeps the
scored run's schedule), in a paper portfolio whose weights are filled and drift as in the
portfolio environment; the scored run then starts in cash with the state the warm-up left.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th

from tradingbot.algo.policy import LSTMStates
from tradingbot.config import EnvConfig, PortfolioConfig
from tradingbot.data.market import InstrumentSeries, PreparedMarket
from tradingbot.data.portfolio import PortfolioMarket
from tradingbot.data.splits import DateRange
from tradingbot.env.portfolio import PortfolioVecEnv
from tradingbot.env.simulator import actions_to_targets, build_observations
from tradingbot.env.sizing import position_scales


def warmup_rows(
    instrument: InstrumentSeries, first_scored: int, warmup_bars: int, window: int
) -> range:
    """The instrument's local rows the LSTM runs over before ``first_scored`` (local row)."""
    first_usable = instrument.first_valid + window - 1
    return range(max(first_usable, first_scored - warmup_bars), max(first_usable, first_scored))


def warm_up(
    policy: Any,
    market: PreparedMarket,
    instrument: InstrumentSeries,
    first_scored: int,
    warmup_bars: int,
    env_cfg: EnvConfig,
) -> tuple[Any, np.ndarray]:
    """Run ``policy`` (SB3's ``predict``) over the warm-up bars before local row
    ``first_scored``; returns the recurrent state and the ``episode_start`` flag (1, still
    True when there was nothing to warm up on) for the first scored bar.
    """
    state: Any = None
    episode_start = np.ones(1, dtype=bool)
    position = np.zeros(1)
    rows = warmup_rows(instrument, first_scored, warmup_bars, env_cfg.window)
    scales = position_scales(market, env_cfg.sizing) if len(rows) else None
    for row in rows:
        at = np.array([instrument.offset + row])
        obs = build_observations(market.features, at, position, env_cfg.window)
        action, state = policy.predict(
            obs, state=state, episode_start=episode_start, deterministic=True
        )
        position = actions_to_targets(action, env_cfg, None if scales is None else scales[at])
        episode_start = np.zeros(1, dtype=bool)
    start_flat = getattr(policy, "start_flat", None)
    if start_flat is not None:
        state = start_flat(state)
    return state, episode_start


def portfolio_warmup_start(
    market: PortfolioMarket, first_scored: int, warmup_bars: int, rebalance_every: int
) -> int:
    """The first decision row of a portfolio's warm-up before row ``first_scored``: the
    earliest row at least ``first_valid`` and at most ``warmup_bars`` rows before it that is a
    whole number of steps of ``rebalance_every`` rows before it (``first_scored``: none)."""
    earliest = max(market.first_valid, first_scored - warmup_bars)
    steps = max(0, first_scored - earliest) // rebalance_every
    return first_scored - steps * rebalance_every


def warm_up_portfolio(
    policy: Any,
    market: PortfolioMarket,
    first_scored: int,
    warmup_bars: int,
    env_cfg: EnvConfig,
    cfg: PortfolioConfig,
) -> tuple[LSTMStates, th.Tensor]:
    """Run a portfolio ``policy`` (its ``step``, all of the market's assets) deterministically
    over the warm-up decision bars before row ``first_scored``; returns the LSTM states and
    the episode-start flag (1, still 1 when there was nothing to warm up on) for the first
    scored decision."""
    states, start = policy.initial_state(1), th.ones(1)
    first = portfolio_warmup_start(market, first_scored, warmup_bars, cfg.rebalance_every)
    if first == first_scored:
        return states, start
    span = DateRange(market.timestamps[first], market.timestamps[first_scored])
    env = whole_universe_env(market, span, env_cfg, cfg)
    obs = env.reset()
    for _ in range((first_scored - first) // cfg.rebalance_every):
        step = deterministic_step(policy, obs, states, start)
        obs, _, _, _ = env.step(step.action.numpy())
        states, start = step.states, th.zeros(1)
    return states, start


def whole_universe_env(
    market: PortfolioMarket, span: str | DateRange, env_cfg: EnvConfig, cfg: PortfolioConfig
) -> PortfolioVecEnv:
    """The environment a portfolio agent is run in outside training: one environment over all
    of the market's assets, from the first bar of ``span`` to its end (no episode length)."""
    return PortfolioVecEnv(
        market,
        span,
        env_cfg.model_copy(update={"n_envs": 1, "episode_length": None}),
        cfg.model_copy(update={"assets_per_episode": None}),
        random_start=False,
    )


def deterministic_step(policy: Any, obs: np.ndarray, states: LSTMStates, start: th.Tensor) -> Any:
    """A portfolio ``policy``'s deterministic ``step`` on one environment's observation."""
    obs_t = th.as_tensor(obs, dtype=th.float32).reshape(1, -1)
    return policy.step(obs_t, states, start, deterministic=True)
