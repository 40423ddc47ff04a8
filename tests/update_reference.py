"""Bit-identity reference of DistributionalPPO's update: a few rollouts and updates on small
CPU envs under fully written-out configs, whose end state (parameters, optimizer state, update
statistics, return statistics, RNG, the last rollout's shaped advantages) was recorded before
the algorithm's code was restructured (at commit ded48df) and must not change.

Run as a script to (re)record the files under ``tests/data/update_reference/``:

    python tests/update_reference.py

Only re-record on purpose, when an intended change of the numerics is made (and say so in the
commit). ``tests/test_update_reference.py`` rebuilds the same runs and compares every tensor.

Every option of :class:`tradingbot.algo.config.PPOConfig` is written out below (not left to
its default), so that a changed default elsewhere does not change these runs.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from safetensors.torch import load_file, save_file
from stable_baselines3.common.env_util import make_vec_env

from tradingbot.algo.ppo import DistributionalPPO

DATA_DIR = Path(__file__).resolve().parent / "data" / "update_reference"
N_ENVS = 2
N_UPDATES = 3

# Every PPOConfig field at its default value of commit ded48df, written out.
DEFAULTS: dict[str, Any] = {
    "learning_rate": 3e-4,
    "learning_rate_final": None,
    "n_steps": 32,  # small run (default 256)
    "batch_size": 32,  # small run (default 512)
    "n_epochs": 2,  # small run (default 4)
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "clip_range": 0.2,
    "clip_range_final": None,
    "clip_range_vf": None,
    "value_clip": {"mode": "none"},
    "ent_coef": 0.0,
    "entropy": {
        "final": None,
        "boost_factor": 1.0,
        "boost_max": 4.0,
        "ev_threshold": 0.0,
        "minimum": 0.0,
    },
    "vf_coef": 0.5,
    "max_grad_norm": 0.5,
    "target_kl": None,
    "kl_early_stop": "k3",
    "kl_penalty": False,
    "kl_beta_init": 1.0,
    "dual_clip": None,
    "log_ratio_clamp": 10.0,
    "advantage_normalization": "minibatch",
    "n_quantiles": 8,  # small run (default 32)
    "huber_kappa": 1.0,
    "twin_critics": True,
    "critic_value": "min",
    "lstm_hidden_size": 8,  # small run (default 64)
    "shared_lstm": False,
    "net_arch": [8],  # small run (default [64])
    "activation": "tanh",
    "ortho_init": True,
    "seq_len": 16,  # small run (default 32)
    "log_std_init": 0.0,
    "log_std_min": -5.0,
    "log_std_max": 2.0,
    "exploration": {"mode": "independent", "sample_freq": 4, "squash": "tanh"},
    "normalize_returns": True,
    "risk": {
        "mode": "none",
        "alpha": 0.05,
        "weight": 0.5,
        "cvar_limit": -1.0,
        "dual_lr": 0.1,
        "max_multiplier": 10.0,
    },
    "critic_adjust": {
        "mode": "none",
        "eps": 1e-2,
        "rate": 0.01,
        "target_clip": False,
        "xi": 3.0,
        "weight_clamp": None,
    },
    "awr": {
        "enabled": False,
        "coef": 0.1,
        "beta": 1.0,
        "max_weight": 20.0,
        "max_ratio": 1.0,
        "decay": 0.5,
    },
    "n_microbatches": 1,
    "optimizer": "adam",
    "upgd": {
        "sigma": 1e-3,
        "beta_utility": 0.999,
        "weight_decay": 0.0,
        "protect": True,
        "scope": "global",
        "adaptive_noise": False,
        "beta_noise": 0.99,
        "min_noise_std": 1e-6,
    },
    "grad_scaler": {
        "enabled": False,
        "alpha": 1.0,
        "beta": 0.99,
        "warmup": 10,
        "min_factor": 0.1,
        "aggregate": "mean",
        "percentile": 90.0,
        "max_ratio": None,
        "grad_norm_beta": None,
    },
    "robust": {
        "enabled": False,
        "epsilon": 0.1,
        "kappa": 0.1,
        "fraction": 0.25,
        "pgd_steps": 5,
        "step_size": None,
        "warmup_fraction": 0.0,
        "perturb_last": False,
    },
    "kl_penalty_target": None,
    "grad_clip": "per_network",
    "clip_adapt": {
        "enabled": False,
        "target_kl": 0.01,
        "factor": 1.5,
        "min_clip": 0.02,
        "max_clip": 0.5,
    },
    "vf_coef_initial": 0.0,
    "vf_coef_warmup": 0.0,
    # The reference pins the eager path (compiled code differs by float32 rounding).
    "compile": "off",
    "compile_min_timesteps": 1_000_000,
    "observation_normalization": {
        "enabled": False,
        "clip": 10.0,
        "epsilon": 1e-8,
        "compensate_initial": True,
    },
    "seed": 0,
    "device": "cpu",
}


def _merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied, sections (dicts) merged key by key."""
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


# Every risk and stability option on (benchmarks/throughput.py's FULL_FEATURES, plus its
# gradient scaler and microbatches), and the other options of the update besides: robust
# training, learning-rate and vf-coefficient schedules, DSAC-T weight clamp, entropy boost.
ALL_OPTIONS_ADAM = _merged(
    DEFAULTS,
    {
        "learning_rate_final": 1e-4,
        "risk": {"mode": "mean_cvar", "alpha": 0.05, "weight": 0.1},
        "critic_adjust": {"mode": "dsac_t", "target_clip": True, "weight_clamp": [0.1, 10.0]},
        "value_clip": {"mode": "mean_shift"},
        "clip_range_vf": 0.5,
        "target_kl": 0.05,
        "kl_early_stop": "exact",
        "kl_penalty": True,
        "dual_clip": 3.0,
        "ent_coef": 0.01,
        "entropy": {"final": 0.0, "boost_factor": 1.05, "minimum": 0.0, "ev_threshold": 0.5},
        "awr": {"enabled": True},
        "grad_scaler": {"enabled": True, "warmup": 1, "grad_norm_beta": 0.9, "max_ratio": 10.0},
        "n_microbatches": 2,
        "robust": {"enabled": True, "epsilon": 0.2, "pgd_steps": 2, "warmup_fraction": 0.5},
        "vf_coef_initial": 0.1,
        "vf_coef_warmup": 0.5,
        "clip_range_final": 0.1,
    },
)

# The other branches: adaptive UPGD, CVaR constraint, per-quantile value clip, rollout
# advantage normalization, one shared LSTM, global clip, adaptive clip range, the k3 early stop
# with a separate penalty target, the mean of the critics, two hidden layers, the percentile
# scaler (on a discrete action space).
ALL_OPTIONS_UPGD = _merged(
    DEFAULTS,
    {
        "optimizer": "adaptive_upgd",
        "upgd": {"sigma": 0.01, "beta_utility": 0.9, "weight_decay": 1e-3, "adaptive_noise": True},
        "risk": {"mode": "cvar_constraint", "cvar_limit": 5.0, "dual_lr": 0.5},
        "critic_adjust": {"mode": "dsac_t"},
        "value_clip": {"mode": "per_quantile"},
        "clip_range_vf": 0.3,
        "advantage_normalization": "rollout",
        "shared_lstm": True,
        "grad_clip": "global",
        "clip_adapt": {"enabled": True, "target_kl": 0.001},
        "target_kl": 0.5,
        "kl_penalty": True,
        "kl_penalty_target": 0.002,
        "critic_value": "mean",
        "net_arch": [8, 8],
        "grad_scaler": {"enabled": True, "warmup": 0, "aggregate": "percentile"},
        "n_microbatches": 2,
        "robust": {"enabled": True, "epsilon": 0.1, "pgd_steps": 1, "perturb_last": True},
        "awr": {"enabled": True, "coef": 1.0, "max_ratio": 0.01},
        "ent_coef": 0.01,
    },
)

# Plain UPGD, one critic, no return normalization, no advantage normalization.
PLAIN_UPGD = _merged(
    DEFAULTS,
    {
        "optimizer": "upgd",
        "upgd": {"sigma": 0.01, "beta_utility": 0.9, "scope": "local"},
        "twin_critics": False,
        "normalize_returns": False,
        "advantage_normalization": "none",
        "seq_len": 8,
        "log_std_init": -0.5,
    },
)

# name -> (gym env id, config)
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "default_pendulum": ("Pendulum-v1", DEFAULTS),
    "all_options_adam_pendulum": ("Pendulum-v1", ALL_OPTIONS_ADAM),
    "all_options_upgd_cartpole": ("CartPole-v1", ALL_OPTIONS_UPGD),
    "plain_upgd_pendulum": ("Pendulum-v1", PLAIN_UPGD),
}


def run_case(name: str) -> dict[str, th.Tensor]:
    """Train case ``name`` for ``N_UPDATES`` rollouts and updates from seed 0; its end state."""
    env_id, config = CASES[name]
    th.set_num_threads(1)
    th.manual_seed(0)
    env = make_vec_env(env_id, n_envs=N_ENVS, seed=0)
    model = DistributionalPPO("MlpLstmPolicy", env, **copy.deepcopy(config))
    model.learn(N_UPDATES * config["n_steps"] * N_ENVS)
    return end_state(model)


def end_state(model: DistributionalPPO) -> dict[str, th.Tensor]:
    """Every tensor that one more update would read (read through public attributes)."""
    tensors = {f"policy.{k}": v.detach().clone() for k, v in model.policy.state_dict().items()}
    for index, param_state in model.optimizer.state_dict()["state"].items():
        for key, value in param_state.items():
            tensors[f"optimizer.{index}.{key}"] = th.as_tensor(value).clone()
    for key, value in model.train_state.state_dict().items():
        tensors[f"train_state.{key}"] = value.clone()
    for key in ("mean", "var", "count"):
        value = np.asarray(getattr(model.return_rms, key), dtype=np.float64)
        tensors[f"return_rms.{key}"] = th.from_numpy(value.copy())
    tensors["rng.torch"] = th.get_rng_state()
    tensors["rollout.advantages"] = model.rollout_buffer.advantages.clone()
    tensors["rollout.returns"] = model.rollout_buffer.returns.clone()
    tensors["num_timesteps"] = th.tensor(model.num_timesteps)
    return tensors


def reference_file(name: str) -> Path:
    """The recorded end state of case ``name``."""
    return DATA_DIR / f"{name}.safetensors"


def load_reference(name: str) -> dict[str, th.Tensor]:
    """The recorded end state of case ``name``."""
    return load_file(str(reference_file(name)))


def record() -> None:
    """Write every case's end state (run twice first, to check the runs are deterministic)."""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    for name in CASES:
        first, second = run_case(name), run_case(name)
        assert first.keys() == second.keys()
        for key in first:
            assert th.equal(first[key], second[key]), f"{name}: {key} is not deterministic"
        save_file({k: v.contiguous() for k, v in first.items()}, str(reference_file(name)))
        print(f"{name}: {len(first)} tensors -> {reference_file(name)}")


if __name__ == "__main__":
    sys.exit(record())
