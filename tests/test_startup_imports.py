"""Commands that do not train import nothing heavy (checked through ``sys.modules``)."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

HEAVY = ("torch", "ray", "stable_baselines3", "plotly", "gymnasium", "matplotlib", "arch", "scipy")


def modules_after(code: str) -> list[str]:
    """The HEAVY modules in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=300
    )
    return eval(out.stdout.strip().splitlines()[-1])  # a list literal printed by the probe


def test_config_and_cli_import_no_torch_or_ray() -> None:
    assert modules_after("import tradingbot.config, tradingbot.cli") == []


@pytest.mark.parametrize(
    "args", [["--help"], ["--version"], ["data", "list"], ["data", "show", "sp500"]]
)
def test_commands_that_do_not_train_import_nothing_heavy(args: list[str]) -> None:
    run = f"from tradingbot.cli import app\ntry:\n    app({args!r})\nexcept SystemExit:\n    pass"
    assert modules_after(run) == []


def test_data_list_reads_no_pandas_or_numpy() -> None:
    # The listing reads the files' lines; pandas and NumPy cost more than the whole command.
    probe = (
        "from tradingbot.cli import app\ntry:\n    app(['data', 'list'])\nexcept SystemExit:\n"
        "    pass\nimport sys\nprint([m for m in ('pandas', 'numpy') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_lazy_algo_package_still_exports_its_names() -> None:
    from tradingbot.algo import DistributionalPPO, PPOConfig
    from tradingbot.algo.config import PPOConfig as Config
    from tradingbot.algo.ppo import DistributionalPPO as PPO

    assert DistributionalPPO is PPO and PPOConfig is Config


@pytest.mark.parametrize("name", ["sp500", "vix"])
def test_arch_files_read_as_arch_reads_them(name: str) -> None:
    import importlib

    from tradingbot.data.package_files import read_arch_dataset

    expected = importlib.import_module(f"arch.data.{name}").load()
    pd.testing.assert_frame_equal(read_arch_dataset(name), expected)


def test_anytrading_files_read_as_gym_anytrading_reads_them() -> None:
    from gym_anytrading import datasets

    from tradingbot.data.package_files import read_anytrading_dataset

    pd.testing.assert_frame_equal(
        read_anytrading_dataset("STOCKS_GOOGL", "Date"), datasets.STOCKS_GOOGL
    )
    pd.testing.assert_frame_equal(
        read_anytrading_dataset("FOREX_EURUSD_1H_ASK", "Time"), datasets.FOREX_EURUSD_1H_ASK
    )
