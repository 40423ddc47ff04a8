"""Exact resume: a run continued from a checkpoint in a fresh process is bit-identical."""

import subprocess
import sys
import textwrap

import torch

from tradingbot.algo.persistence import model_state
from tradingbot.checkpoint import load_checkpoint

SETUP = """
import torch
torch.set_num_threads(1)
from tradingbot.algo import DistributionalPPO
from tradingbot.config import DataConfig, EnvConfig
from tradingbot.data.market import load_prepared
from tradingbot.env import MarketVecEnv

market = load_prepared(DataConfig(source="synthetic"))
env = MarketVecEnv(market, "train", EnvConfig(n_envs=2, episode_length=50), seed=0)
HYPER = dict(n_steps=64, batch_size=64, seq_len=16, n_epochs=2, n_quantiles=8,
             lstm_hidden_size=16, net_arch=[16])
"""


def run_script(body: str) -> None:
    code = textwrap.dedent(SETUP) + textwrap.dedent(body)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


def run_half_straight_resumed(tmp_path, hyper: str = "") -> None:
    """Train 256 steps and save ``half``, go on to 512 and save ``straight``; in a fresh
    process, load ``half`` and train to 512 again, saving ``resumed``. ``hyper``: a line that
    changes ``HYPER`` first."""
    run_script(f"""
        {hyper}
        model = DistributionalPPO("MlpLstmPolicy", env, seed=0, **HYPER)
        model.learn(256)                       # two updates
        model.save(r"{tmp_path}/half")
        model.learn(256, reset_num_timesteps=False)
        model.save(r"{tmp_path}/straight")
    """)
    run_script(f"""
        model = DistributionalPPO.load(r"{tmp_path}/half", env=env)
        model.learn(256, reset_num_timesteps=False)
        model.save(r"{tmp_path}/resumed")
    """)


def test_resume_in_fresh_process_is_bit_identical(tmp_path):
    run_half_straight_resumed(tmp_path)
    straight, m1 = load_checkpoint(tmp_path / "straight.safetensors")
    resumed, m2 = load_checkpoint(tmp_path / "resumed.safetensors")
    assert m1.step == m2.step == 512
    assert straight.keys() == resumed.keys()
    groups = {k.split(".")[0] for k in straight}
    assert {"policy", "optimizer", "return_rms", "rng", "rollout", "env"} <= groups
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    # The run did move between the checkpoint and the end.
    half, _ = load_checkpoint(tmp_path / "half.safetensors")
    assert any(not torch.equal(half[k], straight[k]) for k in half if k.startswith("policy."))


def test_model_state_round_trips_through_save(tmp_path):
    from tradingbot.algo import DistributionalPPO
    from tradingbot.config import DataConfig, EnvConfig
    from tradingbot.data.market import load_prepared
    from tradingbot.env import MarketVecEnv

    market = load_prepared(DataConfig(source="synthetic"))
    env = MarketVecEnv(market, "train", EnvConfig(n_envs=2), seed=0)
    model = DistributionalPPO(
        "MlpLstmPolicy",
        env,
        seed=0,
        n_steps=32,
        batch_size=32,
        seq_len=16,
        n_quantiles=8,
        lstm_hidden_size=8,
        net_arch=[8],
    )
    model.learn(64)
    model.save(tmp_path / "m")
    loaded = DistributionalPPO.load(
        tmp_path / "m", env=MarketVecEnv(market, "train", EnvConfig(n_envs=2))
    )
    a, _ = model_state(model)
    b, _ = model_state(loaded)
    for key in a:
        if key != "rng.torch":  # loading sets the global RNG: compare everything else
            assert torch.equal(a[key], b[key]), key
