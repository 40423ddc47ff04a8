"""The selection protocol: validation windows before the test bars, and the record of trials."""

import json
import math

import pandas as pd
import pytest

from tradingbot.config import ConfigError, TradingConfig
from tradingbot.data.splits import DateRange, Fold
from tradingbot.evaluate.selection import (
    SELECTION_FILE,
    choose,
    read_selection,
    scored_span,
    validation_window,
    write_selection,
)
from tradingbot.run import create_run_dir

STAMPS = pd.bdate_range("2005-01-03", "2008-12-31")


def test_validation_window_is_the_last_year_of_training_and_ends_before_the_test():
    train = DateRange(STAMPS[0], pd.Timestamp("2007-12-31"))
    fold = Fold(0, train, DateRange(pd.Timestamp("2008-01-01"), pd.Timestamp("2008-12-31")))
    inner, validation = validation_window(fold, STAMPS, "365D")
    # 2007-12-31 minus 365 days is 2006-12-31 (a Sunday): validation starts on Monday 2007-01-01
    assert validation == DateRange(pd.Timestamp("2007-01-01"), pd.Timestamp("2007-12-31"))
    assert inner == DateRange(STAMPS[0], pd.Timestamp("2006-12-29"))
    assert inner.end < validation.start and validation.end < fold.test.start
    with pytest.raises(ValueError, match="too short"):
        validation_window(fold, STAMPS, "3000D")


def test_scored_span_starts_one_bar_early():
    span = scored_span(STAMPS, DateRange(pd.Timestamp("2008-01-01"), pd.Timestamp("2008-12-31")))
    assert span.start == pd.Timestamp("2007-12-31") and span.end == pd.Timestamp("2008-12-31")
    first = scored_span(STAMPS, DateRange(STAMPS[0], STAMPS[10]))
    assert first.start == STAMPS[0]  # nothing before the first bar


def test_choose_takes_the_best_and_breaks_ties_to_the_first():
    assert choose({"a": 0.1, "b": 0.3, "c": 0.2}) == "b"
    assert choose({"a": 0.3, "b": 0.3}) == "a"
    assert choose({"a": math.nan, "b": -1.0}) == "b"
    assert choose({"a": math.nan, "b": math.nan}) == "a"
    with pytest.raises(ValueError):
        choose({})


def test_selection_record_counts_candidates_and_history(tmp_path):
    record = write_selection(
        tmp_path,
        {"x": ["env.long_only=true"], "y": ["env.long_only=false"]},
        [{"fold": 0, "candidate": "x", "sharpe": 0.4, "chosen": True}],
        history=[{"name": "old", "sharpe": 0.2}, {"name": "older"}],
        trial_sharpes=[0.2, 0.4],
    )
    assert record["n_configurations"] == 4
    assert read_selection(tmp_path / SELECTION_FILE) == (4, [0.2, 0.4])
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match=r"bad\.json"):
        read_selection(tmp_path / "bad.json")


def test_run_directory_gets_the_selection_file(tmp_path):
    source = tmp_path / "sel.json"
    write_selection(tmp_path / "w", {"x": []}, [], trial_sharpes=[0.1])
    source.write_text((tmp_path / "w" / SELECTION_FILE).read_text())
    config = TradingConfig.model_validate(
        {"run": {"out_dir": str(tmp_path), "name": "r"}, "evaluation": {"selection_file": source}}
    )
    run_dir = create_run_dir(config)
    assert json.loads((run_dir / SELECTION_FILE).read_text())["n_configurations"] == 1
    missing = config.model_copy(
        update={
            "evaluation": config.evaluation.model_copy(update={"selection_file": tmp_path / "no"}),
            "run": config.run.model_copy(update={"name": "r2"}),
        }
    )
    with pytest.raises(ConfigError, match=r"evaluation\.selection_file"):
        create_run_dir(missing)
    assert not (tmp_path / "r2").exists()
