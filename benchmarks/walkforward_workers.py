"""Wall time of a reduced S&P 500 walk-forward on Ray with 1 and 2 workers, and the speed-up.

``configs/demo.yaml`` with ``--folds`` folds x ``--seeds`` seeds x ``--steps`` steps per job,
through :func:`tradingbot.evaluate.walkforward.walk_forward` (Ray start-up, the jobs and the
tables; not the HTML report). Each worker count runs in a fresh embedded Ray; the evaluation
files of every run are compared byte for byte with the first run's.

Usage: ``.venv/bin/python benchmarks/walkforward_workers.py --steps 100000``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tradingbot.config_loading import load_config
from tradingbot.evaluate.walkforward import walk_forward


def evaluation_files(run_dir: Path) -> dict[str, bytes]:
    """Every table and bars file of a run's ``evaluation/`` (the jobs' records aside)."""
    out = run_dir / "evaluation"
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and "jobs" not in p.relative_to(out).parts
    }


def main() -> None:
    """Run the walk-forward once per worker count and print wall times and speed-ups."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    out_dir = Path(tempfile.mkdtemp(prefix="wf-workers-"))
    times, files = {}, {}
    for workers in args.workers:
        cfg = load_config(
            args.config,
            [
                f"data.walk_forward.n_folds={args.folds}",
                f"evaluation.seeds={list(range(args.seeds))}",
                f"run.total_timesteps={args.steps}",
                f"evaluation.workers={workers}",
                f"run.out_dir={out_dir}",
                f"run.name=workers{workers}",
            ],
        )
        start = time.perf_counter()
        run_dir = walk_forward(cfg)
        times[workers] = time.perf_counter() - start
        files[workers] = evaluation_files(run_dir)
    first = args.workers[0]
    print(f"{args.folds} folds x {args.seeds} seeds x {args.steps} steps, {args.config}")
    print("workers  wall_s  speed-up  files identical to the first run")
    for workers in args.workers:
        same = files[workers] == files[first]
        print(f"{workers:7d}  {times[workers]:6.1f}  {times[first] / times[workers]:8.2f}  {same}")


if __name__ == "__main__":
    main()
