"""Time ``tradingbot signals`` over 10 years of daily bars for one instrument (target < 5 s).

    python benchmarks/signals_speed.py

Trains a short run with the default network (the speed of inference does not depend on how
long it trained), writes S&P 500 bars 2009-2018 to a CSV, and times loading the run plus
computing and writing the signals, as the CLI does.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from tradingbot.config_loading import load_config
from tradingbot.data.sources import load_market
from tradingbot.signals import signals_for_run
from tradingbot.train import train


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            overrides=[f"run.out_dir={tmp}", "run.name=bench", "run.total_timesteps=2048"]
        )
        run_dir = train(cfg).run_dir
        bars = load_market("sp500").bars["SPX"].loc["2009-01-01":"2018-12-31"]
        data = Path(tmp) / "spx_10y.csv"
        bars.to_csv(data)
        start = time.perf_counter()
        out = signals_for_run(run_dir, str(data), Path(tmp) / "signals.csv")
        seconds = time.perf_counter() - start
        rows = sum(1 for _ in out.open()) - 1
    print(f"bars in file: {len(bars)}, signal rows: {rows}")
    print(f"signals over 10 years of daily bars: {seconds:.2f} s (target < 5 s)")


if __name__ == "__main__":
    main()
