"""``tradingbot pbt``: Population-based training of DistributionalPPO on Ray Tune.

Layout of the run directory (``run.out_dir / run.name``)::

    config.yaml, run.json         the best member's resolved config (its hyperparameters, seed)
    model.safetensors             the best member's checkpoint (full state)
    normalization.safetensors     the feature normalization fitted on the training split
    pbt/base_config.yaml          the config the population started from
    pbt/members.csv               every report of every member
    pbt/summary.json              best member, score, exploits, failures
    pbt/pbt.html                  each member's score and hyperparameters over time
    pbt/tune/                     Tune's experiment: one directory per trial with its results
                                  and checkpoints (checkpoint_NNNNNN/{model.safetensors,
                                  member.json})
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tradingbot.config import ConfigError, TradingConfig
from tradingbot.config_loading import dump_config
from tradingbot.config_pbt import MutationSpec
from tradingbot.errors import UserError, short_text
from tradingbot.pbt.member import clip_to_space, resolve_mutations
from tradingbot.pbt.trainable import FaultInjection, pbt_trainable
from tradingbot.run import create_run_dir
from tradingbot.safe_write import atomic_path, write_text

log = logging.getLogger(__name__)

PBT_DIR = "pbt"
TUNE_NAME = "tune"
OBJECT_STORE_BYTES = 200 * 1024**2
CONNECT_TIMEOUT_S = 10.0  # ray.init itself retries an unreachable cluster for minutes


@dataclass
class PBTResult:
    """What a PBT run produced.

    Parameters
    ----------
    run_dir: the exported run directory of the best member.
    members: every report of every member (``pbt/members.csv``).
    best_trial: the trial whose checkpoint was exported.
    best_score: its score.
    best_iteration: the interval of the exported checkpoint.
    """

    run_dir: Path
    members: pd.DataFrame
    best_trial: str
    best_score: float
    best_iteration: int


def members_recorder() -> Any:
    """A Tune callback (on the driver) that keeps every result every member reports; Tune's
    own per-trial result files are rewritten when a paused trial restarts."""
    from ray import tune

    class MembersRecorder(tune.Callback):
        """Collects each reported result (``results``) in arrival order."""

        def __init__(self) -> None:
            self.results: list[dict[str, Any]] = []

        def on_trial_result(
            self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
        ) -> None:
            self.results.append({**result, "trial_id": trial.trial_id})

    return MembersRecorder()


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse a cluster ``address`` (``HOST:PORT`` or ``ray://HOST:PORT``) that does not accept
    a TCP connection within ``timeout`` seconds; ``auto`` (a local cluster) is not checked."""
    if address == "auto":
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(
            f"--address must be HOST:PORT (e.g. 127.0.0.1:6379), got {short_text(address)}"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as err:
        reason = "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise UserError(
            f"--address {short_text(address)}: no Ray cluster reachable there ({reason}; "
            f"waited up to {timeout:g} s)"
        ) from None


def connect_ray(address: str | None) -> bool:
    """Start an embedded Ray sized to this machine, or join the cluster at ``address``.

    Returns whether this call connected (and so should disconnect); an already initialized
    Ray is used as it is.
    """
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is not None:
        check_reachable(address)
        # Ray retries a GCS that does not answer 20 times, ~40 s each; one attempt is enough
        # once the port is known to accept connections.
        os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "1")
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError) as err:
            detail = short_text(" ".join(str(err).split()), 200)
            raise UserError(
                f"--address {short_text(address)}: Ray did not connect: {detail}"
            ) from None
    else:
        # "local": a new instance even where RAY_ADDRESS or the last `ray start` on this
        # machine (another user's cluster) would be joined by ray.init's default.
        ray.init(
            address="local",
            num_cpus=os.cpu_count() or 1,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=OBJECT_STORE_BYTES,
        )
    return True


def search_space(mutations: dict[str, MutationSpec]) -> dict[str, Any]:
    """Tune distributions of the mutation space (initial samples and resamples)."""
    from ray import tune

    return {
        path: (tune.loguniform if spec.log else tune.uniform)(spec.low, spec.high)
        for path, spec in mutations.items()
    }


def make_tuner(
    config: TradingConfig,
    storage: Path,
    mutations: dict[str, MutationSpec],
    fault: FaultInjection | None = None,
    callbacks: list[Any] | None = None,
) -> Any:
    """The Tuner: PBT over ``pbt.population`` function trials, one checkpoint per report."""
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining

    pbt = config.pbt
    space = search_space(mutations)
    scheduler = PopulationBasedTraining(
        time_attr="iteration",
        metric="score",
        mode=pbt.mode,
        perturbation_interval=1,
        hyperparam_mutations=space,
        quantile_fraction=pbt.quantile_fraction,
        resample_probability=pbt.resample_probability,
        perturbation_factors=tuple(pbt.perturbation_factors),
        custom_explore_fn=functools.partial(clip_to_space, mutations=mutations),
        synch=pbt.synch,
    )
    trainable = tune.with_resources(
        tune.with_parameters(pbt_trainable, config=config.to_dict(), fault=fault),
        {"cpu": pbt.cpus_per_trial},
    )
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            scheduler=scheduler, num_samples=pbt.population, reuse_actors=True
        ),
        run_config=tune.RunConfig(
            name=TUNE_NAME,
            storage_path=str(storage.resolve()),
            failure_config=tune.FailureConfig(max_failures=pbt.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            verbose=0,
            callbacks=callbacks,
        ),
    )


def run_pbt(
    config: TradingConfig,
    address: str | None = None,
    fault: FaultInjection | None = None,
) -> PBTResult:
    """Run PBT with ``config`` and export the best member as a run directory.

    Parameters
    ----------
    config: the run config; ``config.pbt`` configures the population.
    address: a Ray cluster to join (``None``: an embedded local Ray, one CPU per member).
    fault: for tests: kill one member's process once.
    """
    from tradingbot.pbt.export import export_best, members_table, write_pbt_html

    if config.run.seeds is not None:
        raise ConfigError(
            f"run.seeds ({config.run.seeds}) is for train (a seed ensemble); PBT seeds its "
            "members from run.seed: give run.seed alone"
        )
    mutations = resolve_mutations(config.pbt.mutations, config.algo)
    if not mutations:
        raise ConfigError("pbt.mutations: no usable hyperparameter to mutate")
    # Connect before the run directory exists: a cluster that cannot be reached, or an
    # interruption, must not leave a half-made directory that blocks the same command again.
    started = connect_ray(address)
    run_dir: Path | None = None
    try:
        run_dir = create_run_dir(config)
        pbt_dir = run_dir / PBT_DIR
        write_text(pbt_dir / "base_config.yaml", dump_config(config), root=run_dir)
        recorder = members_recorder()
        grid = make_tuner(config, pbt_dir, mutations, fault, [recorder]).fit()
    except BaseException:
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing was exported from it yet
        raise
    finally:
        if started:
            import ray

            ray.shutdown()
    members = members_table(recorder.results)
    with atomic_path(pbt_dir / "members.csv", root=run_dir) as tmp:
        members.to_csv(tmp, index=False)
    best = export_best(config, run_dir, grid, members)
    write_pbt_html(members, list(mutations), pbt_dir / "pbt.html", config)
    log.info("PBT best member %s (score %.4f) exported to %s", best[0], best[1], run_dir)
    return PBTResult(run_dir, members, best[0], best[1], best[2])
