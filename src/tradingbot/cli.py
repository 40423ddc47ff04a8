"""The ``tradingbot`` command line.

One error boundary (:class:`~tradingbot.cli_errors.ErrorBoundary`) serves every command: an
expected error (any :class:`~tradingbot.errors.UserError`: bad data, config, checkpoint or
output path, or an operating-system error about a path the user gave) is printed as one
``error: ...`` line with exit status 1; anything else as one line with exit status 70 and a
hint to rerun with ``--debug``, which prints the traceback. Nothing heavy (torch, Ray,
pandas, plotly) is imported until a command needs it, so ``--help`` and ``--version`` start at
once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tradingbot import __version__
from tradingbot.cli_errors import (  # noqa: F401  (EXIT_*, describe_error: re-exported)
    EXIT_INTERNAL_ERROR,
    EXIT_TERMINATED,
    EXIT_USER_ERROR,
    ErrorBoundary,
    describe_error,
)
from tradingbot.errors import UserError, short_text

console = Console()

app = typer.Typer(
    cls=ErrorBoundary,
    help="Risk-aware recurrent distributional PPO trading agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Bundled and user datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _print_version(value: bool) -> None:
    if value:
        console.print(f"tradingbot {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(
        False, "--debug", help="on an error, print the traceback (for bug reports)"
    ),
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="print the version and exit",
    ),
) -> None:
    """Risk-aware recurrent distributional PPO trading agents."""


ConfigOption = typer.Option(
    None, "--config", "-c", help="YAML config file (default: built-in defaults)"
)
SetOption = typer.Option(
    [], "--set", "-s", help="override a config value: key.path=value (repeatable)"
)


@app.command("train")
def train_command(
    config: Path | None = ConfigOption,
    data: str | None = typer.Option(
        None, "--data", "-d", help="bundled dataset name or CSV/Parquet path"
    ),
    overrides: list[str] = SetOption,
    progress: bool = typer.Option(True, help="show a progress bar"),
    resume_dir: Path | None = typer.Option(
        None, "--resume", help="continue this run directory from its newest checkpoint"
    ),
) -> None:
    """Train DistributionalPPO on the training split and write a run directory."""
    from tradingbot.config import ConfigError
    from tradingbot.config_loading import load_config
    from tradingbot.runtime import configure_process
    from tradingbot.train import resume, train

    if resume_dir is not None:
        if config is not None or data is not None or overrides:
            raise ConfigError("--resume continues a run with its own config; drop other options")
        if (resume_dir / "config.yaml").is_file():  # else resume() says it is no run directory
            configure_process(load_config(resume_dir / "config.yaml").run)
        result = resume(resume_dir, progress_bar=progress)
    else:
        cfg = load_config(config, overrides)
        if data is not None:
            cfg.data.source = data
        configure_process(cfg.run)
        result = train(cfg, progress_bar=progress)
    console.print(f"run directory: {result.run_dir}", highlight=False, soft_wrap=True)


@app.command("walkforward")
def walkforward_command(
    config: Path | None = ConfigOption,
    data: str | None = typer.Option(None, "--data", "-d", help="bundled dataset name or file"),
    overrides: list[str] = SetOption,
    address: str | None = typer.Option(
        None, "--address", help="join this Ray cluster (HOST:PORT); default: a local Ray"
    ),
    resume: Path | None = typer.Option(
        None,
        "--resume",
        help="finish this interrupted walk-forward run directory (its config unless --config)",
    ),
) -> None:
    """Train and test an agent per walk-forward fold and seed; summarize with 95% CIs.

    Each fold x seed is a Ray task: a local Ray by default, a cluster with --address."""
    import pandas as pd

    from tradingbot.config_loading import load_config
    from tradingbot.evaluate.walkforward import walk_forward
    from tradingbot.report import build_report
    from tradingbot.runtime import configure_process

    if config is None and resume is not None:
        config = resume / "config.yaml"  # checked against the run by walk_forward
    cfg = load_config(config, overrides)
    if data is not None:
        cfg.data.source = data
    configure_process(cfg.run)
    if cfg.portfolio is not None:
        from tradingbot.evaluate.portfolio_walkforward import portfolio_walk_forward

        run_dir = portfolio_walk_forward(cfg, address=address, resume=resume)
    else:
        run_dir = walk_forward(cfg, address=address, resume=resume)
    summary = pd.read_csv(run_dir / "evaluation" / "summary.csv")
    table = Table(title="walk-forward: mean [95% CI] over folds and seeds")
    for col in ("policy", "sharpe", "max_drawdown", "cvar_5"):
        table.add_column(col)
    for policy, group in summary.groupby("policy", sort=False):
        cells = [str(policy)]
        for metric in ("sharpe", "max_drawdown", "cvar_5"):
            row = group[group["metric"] == metric].iloc[0]
            cells.append(f"{row['mean']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]")
        table.add_row(*cells)
    console.print(table)
    console.print(f"run directory: {run_dir}", highlight=False, soft_wrap=True)
    console.print(f"report: {build_report(run_dir)}", highlight=False, soft_wrap=True)


@app.command("backtest")
def backtest_command(
    run_dir: Path = typer.Argument(..., help="a run directory written by `tradingbot train`"),
    split: str = typer.Option("test", help="train, validation or test"),
    data: str | None = typer.Option(None, "--data", "-d", help="other data (name or file)"),
    attack: str | None = typer.Option(
        None,
        "--attack",
        help="also run the agent with its observations attacked: pgd (adversarial) or random",
    ),
    epsilon: float = typer.Option(
        0.1, "--epsilon", help="attack radius (L-infinity, normalized feature units)"
    ),
    attack_steps: int = typer.Option(10, "--attack-steps", help="PGD steps per bar"),
) -> None:
    """Backtest the run's agent, buy-and-hold and flat on a split; print their metrics.

    With --attack the agent also runs with every observation perturbed within --epsilon (the
    market itself unchanged; the agent's own position never perturbed), as ``agent_<attack>``.
    """
    import pandas as pd

    from tradingbot.data.splits import SPLIT_NAMES
    from tradingbot.evaluate.runs import backtest_run

    # Checked before anything is read or created: the split names a directory of the run.
    if split not in SPLIT_NAMES:
        raise UserError(f"--split must be one of {', '.join(SPLIT_NAMES)}, got {short_text(split)}")
    if attack is not None and attack not in ("pgd", "random"):
        raise UserError(f"--attack must be pgd or random, got {short_text(attack)}")
    if epsilon < 0 or attack_steps < 1:
        raise UserError("--epsilon must be >= 0 and --attack-steps >= 1")
    out = backtest_run(run_dir, split, data, attack, epsilon, attack_steps)
    metrics = pd.read_csv(out / "metrics.csv")
    title = f"{split} split"
    if attack is not None:
        title += f", {attack} attack eps={epsilon:g}"
    table = Table(title=title)
    columns = ["policy", "instrument", "total_return", "sharpe", "max_drawdown", "cvar_5"]
    for col in columns:
        table.add_column(col)
    for _, row in metrics.iterrows():
        table.add_row(
            *[f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        )
    console.print(table)
    console.print(f"backtest written to {out}", highlight=False, soft_wrap=True)


@app.command("signals")
def signals_command(
    run_dir: Path = typer.Argument(..., help="a run directory"),
    data: str = typer.Option(..., "--data", "-d", help="bars to score: a CSV/Parquet file or name"),
    out: Path = typer.Option(..., "--out", "-o", help="where to write the signals"),
    fmt: str | None = typer.Option(None, "--format", help="csv, parquet or json (default: suffix)"),
    start: str | None = typer.Option(
        None, "--start", help="first bar to score (date); default: after evaluation.warmup_bars"
    ),
) -> None:
    """Positions and risk estimates (value, VaR, CVaR) of a trained agent for every bar."""
    from tradingbot.signals import signals_for_run

    if fmt not in (None, "csv", "parquet", "json"):
        raise UserError(f"--format must be csv, parquet or json, got {short_text(fmt or '')}")
    path = signals_for_run(run_dir, data, out, fmt, start=start)  # type: ignore[arg-type]
    console.print(f"signals written to {path}", highlight=False, soft_wrap=True)


@app.command("pbt")
def pbt_command(
    config: Path | None = ConfigOption,
    overrides: list[str] = SetOption,
    address: str | None = typer.Option(
        None, "--address", help="join this Ray cluster (HOST:PORT); default: a local Ray"
    ),
) -> None:
    """Population-based training on Ray Tune; export the best member as a run directory."""
    from tradingbot.config_loading import load_config
    from tradingbot.pbt import run_pbt

    result = run_pbt(load_config(config, overrides), address=address)
    exploits = int((result.members["exploited_from"] != "").sum())
    console.print(
        f"best member {result.best_trial} at interval {result.best_iteration}: "
        f"score {result.best_score:.4f}; {exploits} exploits",
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"run directory: {result.run_dir}", highlight=False, soft_wrap=True)


@app.command("report")
def report_command(
    run_dir: Path = typer.Argument(..., help="a run directory"),
) -> None:
    """Build the run's self-contained report.html."""
    from tradingbot.report import build_report

    path = build_report(run_dir)
    console.print(f"report: {path}", highlight=False, soft_wrap=True)


@app.command("runs")
def runs_command(
    directory: Path = typer.Argument(Path("runs"), help="a directory of run directories"),
    sort: str = typer.Option(
        "created",
        "--sort",
        help="column to sort by: name, data, steps, seed, created, sharpe, max_drawdown, "
        "bh_sharpe, bh_max_drawdown (numbers largest first)",
    ),
    reverse: bool = typer.Option(False, "--reverse", help="reverse the order"),
) -> None:
    """One table of the run directories under DIRECTORY with their test-split numbers.

    Sharpe and max drawdown are the test split's (``tradingbot backtest RUN --split test``),
    agent and buy-and-hold (bh_), each the mean over instruments.
    """
    from tradingbot.run_index import COLUMNS, format_cell, list_runs, sort_rows

    rows = sort_rows(list_runs(directory), sort, reverse)
    table = Table(title=f"runs in {directory}")
    for col in COLUMNS:
        table.add_column(col, justify="left" if col in ("name", "data", "created") else "right")
    for row in rows:
        table.add_row(*(escape(format_cell(getattr(row, col))) for col in COLUMNS))
    console.print(table)
    if not rows:
        console.print(f"no run directories in {directory}", highlight=False)


def _summary_rows(data: Any) -> list[tuple[str, str, str, str]]:
    """(instrument, rows, first, last) of each instrument of a ``MarketData``."""
    rows = []
    for inst, bars in data.bars.items():
        rows.append((inst, str(len(bars)), f"{bars.index[0]}", f"{bars.index[-1]}"))
    return rows


@data_app.command("list")
def data_list() -> None:
    """List the bundled datasets: name, instruments, rows, date range, source."""
    from tradingbot.data.catalog import list_datasets

    table = Table(title="datasets")
    for col in ("name", "instruments", "rows", "from", "to", "source"):
        table.add_column(col)
    for summary in list_datasets():
        table.add_row(
            summary.name,
            str(summary.instruments),
            str(summary.rows),
            f"{summary.first:%Y-%m-%d}",
            f"{summary.last:%Y-%m-%d}",
            summary.origin,
        )
    console.print(table)
    console.print("User data: any CSV or Parquet file path (see `tradingbot data show FILE`).")


@data_app.command("show")
def data_show(
    name: str = typer.Argument(..., help="a bundled dataset name or a CSV/Parquet path"),
    config: Path | None = ConfigOption,
    overrides: list[str] = SetOption,
) -> None:
    """Summarize a dataset and validate it (exit status 1 with the reason when it is invalid).

    The data section of --config and --set applies: splits, features, and
    data.timestamp_unit for numeric timestamps.
    """
    from tradingbot.config_loading import load_config
    from tradingbot.data.market import prepare_market
    from tradingbot.data.sources import load_market

    cfg = load_config(config, overrides).data
    cfg.source = name
    data = load_market(name, cfg.synthetic, timestamp_unit=cfg.timestamp_unit)
    market = prepare_market(data, cfg)
    table = Table(title=f"{name}: {data.origin}")
    for col in ("instrument", "rows", "from", "to"):
        table.add_column(col)
    for row in _summary_rows(data):
        table.add_row(*row)
    console.print(table)
    console.print(f"features: {', '.join(market.feature_names)}")
    from tradingbot.data.portfolio import close_only_note, is_close_only

    if is_close_only(data):
        console.print(close_only_note())
    for split, span in market.splits.items():
        console.print(f"{split:>10}: {span}")
    console.print("[green]valid[/]: no missing, non-numeric, non-positive or unsorted values")


if __name__ == "__main__":
    app()
