import json

import pytest

from tradingbot.config import ConfigError, TradingConfig
from tradingbot.config_loading import load_config
from tradingbot.run import create_run_dir


def test_defaults_validate():
    cfg = load_config()
    assert cfg.data.source == "sp500"
    assert cfg.env.commission_bps > 0 and cfg.env.slippage_bps > 0  # costs on by default


def test_unknown_key_names_key_and_allowed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("env:\n  comission_bps: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert "env.comission_bps" in text and "unknown key" in text
    assert "commission_bps" in text and "slippage_bps" in text  # the allowed keys


def test_bad_literal_value_lists_allowed():
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["env.fill=tomorrow"])
    text = str(err.value)
    assert "env.fill" in text and "next_open" in text and "next_close" in text
    assert "tomorrow" in text


def test_override_types_and_nesting():
    cfg = load_config(
        overrides=["env.n_envs=4", "env.episode_length=null", "data.features.return_windows=[1, 2]"]
    )
    assert cfg.env.n_envs == 4
    assert cfg.env.episode_length is None
    assert cfg.data.features.return_windows == [1, 2]


def test_override_unknown_section_is_error():
    with pytest.raises(ConfigError, match="nope"):
        load_config(overrides=["nope.x=1"])


def test_override_needs_equals():
    with pytest.raises(ConfigError, match=r"key\.path=value"):
        load_config(overrides=["env.n_envs"])


def test_bad_range_value():
    with pytest.raises(ConfigError, match=r"env\.n_envs"):
        load_config(overrides=["env.n_envs=0"])


def test_hash_depends_on_values_only():
    a, b = TradingConfig(), TradingConfig()
    assert a.config_hash() == b.config_hash()
    b.env.commission_bps = 5.0
    assert a.config_hash() != b.config_hash()


def test_yaml_round_trip(tmp_path):
    cfg = load_config(overrides=["env.fill=next_close", "run.seed=7"])
    run_dir = create_run_dir(
        cfg.model_copy(
            update={"run": cfg.run.model_copy(update={"out_dir": tmp_path, "name": "r"})}
        )
    )
    again = load_config(run_dir / "config.yaml")
    assert again.env.fill == "next_close" and again.run.seed == 7
    record = json.loads((run_dir / "run.json").read_text())
    assert record["config_hash"] == again.config_hash()
    assert record["seed"] == 7
    assert record["versions"]["torch"].startswith("2.")
    with pytest.raises(FileExistsError):
        create_run_dir(again)
