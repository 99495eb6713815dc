"""The Typer application and the behaviour every command shares.

Commands register themselves on `app` and wrap their body in `cli_errors()`
so a failure is one clear line (or a JSON object with `--json`) and the exit
code of its error code in `rag.errors.ERROR_TABLE`; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from rag.errors import UNEXPECTED_EXIT_CODE, ErrorCode, RepoLensError, exit_code
from rag.redact import install_log_redaction, redact


def _plain_flags(params: list[Any]) -> list[Any]:
    """Show a flag (`--json`, `--debug`, `--help`) bare in the help: typer prints `<bool>` after it,
    which reads as if the flag took a value."""
    for param in params:
        if getattr(param, "is_bool_flag", False):
            param.metavar = ""
    return params


class _Group(TyperGroup):
    """The `repolens` group: its own and every command's help list flags without a metavar.

    (typer's parameters are its vendored click's, hence `Any` for the context and parameters.)
    """

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_flags(super().get_params(ctx))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _plain_flags(command.get_params(ctx))
        return command


app = typer.Typer(
    name="repolens",
    cls=_Group,
    help="Ask questions about code repositories, offline first.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

console = Console()
err_console = Console(stderr=True)


class _State:
    debug: bool = False
    # When the command started (wall clock): the process's start for `repolens ...` (`main` sets it,
    # so start-up counts, as the user waits for it); else (the app run in-process) the group callback.
    process_started: float | None = None
    started: float = 0.0


state = _State()


@app.callback()
def _global_options(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
) -> None:
    state.debug = debug
    state.started = state.process_started or time.time()
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING)
    install_log_redaction()


def seconds_since_start() -> float:
    """Seconds since this command started (see `_State.started`): what the user has waited."""
    return time.time() - state.started


@contextmanager
def cli_errors(as_json: bool = False) -> Iterator[None]:
    """Turn expected errors into one line and an exit code."""
    try:
        yield
    except RepoLensError as error:
        if state.debug:
            raise
        message = redact(str(error))
        if as_json:
            print(json.dumps({"error": {"code": error.code, "message": message}}))
        else:
            err_console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(exit_code(ErrorCode.CANCELLED)) from None
    except Exception as error:
        if state.debug:
            raise
        err_console.print(
            f"[bold red]unexpected error:[/] {redact(str(error)) or type(error).__name__} "
            "(run with --debug for the traceback)",
            highlight=False,
        )
        raise typer.Exit(UNEXPECTED_EXIT_CODE) from None
