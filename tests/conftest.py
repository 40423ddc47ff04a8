"""Shared test fixtures: small hand-written markets, small models and policies, the tiny-run
config overrides and a two-node Ray cluster."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env

from tradingbot.algo.config import PPOConfig
from tradingbot.algo.policy import LSTMStates, RecurrentActorCritic
from tradingbot.algo.ppo import DistributionalPPO
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


# --------------------------------------------------------------------------------------------
# Small models on gym envs (tests of the update, the optimizers and robust training)

SMALL_PPO: dict[str, object] = dict(
    n_steps=32, batch_size=64, n_epochs=2, seq_len=16, lstm_hidden_size=8, net_arch=[8],
    n_quantiles=8, seed=0,
)  # fmt: skip


def small_model(env_id: str = "Pendulum-v1", **overrides: object) -> DistributionalPPO:
    """DistributionalPPO with ``SMALL_PPO`` (and ``overrides``) on 2 envs of ``env_id``,
    seeded, on one torch thread."""
    torch.set_num_threads(1)
    env = make_vec_env(env_id, n_envs=2, seed=0)
    return DistributionalPPO("MlpLstmPolicy", env, **{**SMALL_PPO, **overrides})


def training_snapshot(model: DistributionalPPO) -> dict[str, torch.Tensor]:
    """Copies of the policy, optimizer state, return statistics and update statistics (all
    but the skipped-step counter)."""
    state = {f"policy.{k}": v.clone() for k, v in model.policy.state_dict().items()}
    for index, param_state in model.optimizer.state_dict()["state"].items():
        for name, value in param_state.items():
            state[f"opt.{index}.{name}"] = torch.as_tensor(value).clone()
    for name in ("mean", "var", "count"):
        state[f"rms.{name}"] = torch.tensor(np.asarray(getattr(model.return_rms, name)))
    for k, v in model.train_state.state_dict().items():
        if k != "skipped_steps":
            state[f"train_state.{k}"] = v
    return state


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Two :func:`training_snapshot` outputs are equal (NaN equal to NaN)."""
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]) or (a[key].isnan().all() and b[key].isnan().all()), key


# --------------------------------------------------------------------------------------------
# Tiny runs of the CLI and the library (config overrides)

# A model small enough that a run of a few hundred steps takes seconds.
TINY_MODEL = [
    "env.n_envs=2",
    "algo.n_steps=64",
    "algo.batch_size=64",
    "algo.seq_len=16",
    "algo.n_quantiles=8",
    "algo.lstm_hidden_size=16",
    "algo.net_arch=[16]",
]
# Two one-year walk-forward folds of the synthetic data, two seeds.
TINY_WALK_FORWARD = [
    "data.walk_forward.first_test_start=2007-01-01",
    "data.walk_forward.test_length=365D",
    "data.walk_forward.n_folds=2",
    "data.walk_forward.embargo_bars=5",
    "evaluation.seeds=[0, 1]",
]


@contextlib.contextmanager
def two_node_cluster() -> Iterator[object]:
    """A Ray head and a worker node, one CPU and 100 MiB of object store each, on this
    machine (``ray.cluster_utils.Cluster``); Ray is shut down and the cluster removed after."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "object_store_memory": 100 * 1024**2,
            "include_dashboard": False,
        },
    )
    try:
        cluster.add_node(num_cpus=1, object_store_memory=100 * 1024**2)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
