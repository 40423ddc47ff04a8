"""Training throughput (env steps per second) of DistributionalPPO against its peers.

Runs in one process, all algorithms with the same torch thread count and the same settings:
8 envs, n_steps 256, batch 512, 4 epochs, LSTM hidden 64 (recurrent ones); steps per second
is wall time including training. Two cases: Pendulum-v1 (DummyVecEnv) and the trading env
(MarketVecEnv on the prepared sp500 data, already vectorized; a fresh instance per algorithm).

    python benchmarks/throughput.py [--timesteps 16384] [--threads 1] [--skip-recurrent-ppo]
                                    [--envs pendulum trading] [--rounds 8] [--full-features]
                                    [--default-malloc] [--compile] [--shared-lstm]
                                    [--trading-envs 8 32 64]

``--full-features`` adds DistributionalPPO with every risk and stability option of the
algorithm config switched on (``FULL_FEATURES``), to check they keep the throughput targets;
and that set plus the variance gradient scaler, and plus 2 microbatches, each measured alone.
``--shared-lstm`` adds the all-options set with ``shared_lstm=True`` (and, with ``--compile``,
compiled). ``--compile`` adds the all-options set with ``compile="on"`` (the minibatch loss through
torch.compile; every other row runs eagerly, ``compile="off"``); its compilation happens in the
warm-up, whose time is printed for every algorithm and is not part of steps/s.
``--trading-envs`` measures the trading env at several env counts, each with n_steps such
that envs x n_steps stays 2,048 samples per update (64 envs: n_steps 32), for every algorithm
alike; all of them in one round-robin. Each env count gets a like-for-like table; a last table
sets our rows at each count against the peers at the first count (not like for like).
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

from tradingbot.algo.config import PPOConfig
from tradingbot.algo.ppo import DistributionalPPO
from tradingbot.algo.presets import ALL_RISK_AND_STABILITY, GRAD_SCALER_ON
from tradingbot.runtime import retain_freed_memory

ROLLOUT_SAMPLES = 2048  # samples per update, for every algorithm and every env count
N_ENVS = 8
N_STEPS = ROLLOUT_SAMPLES // N_ENVS
BATCH_SIZE = 512
N_EPOCHS = 4
LSTM_HIDDEN = 64
# Our training chunks: n_steps must be a whole number of them (PPOConfig validation).
SEQ_LEN = PPOConfig.model_fields["seq_len"].default

VecEnvFactory = Callable[[int], VecEnv]  # the number of envs -> the VecEnv
Maker = Callable[[VecEnv], object]
OURS = "DistributionalPPO (32 quantiles, twin critics)"
OURS_FULL = "DistributionalPPO, all options"
OURS_FULL_SCALER = "DistributionalPPO, all options + gradient scaler"
OURS_FULL_MICRO = "DistributionalPPO, all options + 2 microbatches"
OURS_FULL_COMPILED = "DistributionalPPO, all options, compiled"
OURS_FULL_SHARED = "DistributionalPPO, all options, one shared LSTM"
OURS_FULL_SHARED_COMPILED = "DistributionalPPO, all options, one shared LSTM, compiled"
SB3_PPO = "SB3 PPO (MLP)"
RPPO = "sb3-contrib RecurrentPPO"
OUR_ROWS = (
    ("ours", OURS),
    ("all options", OURS_FULL),
    ("all options + scaler", OURS_FULL_SCALER),
    ("all options + microbatches", OURS_FULL_MICRO),
    ("all options compiled", OURS_FULL_COMPILED),
    ("all options shared LSTM", OURS_FULL_SHARED),
    ("all options shared LSTM compiled", OURS_FULL_SHARED_COMPILED),
)
PEER_ROWS = (("RecurrentPPO", RPPO), ("PPO", SB3_PPO))

# The all-options set and the gradient scaler measured on top of it (tradingbot.algo.presets,
# shared with tests/test_ppo.py's memory test).
FULL_FEATURES = ALL_RISK_AND_STABILITY
GRAD_SCALER = GRAD_SCALER_ON


def rollout_steps(n_envs: int) -> int:
    """
    Steps per env of one rollout with ``n_envs`` envs, so that every env count trains on
    ``ROLLOUT_SAMPLES`` samples per update (8 envs: 256, 64 envs: 32).

    Parameters
    ----------
    n_envs : int
        Environments per rollout.

    Returns
    -------
    int
        ``ROLLOUT_SAMPLES // n_envs``.

    Raises
    ------
    ValueError
        If ``n_envs`` does not divide ``ROLLOUT_SAMPLES`` or the steps are not a whole number
        of our ``SEQ_LEN`` chunks.
    """
    if n_envs < 1 or ROLLOUT_SAMPLES % n_envs:
        raise ValueError(f"n_envs ({n_envs}) must divide {ROLLOUT_SAMPLES} samples per update")
    n_steps = ROLLOUT_SAMPLES // n_envs
    if n_steps % SEQ_LEN:
        raise ValueError(
            f"n_envs ({n_envs}) gives n_steps {n_steps}, not a multiple of seq_len ({SEQ_LEN}); "
            f"at most {ROLLOUT_SAMPLES // SEQ_LEN} envs"
        )
    return n_steps


def peer_makers(
    full_features: bool = False,
    compile_loss: bool = False,
    skip_recurrent_ppo: bool = False,
    shared_lstm: bool = False,
) -> dict[str, Maker]:
    """
    The algorithms of the table, each a function of its VecEnv; every one takes its
    ``n_steps`` from the env's count (:func:`rollout_steps`), so all of them train on the same
    samples per update with the same envs.

    Parameters
    ----------
    full_features : bool
        Add the all-options rows (alone, + gradient scaler, + 2 microbatches).
    compile_loss : bool
        Add the all-options row with ``compile="on"``.
    skip_recurrent_ppo : bool
        Leave out sb3-contrib's RecurrentPPO.
    shared_lstm : bool
        Add the all-options row with ``shared_lstm=True`` (one LSTM for actor and critics
        instead of one each), and with ``compile_loss`` its compiled row.

    Returns
    -------
    dict
        Row label -> maker.
    """

    def make_ours(env: VecEnv, **options: object) -> DistributionalPPO:
        return DistributionalPPO(
            "MlpLstmPolicy",
            env,
            n_steps=rollout_steps(env.num_envs),
            batch_size=BATCH_SIZE,
            n_epochs=N_EPOCHS,
            lstm_hidden_size=LSTM_HIDDEN,
            n_quantiles=32,
            twin_critics=True,
            seed=0,
            **{"compile": "off", **options},
        )

    peers: dict[str, Maker] = {
        OURS: make_ours,
        SB3_PPO: lambda env: PPO(
            "MlpPolicy",
            env,
            n_steps=rollout_steps(env.num_envs),
            batch_size=BATCH_SIZE,
            n_epochs=N_EPOCHS,
            seed=0,
        ),
    }
    if full_features:
        peers[OURS_FULL] = functools.partial(make_ours, **FULL_FEATURES)
        peers[OURS_FULL_SCALER] = functools.partial(make_ours, **FULL_FEATURES, **GRAD_SCALER)
        peers[OURS_FULL_MICRO] = functools.partial(make_ours, **FULL_FEATURES, n_microbatches=2)
    if compile_loss:
        peers[OURS_FULL_COMPILED] = functools.partial(make_ours, **FULL_FEATURES, compile="on")
    if shared_lstm:
        peers[OURS_FULL_SHARED] = functools.partial(make_ours, **FULL_FEATURES, shared_lstm=True)
        if compile_loss:
            peers[OURS_FULL_SHARED_COMPILED] = functools.partial(
                make_ours, **FULL_FEATURES, shared_lstm=True, compile="on"
            )
    if not skip_recurrent_ppo:
        peers[RPPO] = lambda env: RecurrentPPO(
            "MlpLstmPolicy",
            env,
            n_steps=rollout_steps(env.num_envs),
            batch_size=BATCH_SIZE,
            n_epochs=N_EPOCHS,
            policy_kwargs={"lstm_hidden_size": LSTM_HIDDEN},
            seed=0,
        )
    return peers


def _round_robin(
    makers: dict[tuple[str, int], Maker],
    make_env: VecEnvFactory,
    timesteps: int,
    rounds: int,
) -> dict[tuple[str, int], float]:
    """Steps per second of each (algorithm, env count), measured in ``rounds`` interleaved
    slices: in each round every one trains ``timesteps / rounds`` more steps (whole rollouts
    of ``ROLLOUT_SAMPLES``). Each one's time is summed over all rounds, so every one sees the
    same mix of machine speed (a shared machine drifts over minutes; timing the algorithms one
    after another would compare different machines)."""
    per_round = max(ROLLOUT_SAMPLES, timesteps // rounds // ROLLOUT_SAMPLES * ROLLOUT_SAMPLES)
    models = {}
    for (label, n_envs), make in makers.items():
        model = make(make_env(n_envs))
        start = time.perf_counter()
        model.learn(ROLLOUT_SAMPLES)  # warm-up: one rollout and one update (allocations, caches)
        print(f"warm-up of {label}, {n_envs} envs: {time.perf_counter() - start:.1f} s")
        models[label, n_envs] = model
    elapsed = dict.fromkeys(models, 0.0)
    for _ in range(rounds):
        for key, model in models.items():
            start = time.perf_counter()
            model.learn(per_round, reset_num_timesteps=False)
            elapsed[key] += time.perf_counter() - start
    return {key: per_round * rounds / seconds for key, seconds in elapsed.items()}


def _ratios(results: dict[str, float], peers: dict[str, float]) -> str:
    """``ours / peer`` for every our row and peer row present."""
    return ", ".join(
        f"{mine} / {short} = {results[ours] / peers[peer]:.2f}"
        for mine, ours in OUR_ROWS
        for short, peer in PEER_ROWS
        if ours in results and peer in peers
    )


def benchmark_env(
    name: str,
    make_env: VecEnvFactory,
    timesteps: int,
    skip_recurrent_ppo: bool = False,
    rounds: int = 8,
    full_features: bool = False,
    compile_loss: bool = False,
    env_counts: tuple[int, ...] = (N_ENVS,),
    shared_lstm: bool = False,
) -> dict[tuple[str, int], float]:
    """
    Measure the algorithms on one VecEnv factory at each env count, all of them interleaved in
    ``rounds`` slices (see ``_round_robin``), and print the tables.

    Every env count runs every algorithm with ``rollout_steps(n_envs)`` steps per env, so a
    table per env count compares like with like. With several env counts, a last table gives
    our rows at each count against the peers at the first count (``env_counts[0]``): what more
    envs buy our algorithm if the peers stayed where they were, which is not a like-for-like
    comparison (the peers gain from more envs too).

    Hook: call this with any factory returning a VecEnv of the given number of envs (e.g. the
    trading env) to add a benchmark case; see ``main``.

    Returns
    -------
    dict
        (row label, env count) -> steps per second.
    """
    steps = {n_envs: rollout_steps(n_envs) for n_envs in env_counts}  # fail before any work
    peers = peer_makers(full_features, compile_loss, skip_recurrent_ppo, shared_lstm)
    makers = {(label, n_envs): make for n_envs in env_counts for label, make in peers.items()}
    results = _round_robin(makers, make_env, timesteps, rounds)

    for n_envs in env_counts:
        at_n = {label: sps for (label, count), sps in results.items() if count == n_envs}
        ours = at_n[OURS]
        print(
            f"\n{name}: {n_envs} envs, n_steps {steps[n_envs]}, batch {BATCH_SIZE}, "
            f"{N_EPOCHS} epochs, {timesteps} timesteps in {rounds} interleaved rounds, torch "
            f"threads {th.get_num_threads()} (like for like: every algorithm at {n_envs} envs)"
        )
        print(f"{'algorithm':<50} {'steps/s':>9} {'ours / it':>10}")
        for label, sps in at_n.items():
            print(f"{label:<50} {sps:>9.0f} {ours / sps:>10.2f}")
        print(_ratios(at_n, at_n))
    base = env_counts[0]
    at_base = {label: sps for (label, count), sps in results.items() if count == base}
    for n_envs in env_counts[1:]:
        at_n = {label: sps for (label, count), sps in results.items() if count == n_envs}
        print(
            f"\n{name}: ours at {n_envs} envs against the peers at {base} envs "
            "(NOT like for like: the peers at the same envs are in the table above)"
        )
        print(_ratios(at_n, at_base))
    return results


def make_trading_vec_env(n_envs: int = N_ENVS) -> VecEnv:
    """The trading env on the prepared sp500 data (train split), ``n_envs`` envs."""
    from tradingbot.config import DataConfig, EnvConfig
    from tradingbot.data.market import load_prepared
    from tradingbot.env import MarketVecEnv

    market = load_prepared(DataConfig(source="sp500"))
    return MarketVecEnv(market, "train", EnvConfig(n_envs=n_envs), seed=0)


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
        "--shared-lstm",
        action="store_true",
        help="add the all-options set with one LSTM shared by actor and critics (compiled too "
        "with --compile)",
    )
    parser.add_argument(
        "--trading-envs",
        nargs="+",
        type=int,
        default=[N_ENVS],
        help=f"env counts of the trading env, each with n_steps {ROLLOUT_SAMPLES} / count for "
        "every algorithm; the first is the baseline of the cross table (e.g. 8 32 64)",
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
            lambda n_envs: make_vec_env("Pendulum-v1", n_envs=n_envs, seed=0),
            args.timesteps,
            args.skip_recurrent_ppo,
            args.rounds,
            args.full_features,
            args.compile,
            shared_lstm=args.shared_lstm,
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
            tuple(args.trading_envs),
            shared_lstm=args.shared_lstm,
        )


if __name__ == "__main__":
    main()
