import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import TINY_MODEL, TINY_WALK_FORWARD
from tradingbot.cli import app
from tradingbot.evaluate.baselines import BASELINE_NAMES
from tradingbot.evaluate.walkforward import label_regimes, mean_confidence_interval, summarize


def test_confidence_interval_by_hand():
    mean, low, high = mean_confidence_interval(np.array([1.0, 2.0, 3.0, 4.0]))
    # sd = sqrt(5/3), t(0.975, 3) = 3.182446305
    half = 3.182446305284263 * np.sqrt(5 / 3) / 2
    assert mean == 2.5 and low == pytest.approx(2.5 - half) and high == pytest.approx(2.5 + half)
    assert np.isnan(mean_confidence_interval(np.array([1.0]))[1])


def test_summary_rows():
    folds = pd.DataFrame(
        {
            "fold": [0, 0, 1, 1],
            "seed": [0, 1, 0, 1],
            "policy": ["a"] * 4,
            "instrument": ["X"] * 4,
            "sharpe": [1.0, 2.0, 3.0, 4.0],
        }
    )
    row = summarize(folds).iloc[0]
    # Clustered by fold: seeds averaged first (1.5 and 3.5), then a t-interval over 2 folds.
    assert row["policy"] == "a" and row["metric"] == "sharpe" and row["n"] == 2
    half = 12.706204736174707 * np.sqrt(2.0) / np.sqrt(2)  # t(0.975, 1) * sd(1.5, 3.5) / sqrt(2)
    assert row["mean"] == 2.5 and row["ci_low"] == pytest.approx(2.5 - half)


def test_vix_regimes_by_hand():
    # VIX closes in arch's file: 2015-08-24 40.74, 2015-08-25 36.02, 2017-01-03 12.85,
    # 2016-01-04 20.70, 2018-02-05 37.32
    dates = pd.to_datetime(["2015-08-24", "2015-08-25", "2017-01-03", "2016-01-04", "2018-02-05"])
    bars = pd.DataFrame({"instrument": "X"}, index=dates)
    labels = label_regimes(bars, {"X": pd.Series(dtype=float)})
    assert list(labels) == ["VIX>40", "VIX 25-40", "VIX<15", "VIX 15-25", "VIX 25-40"]


def test_volatility_terciles_without_vix():
    rng = np.random.default_rng(0)
    index = pd.bdate_range("2000-01-03", periods=300)  # before VIX's data: terciles
    scale = np.repeat([0.005, 0.01, 0.03], 100)
    close = pd.Series(100 * np.exp(np.cumsum(rng.normal(0, scale))), index=index)
    bars = pd.DataFrame({"instrument": "X"}, index=index[40:])
    labels = label_regimes(bars, {"X": close})
    assert set(labels) == {"low vol", "mid vol", "high vol"}
    assert (labels[:50] == "low vol").mean() > 0.9 and (labels[-50:] == "high vol").mean() > 0.9


@pytest.mark.slow
def test_walkforward_end_to_end(tmp_path, monkeypatch):
    # Without --address the command starts its own Ray, whatever Ray would join by default.
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")
    args = ["walkforward", "--data", "synthetic"]
    for s in [
        *TINY_WALK_FORWARD,
        *TINY_MODEL,
        "run.total_timesteps=128",
        f"run.out_dir={tmp_path}",
        "run.name=wf",
    ]:
        args += ["--set", s]
    result = CliRunner().invoke(app, args, terminal_width=300)
    assert result.exit_code == 0, result.output
    out = tmp_path / "wf" / "evaluation"
    folds = pd.read_csv(out / "folds.csv")
    # folds x seeds x (agent and six baselines), and the seeds' ensemble in each fold
    assert len(folds) == 2 * 2 * 7 + 2
    assert set(folds["policy"]) == {"agent", "ensemble", *BASELINE_NAMES}
    assert folds.loc[folds["policy"] == "ensemble", "seed"].isna().all()
    for fold in (0, 1):  # the ensemble holds the mean of the two seeds' positions
        seeds = [
            pd.read_csv(out / "bars" / f"fold{fold}_seed{s}_SYN0_agent.csv", index_col=0)
            for s in (0, 1)
        ]
        ensemble = pd.read_csv(out / "bars" / f"fold{fold}_ensemble_SYN0.csv", index_col=0)
        assert list(ensemble.index) == list(seeds[0].index)
        mean = (seeds[0]["position"].to_numpy() + seeds[1]["position"].to_numpy()) / 2
        np.testing.assert_allclose(ensemble["position"], mean, rtol=0, atol=1e-15)
        assert np.abs(seeds[0]["position"] - seeds[1]["position"]).max() > 1e-3
    hold = folds[folds["policy"] == "buy_and_hold"]
    # The baseline does not depend on the seed: identical metrics for both seeds of a fold.
    for _, group in hold.groupby("fold"):
        assert group["sharpe"].nunique() == 1
    assert pd.to_datetime(folds["test_start"]).min() >= pd.Timestamp("2007-01-01")
    summary = pd.read_csv(out / "summary.csv")
    sharpe = summary[(summary["policy"] == "agent") & (summary["metric"] == "sharpe")].iloc[0]
    assert sharpe["ci_low"] <= sharpe["mean"] <= sharpe["ci_high"]
    assert (summary["n"] <= 2).all()  # clustered by fold, not by fold x seed
    # Stitched: buy-and-hold held across the fold boundary, so it trades once; the agent's
    # folds and the baselines cover exactly the same bars, starting at the first test bar.
    hold = pd.read_csv(out / "bars" / "stitched_seed0_SYN0_buy_and_hold.csv", index_col=0)
    assert (hold["trade"] != 0).sum() == 1 and hold["trade"].iloc[0] == 1.0
    stitched = pd.read_csv(out / "stitched.csv")
    assert set(stitched["policy"]) == {"agent", "ensemble", *BASELINE_NAMES}
    assert len(pd.read_csv(out / "statistics_SYN0_ensemble.csv")) == 7
    first_test = pd.Timestamp(folds["test_start"].min())
    agent = pd.read_csv(out / "bars" / "fold0_seed0_SYN0_agent.csv", index_col=0)
    assert pd.Timestamp(agent.index[0]) == first_test
    tests = json.loads((out / "tests_SYN0_seed0.json").read_text())
    assert 0 <= tests["spa"]["pvalue"] <= 1 and tests["deflated_sharpe"]["n_trials"] == 1
    assert len(pd.read_csv(out / "statistics_SYN0_seed1.csv")) == 7
    assert set(pd.read_csv(out / "seed_spread.csv")["seeds"]) == {2}
    regimes = pd.read_csv(out / "regimes.csv")
    assert set(regimes["regime"]) == {"low vol", "mid vol", "high vol"}
    assert (tmp_path / "wf" / "report.html").exists()
