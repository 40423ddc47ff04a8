"""Helpers for the hostile-input suite: run the CLI as a user would, and check its answer.

Each case here is something a careless or hostile user, or a crashing machine, does. Files are
generated in ``tmp_path``; no binary fixtures are stored.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CliResult:
    """What one ``tradingbot`` process returned."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(*args: str | Path, cwd: Path | None = None, timeout: float = 300) -> CliResult:
    """Run ``python -m tradingbot.cli ARGS`` in a fresh process (wide terminal, no colour)."""
    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1", "TERM": "dumb"}
    proc = subprocess.run(
        [sys.executable, "-m", "tradingbot.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def assert_user_error(result: CliResult, *names: str) -> str:
    """A user error: non-zero exit, no traceback, one ``error:`` line naming each of ``names``.

    Returns that line.
    """
    assert result.returncode != 0, result.output
    assert "Traceback" not in result.output, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.lstrip().lower().startswith("error")]
    assert len(errors) == 1, result.output
    for name in names:
        assert name in errors[0], (name, errors[0])
    return errors[0]


def snapshot(root: Path) -> dict[str, int]:
    """Every file under ``root`` with its modification time in ns (to check nothing else moved)."""
    return {
        str(p.relative_to(root)): p.lstat().st_mtime_ns
        for p in sorted(root.rglob("*"))
        if p.is_file() or p.is_symlink()
    }
