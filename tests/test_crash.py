"""A training process killed with SIGKILL while it writes checkpoints loses nothing."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tradingbot.algo import DistributionalPPO
from tradingbot.checkpoint import load_checkpoint
from tradingbot.train import CHECKPOINT_DIR, MODEL_FILE, list_checkpoints

SETTINGS = [
    "data.source=synthetic",
    "env.n_envs=2",
    "algo.n_steps=32",
    "algo.batch_size=32",
    "algo.seq_len=16",
    "algo.n_epochs=1",
    "run.total_timesteps=6400",
    "run.checkpoint_every=1",
    "run.keep_checkpoints=1000",
    "run.name=r",
]


def start(args):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "tradingbot.cli", "train", "--no-progress", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )


def kill_after_new_checkpoint(proc, directory, rng, timeout=120.0):
    """SIGKILL ``proc`` a random moment after it writes one more checkpoint."""
    before = len(list_checkpoints(directory)) if directory.exists() else 0
    deadline = time.time() + timeout
    while time.time() < deadline:
        if directory.exists() and len(list_checkpoints(directory)) > before:
            break
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read().decode())
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.05))  # checkpoints are written back to back: land mid-write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_sigkill_during_checkpoint_writes(tmp_path):
    rng = np.random.default_rng(0)
    run = tmp_path / "r"
    directory = run / CHECKPOINT_DIR
    args = [item for s in [*SETTINGS, f"run.out_dir={tmp_path}"] for item in ("--set", s)]
    kill_after_new_checkpoint(start(args), directory, rng)
    for _ in range(3):
        kill_after_new_checkpoint(start(["--resume", str(run)]), directory, rng)
    survivors = list_checkpoints(directory)
    assert len(survivors) >= 4
    for path in survivors:  # every complete checkpoint loads, model and all
        load_checkpoint(path)
        DistributionalPPO.load(path)
    done = subprocess.run(
        [sys.executable, "-m", "tradingbot.cli", "train", "--no-progress", "--resume", str(run)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    final = DistributionalPPO.load(run / MODEL_FILE)
    assert final.num_timesteps >= 6400
