"""Start-up time and peak memory of the commands that do not train.

Each command runs in a fresh process (the installed ``tradingbot`` entry point), ``--repeat``
times after one warm-up run (which fills the OS file cache and Python's bytecode cache); the
table gives the median and the range of the wall-clock time, the median CPU time (user +
system, which depends much less than wall-clock time on other jobs sharing the cores) and the
median peak resident memory (``ru_maxrss``), both of that process, from ``os.wait4``.
Two floors measured the same way come first: the interpreter alone (``python -c pass``) and
``python -c "import pandas"``, the least that any command reading a data file with pandas
costs.

    .venv/bin/python benchmarks/startup.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [
    ["--help"],
    ["--version"],
    ["data", "list"],
    ["data", "show", "sp500"],
    ["runs", "RUNS"],
    ["train", "--help"],
]


def run_once(argv: list[str]) -> tuple[float, float, float] | None:
    """Wall-clock seconds, CPU seconds and peak RSS (MiB) of one ``tradingbot ARGV`` process
    (None when it fails, e.g. a command an older version does not have)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        return None
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    exe = str(Path(sys.executable).parent / "tradingbot")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    print(f"commit {commit}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print("| command | median s | min-max s | median CPU s | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|")
    floors = [("`python -c pass`", [sys.executable, "-c", "pass"])]
    floors.append(("`python -c 'import pandas'`", [sys.executable, "-c", "import pandas"]))
    with tempfile.TemporaryDirectory() as runs:
        rows = list(floors)
        for command in COMMANDS:
            argv = [exe, *(runs if part == "RUNS" else part for part in command)]
            shown = " ".join("DIR" if part == "RUNS" else part for part in command)
            rows.append((f"`tradingbot {shown}`", argv))
        for shown, argv in rows:
            if run_once(argv) is None:  # also the warm-up
                print(f"| {shown} | fails | | | |")
                continue
            samples = [s for s in (run_once(argv) for _ in range(args.repeat)) if s is not None]
            times = [s[0] for s in samples]
            cpu = statistics.median(s[1] for s in samples)
            rss = statistics.median(s[2] for s in samples)
            print(
                f"| {shown} | {statistics.median(times):.3f} | "
                f"{min(times):.3f}-{max(times):.3f} | {cpu:.3f} | {rss:.0f} |"
            )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
