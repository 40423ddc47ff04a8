"""Walk-forward jobs on Ray: the same tables whatever the number of workers or nodes, a killed
job retried, a persistent failure reported by fold and seed, and ``--resume`` that runs only
the missing jobs. One in-process two-node cluster (``ray.cluster_utils.Cluster``, one CPU per
node) serves the whole module."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import TINY_MODEL, TINY_WALK_FORWARD, two_node_cluster
from tradingbot.cli import app
from tradingbot.config import ConfigError, TradingConfig
from tradingbot.config_loading import load_config
from tradingbot.data.splits import union_index, walk_forward_folds
from tradingbot.evaluate.backtest import backtest_metrics
from tradingbot.evaluate.distribute import JobsFailedError, check_resumable, run_jobs
from tradingbot.evaluate.jobs import (
    JobFault,
    load_job_result,
    load_walkforward_data,
    run_fold_seed,
)
from tradingbot.evaluate.walkforward import walk_forward

pytestmark = pytest.mark.slow

TINY = [
    "data.source=synthetic",
    *TINY_WALK_FORWARD,
    "evaluation.statistics.bootstrap_reps=200",
    *TINY_MODEL,
    "run.total_timesteps=256",
]
JOBS = {(0, 0), (0, 1), (1, 0), (1, 1)}


def tiny_config(out_dir: Path, name: str, *extra: str) -> TradingConfig:
    """2 folds x 2 seeds, 256 steps each, on the synthetic market."""
    return load_config(None, [*TINY, f"run.out_dir={out_dir}", f"run.name={name}", *extra])


def tiny_args(out_dir: Path, name: str, *extra: str) -> list[str]:
    """The same config as ``tiny_config`` as command-line ``--set`` options."""
    args = []
    for item in [*TINY, f"run.out_dir={out_dir}", f"run.name={name}", *extra]:
        args += ["--set", item]
    return args


def evaluation_files(run_dir: Path) -> dict[str, bytes]:
    """Every table, statistics file and bars CSV of a run (the jobs' own records aside)."""
    out = run_dir / "evaluation"
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and "jobs" not in p.relative_to(out).parts
    }


def job_nodes(run_dir: Path) -> set[str]:
    """The Ray nodes that ran the run's jobs (from each job's ``done.json``)."""
    done = (run_dir / "evaluation" / "jobs").glob("*/done.json")
    return {json.loads(p.read_text())["node"] for p in done}


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    """A head and a worker node, one CPU each, in this process's machine."""
    with two_node_cluster() as nodes:
        yield nodes


@pytest.fixture
def connected(cluster: object) -> None:
    """This process joined to the module's cluster (kept between tests: its workers stay)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=cluster.address, log_to_driver=False)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def reference(cluster: object, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny walk-forward with one job at a time."""
    import ray

    if not ray.is_initialized():
        ray.init(address=cluster.address, log_to_driver=False)  # type: ignore[attr-defined]
    out = tmp_path_factory.mktemp("reference")
    return walk_forward(tiny_config(out, "one", "evaluation.workers=1"))


def test_one_worker_run_writes_every_table(reference: Path) -> None:
    out = reference / "evaluation"
    folds = pd.read_csv(out / "folds.csv")
    # folds x seeds x (agent and six baselines), and each fold's seed ensemble after its seeds
    assert len(folds) == 2 * 2 * 7 + 2
    assert folds.loc[folds["seed"].isna(), "policy"].tolist() == ["ensemble", "ensemble"]
    order = folds[["fold", "seed"]].drop_duplicates().apply(tuple, axis=1).tolist()
    assert order[::3] == [(0, 0), (1, 0)] and order[1::3] == [(0, 1), (1, 1)]
    assert [fold for fold, _ in order[2::3]] == [0, 1]  # fold then seed, not finishing order
    for name in ("summary.csv", "stitched.csv", "seed_spread.csv", "regimes.csv"):
        assert len(pd.read_csv(out / name)) > 0
    assert (out / "tests_SYN0_seed1.json").is_file()


def test_a_job_in_process_gives_the_numbers_the_ray_task_saved(
    reference: Path, connected: None
) -> None:
    cfg = load_config(reference / "config.yaml")
    data = load_walkforward_data(cfg)
    folds = walk_forward_folds(
        union_index([b.index for b in data.bars.values()]), cfg.data.walk_forward
    )
    local = run_fold_seed(cfg, folds[1], 1)
    saved = load_job_result(reference / "evaluation" / "jobs", 1, 1)
    assert saved is not None and list(saved.bars["SYN0"]) == list(local.bars["SYN0"])
    for policy, bars in local.bars["SYN0"].items():
        pd.testing.assert_frame_equal(saved.bars["SYN0"][policy], bars, check_exact=True)
    # The driver filed the job under its own fold and seed in folds.csv.
    table = pd.read_csv(reference / "evaluation" / "folds.csv")
    agents = table[(table["fold"] == 1) & (table["policy"] == "agent")].set_index("seed")
    for metric, value in backtest_metrics(local.bars["SYN0"]["agent"]).items():
        assert agents.loc[1, metric] == pytest.approx(value, rel=1e-12, nan_ok=True), metric
    assert agents.loc[0, "sharpe"] != agents.loc[1, "sharpe"]  # the seed reached the job


def test_two_workers_on_two_nodes_give_identical_files(
    reference: Path, connected: None, tmp_path: Path
) -> None:
    run_dir = walk_forward(tiny_config(tmp_path, "two", "evaluation.workers=2"))
    assert evaluation_files(run_dir) == evaluation_files(reference)
    assert len(job_nodes(run_dir)) == 2  # two jobs at once on one-CPU nodes: both nodes ran


def test_a_killed_job_is_retried_and_the_run_completes(
    reference: Path, connected: None, tmp_path: Path
) -> None:
    marker = tmp_path / "killed"
    cfg = tiny_config(tmp_path, "kill", "evaluation.workers=2", "evaluation.max_retries=1")
    run_dir = walk_forward(cfg, fault=JobFault(fold=1, seed=0, marker=str(marker)))
    assert marker.exists(), "the fault never fired"
    assert evaluation_files(run_dir) == evaluation_files(reference)


def test_a_persistent_failure_is_reported_and_resume_runs_only_the_missing_job(
    reference: Path, connected: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tiny_config(tmp_path, "resume", "evaluation.workers=2", "evaluation.max_retries=1")
    with pytest.raises(JobsFailedError, match=r"fold 1 seed 1: its worker process died") as err:
        walk_forward(cfg, fault=JobFault(fold=1, seed=1))  # dies on every attempt
    assert "after 2 attempts" in str(err.value) and "--resume" in str(err.value)
    run_dir = tmp_path / "resume"
    jobs = run_dir / "evaluation" / "jobs"
    finished = {p.parent.name for p in jobs.glob("*/done.json")}
    assert finished == {"fold0_seed0", "fold0_seed1", "fold1_seed0"}
    assert not (run_dir / "evaluation" / "folds.csv").exists()
    before = {p: p.stat().st_mtime_ns for p in (run_dir / "evaluation").rglob("*") if p.is_file()}
    with caplog.at_level(logging.INFO, logger="tradingbot.evaluate.distribute"):
        result = CliRunner().invoke(app, ["walkforward", "--resume", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "1 jobs computed, 3 reused" in caplog.text
    # The finished jobs' files were not written again; the missing job's now exist.
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert (jobs / "fold1_seed1" / "done.json").is_file()
    assert evaluation_files(run_dir) == evaluation_files(reference)


def test_resume_refuses_a_config_that_changes_the_jobs(reference: Path, tmp_path: Path) -> None:
    args = ["walkforward", "--resume", str(reference), "--set", "run.total_timesteps=512"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "differs from" in result.output and "run.total_timesteps" in result.output
    # Scheduling settings may change on resume; a directory that is no walk-forward may not.
    check_resumable(reference, tiny_config(tmp_path, "other", "evaluation.workers=7"))
    (tmp_path / "train_run").mkdir()
    (tmp_path / "train_run" / "config.yaml").write_bytes((reference / "config.yaml").read_bytes())
    with pytest.raises(ConfigError, match="not a walk-forward run"):
        check_resumable(tmp_path / "train_run", load_config(reference / "config.yaml"))


def test_progress_bar_counts_finished_jobs(
    reference: Path, connected: None, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = load_config(reference / "config.yaml")
    data = load_walkforward_data(cfg)
    stamps = union_index([b.index for b in data.bars.values()])
    folds = walk_forward_folds(stamps, cfg.data.walk_forward)
    outcome = run_jobs(cfg, folds, [0, 1], reference, progress=True)
    assert outcome.computed == [] and set(outcome.reused) == JOBS  # all saved: nothing runs
    err = capsys.readouterr().err
    assert "walk-forward jobs" in err and "4/4" in err


def test_cli_joins_the_cluster_with_address(
    cluster: object, reference: Path, tmp_path: Path
) -> None:
    import ray

    ray.shutdown()  # the command connects itself, and disconnects at the end
    args = ["walkforward", *tiny_args(tmp_path, "cli", "evaluation.workers=2")]
    result = CliRunner().invoke(app, [*args, "--address", cluster.address])  # type: ignore[attr-defined]
    assert result.exit_code == 0, result.output
    assert not ray.is_initialized()
    assert evaluation_files(tmp_path / "cli") == evaluation_files(reference)
