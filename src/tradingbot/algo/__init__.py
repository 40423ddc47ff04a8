"""DistributionalPPO: recurrent PPO with twin quantile critics."""

from tradingbot.algo.config import PPOConfig
from tradingbot.algo.ppo import DistributionalPPO

__all__ = ["DistributionalPPO", "PPOConfig"]
