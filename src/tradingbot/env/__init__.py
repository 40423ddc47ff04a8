"""The market simulator: a natively vectorized SB3 VecEnv and a single-env Gymnasium view."""

import gymnasium

from tradingbot.env.simulator import MarketSimulator
from tradingbot.env.single import MarketEnv
from tradingbot.env.vec_env import MarketVecEnv

ENV_ID = "tradingbot/Market-v0"
if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="tradingbot.env.single:MarketEnv")

__all__ = ["ENV_ID", "MarketEnv", "MarketSimulator", "MarketVecEnv"]
