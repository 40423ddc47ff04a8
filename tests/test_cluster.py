"""The README's cluster steps, run on one machine: a head and a worker started with
``ray start`` on 127.0.0.1 with token authentication, then the CI-sized PBT through
``tradingbot pbt --address``. Only the processes this test started are stopped (their process
groups, then any process whose command line names this test's Ray temp directories); a Ray
cluster someone else runs on the machine is left alone."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports that were free a moment ago."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def processes_naming(text: str) -> list[int]:
    """Pids of processes whose command line contains ``text``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
        except OSError:
            continue
        if text in cmdline:
            pids.append(int(entry.name))
    return pids


def wait_for_line(log: Path, proc: subprocess.Popen, text: str, timeout: float) -> None:
    """Wait until ``text`` appears in ``log``; fail with the log if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="ignore"):
            return
        if proc.poll() is not None:
            pytest.fail(f"ray start exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        time.sleep(0.5)
    pytest.fail(f"no {text!r} after {timeout} s:\n{log.read_text()[-4000:]}")


class LoopbackNodes:
    """Ray nodes started by this test, each ``ray start --block`` in its own session."""

    def __init__(self, base: Path, env: dict[str, str]) -> None:
        self.base, self.env = base, env
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, *args: str) -> None:
        temp = self.base / name
        log = self.base / f"{name}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [str(BIN / "ray"), "start", "--block", f"--temp-dir={temp}", *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        wait_for_line(log, proc, "Ray runtime started", timeout=180)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs:
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for pid in processes_naming(str(self.base)):  # raylet, GCS, workers, agents
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def ray_base() -> Iterator[Path]:
    # Short: Ray puts Unix sockets under its temp dir and their paths are limited to 107 bytes.
    base = Path(tempfile.mkdtemp(prefix="tbray", dir="/tmp"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_pbt_on_a_two_node_loopback_cluster_with_token_auth(ray_base: Path, tmp_path: Path) -> None:
    token = ray_base / "auth_token"
    token.write_text(secrets.token_hex(32))  # what `ray get-auth-token --generate` writes
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_AUTH_TOKEN", None)
    env.pop("RAY_ADDRESS", None)
    gcs, client, head_agent, worker_agent = free_ports(4)
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=2", "--disable-usage-stats"]
    common += [f"--object-store-memory={100 * 1024**2}"]
    nodes = LoopbackNodes(ray_base, env)
    with ExitStack() as stack:
        stack.callback(nodes.stop)
        nodes.start(
            "head", "--head", f"--port={gcs}", f"--ray-client-server-port={client}",
            "--include-dashboard=false", f"--dashboard-agent-listen-port={head_agent}", *common,
        )  # fmt: skip
        nodes.start(
            "worker", f"--address=127.0.0.1:{gcs}",
            f"--dashboard-agent-listen-port={worker_agent}", *common,
        )  # fmt: skip
        command = [str(BIN / "tradingbot"), "pbt", "--config", "configs/pbt_ci.yaml"]
        command += ["--set", f"run.out_dir={tmp_path}", "--address", f"127.0.0.1:{gcs}"]
        result = subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    assert processes_naming(str(ray_base)) == []
    run = tmp_path / "pbt-ci"
    assert (run / "model.safetensors").is_file()
    members = pd.read_csv(run / "pbt" / "members.csv")
    assert members["trial_id"].nunique() == 4
