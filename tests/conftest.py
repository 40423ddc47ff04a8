"""Shared test fixtures: small hand-written markets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

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
