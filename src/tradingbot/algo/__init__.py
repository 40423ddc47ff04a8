"""DistributionalPPO: recurrent PPO with twin quantile critics.

The names below are imported on first use (PEP 562), so that importing the torch-free
:mod:`tradingbot.algo.config` (as :mod:`tradingbot.config` does) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tradingbot.algo.config import PPOConfig
    from tradingbot.algo.ppo import DistributionalPPO

__all__ = ["DistributionalPPO", "PPOConfig"]

_HOMES = {"DistributionalPPO": "tradingbot.algo.ppo", "PPOConfig": "tradingbot.algo.config"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value
