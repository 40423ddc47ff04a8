"""Hostile and careless use of the command line: every case is one clear error line.

Each case runs ``tradingbot`` in a fresh process and checks: exit status non-zero, no
traceback, exactly one ``error:`` line naming the file / key / option, and (where the command
could write) that no file anywhere under the test's directory was created or changed.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hostile.conftest import assert_user_error, run_cli, snapshot

TINY = [
    "--set",
    "env.n_envs=2",
    "--set",
    "algo.n_steps=64",
    "--set",
    "algo.batch_size=64",
    "--set",
    "run.total_timesteps=128",
    "--set",
    "data.synthetic.n_bars=300",
]


def write_bars(path: Path, n: int = 120) -> Path:
    """A valid daily OHLCV CSV: a seeded random walk."""
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    frame = pd.DataFrame(
        {
            "date": pd.bdate_range("2020-01-01", periods=n).strftime("%Y-%m-%d"),
            "open": close,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "volume": 1000.0,
        }
    )
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small trained run directory (synthetic data, 128 steps)."""
    root = tmp_path_factory.mktemp("trained")
    result = run_cli(
        "train", "--data", "synthetic", "--no-progress", *TINY,
        "--set", f"run.out_dir={root}", "--set", "run.name=r",
    )  # fmt: skip
    assert result.returncode == 0, result.output
    return root / "r"


@pytest.fixture
def run_copy(trained: Path, tmp_path: Path) -> Path:
    """A private copy of the trained run (a case may plant links in it)."""
    import shutil

    return Path(shutil.copytree(trained, tmp_path / "run"))


def unchanged(root: Path, before: dict[str, int]) -> None:
    assert snapshot(root) == before, "files were created or changed"


# --- item 6: signals --out onto the run's own files or the input ---------------------------


def test_signals_refuses_to_overwrite_the_model(run_copy: Path, tmp_path: Path) -> None:
    model = run_copy / "model.safetensors"
    data = write_bars(tmp_path / "bars.csv")
    content, before = model.read_bytes(), snapshot(tmp_path)
    result = run_cli("signals", run_copy, "--data", data, "--out", model)
    assert_user_error(result, "model.safetensors", "refusing to overwrite")
    assert model.read_bytes() == content
    unchanged(tmp_path, before)


def test_signals_refuses_to_overwrite_its_input(run_copy: Path, tmp_path: Path) -> None:
    data = write_bars(tmp_path / "bars.csv")
    content, before = data.read_bytes(), snapshot(tmp_path)
    result = run_cli("signals", run_copy, "--data", data, "--out", data)
    assert_user_error(result, "bars.csv", "refusing to overwrite")
    assert data.read_bytes() == content
    unchanged(tmp_path, before)


def test_signals_out_a_directory(run_copy: Path, tmp_path: Path) -> None:
    data = write_bars(tmp_path / "bars.csv")
    (tmp_path / "outdir").mkdir()
    before = snapshot(tmp_path)
    result = run_cli("signals", run_copy, "--data", data, "--out", tmp_path / "outdir")
    assert_user_error(result, "outdir", "is a directory")
    unchanged(tmp_path, before)


def test_signals_out_a_device(run_copy: Path, tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    data = write_bars(tmp_path / "bars.csv")
    before = snapshot(tmp_path)
    result = run_cli("signals", run_copy, "--data", data, "--out", "/dev/full")
    assert_user_error(result, "/dev/full", "not a regular file")
    unchanged(tmp_path, before)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_signals_out_in_a_read_only_directory(run_copy: Path, tmp_path: Path) -> None:
    data = write_bars(tmp_path / "bars.csv")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = run_cli("signals", run_copy, "--data", data, "--out", locked / "s.csv")
    finally:
        locked.chmod(0o755)
    assert_user_error(result, "s.csv", "cannot write")
    assert list(locked.iterdir()) == []


# --- item 7: a link planted in a run directory ------------------------------------------------


def test_backtest_does_not_write_through_a_planted_link(run_copy: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (run_copy / "backtest" / "test").mkdir(parents=True)
    (run_copy / "backtest" / "test" / "metrics.csv").symlink_to(victim)
    before = snapshot(tmp_path)
    result = run_cli("backtest", run_copy, "--split", "test")
    assert_user_error(result, "metrics.csv", "symbolic link")
    assert victim.read_text() == "precious\n"
    assert (run_copy / "backtest" / "test" / "metrics.csv").is_symlink()
    # The per-bar files written before metrics.csv stay inside the run directory.
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("run/backtest/")} == {
        k: v for k, v in before.items() if not k.startswith("run/backtest/")
    }


def test_backtest_does_not_write_through_a_linked_directory(run_copy: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run_copy / "backtest").symlink_to(elsewhere, target_is_directory=True)
    before = snapshot(tmp_path)
    result = run_cli("backtest", run_copy, "--split", "test")
    assert_user_error(result, "symbolic link")
    assert list(elsewhere.iterdir()) == []
    unchanged(tmp_path, before)


# --- item 12: YAML alias bomb -------------------------------------------------------------------


def alias_bomb(levels: int) -> str:
    """A YAML document of 10**levels leaves built from 10-fold aliases (a "billion laughs")."""
    lines = ['l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, levels):
        refs = ", ".join([f"*l{i - 1}"] * 10)
        lines.append(f"l{i}: &l{i} [{refs}]")
    return "run:\n  name: bomb\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize("levels", [6, 9])
def test_yaml_alias_bomb_config_is_refused_quickly(tmp_path: Path, levels: int) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb(levels))
    before = snapshot(tmp_path)
    start = time.perf_counter()
    result = run_cli("train", "-c", bomb, "--set", f"run.out_dir={tmp_path}", timeout=60)
    elapsed = time.perf_counter() - start
    line = assert_user_error(result, "bomb.yaml", "100000")
    assert len(result.output) < 1000, len(result.output)  # the value is not embedded
    assert elapsed < 90, elapsed  # a fresh interpreter on a loaded machine; unbounded before
    assert "x" * 5 not in line
    unchanged(tmp_path, before)


def test_alias_bomb_is_refused_before_anything_expands() -> None:
    from tradingbot.config import ConfigError
    from tradingbot.config_loading import load_yaml

    start = time.perf_counter()
    with pytest.raises(ConfigError, match="expands to more than 100000"):
        load_yaml(alias_bomb(9), "bomb.yaml")
    assert time.perf_counter() - start < 2.0


def test_yaml_alias_bomb_in_a_run_directory(run_copy: Path, tmp_path: Path) -> None:
    (run_copy / "config.yaml").write_text(alias_bomb(9))
    result = run_cli("backtest", run_copy, timeout=60)
    assert_user_error(result, "config.yaml", "expands to more than")
    assert len(result.output) < 1000


def test_large_unknown_value_is_truncated_in_the_message(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("env:\n  n_envs: " + "[" + ", ".join(["1"] * 20000) + "]\n")
    result = run_cli("train", "-c", config)
    assert_user_error(result, "c.yaml")
    assert "env.n_envs" in result.output
    assert len(result.output) < 1000, len(result.output)


# --- item 15: malformed overrides and config paths ----------------------------------------------


@pytest.mark.parametrize(
    "override",
    [
        "algo.net_arch=[1,",
        "run.name=!!python/object/apply:os.system ['touch pwned']",
        "run.name=a\x01b",
    ],
)
def test_malformed_override_names_the_key(tmp_path: Path, override: str) -> None:
    before = snapshot(tmp_path)
    result = run_cli("train", "--set", override, "--set", f"run.out_dir={tmp_path}", cwd=tmp_path)
    key = override.split("=", 1)[0]
    assert_user_error(result, f"--set {key}")
    unchanged(tmp_path, before)


def test_config_that_is_a_csv(tmp_path: Path) -> None:
    data = write_bars(tmp_path / "bars.csv")
    result = run_cli("train", "-c", data)
    assert_user_error(result, "bars.csv", "--data")


def test_config_that_is_binary(tmp_path: Path) -> None:
    blob = tmp_path / "blob.yaml"
    blob.write_bytes(bytes(range(256)) * 4)
    result = run_cli("train", "-c", blob)
    assert_user_error(result, "blob.yaml", "UTF-8")


def test_run_out_dir_that_is_a_file(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("not a directory\n")
    before = snapshot(tmp_path)
    result = run_cli("train", "--data", "synthetic", *TINY, "--set", f"run.out_dir={plain}")
    assert_user_error(result, "run.out_dir", "plain")
    unchanged(tmp_path, before)


# --- item 17: paths out of the run directory ----------------------------------------------------


def test_backtest_split_with_dots_creates_nothing(run_copy: Path, tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    dirs = sorted(p for p in tmp_path.rglob("*") if p.is_dir())
    result = run_cli("backtest", run_copy, "--split", "../../x")
    assert_user_error(result, "--split", "../../x")
    unchanged(tmp_path, before)
    assert sorted(p for p in tmp_path.rglob("*") if p.is_dir()) == dirs


@pytest.mark.parametrize("name", ["../escaped", "ABSOLUTE", "a/b"])
def test_run_name_is_one_path_component(tmp_path: Path, name: str) -> None:
    out = tmp_path / "runs"
    out.mkdir()
    name = str(tmp_path / "absolute") if name == "ABSOLUTE" else name
    before = snapshot(tmp_path)
    result = run_cli(
        "train", "--data", "synthetic", *TINY, "--set", f"run.out_dir={out}",
        "--set", f"run.name={name}",
    )  # fmt: skip
    assert_user_error(result, "run.name")
    unchanged(tmp_path, before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


# --- item 14: an unreachable cluster ------------------------------------------------------------


def free_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_pbt_unreachable_address_fails_fast_and_can_be_rerun(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    args = ("pbt", "-c", "configs/pbt_ci.yaml", "--set", f"run.out_dir={tmp_path}")
    root = Path(__file__).resolve().parents[2]
    for _ in range(2):  # the second run must meet the same error, not "run directory exists"
        start = time.perf_counter()
        result = run_cli(*args, "--address", address, cwd=root, timeout=120)
        assert time.perf_counter() - start < 60
        assert_user_error(result, address, "no Ray cluster reachable")
        assert list(tmp_path.iterdir()) == []


# --- the boundary itself ------------------------------------------------------------------------


def test_missing_run_directory_is_one_line(tmp_path: Path) -> None:
    result = run_cli("report", tmp_path / "nope")
    assert_user_error(result, "nope")


def test_version() -> None:
    from importlib.metadata import version

    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"tradingbot {version('tradingbot')}"


@pytest.mark.slow
def test_pbt_sigterm_stops_promptly_and_leaves_no_half_made_run(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tradingbot.cli", "pbt", "-c", "configs/pbt_ci.yaml",
         "--set", f"run.out_dir={out}"],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not (out / "pbt-ci" / "pbt" / "tune").exists():  # Ray is up, members training
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.5)
        time.sleep(2)
        proc.terminate()
        start = time.monotonic()
        proc.wait(timeout=60)
        assert time.monotonic() - start < 30
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert not (out / "pbt-ci").exists()  # the same command can run again
