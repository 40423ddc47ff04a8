"""The command line's one error boundary: every exception of a command becomes one line on
stderr and an exit status (1 for a user error, 70 for anything unexpected, 143 on SIGTERM).
"""

from __future__ import annotations

import signal
import sys
import traceback
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from tradingbot.errors import UserError, short_text

EXIT_USER_ERROR = 1
EXIT_INTERNAL_ERROR = 70  # EX_SOFTWARE of sysexits.h
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process killed by it

error_console = Console(stderr=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that ``finally`` blocks (Ray's shutdown) run."""


def _raise_terminated(signum: int, frame: Any) -> NoReturn:
    raise Terminated()


def _print_error(message: str) -> None:
    error_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def describe_error(err: BaseException) -> tuple[str, int]:
    """The one line shown for ``err`` and the exit status.

    Expected errors: :class:`UserError` and operating-system errors that name a file (a path
    that does not exist, is a directory, is not writable, ...). Everything else is unexpected.
    """
    if isinstance(err, UserError):
        return str(err), EXIT_USER_ERROR
    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.filename}: {err.strerror or err}", EXIT_USER_ERROR
    if isinstance(err, (FileExistsError, FileNotFoundError, IsADirectoryError, PermissionError)):
        return str(err), EXIT_USER_ERROR
    detail = short_text(str(err), 300)
    return (
        f"unexpected {type(err).__name__}: {detail} (run with --debug for the traceback)",
        EXIT_INTERNAL_ERROR,
    )


class ErrorBoundary(TyperGroup):
    """The command group whose ``invoke`` turns every exception into one line and an exit code."""

    def invoke(self, ctx: typer.Context) -> Any:
        debug = bool(ctx.params.get("debug"))
        previous = None
        if sys.platform != "win32":
            try:
                previous = signal.signal(signal.SIGTERM, _raise_terminated)
            except ValueError:  # not the main thread (e.g. a test runner's worker)
                previous = None
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # --help, usage errors
            raise
        except Terminated:
            _print_error("terminated (SIGTERM)")
            raise typer.Exit(EXIT_TERMINATED) from None
        except KeyboardInterrupt:
            _print_error("interrupted")
            raise typer.Exit(130) from None
        except Exception as err:
            if debug:
                traceback.print_exc(file=sys.stderr)
            message, code = describe_error(err)
            _print_error(message)
            raise typer.Exit(code) from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
