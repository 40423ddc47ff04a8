"""One PBT member without Ray: hyperparameters applied to a live model, checkpoints written and
restored (an exploit), and the validation score.

A member's checkpoint is a directory holding ``model.safetensors`` (the project's full
checkpoint: weights, optimizer moments, return-normalization and running statistics, RNG and
environment state) and ``member.json`` (which trial wrote it, after how many intervals, with
which hyperparameters and score).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tradingbot.algo.config import PPOConfig
from tradingbot.algo.ppo import DistributionalPPO
from tradingbot.config import TradingConfig
from tradingbot.config_pbt import MutationSpec
from tradingbot.data.market import PreparedMarket
from tradingbot.data.portfolio import PortfolioMarket
from tradingbot.env.portfolio import PortfolioVecEnv
from tradingbot.env.vec_env import MarketVecEnv
from tradingbot.evaluate.backtest import backtest_metrics, run_backtest
from tradingbot.portfolio_run import agent_metrics
from tradingbot.safe_write import write_text
from tradingbot.train import MODEL_FILE

log = logging.getLogger(__name__)

MEMBER_FILE = "member.json"
ALGO_PREFIX = "algo."
WORST_SCORE = 1e6  # stands in for a non-finite score (sign chosen by the mode)


@dataclass
class MemberState:
    """Bookkeeping carried in a member's checkpoint next to the model.

    Parameters
    ----------
    trial_id: the Tune trial that wrote the checkpoint.
    iteration: training intervals completed (what Tune's iteration counter should say).
    hyperparameters: the mutable hyperparameters in effect (dotted paths -> values).
    score: the validation score after the last interval.
    source: the trial whose checkpoint this member continued from last (itself on a resume).
    exploits: exploits along this checkpoint's lineage (a donor's count is inherited).
    seed: the trial's own seed (of its environments and initial weights).
    """

    trial_id: str
    iteration: int = 0
    hyperparameters: dict[str, float] = field(default_factory=dict)
    score: float = math.nan
    source: str | None = None
    exploits: int = 0
    seed: int = 0


# --------------------------------------------------------------------------------------------
# Mutation space


def resolve_mutations(
    mutations: dict[str, MutationSpec], algo: PPOConfig
) -> dict[str, MutationSpec]:
    """The mutations whose dotted path names a numeric field of the algorithm config.

    Paths outside ``algo.`` or naming a field the config lacks are skipped with a warning
    (e.g. a field another version of :class:`PPOConfig` does not have).
    """
    dumped = algo.model_dump()
    usable: dict[str, MutationSpec] = {}
    for path, spec in mutations.items():
        if not path.startswith(ALGO_PREFIX):
            log.warning("PBT: skipping mutation %r: only algo.* hyperparameters mutate", path)
            continue
        node: Any = dumped
        for part in path.removeprefix(ALGO_PREFIX).split("."):
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, bool) or not isinstance(node, (int, float)):
            log.warning(
                "PBT: skipping mutation %r: PPOConfig has no numeric field at that path", path
            )
            continue
        usable[path] = spec
    return usable


def clip_to_space(values: dict[str, Any], mutations: dict[str, MutationSpec]) -> dict[str, Any]:
    """``values`` with each mutated hyperparameter clipped into its range (Tune's perturbation
    multiplies by a factor and may leave it)."""
    clipped = dict(values)
    for path, spec in mutations.items():
        if path in clipped:
            clipped[path] = float(min(max(float(clipped[path]), spec.low), spec.high))
    return clipped


def with_hyperparameters(algo: PPOConfig, values: dict[str, float]) -> PPOConfig:
    """A validated copy of ``algo`` with dotted ``algo.*`` paths set to ``values``."""
    raw = algo.model_dump()
    for path, value in values.items():
        parts = path.removeprefix(ALGO_PREFIX).split(".")
        node = raw
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
    return PPOConfig.model_validate(raw)


# --------------------------------------------------------------------------------------------
# Applying hyperparameters and exploiting


def apply_hyperparameters(model: DistributionalPPO, values: dict[str, float]) -> PPOConfig:
    """Make ``values`` take effect in a live model and return its new config.

    DistributionalPPO reads ``model.config`` at every update (clip range, coefficients, CVaR
    weight); the learning rate lives in the optimizer's param groups and in SB3's
    ``lr_schedule``, which ``train()`` applies to the optimizer before each update, so both are
    replaced; UPGD's sigma lives in its param groups and the scaler's alpha in the scaler.
    Under ``risk.mode == "cvar_constraint"`` the CVaR multiplier is a dual variable carried in
    ``train_state`` and only its initial value comes from ``risk.weight``.
    """
    cfg = with_hyperparameters(model.config, values)
    model.set_hyperparameters(cfg)
    return cfg


def reset_recurrent_state(model: DistributionalPPO) -> None:
    """Zero the LSTM states carried between rollouts and mark every env as starting an episode
    (so the first step of the next rollout starts from a clean state)."""
    model.reset_recurrent_state()


def read_member(directory: Path) -> MemberState:
    """The :class:`MemberState` stored in a member checkpoint directory."""
    return MemberState(**json.loads((Path(directory) / MEMBER_FILE).read_text()))


def restore_member(
    directory: Path,
    env: MarketVecEnv | PortfolioVecEnv,
    trial_id: str,
    values: dict[str, float],
    seed: int | None = None,
    policy: Any = "MlpLstmPolicy",
) -> tuple[DistributionalPPO, MemberState]:
    """Continue trial ``trial_id`` from a member checkpoint with hyperparameters ``values``.

    The model gets the checkpoint's full state. When the checkpoint was written by another
    trial this is an exploit: the LSTM states are reset and the exploit is counted. When it is
    the trial's own (a retry after a crash) training continues exactly where it stopped. Either
    way ``values`` are applied afterwards. ``seed`` is the trial's own seed, recorded in the
    new state (default: the checkpoint's). ``env`` is the member's training environment
    (a portfolio's with the portfolio ``policy``, see
    :func:`tradingbot.training_run.model_policy`).
    """
    directory = Path(directory)
    stored = read_member(directory)
    model = DistributionalPPO.load(directory / MODEL_FILE, env=env, policy=policy)
    exploited = stored.trial_id != trial_id
    if exploited:
        reset_recurrent_state(model)
    apply_hyperparameters(model, values)
    state = MemberState(
        trial_id=trial_id,
        iteration=stored.iteration,
        hyperparameters=dict(values),
        score=stored.score,
        source=stored.trial_id,
        exploits=stored.exploits + int(exploited),
        seed=stored.seed if seed is None else seed,
    )
    return model, state


def exploit(
    donor: Path,
    env: MarketVecEnv | PortfolioVecEnv,
    trial_id: str,
    values: dict[str, float],
    seed: int | None = None,
    policy: Any = "MlpLstmPolicy",
) -> tuple[DistributionalPPO, MemberState]:
    """Take a donor's checkpoint directory as trial ``trial_id`` with new hyperparameters
    (:func:`restore_member` for a checkpoint another trial wrote)."""
    if read_member(donor).trial_id == trial_id:
        raise ValueError(f"{donor} is {trial_id}'s own checkpoint, not a donor's")
    return restore_member(donor, env, trial_id, values, seed, policy)


def save_member(
    model: DistributionalPPO, directory: Path, state: MemberState, config: TradingConfig
) -> Path:
    """Write a member checkpoint (model and :class:`MemberState`) into ``directory``.

    The stored run config carries the member's current hyperparameters, so the checkpoint
    alone rebuilds the member's config.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    member_config = member_run_config(config, model.config, seed=state.seed)
    model.save(
        directory / MODEL_FILE,
        config=member_config.to_dict(),
        metrics={"score": state.score} if math.isfinite(state.score) else None,
    )
    write_text(directory / MEMBER_FILE, json.dumps(asdict(state), indent=2), root=directory)
    return directory


def member_run_config(
    config: TradingConfig, algo: PPOConfig, seed: int | None = None
) -> TradingConfig:
    """The run config of a member: ``config`` with the member's algorithm hyperparameters
    (without the algorithm seed, which a run config takes from ``run.seed``) and, when given,
    its seed as ``run.seed``."""
    raw = config.to_dict()
    raw["algo"] = algo.model_copy(update={"seed": None}).model_dump(mode="json")
    if seed is not None:
        raw["run"]["seed"] = seed
    return TradingConfig.model_validate(raw)


# --------------------------------------------------------------------------------------------
# Score


def score_member(
    model: DistributionalPPO, market: PreparedMarket | PortfolioMarket, config: TradingConfig
) -> tuple[float, float]:
    """The member's score: ``pbt.metric`` of a deterministic backtest on ``pbt.split``,
    averaged over instruments (see :func:`tradingbot.evaluate.backtest.backtest_metrics`);
    for a portfolio, of the agent's portfolio (:func:`tradingbot.portfolio_run.agent_metrics`,
    what ``tradingbot backtest`` reports for it).

    Returns (score, raw metric). A non-finite metric (e.g. the Sharpe of a policy that never
    trades) scores as the worst value for the mode, so that Tune can rank it.
    """
    pbt = config.pbt
    if isinstance(market, PortfolioMarket):
        results = [agent_metrics(model, market, pbt.split, config)]
    else:
        results = [
            backtest_metrics(
                run_backtest(
                    model, market, pbt.split, config.env, inst.name, config.evaluation.warmup_bars
                )
            )
            for inst in market.scored_instruments  # not data.train_sources' instruments
        ]
    values = []
    for metrics in results:
        if pbt.metric not in metrics:
            raise KeyError(f"pbt.metric {pbt.metric!r} is not one of {sorted(metrics)}")
        values.append(float(metrics[pbt.metric]))
    raw = float(np.mean(values))
    if math.isfinite(raw):
        return raw, raw
    return (-WORST_SCORE if pbt.mode == "max" else WORST_SCORE), raw
