"""The Typer application and the behaviour every command shares.

Commands register themselves on `app` and wrap their body in `cli_errors()`
so a failure is one clear line (or a JSON object with `--json`) and the exit
code of its error code in `rag.errors.ERROR_TABLE`; `--debug` shows the traceback instead.
A message goes through `print_message`: word-wrapped on a terminal, one line when piped.
Output to a reader that stopped reading (`| head -1`) ends the command quietly with
`CLOSED_PIPE_EXIT_CODE` (`_closed_pipe_exits`, around everything the group runs).
"""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup

from rag.errors import UNEXPECTED_EXIT_CODE, ErrorCode, RepoLensError, exit_code
from rag.events import encode, error_event
from rag.redact import install_log_redaction, redact

# typer's own value placeholders (`<str>`, `<int range>`, `<list[str]>`) as short classic ones:
# the option column stays narrow, so an 80-column help never cuts an option's name.
_METAVARS = {
    "str": "TEXT",
    "int": "N",
    "int range": "N",
    "float": "NUMBER",
    "float range": "NUMBER",
    "path": "PATH",
}
_LONGEST_CHOICES = 24  # `<hybrid|dense|lexical>` is shown as is; a longer list is the help text's job


def _placeholder(param: Any, ctx: Any) -> str | None:
    """`TEXT`, `N`, `PATH`... for typer's `<str>`, `<int range>`, `<path>`; `CHOICE` for a long list of
    choices; None to keep typer's (`<hybrid|dense|lexical>`)."""
    shown = param.display_type(ctx).strip("<>")
    inner = shown.removeprefix("list[").removesuffix("]")
    if inner in _METAVARS:
        return _METAVARS[inner]
    return "CHOICE" if len(shown) > _LONGEST_CHOICES else None


class _Argument(TyperArgument):
    """An argument in the options' style: `REPO [QUERY]` in the usage line (typer wrote `{repo}
    [query]`) and `TEXT` as its placeholder in the list (typer wrote `<str>`, options `TEXT`)."""

    placeholder: str | None = None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw.upper()
        return (name if self.required else f"[{name}]") + ("..." if self.nargs != 1 else "")

    def display_type_rich(self, ctx: Any) -> str | None:
        return self.placeholder or super().display_type_rich(ctx)

    def get_error_hint(self, ctx: Any = None) -> str:
        """`Missing argument 'REPO'.`, the name the usage line shows."""
        return f"'{self.display_name_raw.upper()}'"


def _tidy_params(params: list[Any], ctx: Any) -> list[Any]:
    """A flag (`--json`, `--debug`, `--help`) shows no placeholder (typer prints `<bool>`, which reads as
    if it took a value); an option's value is `TEXT`, `N`, `PATH`... unless the command names it, and
    so is an argument's (`_Argument`)."""
    for param in params:
        if getattr(param, "is_bool_flag", False):
            param.metavar = ""
        elif param.param_type_name == "option" and param.metavar is None:
            param.metavar = _placeholder(param, ctx)
        elif type(param) is TyperArgument:
            param.__class__ = _Argument  # typer builds the parameters; only their help differs
            cast(_Argument, param).placeholder = _placeholder(param, ctx)
    return params


@contextmanager
def _one_row_per_option(params: list[Any]) -> Iterator[None]:
    """While the help is drawn, an option's names as one `-k, --k` (typer's panel put `--k` and `-k`
    in two columns, which read as two options). Parsing never sees it: it reads the names before."""
    renamed = [
        (param, param.opts) for param in params if param.param_type_name == "option" and len(param.opts) > 1
    ]
    for param, names in renamed:
        param.opts = [", ".join(sorted(names, key=lambda name: (name.startswith("--"), name)))]
    try:
        yield
    finally:
        for param, names in renamed:
            param.opts = names


class _Command(TyperCommand):
    """A command whose help shows each option on one row (`_one_row_per_option`)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        with _one_row_per_option(self.get_params(ctx)):
            super().format_help(ctx, formatter)


def _reflowed(text: str | None) -> str | None:
    """A docstring's paragraphs as single lines: typer keeps a docstring's line breaks in the
    command list and after the first paragraph, so the help broke mid-sentence where the source did."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in paragraph.splitlines()) for paragraph in paragraphs)


#: The exit code when the reader of the output closed it early (`repolens search ... | head -1`):
#: 128 + SIGPIPE, what a shell reports for git, cat or grep in that case.
CLOSED_PIPE_EXIT_CODE = 141


@contextmanager
def _closed_pipe_exits() -> Iterator[None]:
    """End the command quietly with `CLOSED_PIPE_EXIT_CODE` when its reader has gone.

    Unix tools die of SIGPIPE there; Python ignores that signal, so a write fails with
    BrokenPipeError instead, which click turned into a bare exit 1 (the code of an unexpected
    error). rich's consoles (ours, typer's help) answer it themselves with `SystemExit(1)`, raised
    while handling the BrokenPipeError (`Console.on_broken_pipe`): that one is ours to end too.
    Not SIGPIPE's default action: that would also kill `serve`, `mcp` or `ask` when a network
    peer closes its socket.
    """
    try:
        yield
    except BrokenPipeError:
        _exit_closed_pipe()
    except SystemExit as done:
        if not isinstance(done.__context__, BrokenPipeError):
            raise
        _exit_closed_pipe()


def _exit_closed_pipe() -> None:
    # Output still buffered for the closed pipe would fail again as Python exits
    # ("Exception ignored ... BrokenPipeError"): /dev/null takes it (rich may have done so already).
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(CLOSED_PIPE_EXIT_CODE)


@contextmanager
def _plain_bad_values() -> Iterator[None]:
    """A refused value said without the validator's `Value error, ` prefix (typer passes pydantic's
    message on: "Invalid value for '--mode': Value error, 'fuzzy' is not one of ...")."""
    try:
        yield
    except typer.BadParameter as error:
        error.message = error.message.removeprefix("Value error, ")
        raise


_OTHER_NAMES = {
    "research": "deep research is `repolens ask REPO QUESTION --deep`.",
    "status": (
        "`repolens list` shows the state of every indexed repository, `repolens show REPO` one's in full."
    ),
}
_COMMAND_ORDER = (
    "ingest", "update", "embed", "list", "show", "delete", "search", "ask", "wiki",
    "serve", "worker", "mcp", "doctor", "migrate-store", "setup",
)  # fmt: skip


class _Group(TyperGroup):
    """The `repolens` group: its own and every command's help show short value placeholders (`_tidy_params`).

    (typer's parameters are its vendored click's, hence `Any` for the context and parameters.)
    """

    def get_params(self, ctx: Any) -> list[Any]:
        return _tidy_params(super().get_params(ctx), ctx)

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        """Parsing prints the help (`repolens --help | head -1`): a closed pipe exits there too."""
        with _closed_pipe_exits(), _plain_bad_values():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        """Every command runs here: a closed pipe exits quietly (`_closed_pipe_exits`), also when only
        the last output, still buffered, finds it."""
        with _closed_pipe_exits(), _plain_bad_values():
            try:
                return super().invoke(ctx)
            finally:
                sys.stdout.flush()

    def list_commands(self, ctx: Any) -> list[str]:
        """In the order a newcomer uses them (index, ask, serve, maintain), not in import order."""
        rank = {name: number for number, name in enumerate(_COMMAND_ORDER)}
        return sorted(super().list_commands(ctx), key=lambda name: (rank.get(name, len(rank)), name))

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        """A command people look for under another name gets pointed to it (typer would suggest
        `search` for `research`, and nothing for `status`)."""
        if args and args[0] in _OTHER_NAMES:
            ctx.fail(f"No such command {args[0]!r}: {_OTHER_NAMES[args[0]]}")
        return super().resolve_command(ctx, args)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        with _one_row_per_option(self.get_params(ctx)):
            super().format_help(ctx, formatter)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            if type(command) is TyperCommand:
                command.__class__ = _Command  # typer builds the commands; only their help differs
            _tidy_params(command.get_params(ctx), ctx)
            command.help = _reflowed(command.help)
        return command


app = typer.Typer(
    name="repolens",
    cls=_Group,
    help="Ask questions about code repositories, offline first.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # `-h` is what many try first
)

console = Console()
err_console = Console(stderr=True)


class _State:
    debug: bool = False
    # When the command started its work (wall clock, set by the group callback): its times ("searchable
    # after 2.4s") count from here, not from the process's start (Python's start-up, up to ~1 s, is
    # not the command's work, and made the line disagree with the run's own timings).
    started: float = 0.0


state = _State()


def _print_version(asked: bool) -> None:
    if asked:
        print(f"repolens {importlib.metadata.version('repolens')}")
        raise typer.Exit()


@app.callback()
def _global_options(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    state.debug = debug
    state.started = time.time()
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING)
    install_log_redaction()


def seconds_since_start() -> float:
    """Seconds since this command started its work (see `_State.started`)."""
    return time.time() - state.started


def print_message(target: Console, text: str, *, style: str = "") -> None:
    """One message (an error, a warning, a note): `text` is rich markup (escape the values in it).
    Word-wrapped on a terminal; on one line when piped (a log, grep, CI output), where rich would
    otherwise break it at 80 columns, in the middle of a path or a URL."""
    target.print(text, style=style, highlight=False, soft_wrap=not target.is_terminal)


@contextmanager
def cli_errors(as_json: bool = False, *, events: bool = False) -> Iterator[None]:
    """Turn expected errors into one line and an exit code. `events`: the command's `--json` output is
    a stream of event lines (`ask`), so an error found before the stream starts is an `error` event
    too, the shape of one found during it (one `select(.type == "error")` catches both)."""
    try:
        yield
    except RepoLensError as error:
        if state.debug:
            raise
        message = redact(str(error))
        if as_json and events:
            print(encode(error_event(error.code, message)))
        elif as_json:
            print(json.dumps({"error": {"code": error.code, "message": message}}))
        else:
            print_message(err_console, f"[bold red]error:[/] {escape(message)}")
        raise typer.Exit(error.exit_code) from None
    except BrokenPipeError:
        raise  # not an error of the command: the entry point ends it quietly (`_closed_pipe_exits`)
    except KeyboardInterrupt:
        print_message(err_console, "interrupted")
        raise typer.Exit(exit_code(ErrorCode.CANCELLED)) from None
    except Exception as error:
        if state.debug:
            raise
        detail = escape(redact(str(error)) or type(error).__name__)
        hint = "(run with --debug for the traceback)"
        print_message(err_console, f"[bold red]unexpected error:[/] {detail} {hint}")
        raise typer.Exit(UNEXPECTED_EXIT_CODE) from None
