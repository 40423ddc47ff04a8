"""Shared test fixtures: small hand-written markets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from gymnasium import spaces

from tradingbot.algo.config import PPOConfig
from tradingbot.algo.policy import LSTMStates, RecurrentActorCritic
from tradingbot.config import DataConfig, FeatureConfig, SplitConfig

# Small networks run fastest on one thread, and results do not depend on the thread count.
torch.set_num_threads(1)


def make_bars(open_: list[float], close: list[float], start: str = "2020-01-01") -> pd.DataFrame:
    """Bars with the given opens and closes; high/low 1% outside them."""
    o, c = np.asarray(open_, float), np.asarray(close, float)
    return pd.DataFrame(
        {
            "open": o,
            "high": np.maximum(o, c) * 1.01,
            "low": np.minimum(o, c) * 0.99,
            "close": c,
        },
        index=pd.bdate_range(start, periods=len(o), name="timestamp"),
    )


@pytest.fixture
def short_data_cfg() -> DataConfig:
    """Features with a two-bar lookback, so that hand-written paths can be short."""
    return DataConfig(
        source="synthetic",
        features=FeatureConfig(return_windows=[1], volatility_window=2, volume_window=2, vix="off"),
        split=SplitConfig(train_fraction=0.8, validation_fraction=0.1),
    )


# --------------------------------------------------------------------------------------------
# Small policies (tests of the policy and of tradingbot.algo.fast)

OBS_SPACE = spaces.Box(-10.0, 10.0, (3,), dtype=np.float32)
BOX_ACTIONS = spaces.Box(
    np.array([-2.0, 0.0], dtype=np.float32), np.array([2.0, 1.0], dtype=np.float32)
)


def make_policy(action_space: spaces.Space, **overrides) -> RecurrentActorCritic:
    """A small policy (hidden 8, one layer of 16, 5 quantiles) on ``OBS_SPACE``, seeded."""
    torch.manual_seed(0)
    config = PPOConfig(lstm_hidden_size=8, net_arch=[16], n_quantiles=5, **overrides)
    return RecurrentActorCritic(OBS_SPACE, action_space, config)


def policy_losses(policy: RecurrentActorCritic, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An actor loss and a critic loss of ``policy`` on random chunks with episode starts
    (for a 2-d Box action space)."""
    gen = torch.Generator().manual_seed(seed)
    starts = (torch.rand(4, 6, generator=gen) < 0.3).float()
    states = LSTMStates(*torch.randn(2, 4, policy.state_size, generator=gen))
    evaluation = policy.evaluate_sequences(
        torch.randn(4, 6, 3, generator=gen), starts, states, torch.randn(4, 6, 2, generator=gen)
    )
    return -evaluation.log_prob.mean(), evaluation.quantiles.square().mean()
