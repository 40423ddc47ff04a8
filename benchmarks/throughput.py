"""Training throughput (env steps per second) of DistributionalPPO against its peers.

Runs in one process, all algorithms with the same torch thread count and the same settings:
8 envs, n_steps 256, batch 512, 4 epochs, LSTM hidden 64 (recurrent ones); steps per second
is wall time including training. Two cases: Pendulum-v1 (DummyVecEnv) and the trading env
(MarketVecEnv on the prepared sp500 data, already vectorized; a fresh instance per algorithm).

    python benchmarks/throughput.py [--timesteps 16384] [--threads 1] [--skip-recurrent-ppo]
                                    [--envs pendulum trading] [--rounds 8] [--full-features]
                                    [--default-malloc]

``--full-features`` adds DistributionalPPO with every risk and stability option of the
algorithm config switched on (``FULL_FEATURES``), to check they keep the throughput targets;
and that set plus the variance gradient scaler, and plus 2 microbatches, each measured alone.
``--compile`` adds the all-options set with ``compile="on"`` (the minibatch loss through
torch.compile; every other row runs eagerly, ``compile="off"``); its compilation happens in the
warm-up, whose time is printed for every algorithm and is not part of steps/s.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

import gymnasium as gym
import torch as th
from sb3_contrib import RecurrentPPO
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv

from tradingbot.algo.ppo import DistributionalPPO
from tradingbot.algo.presets import ALL_RISK_AND_STABILITY, GRAD_SCALER_ON
from tradingbot.runtime import retain_freed_memory

N_ENVS = 8
N_STEPS = 256
BATCH_SIZE = 512
N_EPOCHS = 4
LSTM_HIDDEN = 64

VecEnvFactory = Callable[[], VecEnv]
OURS = "DistributionalPPO (32 quantiles, twin critics)"
OURS_FULL = "DistributionalPPO, all options"
OURS_FULL_SCALER = "DistributionalPPO, all options + gradient scaler"
OURS_FULL_MICRO = "DistributionalPPO, all options + 2 microbatches"
OURS_FULL_COMPILED = "DistributionalPPO, all options, compiled"

# The all-options set and the gradient scaler measured on top of it (tradingbot.algo.presets,
# shared with tests/test_ppo.py's memory test).
FULL_FEATURES = ALL_RISK_AND_STABILITY
GRAD_SCALER = GRAD_SCALER_ON


def _round_robin(
    makers: dict[str, Callable[[VecEnv], object]],
    make_env: VecEnvFactory,
    timesteps: int,
    rounds: int,
) -> dict[str, float]:
    """Steps per second of each algorithm, measured in ``rounds`` interleaved slices: in each
    round every algorithm trains ``timesteps / rounds`` more steps (whole rollouts). Each one's
    time is summed over all rounds, so every algorithm sees the same mix of machine speed (a
    shared machine drifts over minutes; timing the algorithms one after another would compare
    different machines)."""
    rollout = N_STEPS * N_ENVS
    per_round = max(rollout, timesteps // rounds // rollout * rollout)
    models = {}
    for label, make in makers.items():
        model = make(make_env())
        start = time.perf_counter()
        model.learn(rollout)  # warm-up: one rollout and one update (allocations, caches)
        print(f"warm-up of {label}: {time.perf_counter() - start:.1f} s")
        models[label] = model
    elapsed = dict.fromkeys(models, 0.0)
    for _ in range(rounds):
        for label, model in models.items():
            start = time.perf_counter()
            model.learn(per_round, reset_num_timesteps=False)
            elapsed[label] += time.perf_counter() - start
    return {label: per_round * rounds / seconds for label, seconds in elapsed.items()}


def benchmark_env(
    name: str,
    make_env: VecEnvFactory,
    timesteps: int,
    skip_recurrent_ppo: bool = False,
    rounds: int = 8,
    full_features: bool = False,
    compile_loss: bool = False,
) -> dict[str, float]:
    """Measure the three algorithms on one VecEnv factory, interleaved in ``rounds`` slices
    (see ``_round_robin``), and print a table.

    Hook: call this with any factory returning an ``N_ENVS``-env VecEnv (e.g. the trading env)
    to add a benchmark case; see ``main``.
    """

    def make_ours(env: VecEnv, **options: object) -> DistributionalPPO:
        return DistributionalPPO(
            "MlpLstmPolicy",
            env,
            n_steps=N_STEPS,
            batch_size=BATCH_SIZE,
            n_epochs=N_EPOCHS,
            lstm_hidden_size=LSTM_HIDDEN,
            n_quantiles=32,
            twin_critics=True,
            seed=0,
            **{"compile": "off", **options},
        )

    peers: dict[str, Callable[[VecEnv], object]] = {
        OURS: make_ours,
        "SB3 PPO (MLP)": lambda env: PPO(
            "MlpPolicy", env, n_steps=N_STEPS, batch_size=BATCH_SIZE, n_epochs=N_EPOCHS, seed=0
        ),
    }
    if full_features:
        peers[OURS_FULL] = functools.partial(make_ours, **FULL_FEATURES)
        peers[OURS_FULL_SCALER] = functools.partial(make_ours, **FULL_FEATURES, **GRAD_SCALER)
        peers[OURS_FULL_MICRO] = functools.partial(make_ours, **FULL_FEATURES, n_microbatches=2)
    if compile_loss:
        peers[OURS_FULL_COMPILED] = functools.partial(make_ours, **FULL_FEATURES, compile="on")
    if not skip_recurrent_ppo:
        peers["sb3-contrib RecurrentPPO"] = lambda env: RecurrentPPO(
            "MlpLstmPolicy",
            env,
            n_steps=N_STEPS,
            batch_size=BATCH_SIZE,
            n_epochs=N_EPOCHS,
            policy_kwargs={"lstm_hidden_size": LSTM_HIDDEN},
            seed=0,
        )
    results = _round_robin(peers, make_env, timesteps, rounds)

    ours = results[OURS]
    print(
        f"\n{name}: {N_ENVS} envs, n_steps {N_STEPS}, batch {BATCH_SIZE}, {N_EPOCHS} epochs, "
        f"{timesteps} timesteps in {rounds} interleaved rounds, torch threads "
        f"{th.get_num_threads()}"
    )
    print(f"{'algorithm':<50} {'steps/s':>9} {'ours / it':>10}")
    for label, sps in results.items():
        print(f"{label:<50} {sps:>9.0f} {ours / sps:>10.2f}")
    peer_labels = (("RecurrentPPO", "sb3-contrib RecurrentPPO"), ("PPO", "SB3 PPO (MLP)"))
    ratios = [
        f"{mine} / {short} = {results[label_ours] / results[label]:.2f}"
        for mine, label_ours in (
            ("ours", OURS),
            ("all options", OURS_FULL),
            ("all options + scaler", OURS_FULL_SCALER),
            ("all options + microbatches", OURS_FULL_MICRO),
            ("all options compiled", OURS_FULL_COMPILED),
        )
        for short, label in peer_labels
        if label_ours in results and label in results
    ]
    print(", ".join(ratios))
    return results


def make_trading_vec_env() -> VecEnv:
    """The trading env on the prepared sp500 data (train split), ``N_ENVS`` envs."""
    from tradingbot.config import DataConfig, EnvConfig
    from tradingbot.data.market import load_prepared
    from tradingbot.env import MarketVecEnv

    market = load_prepared(DataConfig(source="sp500"))
    return MarketVecEnv(market, "train", EnvConfig(n_envs=N_ENVS), seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timesteps", type=int, default=16_384)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-recurrent-ppo", action="store_true")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved slices of the run")
    parser.add_argument("--full-features", action="store_true", help="add FULL_FEATURES run")
    parser.add_argument(
        "--compile", action="store_true", help="add the all-options set with compile='on'"
    )
    parser.add_argument(
        "--envs", nargs="+", choices=("pendulum", "trading"), default=["pendulum", "trading"]
    )
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="keep glibc's malloc thresholds (default: retain freed memory, as training runs do)",
    )
    args = parser.parse_args()
    # Process-wide, so every algorithm of the comparison runs under the same settings.
    th.set_num_threads(args.threads)
    retained = False if args.default_malloc else retain_freed_memory()
    print(f"glibc malloc retains freed memory (tradingbot.runtime): {retained}")
    gym.logger.min_level = gym.logger.ERROR

    if "pendulum" in args.envs:
        benchmark_env(
            "Pendulum-v1",
            lambda: make_vec_env("Pendulum-v1", n_envs=N_ENVS, seed=0),
            args.timesteps,
            args.skip_recurrent_ppo,
            args.rounds,
            args.full_features,
            args.compile,
        )
    if "trading" in args.envs:
        benchmark_env(
            "trading (MarketVecEnv, sp500)",
            make_trading_vec_env,
            args.timesteps,
            args.skip_recurrent_ppo,
            args.rounds,
            args.full_features,
            args.compile,
        )


if __name__ == "__main__":
    main()
