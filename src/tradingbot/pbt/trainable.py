"""The Ray Tune function trainable of one PBT member.

A member trains ``pbt.perturbation_interval`` updates, scores itself on the validation split
and reports the score to Tune together with a checkpoint directory (written into a temporary
directory of its own and copied by Tune into the trial's directory), until it has trained
``run.total_timesteps``. When Tune starts it with a checkpoint, it continues from it: its own
(a retry after a crash) or another member's (an exploit, see :func:`restore_member`).
"""

from __future__ import annotations

import math
import os
import signal
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune

from tradingbot.config import TradingConfig
from tradingbot.data.market import PreparedMarket, load_prepared
from tradingbot.data.portfolio import PortfolioMarket, load_portfolio
from tradingbot.env.portfolio import PortfolioVecEnv
from tradingbot.env.vec_env import MarketVecEnv
from tradingbot.pbt.member import (
    MemberState,
    apply_hyperparameters,
    member_run_config,
    restore_member,
    save_member,
    score_member,
    with_hyperparameters,
)
from tradingbot.runtime import configure_process
from tradingbot.training_run import build_model, model_policy

HP_PREFIX = "hp/"
SEED_STRIDE = 1000  # member i seeds its environments with run.seed + 1000 * i (+ env index)


@dataclass(frozen=True)
class FaultInjection:
    """Kill one member's process once, to test recovery from crashes.

    Parameters
    ----------
    trial_index: the member (by its Tune trial number) that is killed.
    iteration: it is killed just before training this interval (1-based).
    marker: a file created just before the kill; once it exists the fault is disarmed.
    """

    trial_index: int
    iteration: int
    marker: str

    def maybe_fire(self, trial_index: int, iteration: int) -> None:
        """SIGKILL this process if it is the chosen member at the chosen interval (once)."""
        if trial_index != self.trial_index or iteration != self.iteration:
            return
        marker = Path(self.marker)
        if marker.exists():
            return
        marker.write_text(f"killed trial {trial_index} before interval {iteration}\n")
        os.kill(os.getpid(), signal.SIGKILL)


def trial_index(trial_id: str) -> int:
    """The member's number from Tune's trial id (``abc12_00003`` -> 3; a hash otherwise)."""
    suffix = trial_id.rsplit("_", 1)[-1]
    return int(suffix) if suffix.isdigit() else zlib.crc32(trial_id.encode()) % 100_000


def intervals_per_member(config: TradingConfig) -> int:
    """Training intervals that make up a member's ``run.total_timesteps``."""
    steps = config.pbt.perturbation_interval * config.algo.n_steps * config.env.n_envs
    return max(1, math.ceil(config.run.total_timesteps / steps))


def member_market(
    config: TradingConfig, seed: int
) -> tuple[PreparedMarket | PortfolioMarket, MarketVecEnv | PortfolioVecEnv]:
    """A member's data and training environments (seeded by ``seed``): the portfolio
    environment for a config with a ``portfolio`` section, else the single-instrument one."""
    if config.portfolio is not None:
        universe = load_portfolio(config.data)
        return universe, PortfolioVecEnv(universe, "train", config.env, config.portfolio, seed=seed)
    market = load_prepared(config.data, window=config.env.window)
    return market, MarketVecEnv(market, "train", config.env, seed=seed)


def _report(model: Any, state: MemberState, config: TradingConfig, metrics: dict[str, Any]) -> None:
    """Write the member checkpoint into a temporary directory and report it with ``metrics``
    (Tune copies it into this trial's directory before the directory is removed)."""
    with tempfile.TemporaryDirectory(prefix="pbt-member-") as tmp:
        save_member(model, Path(tmp), state, config)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


def pbt_trainable(
    hyperparameters: dict[str, Any],
    config: dict[str, Any],
    fault: FaultInjection | None = None,
) -> None:
    """Train one PBT member (Tune calls it with the member's hyperparameters).

    Parameters
    ----------
    hyperparameters: dotted ``algo.*`` paths -> values (Tune's config of the trial).
    config: the resolved run config (``TradingConfig.to_dict()``).
    fault: for tests: kill this process once at a given member and interval.
    """
    cfg = TradingConfig.model_validate(config)
    configure_process(cfg.run)
    trial_id = tune.get_context().get_trial_id() or "local_00000"
    index = trial_index(trial_id)
    seed = cfg.run.seed + SEED_STRIDE * index
    values = {k: float(v) for k, v in hyperparameters.items()}
    market, env = member_market(cfg, seed)
    checkpoint = tune.get_checkpoint()
    restored_from = ""
    if checkpoint is None:
        member_cfg = member_run_config(cfg, with_hyperparameters(cfg.algo, values), seed=seed)
        model = build_model(member_cfg, env)
        apply_hyperparameters(model, values)
        state = MemberState(trial_id=trial_id, hyperparameters=values, seed=seed)
    else:
        with checkpoint.as_directory() as directory:
            model, state = restore_member(
                Path(directory), env, trial_id, values, seed, policy=model_policy(cfg)
            )
        restored_from = state.source or ""
    steps = cfg.pbt.perturbation_interval * cfg.algo.n_steps * cfg.env.n_envs
    for _ in range(state.iteration, intervals_per_member(cfg)):
        if fault is not None:
            fault.maybe_fire(index, state.iteration + 1)
        model.learn(steps, reset_num_timesteps=False)
        state.iteration += 1
        state.score, raw = score_member(model, market, cfg)
        metrics = {
            "score": state.score,
            "metric": raw,
            "iteration": state.iteration,
            "timesteps": model.num_timesteps,
            "restored_from": restored_from,
            "exploits": state.exploits,
            "seed": seed,
            **{f"{HP_PREFIX}{k}": v for k, v in values.items()},
        }
        _report(model, state, cfg, metrics)
        restored_from = ""
