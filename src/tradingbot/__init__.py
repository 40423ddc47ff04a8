"""tradingbot: risk-aware recurrent distributional PPO trading agents."""

__version__ = "0.1.0"
