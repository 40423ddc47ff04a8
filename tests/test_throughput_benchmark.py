"""benchmarks/throughput.py's env counts: every algorithm of the table trains on the same
2,048 samples per update whatever the number of envs (envs x n_steps), within our seq_len."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from stable_baselines3.common.env_util import make_vec_env

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"
_SPEC = importlib.util.spec_from_file_location("throughput_benchmark", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
throughput = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(throughput)


@pytest.mark.parametrize(("n_envs", "n_steps"), [(8, 256), (16, 128), (32, 64), (64, 32)])
def test_rollout_steps_keep_2048_samples(n_envs: int, n_steps: int) -> None:
    assert throughput.rollout_steps(n_envs) == n_steps


@pytest.mark.parametrize(
    ("n_envs", "message"),
    [
        (128, "not a multiple of seq_len"),  # 16 steps: half a 32-step chunk
        (48, "must divide 2048"),
        (0, "must divide 2048"),
    ],
)
def test_rollout_steps_rejects_counts_our_chunks_cannot_take(n_envs: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        throughput.rollout_steps(n_envs)


def test_every_algorithm_gets_the_env_count_and_2048_samples() -> None:
    makers = throughput.peer_makers(full_features=True, compile_loss=True, shared_lstm=True)
    assert set(makers) >= {throughput.OURS, throughput.SB3_PPO, throughput.RPPO}
    assert makers[throughput.OURS_FULL_SHARED_COMPILED](
        make_vec_env("Pendulum-v1", n_envs=8, seed=0)
    ).config.shared_lstm
    for label, make in makers.items():
        model = make(make_vec_env("Pendulum-v1", n_envs=64, seed=0))
        assert model.env.num_envs == 64, label
        assert model.n_steps == 32, label  # 64 x 32 = 2048
