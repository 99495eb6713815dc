"""The Typer application and the behaviour every command shares.

Commands register themselves on `app` and wrap their body in `cli_errors()`
so a failure is one clear line (or a JSON object with `--json`) and a
documented exit code; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

from rag.errors import RepoLensError
from rag.redact import install_log_redaction, redact

app = typer.Typer(
    name="repolens",
    help="Ask questions about code repositories, offline first.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

console = Console()
err_console = Console(stderr=True)

EXIT_CODES: dict[str, int] = {
    "not_found": 3,
    "auth_failed": 4,
    "limit_exceeded": 5,
    "provider_error": 6,
    "auth": 6,
    "model_not_found": 6,
    "rate_limit": 6,
    "context_length": 6,
    "unavailable": 6,
    "bad_response": 6,
    "not_configured": 6,
    "bad_url": 7,
    "unreachable": 7,
    "timeout": 7,
    "embedder_mismatch": 8,
    "embedder_error": 6,
    "bad_request": 2,
    "busy": 9,
    "empty": 10,
    "cancelled": 130,
}


class _State:
    debug: bool = False


state = _State()


@app.callback()
def _global_options(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
) -> None:
    state.debug = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING)
    install_log_redaction()


def exit_code_for(error: RepoLensError) -> int:
    return EXIT_CODES.get(error.code, 1)


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
        raise typer.Exit(exit_code_for(error)) from None
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(130) from None
    except Exception as error:
        if state.debug:
            raise
        err_console.print(
            f"[bold red]unexpected error:[/] {redact(str(error)) or type(error).__name__} "
            "(run with --debug for the traceback)",
            highlight=False,
        )
        raise typer.Exit(1) from None
