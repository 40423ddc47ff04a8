"""The ``tradingbot`` command line."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tradingbot.checkpoint import CheckpointError
from tradingbot.config import ConfigError, DataConfig, load_config
from tradingbot.data.market import prepare_market
from tradingbot.data.sources import DATASET_NAMES, MarketData, load_market
from tradingbot.data.validate import DataError

app = typer.Typer(
    help="Risk-aware recurrent distributional PPO trading agents.", no_args_is_help=True
)
data_app = typer.Typer(help="Bundled and user datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()


def fail(message: str) -> None:
    """Print an error and exit with status 1 (no traceback for expected input errors)."""
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=1)


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
    from tradingbot.train import resume, train

    try:
        if resume_dir is not None:
            if config is not None or data is not None or overrides:
                raise ConfigError(
                    "--resume continues a run with its own config; drop other options"
                )
            result = resume(resume_dir, progress_bar=progress)
        else:
            cfg = load_config(config, overrides)
            if data is not None:
                cfg.data.source = data
            result = train(cfg, progress_bar=progress)
    except (DataError, ConfigError, CheckpointError, FileExistsError, FileNotFoundError) as err:
        fail(str(err))
        return
    console.print(f"run directory: {result.run_dir}", highlight=False, soft_wrap=True)


@app.command("walkforward")
def walkforward_command(
    config: Path | None = ConfigOption,
    data: str | None = typer.Option(None, "--data", "-d", help="bundled dataset name or file"),
    overrides: list[str] = SetOption,
) -> None:
    """Train and test an agent per walk-forward fold and seed; summarize with 95% CIs."""
    import pandas as pd

    from tradingbot.evaluate.walkforward import walk_forward
    from tradingbot.report import build_report

    try:
        cfg = load_config(config, overrides)
        if data is not None:
            cfg.data.source = data
        run_dir = walk_forward(cfg)
    except (DataError, ConfigError, FileExistsError, ValueError) as err:
        fail(str(err))
        return
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

    from tradingbot.evaluate.runs import backtest_run

    if attack is not None and attack not in ("pgd", "random"):
        fail(f"--attack must be pgd or random, got {attack!r}")
    if epsilon < 0 or attack_steps < 1:
        fail("--epsilon must be >= 0 and --attack-steps >= 1")
    try:
        out = backtest_run(run_dir, split, data, attack, epsilon, attack_steps)
    except (DataError, ConfigError, FileNotFoundError, ValueError) as err:
        fail(str(err))
        return
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
) -> None:
    """Positions and risk estimates (value, VaR, CVaR) of a trained agent for every bar."""
    from tradingbot.signals import signals_for_run

    if fmt not in (None, "csv", "parquet", "json"):
        fail(f"--format must be csv, parquet or json, got {fmt!r}")
    try:
        path = signals_for_run(run_dir, data, out, fmt)  # type: ignore[arg-type]
    except (DataError, ConfigError, FileNotFoundError, ValueError) as err:
        fail(str(err))
        return
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
    from tradingbot.pbt import run_pbt

    try:
        result = run_pbt(load_config(config, overrides), address=address)
    except (DataError, ConfigError, FileExistsError, ValueError, RuntimeError) as err:
        fail(str(err))
        return
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

    try:
        path = build_report(run_dir)
    except FileNotFoundError as err:
        fail(str(err))
        return
    console.print(f"report: {path}", highlight=False, soft_wrap=True)


def _summary_rows(data: MarketData) -> list[tuple[str, str, str, str]]:
    rows = []
    for inst, bars in data.bars.items():
        rows.append((inst, str(len(bars)), f"{bars.index[0]}", f"{bars.index[-1]}"))
    return rows


@data_app.command("list")
def data_list() -> None:
    """List the bundled datasets: name, instruments, rows, date range, source."""
    table = Table(title="datasets")
    for col in ("name", "instruments", "rows", "from", "to", "source"):
        table.add_column(col)
    for name in DATASET_NAMES:
        data = load_market(name)
        rows = _summary_rows(data)
        table.add_row(
            name,
            str(len(rows)),
            str(sum(int(r[1]) for r in rows)),
            min(r[2] for r in rows)[:10],
            max(r[3] for r in rows)[:10],
            data.origin,
        )
    console.print(table)
    console.print("User data: any CSV or Parquet file path (see `tradingbot data show FILE`).")


@data_app.command("show")
def data_show(
    name: str = typer.Argument(..., help="a bundled dataset name or a CSV/Parquet path"),
) -> None:
    """Summarize a dataset and validate it (exit status 1 with the reason when it is invalid)."""
    try:
        cfg = DataConfig(source=name)
        data = load_market(name, cfg.synthetic)
        market = prepare_market(data, cfg)
    except (DataError, ConfigError, ValueError) as err:
        fail(str(err))
        return
    table = Table(title=f"{name}: {data.origin}")
    for col in ("instrument", "rows", "from", "to"):
        table.add_column(col)
    for row in _summary_rows(data):
        table.add_row(*row)
    console.print(table)
    console.print(f"features: {', '.join(market.feature_names)}")
    for split, span in market.splits.items():
        console.print(f"{split:>10}: {span}")
    console.print("[green]valid[/]: no missing, non-numeric, non-positive or unsorted values")


if __name__ == "__main__":
    app()
