"""Population-based training: the exploit restores the donor's full state with the new
hyperparameters in effect; a CI-sized PBT on local Ray exploits and exports a run that
`tradingbot backtest` accepts; a killed member resumes from its checkpoint; the same PBT runs
on a two-node Ray cluster through ``--address``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from conftest import two_node_cluster
from tradingbot.algo.persistence import model_state
from tradingbot.checkpoint import load_checkpoint
from tradingbot.cli import app
from tradingbot.config import TradingConfig
from tradingbot.config_loading import load_config
from tradingbot.data.market import load_prepared
from tradingbot.env.vec_env import MarketVecEnv
from tradingbot.pbt import (
    FaultInjection,
    MemberState,
    apply_hyperparameters,
    exploit,
    restore_member,
    run_pbt,
    save_member,
)
from tradingbot.train import MODEL_FILE, build_model

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
CI_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "pbt_ci.yaml"
ROLLOUT = 64 * 2  # n_steps x n_envs of the CI config: one update


def ci_config(tmp_path: Path, *overrides: str) -> TradingConfig:
    """The CI-sized PBT config, writing under ``tmp_path``."""
    return load_config(CI_CONFIG, [f"run.out_dir={tmp_path}", *overrides])


def trained_member(cfg: TradingConfig, seed: int, updates: int) -> tuple:
    """A model and its env after ``updates`` updates."""
    market = load_prepared(cfg.data, window=cfg.env.window)
    env = MarketVecEnv(market, "train", cfg.env, seed=seed)
    member_cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"seed": seed})})
    model = build_model(member_cfg, env)
    model.learn(updates * ROLLOUT, reset_num_timesteps=False)
    return model, env


RESET_ON_EXPLOIT = ("rollout.lstm.", "rollout.episode_starts")


@pytest.fixture
def scaler_cfg(tmp_path: Path) -> TradingConfig:
    """CI config with the gradient scaler on (so scaler statistics exist) and mean-CVaR."""
    return ci_config(
        tmp_path,
        "algo.grad_scaler.enabled=true",
        "algo.grad_scaler.warmup=0",
        "algo.risk.mode=mean_cvar",
    )


def test_exploit_restores_donor_state_and_applies_new_hyperparameters(
    tmp_path: Path, scaler_cfg: TradingConfig
) -> None:
    cfg = scaler_cfg
    donor, _ = trained_member(cfg, seed=0, updates=2)
    donor_dir = save_member(donor, tmp_path / "donor", MemberState("t_00000", iteration=1), cfg)
    member, env = trained_member(cfg, seed=1000, updates=1)
    stored, _ = load_checkpoint(donor_dir / MODEL_FILE)
    before = {f"policy.{k}": v for k, v in member.policy.state_dict().items()}
    assert any(not torch.equal(v, stored[k]) for k, v in before.items()), "member == donor"
    assert cfg.algo.learning_rate == pytest.approx(3e-4)
    new = {
        "algo.learning_rate": 1e-4,
        "algo.clip_range": 0.15,
        "algo.vf_coef": 0.8,
        "algo.ent_coef": 0.005,
        "algo.risk.weight": 0.3,
        "algo.grad_scaler.alpha": 0.7,
    }

    model, state = exploit(donor_dir, env, "t_00001", new, seed=1000)

    tensors, _ = model_state(model)
    compared = [k for k in stored if not k.startswith(RESET_ON_EXPLOIT)]
    assert any(k.startswith("optimizer.") for k in compared)
    assert {"return_rms.mean", "return_rms.var", "return_rms.count"} <= set(compared)
    assert any("scaler" in k for k in compared), "the scaler's statistics are not stored"
    for key in compared:  # weights, optimizer moments, statistics (scaler ones when stored)
        assert torch.equal(tensors[key], stored[key]), key
    assert float(stored["return_rms.count"]) > 1.0  # statistics were really learned
    for h in model._last_lstm_states:
        assert torch.count_nonzero(h) == 0
    assert model._last_episode_starts.all()
    assert any(torch.count_nonzero(stored[k]) for k in stored if k.startswith("rollout.lstm."))
    assert state.exploits == 1 and state.source == "t_00000" and state.iteration == 1

    assert [g["lr"] for g in model.optimizer.param_groups] == [1e-4] * len(
        model.optimizer.param_groups
    )
    assert model.config.clip_range == 0.15 and model.config.vf_coef == 0.8
    assert model.config.risk.weight == 0.3
    assert model.train_state.scaler is not None and model.train_state.scaler.alpha == 0.7
    model.learn(ROLLOUT, reset_num_timesteps=False)  # one update: the schedule must not revert
    assert [g["lr"] for g in model.optimizer.param_groups] == [1e-4] * len(
        model.optimizer.param_groups
    )
    assert model.logger.name_to_value["train/learning_rate"] == pytest.approx(1e-4)


def test_resume_of_own_checkpoint_keeps_lstm_state(tmp_path: Path) -> None:
    cfg = ci_config(tmp_path)
    model, env = trained_member(cfg, seed=0, updates=1)
    directory = save_member(model, tmp_path / "own", MemberState("t_00000", iteration=1), cfg)
    restored, state = restore_member(directory, env, "t_00000", {"algo.learning_rate": 3e-4})
    for saved, loaded in zip(model._last_lstm_states, restored._last_lstm_states, strict=True):
        assert torch.equal(saved, loaded) and torch.count_nonzero(loaded) > 0
    assert state.exploits == 0 and state.source == "t_00000"
    with pytest.raises(ValueError, match="own checkpoint"):
        exploit(directory, env, "t_00000", {})


def test_upgd_sigma_reaches_the_optimizer(tmp_path: Path) -> None:
    cfg = ci_config(tmp_path, "algo.optimizer=upgd")
    model, _ = trained_member(cfg, seed=0, updates=1)
    apply_hyperparameters(model, {"algo.upgd.sigma": 0.004, "algo.learning_rate": 2e-4})
    assert all(g["sigma"] == 0.004 and g["lr"] == 2e-4 for g in model.optimizer.param_groups)
    assert model.config.upgd.sigma == 0.004


@pytest.fixture
def ray_teardown():
    """Shut Ray down after a test, whatever happened."""
    yield
    import ray

    ray.shutdown()


def backtest_matches_best_score(run_dir: Path) -> None:
    """`tradingbot backtest` accepts the exported run and its validation Sharpe is the score
    the best member reported."""
    result = CliRunner().invoke(app, ["backtest", str(run_dir), "--split", "validation"])
    assert result.exit_code == 0, result.output
    metrics = pd.read_csv(run_dir / "backtest" / "validation" / "metrics.csv")
    summary = json.loads((run_dir / "pbt" / "summary.json").read_text())
    agent = metrics[metrics["policy"] == "agent"]["sharpe"].mean()
    assert agent == pytest.approx(summary["best_score"], rel=1e-9)


@pytest.mark.slow
def test_ci_pbt_exploits_and_exports_a_run(tmp_path: Path, ray_teardown: None) -> None:
    result = CliRunner().invoke(
        app, ["pbt", "--config", str(CI_CONFIG), "--set", f"run.out_dir={tmp_path}"]
    )
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "pbt-ci"
    members = pd.read_csv(run_dir / "pbt" / "members.csv", keep_default_na=False)
    assert set(members["trial_id"]).__len__() == 4
    exploited = members[members["exploited_from"] != ""]
    assert len(exploited) >= 1, members
    assert set(exploited["exploited_from"]) <= set(members["trial_id"])
    assert (exploited["exploited_from"] != exploited["trial_id"]).all()
    assert (exploited["exploits"] >= 1).all()
    for column in ("algo.learning_rate", "algo.clip_range", "algo.upgd.sigma", "score"):
        assert column in members
    assert (run_dir / "pbt" / "pbt.html").stat().st_size > 100_000
    assert "run directory" in result.output
    backtest_matches_best_score(run_dir)


@pytest.mark.slow
def test_killed_member_resumes_from_its_checkpoint(tmp_path: Path, ray_teardown: None) -> None:
    cfg = ci_config(tmp_path, "pbt.population=2", "pbt.synch=true", "run.name=fault")
    marker = tmp_path / "killed"
    result = run_pbt(cfg, fault=FaultInjection(trial_index=1, iteration=3, marker=str(marker)))
    assert marker.exists(), "the fault never fired"
    summary = json.loads((result.run_dir / "pbt" / "summary.json").read_text())
    killed = next(t for t in summary["failures"] if t.endswith("_00001"))
    assert summary["failures"][killed] == 1
    rows = result.members[result.members["trial_id"] == killed]
    # Continued after its last checkpoint (interval 2): every interval reported once, in order.
    assert rows["iteration"].tolist() == [1, 2, 3, 4]
    assert rows["timesteps"].tolist() == [256, 512, 768, 1024]
    assert (result.run_dir / MODEL_FILE).is_file()


@pytest.mark.slow
def test_pbt_on_a_two_node_cluster(tmp_path: Path, ray_teardown: None) -> None:
    with two_node_cluster() as cluster:
        result = CliRunner().invoke(
            app,
            [
                "pbt",
                "--config",
                str(CI_CONFIG),
                "--set",
                f"run.out_dir={tmp_path}",
                "--address",
                cluster.address,  # type: ignore[attr-defined]
            ],
        )
        assert result.exit_code == 0, result.output
    run_dir = tmp_path / "pbt-ci"
    members = pd.read_csv(run_dir / "pbt" / "members.csv", keep_default_na=False)
    assert len(set(members["trial_id"])) == 4 and members["iteration"].max() == 4
    backtest_matches_best_score(run_dir)


PORTFOLIO_CI_CONFIG = CI_CONFIG.parent / "pbt_portfolio_ci.yaml"


def test_portfolio_member_exploit_restores_the_donor(tmp_path: Path) -> None:
    """A portfolio member's checkpoint loads with the portfolio policy: the exploiting member
    has the donor's weights, and scores what the donor scored."""
    from tradingbot.pbt.member import score_member
    from tradingbot.pbt.trainable import member_market
    from tradingbot.training_run import build_model, model_policy

    cfg = load_config(PORTFOLIO_CI_CONFIG, [f"run.out_dir={tmp_path}"])
    market, env = member_market(cfg, seed=0)
    donor = build_model(cfg, env)
    donor.learn(64, reset_num_timesteps=False)
    save_member(donor, tmp_path / "donor", MemberState(trial_id="t_00000", seed=0), cfg)
    _, other_env = member_market(cfg, seed=1000)
    model, state = exploit(
        tmp_path / "donor", other_env, "t_00001", {"algo.learning_rate": 1e-4}, 1000,
        policy=model_policy(cfg),
    )  # fmt: skip
    assert state.exploits == 1 and model.config.learning_rate == 1e-4
    for key, value in donor.policy.state_dict().items():
        assert torch.equal(model.policy.state_dict()[key], value), key
    assert score_member(model, market, cfg) == score_member(donor, market, cfg)


@pytest.mark.slow
def test_portfolio_pbt_exports_a_run_that_backtests(tmp_path: Path, ray_teardown: None) -> None:
    """``tradingbot pbt`` on a portfolio config: the members exploit, and the exported run is a
    portfolio run whose validation backtest reproduces the best member's score."""
    result = CliRunner().invoke(
        app, ["pbt", "--config", str(PORTFOLIO_CI_CONFIG), "--set", f"run.out_dir={tmp_path}"]
    )
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "pbt-portfolio-ci"
    members = pd.read_csv(run_dir / "pbt" / "members.csv", keep_default_na=False)
    assert members["trial_id"].nunique() == 3
    assert (members["exploited_from"] != "").sum() >= 1, members
    assert (run_dir / "portfolio.json").is_file()
    backtest_matches_best_score(run_dir)
    bars = pd.read_csv(run_dir / "backtest" / "validation" / "bars_portfolio_agent.csv")
    assert len([c for c in bars.columns if c.startswith("w_")]) == 20
