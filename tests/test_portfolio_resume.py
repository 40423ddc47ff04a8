"""Exact resume of a portfolio run (``tradingbot train --resume``): the environments' state
travels in the checkpoint, and a run continued from a checkpoint ends bit-identical to the run
that was never interrupted."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tradingbot.checkpoint import load_checkpoint
from tradingbot.cli import app
from tradingbot.config_loading import load_config
from tradingbot.data.portfolio import load_portfolio
from tradingbot.env.portfolio import PortfolioVecEnv
from tradingbot.train import CHECKPOINT_DIR, MODEL_FILE, list_checkpoints, train

TINY = [
    "env.n_envs=2", "algo.n_steps=32", "algo.batch_size=64", "algo.seq_len=16",
    "algo.n_epochs=2", "algo.n_quantiles=8", "algo.lstm_hidden_size=8", "algo.net_arch=[8]",
    "portfolio.asset_embedding=8", "run.total_timesteps=256", "run.checkpoint_every=1",
    "run.keep_checkpoints=10", "run.name=pf",
]  # fmt: skip


def stepped_env(seed: int) -> PortfolioVecEnv:
    """The universe's training environments after a few random steps (mid-episode)."""
    cfg = load_config("configs/universe.yaml", ["env.n_envs=4", "env.episode_length=4"])
    env = PortfolioVecEnv(load_portfolio(cfg.data), "train", cfg.env, cfg.portfolio, seed=seed)
    env.reset()
    rng = np.random.default_rng(seed)
    for _ in range(6):  # past one episode's end: the generators have drawn again
        env.step(rng.uniform(-1, 1, (4, env.k + 1)).astype(np.float32))
    return env


def test_env_state_round_trips_and_bad_state_is_refused() -> None:
    source, target = stepped_env(0), stepped_env(1)
    arrays, state = source.state_dict()
    target.load_state_dict(arrays, state)
    actions = np.random.default_rng(5).uniform(-1, 1, (12, 4, source.k + 1)).astype(np.float32)
    for action in actions:  # across episode ends: the same resets (rows and asset subsets)
        a, b = source.step(action), target.step(action)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[2], b[2])
    before = target.state_dict()[0]
    for name, bad in {
        "assets": np.where(np.arange(target.k) == 1, arrays["assets"][:, :1], arrays["assets"]),
        "row": np.full(4, target.hi),
        "equity": np.array([1.0, 0.0, 1.0, 1.0]),
        "weights": np.full((4, target.k), np.nan),
    }.items():
        with pytest.raises(ValueError, match=f"env state '{name}'"):
            target.load_state_dict({**arrays, name: bad}, state)
    for name, value in target.state_dict()[0].items():  # a refused state changes nothing
        np.testing.assert_array_equal(value, before[name])


@pytest.mark.slow
def test_resumed_portfolio_run_is_bit_identical(tmp_path: Path) -> None:
    straight_cfg = load_config("configs/universe.yaml", [*TINY, f"run.out_dir={tmp_path / 'a'}"])
    straight = train(straight_cfg).run_dir
    run = tmp_path / "b" / "pf"
    shutil.copytree(straight, run)
    # Interrupted after the second update: its later checkpoints and the model never written.
    for path in list_checkpoints(run / CHECKPOINT_DIR)[2:]:
        path.unlink()
    (run / MODEL_FILE).unlink()
    result = CliRunner().invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    done, manifest = load_checkpoint(straight / MODEL_FILE)
    resumed, resumed_manifest = load_checkpoint(run / MODEL_FILE)
    assert manifest.step == resumed_manifest.step == 256
    assert done.keys() == resumed.keys()
    assert {k.split(".")[0] for k in done} >= {"policy", "optimizer", "rollout", "env"}
    for key in done:
        assert torch.equal(done[key], resumed[key]), key
