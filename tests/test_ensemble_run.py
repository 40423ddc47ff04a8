"""Seed-ensemble runs (``run.seeds``): training, resume, backtest, signals, report and the runs
table, on tiny trained members."""

import logging
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import TINY_MODEL
from tradingbot.algo.ppo import DistributionalPPO
from tradingbot.checkpoint import CheckpointError, load_checkpoint
from tradingbot.config import ConfigError
from tradingbot.config_loading import load_config
from tradingbot.errors import UserError
from tradingbot.evaluate.backtest import run_backtest
from tradingbot.evaluate.ensemble import EnsemblePolicy, mean_position_bars
from tradingbot.evaluate.runs import (
    LoadedRun,
    RecordingAgent,
    backtest_run,
    load_run,
    prepare_for_run,
)
from tradingbot.report import build_report
from tradingbot.run_index import list_runs
from tradingbot.signals import (
    MEMBER_SPREAD_COLUMNS,
    compute_signals,
    critic_columns,
    run_model_id,
)
from tradingbot.train import MODEL_FILE, list_checkpoints, member_dir, resume, train

TINY = [
    "data.source=synthetic",
    *TINY_MODEL,
    "env.window=3",
    "run.total_timesteps=256",
    "run.checkpoint_every=1",
    "run.keep_checkpoints=5",
]
SEEDS = [0, 1, 2]


def tiny(out, name, *extra):
    return load_config(overrides=[*TINY, f"run.out_dir={out}", f"run.name={name}", *extra])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A three-seed ensemble, and the plain run with seed 1 (two updates each)."""
    out = tmp_path_factory.mktemp("runs")
    ensemble = train(tiny(out, "ens", f"run.seeds={SEEDS}")).run_dir
    plain = train(tiny(out, "plain", "run.seed=1")).run_dir
    return ensemble, plain


def member_tensors(path):
    return load_checkpoint(path)[0]


def test_layout_and_run_record(runs):
    ensemble, _ = runs
    assert not (ensemble / MODEL_FILE).exists()
    for seed in SEEDS:
        directory = member_dir(ensemble, seed)
        assert (directory / MODEL_FILE).is_file()
        assert [p.name for p in list_checkpoints(directory / "checkpoints")] == [
            "step_000000000128.safetensors",
            "step_000000000256.safetensors",
        ]
    config = load_config(ensemble / "config.yaml")
    assert config.run.seeds == SEEDS and config.run.seed == 0
    assert '"seeds": [\n    0,\n    1,\n    2\n  ]' in (ensemble / "run.json").read_text()


def test_member_is_the_plain_run_with_its_seed(runs):
    """A member depends on its seed alone: member seed 1, trained after member 0, is the plain
    run with run.seed=1 tensor for tensor."""
    ensemble, plain = runs
    member = member_tensors(member_dir(ensemble, 1) / MODEL_FILE)
    alone = member_tensors(plain / MODEL_FILE)
    assert member.keys() == alone.keys()
    for key in alone:
        assert torch.equal(member[key], alone[key]), key
    other = member_tensors(member_dir(ensemble, 0) / MODEL_FILE)
    assert any(not torch.equal(other[k], alone[k]) for k in alone if k.startswith("policy."))


def test_ensemble_position_is_the_mean_of_the_members_alone(runs):
    """The ensemble's backtest (with the 250-bar warm-up) holds, at every bar, the mean of the
    positions each member holds in its own backtest, loaded straight from its file."""
    ensemble, _ = runs
    run = load_run(ensemble)
    assert isinstance(run.model, EnsemblePolicy) and run.model.seeds == SEEDS
    market = prepare_for_run(run)
    warmup = run.config.evaluation.warmup_bars
    assert warmup > 0
    together = run_backtest(run.model, market, "test", run.policy_env, "SYN0", warmup)
    alone = [
        run_backtest(
            DistributionalPPO.load(member_dir(ensemble, s) / MODEL_FILE),
            market,
            "test",
            run.config.env,
            "SYN0",
            warmup,
        )["position"].to_numpy()
        for s in SEEDS
    ]
    assert all(len(a) == len(together) for a in alone)
    assert np.abs(alone[0] - alone[1]).max() > 1e-3  # the members do differ
    np.testing.assert_allclose(together["position"], np.mean(alone, axis=0), rtol=0, atol=1e-12)
    # What backtest_run writes: the agent (ensemble) and each member's bars.
    out = backtest_run(ensemble)
    written = pd.read_csv(out / "bars_SYN0_agent.csv")["position"].to_numpy()
    np.testing.assert_allclose(written, np.mean(alone, axis=0), rtol=0, atol=1e-12)
    for seed, positions in zip(SEEDS, alone, strict=True):
        member = pd.read_csv(out / f"bars_SYN0_seed_{seed}.csv")["position"].to_numpy()
        np.testing.assert_array_equal(member, positions)
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics["policy"])[-3:] == ["seed_0", "seed_1", "seed_2"]
    spread = pd.read_csv(out / "seed_spread.csv").set_index("metric")
    sharpes = metrics.set_index("policy")["sharpe"]
    members = [sharpes[f"seed_{s}"] for s in SEEDS]
    assert spread.loc["sharpe", "ensemble"] == pytest.approx(sharpes["agent"])
    assert spread.loc["sharpe", "seed_mean"] == pytest.approx(np.mean(members))
    assert spread.loc["sharpe", "seed_std"] == pytest.approx(np.std(members, ddof=1))
    assert spread.loc["sharpe", "seed_min"] == pytest.approx(min(members))


def test_mean_position_bars_replays_the_ensemble_from_member_bars(runs):
    """Walk-forward jobs keep bars, not models: the mean of the members' backtest positions,
    replayed, gives the ensemble's backtest bar for bar (positions, trades, costs, equity)."""
    ensemble, _ = runs
    run = load_run(ensemble)
    market = prepare_for_run(run)
    span = market.splits["test"]
    together = run_backtest(run.model, market, span, run.policy_env, "SYN0", 250)
    alone = [run_backtest(m, market, span, run.config.env, "SYN0", 250) for m in run.members]
    replayed = mean_position_bars(alone, market, span, run.config.env, "SYN0")
    pd.testing.assert_frame_equal(replayed, together, check_exact=True)
    with pytest.raises(ValueError, match="not decided at the same bars"):
        mean_position_bars([alone[0], alone[1].iloc[:-5]], market, span, run.config.env, "SYN0")


def test_signals_and_backtest_agree_for_an_ensemble(runs, tmp_path):
    """Signals from the test split's first bar and the ensemble's backtest warm every member
    up on the same bars and give the same positions; the spread columns are those of the
    members' own positions."""
    ensemble, _ = runs
    run = load_run(ensemble)
    path = tmp_path / "all.csv"
    prepare_for_run(run).data.bars["SYN0"].to_csv(path)
    market = prepare_for_run(run, str(path))
    test = market.splits["test"]
    signals = compute_signals(run, str(path), start=test.start)
    warmup = run.config.evaluation.warmup_bars
    agent = RecordingAgent(run.model)
    backtest = run_backtest(agent, market, test, run.policy_env, "all", warmup)
    alone = np.stack(
        [
            run_backtest(m, market, test, run.config.env, "all", warmup)["position"].to_numpy()
            for m in run.members
        ]
    )
    paired = signals.loc[pd.DatetimeIndex(backtest["decision_timestamp"])]
    assert len(paired) == len(backtest) == len(signals) - 1
    np.testing.assert_array_equal(paired["position"], backtest["position"])
    np.testing.assert_allclose(paired["position_member_std"], alone.std(axis=0, ddof=1), atol=1e-12)
    np.testing.assert_array_equal(paired["position_member_min"], alone.min(axis=0))
    np.testing.assert_array_equal(paired["position_member_max"], alone.max(axis=0))
    assert list(signals.columns[-4:]) == [*MEMBER_SPREAD_COLUMNS, "model_id"]
    # The critic columns are the members' values averaged (as the backtest records them).
    # The critic value is the mean of the members' values, each member run alone.
    value = critic_columns(run.config.algo.gamma, run.config.algo.risk.alpha)[0]
    values = []
    for member in run.members:
        recorder = RecordingAgent(member)
        run_backtest(recorder, market, test, run.config.env, "all", warmup)
        values.append(recorder.values[-len(backtest) :])
    np.testing.assert_allclose(agent.values[-len(backtest) :], np.mean(values, axis=0), rtol=1e-5)
    np.testing.assert_allclose(paired[value], np.mean(values, axis=0), rtol=1e-5)
    assert np.abs(np.subtract(values[0], values[1])).max() > 1e-4
    # Each member's own signals: the ensemble's position is their mean, and its action mean
    # and std those of the equal mixture of the members' Gaussians.
    own = [
        compute_signals(
            LoadedRun(run.run_dir, run.config, m, run.normalizer), str(path), test.start
        )
        for m in run.members
    ]
    means = np.stack([o["action_mean"].to_numpy() for o in own])
    stds = np.stack([o["action_std"].to_numpy() for o in own])
    np.testing.assert_allclose(
        signals["position"], np.mean([o["position"] for o in own], axis=0), atol=1e-12
    )
    np.testing.assert_allclose(signals["action_mean"], means.mean(axis=0), rtol=1e-5)
    mixture = np.sqrt((stds**2 + means**2).mean(axis=0) - means.mean(axis=0) ** 2)
    np.testing.assert_allclose(signals["action_std"], mixture, rtol=1e-4)
    # The model id covers every member, in order.
    files = run.model_files
    assert signals["model_id"].unique().tolist() == [run_model_id(files)]
    assert len({run_model_id(files), run_model_id(files[:2]), run_model_id(files[::-1])}) == 3


def test_one_seed_list_is_the_plain_run(runs, tmp_path):
    _, plain = runs
    one = tiny(tmp_path, "plain", "run.seeds=[1]")
    assert one.run.seeds is None and one.run.seed == 1
    assert one.config_hash() == tiny(tmp_path, "plain", "run.seed=1").config_hash()
    # A one-member ensemble of the plain run's model holds exactly its positions.
    run = load_run(plain)
    market = prepare_for_run(run)
    single = EnsemblePolicy([run.model], run.config.env, [1])
    a = run_backtest(single, market, "test", single.env_config, "SYN0", 250)
    b = run_backtest(run.model, market, "test", run.config.env, "SYN0", 250)
    pd.testing.assert_frame_equal(a.drop(columns="action"), b.drop(columns="action"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["run.seeds=[1, 2]", "run.seed=0"], r"run.seed \(0\) and run.seeds \(\[1, 2\]\) disagree"),
        (["run.seeds=[1, 2, 1]"], r"run.seeds: .*repeated: \[1\]"),
        (["run.seeds=[]"], r"run.seeds: List should have at least 1 item"),
        (["run.seeds=[1, x]"], r"run.seeds.1: Input should be a valid integer"),
    ],
)
def test_bad_seed_configs_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)


def test_seed_equal_to_the_first_member_is_accepted():
    config = load_config(overrides=["run.seeds=[4, 5]", "run.seed=4"])
    assert config.run.seed == 4 and config.run.seeds == [4, 5]


@pytest.mark.parametrize("damage", ["garbage", "missing"])
def test_bad_member_model_is_named(runs, tmp_path, damage):
    ensemble, _ = runs
    copy = shutil.copytree(ensemble, tmp_path / "ens")
    path = member_dir(copy, 1) / MODEL_FILE
    if damage == "garbage":
        path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    else:
        path.unlink()
    with pytest.raises(CheckpointError, match=str(path)):
        load_run(copy)


def test_resume_of_a_partly_trained_ensemble_is_bit_identical(runs, tmp_path, caplog):
    """Member 0 finished, member 1 killed after its first update (one checkpoint), member 2 not
    started: resume finishes 1 from its checkpoint, trains 2, and gives the same members."""
    ensemble, _ = runs
    copy = shutil.copytree(ensemble, tmp_path / "ens")
    (member_dir(copy, 1) / MODEL_FILE).unlink()
    (member_dir(copy, 1) / "checkpoints" / "step_000000000256.safetensors").unlink()
    shutil.rmtree(member_dir(copy, 2))
    finished = (member_dir(copy, 0) / MODEL_FILE).stat().st_mtime_ns
    result = resume(copy)
    assert len(result.members) == 3
    assert (member_dir(copy, 0) / MODEL_FILE).stat().st_mtime_ns == finished  # left alone
    assert_same_members(ensemble, copy)
    # A finished member whose model no longer loads is written again from its last checkpoint.
    (member_dir(copy, 0) / MODEL_FILE).write_bytes(b"\x00" * 64)
    with caplog.at_level(logging.WARNING, logger="tradingbot.train"):
        resume(copy)
    assert f"{member_dir(copy, 0) / MODEL_FILE} does not load" in caplog.text
    assert_same_members(ensemble, copy)


def assert_same_members(ensemble, copy):
    for seed in SEEDS:
        want = member_tensors(member_dir(ensemble, seed) / MODEL_FILE)
        got = member_tensors(member_dir(copy, seed) / MODEL_FILE)
        assert want.keys() == got.keys()
        for key in want:
            assert torch.equal(want[key], got[key]), (seed, key)


def edit_run_config(run_dir, run):
    path = run_dir / "config.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["run"].update(run)
    path.write_text(yaml.safe_dump(raw))


def test_config_that_does_not_match_the_run_layout_is_refused(runs, tmp_path):
    ensemble, plain = runs
    copy = shutil.copytree(plain, tmp_path / "plain")
    edit_run_config(copy, {"seed": 1, "seeds": [1, 2]})
    with pytest.raises(ConfigError, match=r"run\.seeds is set but .* holds a single-seed run"):
        load_run(copy)
    with pytest.raises(ConfigError, match=r"run\.seeds is set but"):
        resume(copy)
    copy = shutil.copytree(ensemble, tmp_path / "ens")
    edit_run_config(copy, {"seed": 0, "seeds": None})
    with pytest.raises(ConfigError, match=r"run\.seeds is not set but .* holds a seed ensemble"):
        load_run(copy)


def test_runs_table_and_report_show_the_ensemble(runs):
    ensemble, _ = runs
    out = ensemble / "backtest" / "test"
    if not (out / "seed_spread.csv").exists():
        backtest_run(ensemble)
    (row,) = [r for r in list_runs(ensemble.parent) if r.name == "ens"]
    assert row.steps == 256 and row.seed == 0
    agent = pd.read_csv(out / "metrics.csv").set_index("policy").loc["agent", "sharpe"]
    assert row.sharpe == pytest.approx(agent)
    page = build_report(ensemble).read_text()
    assert "The seed ensemble (policy agent) beside its single seeds on test" in page
    assert "seed_<wbr>2" in page and "seed_<wbr>std" in page  # headers may wrap at "_"


def test_walkforward_and_pbt_refuse_run_seeds(tmp_path):
    """Their seeds are evaluation.seeds and run.seed: a run.seeds they would ignore is refused
    before anything starts (no run directory)."""
    from tradingbot.evaluate.walkforward import walk_forward
    from tradingbot.pbt.runner import run_pbt

    config = tiny(tmp_path, "refused", "run.seeds=[0, 1]")
    with pytest.raises(ConfigError, match=r"run\.seeds \(\[0, 1\]\) is for train.*evaluation"):
        walk_forward(config)
    with pytest.raises(ConfigError, match=r"run\.seeds \(\[0, 1\]\) is for train.*PBT"):
        run_pbt(config)
    assert not (tmp_path / "refused").exists()


def test_attack_is_refused_for_an_ensemble(runs):
    ensemble, _ = runs
    with pytest.raises(UserError, match="seed ensemble"):
        backtest_run(ensemble, attack="random")


DISCRETE = ["run.seeds=[0, 1, 2]", "env.action=discrete", "env.long_only=true"]


def test_discrete_long_only_ensemble_end_to_end(tmp_path):
    """Three {flat, long} members: the ensemble holds 0, 1/3, 2/3 or 1 (no discrete action
    does), through backtest and signals alike."""
    run_dir = train(tiny(tmp_path, "disc", *DISCRETE)).run_dir
    out = backtest_run(run_dir)
    run = load_run(run_dir)
    agent = pd.read_csv(out / "bars_SYN0_agent.csv")["position"].to_numpy()
    members = np.stack(
        [pd.read_csv(out / f"bars_SYN0_seed_{s}.csv")["position"].to_numpy() for s in SEEDS]
    )
    assert set(np.unique(members)) <= {0.0, 1.0}
    np.testing.assert_allclose(agent, members.mean(axis=0), rtol=0, atol=1e-15)
    np.testing.assert_allclose(agent * 3, np.round(agent * 3), atol=1e-12)
    assert ((agent > 0) & (agent < 1)).any()  # the members disagree on some bars
    signals = compute_signals(run, "synthetic", start=prepare_for_run(run).splits["test"].start)
    assert signals["action_mean"].isna().all()
    paired = signals.loc[
        pd.DatetimeIndex(pd.read_csv(out / "bars_SYN0_agent.csv")["decision_timestamp"])
    ]
    np.testing.assert_array_equal(paired["position"], agent)


def test_cli_names_a_corrupted_member_in_one_error_line(runs, tmp_path):
    from typer.testing import CliRunner

    from tradingbot.cli import app

    ensemble, _ = runs
    copy = shutil.copytree(ensemble, tmp_path / "ens")
    path = member_dir(copy, 2) / MODEL_FILE
    path.write_bytes(path.read_bytes()[:200])  # truncated
    for args in (
        ["backtest", str(copy)],
        ["signals", str(copy), "--data", "synthetic", "--out", str(tmp_path / "s.csv")],
    ):
        result = CliRunner().invoke(app, args, terminal_width=400)
        assert result.exit_code == 1, result.output
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}:"), result.output
