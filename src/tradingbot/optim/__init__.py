"""Optimizers and gradient control: UPGD, AdaptiveUPGD and the variance gradient scaler."""

from tradingbot.optim.scaler import VarianceGradientScaler
from tradingbot.optim.upgd import UPGD, AdaptiveUPGD

__all__ = ["UPGD", "AdaptiveUPGD", "VarianceGradientScaler"]
