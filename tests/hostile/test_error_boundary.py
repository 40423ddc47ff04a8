"""The CLI's one error boundary: expected errors, unexpected ones, and --debug."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from tradingbot.cli import EXIT_INTERNAL_ERROR, EXIT_USER_ERROR, ErrorBoundary, describe_error
from tradingbot.config import ConfigError
from tradingbot.data.validate import DataError
from tradingbot.errors import UserError
from tradingbot.safe_write import WriteError


def test_every_project_error_is_a_user_error_and_a_value_error() -> None:
    from tradingbot.checkpoint import CheckpointError

    for kind in (DataError, ConfigError, CheckpointError, WriteError):
        assert issubclass(kind, UserError) and issubclass(kind, ValueError)
        assert describe_error(kind("bad thing")) == ("bad thing", EXIT_USER_ERROR)


def test_os_errors_about_a_path_are_expected() -> None:
    err = FileNotFoundError(2, "No such file or directory", "/x/y.csv")
    assert describe_error(err) == ("/x/y.csv: No such file or directory", EXIT_USER_ERROR)
    assert describe_error(IsADirectoryError(21, "Is a directory", "d"))[1] == EXIT_USER_ERROR


def test_other_errors_are_unexpected_with_a_hint() -> None:
    message, code = describe_error(ZeroDivisionError("division by zero"))
    assert code == EXIT_INTERNAL_ERROR
    assert message.startswith("unexpected ZeroDivisionError: division by zero")
    assert "--debug" in message
    long, _ = describe_error(RuntimeError("x" * 10_000))
    assert len(long) < 400


def failing_app(error: Exception) -> typer.Typer:
    """An app with the CLI's boundary and a command that raises ``error``."""
    app = typer.Typer(cls=ErrorBoundary, pretty_exceptions_enable=False)

    @app.callback()
    def main(debug: bool = typer.Option(False, "--debug")) -> None:
        """Test app."""

    @app.command()
    def boom() -> None:
        raise error

    return app


def test_unexpected_error_is_one_line_and_debug_shows_the_traceback() -> None:
    app = failing_app(RuntimeError("internal bug"))
    plain = CliRunner().invoke(app, ["boom"])
    assert plain.exit_code == EXIT_INTERNAL_ERROR
    assert "Traceback" not in plain.output
    lines = [ln for ln in plain.output.splitlines() if ln.strip()]
    assert lines == [
        "error: unexpected RuntimeError: internal bug (run with --debug for the traceback)"
    ]
    debug = CliRunner().invoke(app, ["--debug", "boom"])
    assert debug.exit_code == EXIT_INTERNAL_ERROR
    assert "Traceback" in debug.output and "raise error" in debug.output


def test_user_error_is_one_line_exit_1() -> None:
    result = CliRunner().invoke(failing_app(ConfigError("run.seed: bad")), ["boom"])
    assert result.exit_code == EXIT_USER_ERROR
    assert [ln for ln in result.output.splitlines() if ln.strip()] == ["error: run.seed: bad"]


def test_help_and_usage_errors_pass_through_the_boundary() -> None:
    from tradingbot.cli import app

    helped = CliRunner().invoke(app, ["train", "--help"], terminal_width=200)
    assert helped.exit_code == 0 and "--config" in helped.output, helped.output
    usage = CliRunner().invoke(app, ["backtest"], terminal_width=200)
    assert usage.exit_code == 2 and "unexpected" not in usage.output, usage.output
