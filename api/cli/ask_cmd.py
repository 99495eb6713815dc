"""`repolens ask`: one question, answered in the terminal by the same path as the server.

The request goes through `api.schemas` and `api.chat_session.chat_events`, so the CLI
validates, indexes on first use, researches and cites exactly like `/ws/chat`. Output:
rendered markdown that updates live on a terminal, the raw text with `--plain` (and
whenever stdout is not a terminal, so pipes get clean text), or one JSON event per line
with `--json`. Progress goes to stderr so stdout only ever holds the answer.

The answer machinery (the LLM SDKs, FAISS, the embedder) is imported when `ask` runs, not
when the module registers the command, so other `repolens` commands start fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.live import Live
from rich.markdown import Markdown
from rich.markup import escape
from rich.segment import Segment

from api.answer_text import progress_line
from api.cli.app import app, cli_errors, err_console, print_message
from rag.errors import NotFoundError, RepoLensError, exit_code
from rag.events import encode
from rag.prompt import MAX_ANSWER_K, known_language
from rag.research.options import MAX_ITERATIONS, MIN_ITERATIONS
from rag.settings import Settings

# How long `ask` waits for its cancelled ingest job to let go of the index before handing it on.
HAND_ON_WAIT_S = 30.0

if TYPE_CHECKING:
    from api.schemas import ChatRequestBody
    from api.services import Services
    from rag.events import Event


@app.command()
def ask(
    repo: str = typer.Argument(..., help="Indexed repo id, URL or local path (indexed first if needed)."),
    question: str = typer.Argument(..., help="The question."),
    provider: str | None = typer.Option(None, help="LLM provider (default: REPOLENS_PROVIDER or offline)."),
    model: str | None = typer.Option(None, help="Model id (default: the provider's default)."),
    file: str | None = typer.Option(None, "--file", help="Repository file to pin into the context."),
    language: str = typer.Option("en", help="Answer language: en, ja, zh, zh-tw, es, kr, vi, pt-br, fr, ru."),
    plain: bool = typer.Option(False, "--plain", help="Print the answer as plain text."),
    as_json: bool = typer.Option(False, "--json", help="Print every event as one JSON line."),
    deep: bool = typer.Option(
        False, "--deep", help="Deep research: investigate with tools before answering."
    ),
    max_iterations: int | None = typer.Option(
        None, min=MIN_ITERATIONS, max=MAX_ITERATIONS, help="Deep research turns (default: 5)."
    ),
    k: int = typer.Option(10, "-k", min=1, max=MAX_ANSWER_K, help="How many retrieved passages to use."),
    repo_type: str | None = typer.Option(None, "--type", help="github, gitlab, bitbucket, git or local."),
    ref: str | None = typer.Option(None, "--ref", help="Branch, tag or commit (remote repositories)."),
    token: str | None = typer.Option(
        None, help="Access token for a private repository (or REPOLENS_TOKEN / GITHUB_TOKEN / ...)."
    ),
) -> None:
    """Ask a question about a repository and stream the answer with its sources."""
    with cli_errors(as_json, events=True):
        settings = Settings.from_env()
        from api.schemas import parse_chat_request
        from api.services import Services
        from rag.providers.catalog import require_choice

        require_choice(provider, model, settings)  # before any work: never an offline answer instead
        known_language(language)  # nor one in English for a language there is none in

        services = Services.from_settings(settings)
        try:
            fields = _repo_fields(services, repo, repo_type, ref)
            body: dict[str, Any] = {
                **fields,
                "protocol": "events",  # RepoLens' own protocol: a contradicting --type is refused
                "messages": [{"role": "user", "content": question}],
                "filePath": file,
                "token": _token(fields, token, settings),
                "provider": provider,
                "model": model,
                "language": language,
                "deep_research": deep,
                "max_iterations": max_iterations,
                "k": k,
            }
            request = parse_chat_request({name: value for name, value in body.items() if value is not None})
            if as_json:
                renderer: _Renderer = _JsonRenderer()
            elif plain or not sys.stdout.isatty():
                renderer = _PlainRenderer()
            else:
                renderer = _LiveRenderer()
            error = asyncio.run(_stream(services, request, renderer))
            _embed_the_rest_in_background(services, settings)
        finally:
            services.stop()  # the ingest worker process too: a live one kept the command from exiting
    if error is not None:
        if not as_json:
            print_message(err_console, f"[bold red]error:[/] {escape(error['message'])}")
        raise typer.Exit(exit_code(error["code"]))


def _repo_fields(services: Services, repo: str, repo_type: str | None, ref: str | None) -> dict[str, Any]:
    """Request fields naming the repository: an indexed one by its stored URL, else `repo` as given
    (a source to index on first use). A bare word that names no indexed repository is no source
    either (`cobra` when nothing indexed ends so): that is a name not found, said as such, not a
    malformed URL."""
    from ingest.errors import AmbiguousRepoError, NotASourceError
    from ingest.pipeline import did_you_mean, resolve_repo_id
    from ingest.sources import ACCEPTED, resolve_source

    try:
        record = services.store.get(resolve_repo_id(services.store, repo))
    except AmbiguousRepoError:
        raise  # its message names the ids to use; "is not a source either" would only blur it
    except NotFoundError as missing:
        try:
            resolve_source(repo)
        except NotASourceError:
            if did_you_mean(services.store, repo):  # a typo of an indexed name: its fix is said already
                raise missing from None
            raise NotFoundError(
                f"{missing.message}, and {repo!r} is not a source RepoLens can index either; {ACCEPTED}"
            ) from None
        except RepoLensError:  # a source with another fault: the request's validation reports it
            pass
        record = None
    if record is not None and repo_type is None and ref is None:
        return {"repo_url": record.url, "type": record.platform, "ref": record.ref}
    return {"repo_url": repo, "type": repo_type, "ref": ref}


def _token(fields: dict[str, Any], explicit: str | None, settings: Settings) -> str | None:
    """`--token`, else the environment's token for the repository's platform (the CLI user's own
    REPOLENS_TOKEN / GITHUB_TOKEN / ..., as `repolens ingest` uses): the server checks a private
    repository's access with the request token only, so the CLI must send it."""
    if explicit:
        return explicit
    from ingest.errors import InvalidSourceError
    from ingest.sources import resolve_source

    try:
        platform = resolve_source(fields["repo_url"], platform=fields.get("type")).platform
    except InvalidSourceError:  # reported by the request validation itself
        return None
    return None if platform == "local" else settings.git_token(platform)


def _embed_the_rest_in_background(services: Services, settings: Settings) -> None:
    """The ingest this command ran for the question (indexing on first use) may still be embedding
    once the answer is out: stop it here and let a detached `repolens embed` finish it (as
    `ingest --no-wait` does), so the command ends with its answer instead of waiting for the dense
    phase. The versions it committed stay live (searchable, with the code graph)."""
    jobs = services.running_here()
    if not jobs:
        return
    for job in jobs:
        services.jobs.cancel(job.id)
    deadline = time.monotonic() + HAND_ON_WAIT_S
    while any(not job.finished for job in jobs) and time.monotonic() < deadline:
        time.sleep(0.05)
    from api.cli.ingest_cmds import embed_in_background

    for job in jobs:
        record = services.store.get(job.repo_id)
        if job.finished and record is not None and record.index_state != "complete":
            pid = embed_in_background(record.id, settings)
            print_message(
                err_console,
                f"{record.id} is {record.index_state}: dense embedding continues in the background "
                f"(pid {pid}; `repolens show {record.id}` shows its index_state)",
            )


async def _stream(services: Services, request: ChatRequestBody, renderer: _Renderer) -> Event | None:
    """Render every event; the first error event (if any) decides the exit code. A repository whose
    code graph is still being built is waited for (`ASK_GRAPH_WAIT_S`), so the offline answer is the
    one explained from the graph."""
    from api.chat_session import chat_events
    from api.graph_wait import ASK_GRAPH_WAIT_S

    error: Event | None = None
    with renderer:
        chatting = chat_events(services, request, asyncio.Event(), graph_wait_s=ASK_GRAPH_WAIT_S)
        async with contextlib.aclosing(chatting) as events:
            async for event in events:
                renderer.show(event)
                if event["type"] == "error" and error is None:
                    error = event
    return error


class _Renderer:
    """Shows events as they arrive; the answer text on stdout, everything else on stderr."""

    def __init__(self) -> None:
        self.sources: list[dict[str, Any]] = []
        self.flagged: set[tuple[str, int, int]] = set()
        self.text = ""

    def __enter__(self) -> _Renderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    def show(self, event: Event) -> None:
        kind = event["type"]
        if kind == "token":
            self.text += event["text"]
            self.token(event["text"])
        elif kind == "sources":
            self.sources = event["sources"]
        elif kind == "citations":
            self.flagged = {
                (item["path"], item["start_line"], item["end_line"])
                for item in event["citations"]
                if not item.get("in_context", True)
            }
        elif (line := progress_line(event)) is not None:
            self.progress(line)

    def token(self, text: str) -> None:
        raise NotImplementedError

    def progress(self, line: str) -> None:
        if sys.stderr.isatty():
            err_console.print(line, style="dim", markup=False, highlight=False)

    def finish(self) -> None:
        self.print_sources(Console())

    def print_sources(self, console: Console) -> None:
        if self.sources:
            console.print("\nSources:", style="bold", highlight=False)
            for source in self.sources:
                where = f"{source['path']}:{source['start_line']}-{source['end_line']}"
                symbol = f" ({source['symbol']})" if source.get("symbol") else ""
                # A local repository's link is server-relative (`/api/repos/...`): no use in a terminal.
                link = source.get("url") or ""
                url = f"  {link}" if link and not link.startswith("/") else ""
                console.print(f"  {where}{symbol}{url}", highlight=False, markup=False, soft_wrap=True)
        if self.flagged:
            console.print("\nCitations not found in the retrieved context (check them):", style="bold yellow")
            for path, start, end in sorted(self.flagged):
                console.print(f"  ! {path}:{start}-{end}", highlight=False, markup=False)


class _PlainRenderer(_Renderer):
    def token(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def finish(self) -> None:
        if self.text and not self.text.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()
        self.print_sources(Console(file=sys.stdout, force_terminal=False, no_color=True, width=10_000))


class _Tail:
    """The last lines of a renderable that fit on the screen. rich's Live redraws only what is on the
    screen: an answer taller than the terminal, redrawn as tokens arrive, would pile copies of its top
    into the scrollback (a 60-line answer on a 24-row terminal left 600 lines)."""

    def __init__(self, renderable: RenderableType) -> None:
        self.renderable = renderable

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines = console.render_lines(self.renderable, options.reset_height(), pad=False)
        for line in lines[-max(1, console.size.height - 1) :]:
            yield from line
            yield Segment.line()


class _LiveRenderer(_Renderer):
    """Markdown re-rendered in place as tokens arrive (rich Live): the tail that fits on the screen while
    it streams, then the whole answer printed once."""

    def __init__(self, console: Console | None = None) -> None:
        super().__init__()
        self.console = console or Console()
        self.live = Live(
            console=self.console, refresh_per_second=12, transient=True, vertical_overflow="crop"
        )

    def __enter__(self) -> _Renderer:
        self.live.start()
        return self

    def token(self, text: str) -> None:
        self.live.update(_Tail(Markdown(self.text)))

    def progress(self, line: str) -> None:
        if not self.text:
            self.live.update(Markdown(f"*{line}*"))

    def finish(self) -> None:
        self.live.stop()  # transient: the live tail goes, the whole answer is printed once
        self.console.print(Markdown(self.text))
        self.print_sources(self.console)


class _JsonRenderer(_Renderer):
    def show(self, event: Event) -> None:
        print(encode(event), flush=True)

    def finish(self) -> None:
        return None
