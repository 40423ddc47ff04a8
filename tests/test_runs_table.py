"""``tradingbot runs``: hand-made run directories, their rows and their order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import small_model
from tradingbot import cli
from tradingbot.checkpoint import save_checkpoint
from tradingbot.cli import app
from tradingbot.config_loading import dump_config, load_config
from tradingbot.evaluate.runs import RecordingAgent
from tradingbot.run_index import list_runs, sort_rows

METRICS_HEADER = "policy,instrument,total_return,sharpe,max_drawdown,cvar_5\n"


def make_run(
    root: Path,
    name: str,
    source: str,
    seed: int,
    created: str,
    metrics: list[tuple[str, str, float, float]] | None = None,
    step: int | None = None,
) -> Path:
    """A run directory as train/backtest write it: config.yaml, run.json[, model, metrics]."""
    run = root / name
    run.mkdir()
    cfg = load_config(overrides=[f"data.source={source}", f"run.seed={seed}"])
    (run / "config.yaml").write_text(dump_config(cfg))
    (run / "run.json").write_text(json.dumps({"seed": seed, "created": created}))
    if step is not None:
        save_checkpoint(run / "model.safetensors", {"w": torch.zeros(2)}, "test", step)
    if metrics is not None:
        (run / "backtest" / "test").mkdir(parents=True)
        lines = [f"{p},{i},0.1,{s},{d},-0.02\n" for p, i, s, d in metrics]
        (run / "backtest" / "test" / "metrics.csv").write_text(METRICS_HEADER + "".join(lines))
    return run


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    make_run(
        tmp_path, "alpha", "googl", 3, "2026-01-02T03:04:05+00:00",
        [
            ("agent", "SPX", 1.0, -0.2), ("agent", "QQQ", 0.5, -0.4),
            ("buy_and_hold", "SPX", 0.3, -0.3), ("buy_and_hold", "QQQ", 0.1, -0.5),
            ("flat", "SPX", 0.0, 0.0), ("flat", "QQQ", 0.0, 0.0),
        ],
        step=512,
    )  # fmt: skip
    make_run(tmp_path, "beta", "sp500", 0, "2026-01-01T00:00:00+00:00")
    make_run(
        tmp_path, "gamma", "synthetic", 1, "2026-01-03T00:00:00+00:00",
        [("agent", "SYN0", 2.0, -0.1), ("buy_and_hold", "SYN0", -0.5, -0.6)],
    )  # fmt: skip
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / "notes.txt").write_text("hello\n")
    return tmp_path


def test_rows_are_read_from_the_run_files(runs: Path) -> None:
    rows = {r.name: r for r in list_runs(runs)}
    assert sorted(rows) == ["alpha", "beta", "gamma"]
    alpha = rows["alpha"]
    assert (alpha.data, alpha.seed, alpha.steps) == ("googl", 3, 512)
    assert alpha.created == "2026-01-02 03:04:05"
    # Means over the two instruments, agent and buy-and-hold apart (flat ignored).
    assert alpha.sharpe == pytest.approx(0.75)
    assert alpha.max_drawdown == pytest.approx(-0.3)
    assert alpha.bh_sharpe == pytest.approx(0.2)
    assert alpha.bh_max_drawdown == pytest.approx(-0.4)
    beta = rows["beta"]
    assert (beta.data, beta.steps, beta.sharpe, beta.bh_sharpe) == ("sp500", None, None, None)


def test_sort_orders(runs: Path) -> None:
    rows = list_runs(runs)
    assert [r.name for r in sort_rows(rows, "sharpe")] == ["gamma", "alpha", "beta"]
    assert [r.name for r in sort_rows(rows, "sharpe", reverse=True)] == ["alpha", "gamma", "beta"]
    assert [r.name for r in sort_rows(rows, "bh_sharpe")] == ["alpha", "gamma", "beta"]
    assert [r.name for r in sort_rows(rows, "created")] == ["beta", "alpha", "gamma"]
    assert [r.name for r in sort_rows(rows, "data")] == ["alpha", "beta", "gamma"]


def test_runs_command_prints_one_row_per_run_in_order(
    runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli.console, "width", 300)  # rich does not see the runner's width
    result = CliRunner().invoke(app, ["runs", str(runs), "--sort", "sharpe"], terminal_width=300)
    assert result.exit_code == 0, result.output
    names = [
        ln.split()[1] for ln in result.output.splitlines() if ln.startswith("│ ") and "│" in ln[2:]
    ]
    assert names[-3:] == ["gamma", "alpha", "beta"], result.output
    alpha = next(ln for ln in result.output.splitlines() if " alpha " in ln)
    for cell in ("googl", "512", "0.750", "-0.300", "0.200", "-0.400"):
        assert cell in alpha


def test_runs_command_refuses_an_unknown_column(runs: Path) -> None:
    result = CliRunner().invoke(app, ["runs", str(runs), "--sort", "profit"], terminal_width=300)
    assert result.exit_code == 1
    assert "--sort must be one of" in result.output and "sharpe" in result.output


def test_recording_agent_passes_deterministic_through() -> None:
    """RecordingAgent.predict honours ``deterministic``: sampled actions (std 1 at the
    initial log-std) differ from the mode, which ``deterministic=True`` returns every time."""
    agent = RecordingAgent(small_model())
    obs = np.zeros((1, 3), dtype=np.float32)
    mode = agent.predict(obs, deterministic=True)[0]
    np.testing.assert_array_equal(agent.predict(obs, deterministic=True)[0], mode)
    sampled = [agent.predict(obs, deterministic=False)[0] for _ in range(3)]
    assert all(not np.array_equal(action, mode) for action in sampled)
    assert len(agent.values) == 5
