"""End to end: a tiny run's backtest writes each bar's GARCH VaR and the calibration table,
and the report shows them; the data notes say what the prices leave out."""

import numpy as np
import pandas as pd
import pytest

from conftest import TINY_MODEL
from tradingbot.config_loading import load_config
from tradingbot.evaluate.calibration import christoffersen_independence, kupiec_pof
from tradingbot.evaluate.runs import backtest_run
from tradingbot.evaluate.var import VAR_MODEL_FILE, VarModel
from tradingbot.report import build_report
from tradingbot.report_risk import data_notes
from tradingbot.train import train

TINY = [
    "data.source=synthetic",
    *TINY_MODEL,
    "run.total_timesteps=128",
    "run.name=tiny",
]


@pytest.fixture(scope="module")
def backtested(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    run_dir = train(load_config(overrides=[*TINY, f"run.out_dir={out}"])).run_dir
    return run_dir, backtest_run(run_dir, "test")


def test_backtest_writes_var_columns_and_calibration(backtested):
    run_dir, split_dir = backtested
    model = VarModel.load(run_dir / VAR_MODEL_FILE)
    assert set(model.instruments) == {"SYN0"}
    agent = pd.read_csv(split_dir / "bars_SYN0_agent.csv", index_col="timestamp")
    hold = pd.read_csv(split_dir / "bars_SYN0_buy_and_hold.csv", index_col="timestamp")
    # The unit return of a row is the close-to-close return from its decision bar.
    np.testing.assert_allclose(
        agent["unit_return_pct"].to_numpy()[1:],
        100 * (agent["close"].to_numpy()[1:] / agent["close"].to_numpy()[:-1] - 1),
        rtol=1e-9,
    )
    # Buy-and-hold holds 1 from the first fill: its VaR is the unit VaR.
    np.testing.assert_allclose(hold["var_5_pct"], hold["unit_var_5_pct"], rtol=1e-12)
    table = pd.read_csv(split_dir / "var_calibration.csv").set_index("series")
    unit = table.loc["unit long position, every bar"]
    hits = agent["unit_return_pct"].to_numpy() < agent["unit_var_5_pct"].to_numpy()
    assert unit["bars"] == len(agent) and unit["exceedances"] == hits.sum()
    lr, p = kupiec_pof(int(hits.sum()), len(hits), 0.05)
    assert unit["kupiec_lr"] == pytest.approx(lr) and unit["kupiec_p"] == pytest.approx(p)
    assert unit["christoffersen_lr"] == pytest.approx(christoffersen_independence(hits)[0])
    held = hold["exposure"] != 0
    row = table.loc["buy_and_hold position, bars held"]
    assert row["bars"] == held.sum()
    hold_hits = 100 * hold["return"][held] < hold["var_5_pct"][held]
    assert row["exceedances"] == hold_hits.sum()
    assert "flat position, bars held" not in table.index  # never holds anything


def test_report_shows_the_calibration_and_the_data_notes(backtested):
    run_dir, _ = backtested
    # Column headers may wrap after underscores (<wbr>): read them without the break hints.
    page = build_report(run_dir).read_text().replace("<wbr>", "")
    assert "VaR calibration on test" in page and "kupiec_p" in page
    assert "christoffersen_p" in page and 'id="test-SYN0-var"' in page
    assert "cash_rate = 0 a year" in page


def test_data_notes_name_the_missing_dividends():
    note = data_notes({"data": {"source": "sp500"}, "env": {"cash_rate": 0.02}})
    assert "without dividends" in note and "cash_rate = 0.02" in note
    other = data_notes({"data": {"source": "synthetic"}})
    assert "S&P 500" not in other and "cash_rate = 0 a year" in other
