"""Portfolio runs through the CLI: data list/show, train, backtest, report, signals,
walkforward (on Ray) and its resume."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tradingbot.cli import app
from tradingbot.portfolio_signals import historical_var

runner = CliRunner()


def test_data_list_and_show_the_universe() -> None:
    result = runner.invoke(app, ["data", "list"], terminal_width=250)
    assert result.exit_code == 0, result.output
    # The table is folded to the test console's width: names may end in an ellipsis.
    universe = next(ln for ln in result.output.splitlines() if " sp500_unive" in ln)
    assert " 20 " in universe and "166260" in universe  # 20 stocks x 8313 days
    assert "1990-01-02" in universe and "2022-12-28" in universe
    index = next(ln for ln in result.output.splitlines() if " sp500_index " in ln)
    assert " 8313 " in index
    result = runner.invoke(app, ["data", "show", "sp500_universe"], terminal_width=250)
    assert result.exit_code == 0, result.output
    assert "close-only data" in result.output and "fill at the next close" in result.output
    assert "AAPL" in result.output and "XOM" in result.output


def test_historical_var_by_hand() -> None:
    # Two assets, half each: portfolio returns -0.04, -0.02, 0, 0.01, 0.03 (sorted). The 25%
    # quantile sits at position 0.25 x 4 = 1: -0.02; the CVaR averages -0.04 and -0.02.
    returns = np.array([[0.0, 0.0], [-0.06, -0.02], [0.02, 0.0], [-0.04, 0.0], [0.03, 0.03]])
    var, cvar = historical_var(returns, np.array([0.5, 0.5]), 0.25)
    assert var == pytest.approx(0.02)
    assert cvar == pytest.approx(0.03)


@pytest.mark.slow
def test_train_backtest_report_signals(tmp_path) -> None:
    settings = [
        "--set", "run.total_timesteps=1024", "--set", f"run.out_dir={tmp_path}",
        "--set", "run.name=pf", "--set", "env.n_envs=4",
    ]  # fmt: skip
    result = runner.invoke(
        app, ["train", "--config", "configs/universe.yaml", *settings], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    run = tmp_path / "pf"
    assert (run / "portfolio.json").exists() and (run / "model.safetensors").exists()
    result = runner.invoke(app, ["backtest", str(run), "--split", "test"], terminal_width=200)
    assert result.exit_code == 0, result.output
    split = run / "backtest" / "test"
    agent = pd.read_csv(split / "bars_portfolio_agent.csv", index_col="timestamp")
    weights = agent[[c for c in agent.columns if c.startswith("w_")]]
    assert weights.shape[1] == 20 and (weights.to_numpy() > 0).all()
    assert weights.sum(axis=1).max() < 1.0  # long-only softmax: the rest is cash
    stats = pd.read_csv(split / "statistics_portfolio.csv")
    assert set(stats["policy"]) == {
        "agent", "equal_weight", "inverse_volatility", "hrp", "min_variance", "momentum", "index",
    }  # fmt: skip
    assert (split / "tests_portfolio.json").exists()
    # --attack covers single-instrument agents only: a clear message, exit 2, no traceback.
    result = runner.invoke(app, ["backtest", str(run), "--attack", "pgd"], terminal_width=200)
    assert result.exit_code == 1 and "portfolio run" in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (run / "backtest" / "test_pgd_eps0.1").exists()
    result = runner.invoke(app, ["report", str(run)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Agent weights" in (run / "report.html").read_text()
    out = tmp_path / "signals.csv"
    args = ["signals", str(run), "--data", "sp500_universe", "--out", str(out)]
    result = runner.invoke(app, [*args, "--start", "2022-11-01"], terminal_width=200)
    assert result.exit_code == 0, result.output
    signals = pd.read_csv(out, index_col="timestamp", parse_dates=True)
    per_bar = signals.groupby(level=0)
    assert (per_bar.size() == 20).all()
    assert per_bar["weight"].sum().add(per_bar["cash_weight"].first()).to_numpy() == pytest.approx(
        1.0
    )
    decisions = signals[signals["decision"]]
    assert decisions.groupby(level=0)["target"].sum().lt(1.0).all()
    assert signals["portfolio_var_5_pct"].gt(0).all()
    assert (signals["portfolio_cvar_5_pct"] >= signals["portfolio_var_5_pct"]).all()


@pytest.mark.slow
def test_walkforward_on_the_universe(tmp_path) -> None:
    settings = [
        "data.walk_forward.first_test_start=2021-01-01", "data.walk_forward.test_length=12MS",
        "data.walk_forward.n_folds=2", "evaluation.seeds=[0]", "run.total_timesteps=512",
        "env.n_envs=4", f"run.out_dir={tmp_path}", "run.name=wf",
    ]  # fmt: skip
    args = ["walkforward", "--config", "configs/universe.yaml"]
    for setting in settings:
        args += ["--set", setting]
    result = runner.invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    out = tmp_path / "wf" / "evaluation"
    folds = pd.read_csv(out / "folds.csv")
    assert sorted(folds["fold"].unique()) == [0, 1]
    assert set(folds["policy"]) >= {"agent", "equal_weight", "hrp", "min_variance", "index"}
    agent = pd.concat(
        pd.read_csv(out / "bars" / f"fold{i}_seed0_portfolio_agent.csv", index_col="timestamp")
        for i in (0, 1)
    )
    assert agent.index.min() >= "2021-01-01" and agent.index.max() <= "2022-12-31"
    assert (out / "tests_portfolio_seed0.json").exists()
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["metric"]) >= {"sharpe", "max_drawdown", "cvar_5"}

    # --resume after an interruption in fold 1 (its job and bars gone): fold 0's job is read
    # back, not run again (its files are untouched), fold 1 runs again, and every table is
    # what the uninterrupted run wrote, to the last digit.
    tables = ("folds.csv", "summary.csv", "stitched.csv", "seed_spread.csv")
    before = {name: (out / name).read_bytes() for name in tables}
    fold1_bars = out / "bars" / "fold1_seed0_portfolio_agent.csv"
    fold1 = fold1_bars.read_bytes()
    fold0_done = (out / "jobs" / "fold0_seed0" / "done.json").stat()
    for name in tables:
        (out / name).unlink()
    fold1_bars.unlink()
    shutil.rmtree(out / "jobs" / "fold1_seed0")
    resumed = runner.invoke(app, ["walkforward", "--resume", str(tmp_path / "wf")])
    assert resumed.exit_code == 0, resumed.output
    assert {name: (out / name).read_bytes() for name in tables} == before
    assert fold1_bars.read_bytes() == fold1
    assert (out / "jobs" / "fold0_seed0" / "done.json").stat().st_mtime_ns == fold0_done.st_mtime_ns
    # A resume with a config that computes other jobs is refused, naming the key.
    refused = runner.invoke(
        app, ["walkforward", "--config", str(tmp_path / "wf" / "config.yaml"), "--resume",
              str(tmp_path / "wf"), "--set", "run.total_timesteps=1024"],
        terminal_width=200,
    )  # fmt: skip
    assert refused.exit_code == 1 and "run.total_timesteps" in refused.output


def test_portfolio_config_errors_name_the_problem(tmp_path) -> None:
    base = ["train", "--config", "configs/universe.yaml", "--set", f"run.out_dir={tmp_path}"]
    result = runner.invoke(app, [*base, "--set", "data.source=sp500"], terminal_width=200)
    assert result.exit_code == 1
    assert "sp500: a portfolio needs at least 2 instruments, got 1" in result.output
    result = runner.invoke(
        app, [*base, "--set", "portfolio.assets_per_episode=25"], terminal_width=200
    )
    assert result.exit_code == 1
    assert "portfolio.assets_per_episode: 25 exceeds the data's 20 assets" in result.output
    assert not any(tmp_path.iterdir())  # refused before a run directory was made
    result = runner.invoke(app, [*base, "--set", "portfolio.fill=next_open"], terminal_width=200)
    assert result.exit_code == 1 and "portfolio.fill" in result.output
