import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tradingbot.cli import app
from tradingbot.config import load_config
from tradingbot.data.splits import DateRange
from tradingbot.evaluate.backtest import run_backtest
from tradingbot.evaluate.runs import RecordingAgent, load_run, prepare_for_run
from tradingbot.signals import compute_signals, model_id
from tradingbot.train import train

TINY = [
    "data.source=synthetic",
    "env.n_envs=2",
    "env.window=3",
    "algo.n_steps=64",
    "algo.batch_size=64",
    "algo.seq_len=16",
    "algo.n_quantiles=8",
    "algo.lstm_hidden_size=16",
    "algo.net_arch=[16]",
    "run.total_timesteps=256",
    "run.name=tiny",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return train(load_config(overrides=[*TINY, f"run.out_dir={out}"])).run_dir


@pytest.fixture(scope="module")
def bars_csv(tmp_path_factory, run_dir):
    run = load_run(run_dir)
    bars = prepare_for_run(run).data.bars["SYN0"]
    path = tmp_path_factory.mktemp("data") / "bars.csv"
    bars.iloc[:700].to_csv(path)
    return path, bars


def test_signals_do_not_look_ahead(run_dir, bars_csv, tmp_path):
    _, bars = bars_csv
    run = load_run(run_dir)
    short, long = tmp_path / "short.csv", tmp_path / "long.csv"
    bars.iloc[:300].to_csv(short)
    bars.iloc[:450].to_csv(long)
    a, b = compute_signals(run, str(short)), compute_signals(run, str(long))
    assert len(b) == len(a) + 150
    assert (a["instrument"] == "short").all()  # a single-instrument file is named by its stem
    columns = [c for c in a.columns if c != "instrument"]
    pd.testing.assert_frame_equal(a[columns], b[columns].iloc[: len(a)])


def test_signals_equal_backtest_actions(run_dir, bars_csv):
    path, _ = bars_csv
    run = load_run(run_dir)
    signals = compute_signals(run, str(path))
    market = prepare_for_run(run, str(path))
    inst = market.instruments[0]
    span = DateRange(inst.timestamps[0], inst.timestamps[-1])
    agent = RecordingAgent(run.model)
    backtest = run_backtest(agent, market, span, run.config.env, inst.name)
    # The decision at bar t is the position held over bar t+1.
    np.testing.assert_array_equal(
        backtest["position"].to_numpy(), signals["position"].to_numpy()[:-1]
    )
    assert (backtest.index == signals.index[1:]).all()
    np.testing.assert_allclose(signals["value"].to_numpy()[:-1], agent.values, rtol=1e-6)


def test_signal_columns_and_risk_order(run_dir, bars_csv):
    path, _ = bars_csv
    signals = compute_signals(load_run(run_dir), str(path))
    assert list(signals.columns) == [
        "instrument",
        "position",
        "action_mean",
        "action_std",
        "value",
        "var",
        "cvar",
        "model_id",
    ]
    assert (signals["cvar"] <= signals["var"] + 1e-5).all()  # the tail mean is below its edge
    assert (signals["position"].abs() <= 1).all() and (signals["action_std"] > 0).all()
    assert signals["model_id"].unique().tolist() == [model_id(run_dir / "model.safetensors")]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_signals_cli_formats(run_dir, bars_csv, tmp_path, fmt):
    path, _ = bars_csv
    out = tmp_path / f"signals.{fmt}"
    result = CliRunner().invoke(
        app, ["signals", str(run_dir), "--data", str(path), "--out", str(out)], terminal_width=300
    )
    assert result.exit_code == 0, result.output
    frame = {"csv": pd.read_csv, "parquet": pd.read_parquet, "json": pd.read_json}[fmt](out)
    assert len(frame) == len(compute_signals(load_run(run_dir), str(path)))


def test_signals_refuse_bad_input(run_dir, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "date,open,high,low,close,volume\n2020-01-01,1,2,0.5,1,5\n2020-01-01,1,2,0.5,1,5\n"
    )
    result = CliRunner().invoke(
        app,
        ["signals", str(run_dir), "--data", str(bad), "--out", str(tmp_path / "s.csv")],
        terminal_width=300,
    )
    assert result.exit_code == 1 and "duplicate timestamp" in result.output
