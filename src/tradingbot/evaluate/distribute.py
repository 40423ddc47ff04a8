"""Walk-forward jobs (one per fold and seed) as Ray tasks, driven from one process.

Ray is started or joined as for ``tradingbot pbt`` (:func:`tradingbot.pbt.runner.connect_ray`):
an embedded local Ray sized to the machine, or the cluster at ``--address``. At most
``evaluation.workers`` jobs run at once (default: the cluster's CPUs); a job whose process dies
or that raises is retried ``evaluation.max_retries`` times by Ray, and a job that still fails
is reported by fold and seed once the others have finished. The driver writes each job's
results into the run directory as the job finishes (so nodes need no shared storage), which is
what ``--resume`` reuses: finished jobs are not run again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tradingbot.config import ConfigError, TradingConfig
from tradingbot.config_loading import load_config
from tradingbot.data.splits import Fold
from tradingbot.errors import UserError, short_text
from tradingbot.evaluate.jobs import (
    JOBS_DIR,
    JobFault,
    JobResult,
    load_job_result,
    run_fold_seed,
    save_job_result,
)
from tradingbot.run import create_run_dir
from tradingbot.safe_write import atomic_path, make_dirs

log = logging.getLogger(__name__)

# Settings that may change between an interrupted run and its --resume: they decide how the
# jobs are scheduled and where the run lives, not what a job computes.
SCHEDULING_KEYS = ("evaluation.workers", "evaluation.max_retries", "run.out_dir", "run.name")


class JobsFailedError(UserError):
    """Walk-forward jobs that still failed after their retries (the others are saved)."""


@dataclass
class JobsOutcome:
    """The results of every job, and which were computed now or reused from a resumed run."""

    results: dict[tuple[int, int], JobResult]
    computed: list[tuple[int, int]] = field(default_factory=list)
    reused: list[tuple[int, int]] = field(default_factory=list)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_resumable(run_dir: Path, config: TradingConfig) -> None:
    """Refuse to resume ``run_dir`` with a config that computes different jobs than the one
    it was started with (its ``config.yaml``); only :data:`SCHEDULING_KEYS` may differ."""
    stored_file = Path(run_dir) / "config.yaml"
    for needed in (stored_file, Path(run_dir) / "evaluation"):
        if not needed.exists():
            raise ConfigError(f"--resume: {run_dir} is not a walk-forward run (no {needed.name})")
    stored = _flatten(load_config(stored_file).to_dict())
    current = _flatten(config.to_dict())
    changed = sorted(
        key
        for key in stored.keys() | current.keys()
        if key not in SCHEDULING_KEYS and stored.get(key) != current.get(key)
    )
    if changed:
        first = changed[0]
        raise ConfigError(
            f"--resume: the config differs from {stored_file} in {', '.join(changed[:5])} "
            f"({first}: {short_text(repr(stored.get(first)))} there, "
            f"{short_text(repr(current.get(first)))} now); resume with the run's own config"
        )


def _remote_job(config: dict[str, Any], fold: Fold, seed: int, fault: JobFault | None) -> Any:
    """The Ray task (an entry point: it tunes its worker process with the run's settings):
    one job, tagged with the node that ran it."""
    import ray

    from tradingbot.runtime import configure_process

    run_config = TradingConfig.model_validate(config)
    configure_process(run_config.run)
    result = run_fold_seed(run_config, fold, seed, fault)
    result.node = ray.get_runtime_context().get_node_id()
    return result


def describe_failure(err: BaseException) -> str:
    """One line on why a task failed: the job's own exception, or its process dying."""
    from ray.exceptions import RayTaskError, WorkerCrashedError

    if isinstance(err, RayTaskError) and err.cause is not None:
        cause = err.cause
        return short_text(f"{type(cause).__name__}: {cause}", 200)
    if isinstance(err, WorkerCrashedError):
        return "its worker process died"
    return short_text(f"{type(err).__name__}: {' '.join(str(err).split())}", 200)


def write_job_bars(result: JobResult, out: Path, root: Path) -> None:
    """The job's bars as ``out/bars/fold<F>_seed<S>_<instrument>_<policy>.csv``."""
    for instrument, policies in result.bars.items():
        for name, bars in policies.items():
            name_csv = f"fold{result.fold}_seed{result.seed}_{instrument}_{name}.csv"
            with atomic_path(out / "bars" / name_csv, root=root) as tmp:
                bars.to_csv(tmp)


def run_jobs(
    config: TradingConfig,
    folds: list[Fold],
    seeds: list[int],
    run_dir: Path,
    fault: JobFault | None = None,
    progress: bool | None = None,
) -> JobsOutcome:
    """Run every fold x seed job not yet saved in ``run_dir`` on the connected Ray.

    Each finished job is written at once (bars CSVs, then its ``evaluation/jobs/`` entry).
    ``progress``: show a bar of finished jobs with the time left (None: when on a terminal).
    Raises :class:`JobsFailedError` naming every job that failed after its retries.
    """
    import ray
    from tqdm import tqdm

    out = run_dir / "evaluation"
    jobs_dir = out / JOBS_DIR
    outcome = JobsOutcome(results={})
    pending: list[tuple[Fold, int]] = []
    for fold in folds:
        for seed in seeds:
            saved = load_job_result(jobs_dir, fold.index, seed)
            if saved is None:
                pending.append((fold, seed))
            else:
                outcome.results[(fold.index, seed)] = saved
                outcome.reused.append((fold.index, seed))
    workers = config.evaluation.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    retries = config.evaluation.max_retries
    task = ray.remote(_remote_job).options(
        num_cpus=config.run.torch_threads, max_retries=retries, retry_exceptions=True
    )
    config_ref = ray.put(job_config(config).to_dict())
    queue = iter(pending)
    in_flight: dict[Any, tuple[int, int]] = {}
    failures: dict[tuple[int, int], str] = {}

    def submit_next() -> None:
        job = next(queue, None)
        if job is not None:
            fold, seed = job
            in_flight[task.remote(config_ref, fold, seed, fault)] = (fold.index, seed)

    for _ in range(workers):
        submit_next()
    total = len(folds) * len(seeds)
    with tqdm(
        total=total,
        initial=len(outcome.reused),
        desc="walk-forward jobs",
        unit="job",
        disable=None if progress is None else not progress,
    ) as bar:
        while in_flight:
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            key = in_flight.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as err:
                failures[key] = describe_failure(err)
            else:
                write_job_bars(result, out, run_dir)
                save_job_result(result, jobs_dir, run_dir)
                outcome.results[key] = result
                outcome.computed.append(key)
                bar.update(1)
            submit_next()
    if failures:
        listed = "; ".join(
            f"fold {fold} seed {seed}: {why}" for (fold, seed), why in sorted(failures.items())
        )
        raise JobsFailedError(
            f"walk-forward: {len(failures)} of {total} jobs failed after {retries + 1} "
            f"attempts ({listed}); the {len(outcome.results)} finished jobs are saved: "
            f"finish with `tradingbot walkforward --resume {run_dir}`"
        )
    return outcome


def run_walkforward_jobs(
    config: TradingConfig,
    folds: list[Fold],
    seeds: list[int],
    address: str | None = None,
    resume: Path | None = None,
    fault: JobFault | None = None,
) -> tuple[Path, JobsOutcome]:
    """
    Connect to Ray, make (or, with ``resume``, reuse) the run directory and run every fold x
    seed job not yet saved there (:func:`run_jobs`); an embedded Ray is shut down afterwards.

    Ray is connected before the run directory exists, so an unreachable cluster leaves
    nothing behind.

    Parameters
    ----------
    config : TradingConfig
        The walk-forward's config (single-instrument or portfolio).
    folds : list of Fold
        The walk-forward folds.
    seeds : list of int
        The agents' seeds, each trained in every fold.
    address : str, optional
        A Ray cluster to join (``None``: an embedded local Ray).
    resume : Path, optional
        An interrupted run directory (checked with :func:`check_resumable` by the caller).
    fault : JobFault, optional
        For tests: a job that kills its own process.

    Returns
    -------
    tuple
        (run directory, :class:`JobsOutcome`).
    """
    from tradingbot.pbt.runner import connect_ray

    started = connect_ray(address)
    try:
        run_dir = Path(resume) if resume is not None else create_run_dir(config)
        make_dirs(run_dir / "evaluation" / "bars", root=run_dir)
        outcome = run_jobs(config, folds, seeds, run_dir, fault)
    finally:
        if started:
            import ray

            ray.shutdown()
    log.info(
        "walk-forward: %d jobs computed, %d reused from %s",
        len(outcome.computed),
        len(outcome.reused),
        run_dir,
    )
    return run_dir, outcome


def job_config(config: TradingConfig) -> TradingConfig:
    """The config the jobs receive: a relative data file resolved against the driver's
    working directory, which a Ray worker need not share."""
    source = Path(config.data.source)
    if not source.is_absolute() and source.is_file():
        return config.model_copy(
            update={"data": config.data.model_copy(update={"source": str(source.resolve())})}
        )
    return config
