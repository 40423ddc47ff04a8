import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import TINY_MODEL
from tradingbot.checkpoint import model_id
from tradingbot.cli import app
from tradingbot.config_loading import load_config
from tradingbot.data.validate import DataError
from tradingbot.evaluate.backtest import run_backtest
from tradingbot.evaluate.runs import RecordingAgent, load_run, prepare_for_run
from tradingbot.signals import compute_signals
from tradingbot.train import train

TINY = [
    "data.source=synthetic",
    *TINY_MODEL,
    "env.window=3",
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
    # The last bar of the shorter file has no fill bar yet; everything else is the same.
    assert pd.isna(a["fill_timestamp"].iloc[-1])
    assert a["fill_timestamp"].iloc[-2] == a.index[-1]
    pd.testing.assert_frame_equal(a[columns].iloc[:-1], b[columns].iloc[: len(a) - 1])
    rest = [c for c in columns if c != "fill_timestamp"]
    pd.testing.assert_frame_equal(a[rest], b[rest].iloc[: len(a)])


def test_signals_and_backtest_agree_row_for_row(run_dir, tmp_path):
    """On the test split, signals from its first bar and the backtest of the split warm the
    LSTM on the same bars and give the same positions, decision and fill bars, and VaR."""
    run = load_run(run_dir)
    path = tmp_path / "all.csv"
    prepare_for_run(run).data.bars["SYN0"].to_csv(path)
    market = prepare_for_run(run, str(path))
    test = market.splits["test"]
    signals = compute_signals(run, str(path), start=test.start)
    agent = RecordingAgent(run.model)
    warmup = run.config.evaluation.warmup_bars
    assert warmup == 250
    backtest = run_backtest(agent, market, test, run.config.env, "all", warmup)
    assert signals.index[0] == backtest["decision_timestamp"].iloc[0] >= test.start
    # Every backtest row is the signal of its decision bar (signals also score the last bar).
    paired = signals.loc[pd.DatetimeIndex(backtest["decision_timestamp"])]
    assert len(paired) == len(backtest) == len(signals) - 1
    np.testing.assert_array_equal(paired["position"].to_numpy(), backtest["position"].to_numpy())
    np.testing.assert_array_equal(
        pd.DatetimeIndex(paired["fill_timestamp"]), pd.DatetimeIndex(backtest["fill_timestamp"])
    )
    assert (backtest.index == backtest["fill_timestamp"]).all()
    np.testing.assert_allclose(
        paired["critic_log_return_to_go_gamma0.99_mean"].to_numpy(),
        agent.values[-len(backtest) :],
        rtol=1e-6,
    )
    # The warm-up matters: started cold at the split, the first positions differ.
    cold = run_backtest(run.model, market, test, run.config.env, "all", 0)
    assert not np.array_equal(cold["position"].to_numpy()[:5], backtest["position"].to_numpy()[:5])


def test_signal_columns_and_risk_order(run_dir, bars_csv):
    path, _ = bars_csv
    signals = compute_signals(load_run(run_dir), str(path))
    critic = "critic_log_return_to_go_gamma0.99"
    assert list(signals.columns) == [
        "fill_timestamp",
        "instrument",
        "position",
        "action_mean",
        "action_std",
        "exposure",
        "var_5_pct",
        "cvar_5_pct",
        "unit_var_5_pct",
        "unit_cvar_5_pct",
        f"{critic}_mean",
        f"{critic}_q0.05",
        f"{critic}_cvar0.05",
        "model_id",
    ]
    assert signals.index.name == "decision_timestamp"
    # The tail mean is below its edge, for the critic and for the GARCH forecast.
    assert (signals[f"{critic}_cvar0.05"] <= signals[f"{critic}_q0.05"] + 1e-5).all()
    assert (signals["cvar_5_pct"] <= signals["var_5_pct"]).all()
    assert (signals["unit_var_5_pct"] < 0).all()
    # next_open fills: the next bar holds the new target, VaR scales with |position|.
    np.testing.assert_array_equal(signals["exposure"], signals["position"])
    held = signals["position"] > 0
    np.testing.assert_allclose(
        signals["var_5_pct"][held] / signals["position"][held],
        signals["unit_var_5_pct"][held],
        rtol=1e-9,
    )
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


def test_signals_start_option_and_too_short_data(run_dir, bars_csv, tmp_path):
    path, bars = bars_csv
    out = tmp_path / "from.csv"
    start = bars.index[400]
    result = CliRunner().invoke(
        app,
        ["signals", str(run_dir), "--data", str(path), "--out", str(out), "--start", str(start)],
        terminal_width=300,
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out, index_col="decision_timestamp", parse_dates=True)
    assert frame.index[0] == start and len(frame) == 700 - 400
    short = tmp_path / "short.csv"
    bars.iloc[:260].to_csv(short)  # 20 bars of feature warm-up + 240 < 250 warm-up bars
    with pytest.raises(DataError, match=r"evaluation.warmup_bars \(250\)"):
        compute_signals(load_run(run_dir), str(short))


def test_run_without_var_model_refits_it_from_training_bars(run_dir, bars_csv, tmp_path):
    # A run trained before var_model.json existed: the same parameters are refitted from its
    # training split; signals leave the run directory as it was.
    path, _ = bars_csv
    old = tmp_path / "old_run"
    shutil.copytree(run_dir, old)
    (old / "var_model.json").unlink()
    a = compute_signals(load_run(run_dir), str(path))
    b = compute_signals(load_run(old), str(path))
    assert not (old / "var_model.json").exists()
    pd.testing.assert_frame_equal(a.drop(columns="model_id"), b.drop(columns="model_id"))
