"""`repolens ingest | update | list | show | delete`: build and manage local indexes.

An ingest is an `ingest.jobs.IngestJob` run in the foreground (a worker thread, so Ctrl-C can
cancel it between steps) and the previous index stays intact.
Progress is a rich display on a terminal, JSON lines on stderr with
`--progress jsonl`, and nothing at all when piped (`auto`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, TextColumn
from rich.progress import Progress as RichProgress
from rich.text import Text

from api.cli.app import app, cli_errors, console, err_console, print_message, seconds_since_start
from api.cli.wiki_cmd import refresh_after_update
from ingest import IngestOptions, IngestReport, Progress, finish_embedding, resolve_repo_id
from ingest.chunking import CHUNKER_VERSION, outdated_chunker
from ingest.jobs import IngestJob
from ingest.reader import SkipStats
from rag.embedders import get_embedder
from rag.settings import Settings
from rag.store import Store, open_store
from rag.types import RepoRecord


class ProgressMode(StrEnum):
    auto = "auto"
    rich = "rich"
    jsonl = "jsonl"
    none = "none"


JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document for scripts.")]
ProgressFlag = Annotated[
    ProgressMode,
    typer.Option(
        "--progress",
        metavar="MODE",
        help="auto (a live display on a terminal, nothing when piped), rich, jsonl (JSON lines on stderr) "
        "or none.",
    ),
]
TokenFlag = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="Access token for a private repository (else REPOLENS_TOKEN or GITHUB_TOKEN, GITLAB_TOKEN, "
        "BITBUCKET_TOKEN). Used for this run only, never stored.",
        show_default=False,
    ),
]
UsernameFlag = Annotated[
    str | None, typer.Option("--username", help="User name for Bitbucket API tokens.", show_default=False)
]
CloneTimeoutFlag = Annotated[
    float, typer.Option("--clone-timeout", metavar="SECONDS", help="Seconds before git gives up.")
]
ReindexFlag = Annotated[
    bool, typer.Option("--reindex", help="Rebuild from scratch (needed after changing the embedder).")
]
MaxFilesFlag = Annotated[
    int | None,
    typer.Option(
        "--max-files",
        help="Stop if more files than this pass the filters (REPOLENS_MAX_FILES).",
        show_default=False,
    ),
]
MaxBytesFlag = Annotated[
    int | None,
    typer.Option(
        "--max-bytes", help="Stop if the files total more bytes (REPOLENS_MAX_BYTES).", show_default=False
    ),
]
MaxFileBytesFlag = Annotated[
    int | None,
    typer.Option(
        "--max-file-bytes", help="Skip files larger than this (REPOLENS_MAX_FILE_BYTES).", show_default=False
    ),
]
IncludeDirs = Annotated[
    list[str] | None,
    typer.Option(metavar="DIRS", help="Only these folders (e.g. src,lib).", show_default=False),
]
ExcludeDirs = Annotated[
    list[str] | None, typer.Option(metavar="DIRS", help="Leave out these folders.", show_default=False)
]
IncludeFiles = Annotated[
    list[str] | None,
    typer.Option(metavar="PATTERNS", help="Only files like these (e.g. '*.py').", show_default=False),
]
ExcludeFiles = Annotated[
    list[str] | None, typer.Option(metavar="PATTERNS", help="Leave out files like these.", show_default=False)
]


@contextlib.contextmanager
def _opened() -> Iterator[tuple[Settings, Store]]:
    """The settings and the configured store, closed when the command ends (a database pool's
    threads are not left to the interpreter's exit)."""
    settings = Settings.from_env()
    with open_store(settings) as store:
        yield settings, store


class ProgressSink:
    """A context manager yielding the callback that shows `Progress` events in `mode`."""

    def __init__(self, mode: ProgressMode) -> None:
        self._mode = mode
        self._display: RichProgress | None = None
        self._task: Any = None

    def __enter__(self) -> Callable[[Progress], None]:
        if self._mode is ProgressMode.rich:
            self._display = RichProgress(
                TextColumn("[bold]{task.fields[stage]:<9}"),
                BarColumn(),
                TextColumn("{task.fields[count]}"),
                TextColumn("{task.fields[rate]}"),
                TextColumn("{task.fields[eta]}"),
                TextColumn("[dim]{task.fields[message]}", justify="left"),
                console=err_console,
                transient=True,
            )
            self._display.start()
            self._task = self._display.add_task(
                "ingest", total=None, stage="", count="", rate="", eta="", message=""
            )
        return self._show

    def __exit__(self, *exc_info: object) -> None:
        if self._display is not None:
            self._display.stop()

    def _show(self, event: Progress) -> None:
        if self._mode is ProgressMode.jsonl:
            print(json.dumps({"type": "progress", **event.to_json()}), file=sys.stderr, flush=True)
        elif self._display is not None:
            if event.stage == "searchable":  # the first milestone stays on screen above the live bar
                self._display.console.print(
                    f"[bold green]searchable[/] after {seconds_since_start():.1f}s "
                    f"({event.index_state}): ask and search now; dense embedding continues",
                    highlight=False,
                )
            embedding = event.stage == "embedding"
            done = event.chunks_done if embedding else event.files_done
            total = (event.chunks_total if embedding else event.files_total) or None
            unit = "chunks" if embedding else "files"
            self._display.update(
                self._task,
                completed=done,
                total=total,
                stage=event.stage,
                count=_count(done, total, unit),
                rate=f"{event.rate:.1f} {unit}/s" if event.rate else "",
                eta=f"ETA {event.eta_s:.0f}s" if event.eta_s is not None else "",
                message=event.message[-60:],
            )


def _count(done: int, total: int | None, unit: str) -> str:
    """`57/121`, or `57 files` while the total is unknown (scanning), or nothing for a step without
    counts (writing: rich's `0/?` read as if the step was stuck)."""
    if total:
        return f"{done}/{total}"
    return f"{done} {unit}" if done else ""


def _run_and_report(job: IngestJob, settings: Settings, store: Store, flags: RunFlags) -> None:
    """Run `job` here with the progress display (Ctrl-C cancels it), then print its report."""
    embedder = get_embedder(settings)
    progress = flags.progress
    if progress is ProgressMode.auto:
        progress = ProgressMode.rich if err_console.is_terminal else ProgressMode.none
    with ProgressSink(progress) as sink:
        report = job.run_in_foreground(
            store,
            embedder,
            sink,
            on_interrupt=lambda: err_console.print("cancelling: the previous index stays as it was ..."),
        )
    background = None
    if not job.options.dense and report.record.index_state != "complete":
        background = embed_in_background(report.repo_id, settings)
    _print_report(report, flags.as_json, background, seconds_since_start() - report.timings["total_s"])


def embed_in_background(repo_id: str, settings: Settings) -> int:
    """Start a detached `repolens embed REPO` (it outlives this command); returns its pid."""
    logs = settings.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "embed.log").open("ab") as log:
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from api.cli import main; main()",
                "embed",
                repo_id,
                "--progress",
                "none",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
    return child.pid


def _print_report(
    report: IngestReport, as_json: bool, background: int | None = None, startup_s: float = 0.0
) -> None:
    """The report; its times count from the command's start of work (`startup_s` before the run began:
    opening the store, loading the embedder)."""
    if as_json:
        data = report.to_json()
        if background is not None:
            data["embedding_pid"] = background
        print(json.dumps(data))
        return
    record, files, chunks = report.record, report.files, report.chunks
    commit = f" @ {record.commit[:12]}" if record.commit else ""
    console.print(f"[bold green]{_outcome(files)}[/] {record.id}{commit}", highlight=False, soft_wrap=True)
    console.print(
        f"  files:  {files['added']} added, {files['changed']} changed, {files['removed']} removed, "
        f"{files['unchanged']} unchanged, {files['skipped']} skipped{_skip_reasons(report.skipped)}",
        highlight=False,
        soft_wrap=True,
    )
    if report.rechunk_reason:
        console.print(
            f"  re-chunked: {files['rechunked']} unchanged files ({report.rechunk_reason})",
            highlight=False,
            soft_wrap=True,
        )
    if report.graph_reason:
        console.print(
            f"  code graph: rebuilt for {files['regraphed']} unchanged files ({report.graph_reason})",
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"  chunks: {chunks['added']} new, {chunks['replaced']} replaced by the same text, "
        f"{chunks['removed']} removed, {chunks['total']} in the index ({chunks['reused']} vectors reused)",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"  time:   {_times(report, background, max(0.0, startup_s))}", highlight=False, soft_wrap=True
    )


def _times(report: IngestReport, background: int | None, startup_s: float) -> str:
    """`searchable after 2.4s, complete after 44.3s`, or with `--no-wait`, what goes on without us."""
    record = report.record
    searchable = startup_s + report.timings.get("searchable_s", report.timings["total_s"])
    if background is not None:
        return (
            f"searchable after {searchable:.1f}s, {record.index_state}: dense embedding continues in "
            f"the background (pid {background}; `repolens show {record.id}` shows its index_state)"
        )
    total = startup_s + report.timings["total_s"]
    if total - searchable < 0.05:  # nothing embedded after the searchable version: one milestone
        return f"searchable and {record.index_state} after {total:.1f}s"
    return f"searchable after {searchable:.1f}s, {record.index_state} after {total:.1f}s"


def _outcome(files: dict[str, int]) -> str:
    """The headline verb: what the run did to the index, in words (its version number stays in `show`)."""
    if not (files["changed"] or files["removed"] or files["unchanged"]):
        return "indexed"  # nothing was indexed before: a new index
    if any(files.get(kind) for kind in ("added", "changed", "removed", "rechunked", "regraphed")):
        return "updated"  # a re-chunk or a graph rebuild alone is work done, not "up to date"
    return "up to date"


_SKIP_WORDS = {"filtered": "by filters", "too_large": "too large"}


def _skip_reasons(skipped: dict[str, int]) -> str:
    """` (3 by filters, 2 binary)`: why files were left out (`--json` has the same counts), and the
    folders the walk could not open, whose files are missing from the index."""
    reasons = [
        f"{count} {_SKIP_WORDS.get(reason, reason)}"
        for reason, count in skipped.items()
        if reason not in SkipStats.DIR_REASONS  # folders, not files
    ]
    text = f" ({', '.join(reasons)})" if reasons else ""
    if unreadable := skipped.get("unreadable_dirs"):
        folders = "1 folder" if unreadable == 1 else f"{unreadable} folders"
        text += f"; {folders} could not be read (permissions): their files are not indexed"
    return text


WaitFlag = Annotated[
    bool,
    typer.Option(
        "--wait/--no-wait",
        help="Wait until every chunk is embedded (both milestones shown on a terminal), or return once "
        "the index is searchable and finish embedding in a background `repolens embed`.",
    ),
]


@dataclass(frozen=True)
class RunFlags:
    """The options `repolens ingest` and `repolens update` share: credentials, limits and output.

    Declared once here; `@with_run_flags` adds these fields to a command's own parameters
    (typer has no option groups) and hands them to the command as one `flags` argument."""

    token: TokenFlag = None
    username: UsernameFlag = None
    max_files: MaxFilesFlag = None
    max_bytes: MaxBytesFlag = None
    max_file_bytes: MaxFileBytesFlag = None
    clone_timeout: CloneTimeoutFlag = 300.0
    reindex: ReindexFlag = False
    as_json: JsonFlag = False
    progress: ProgressFlag = ProgressMode.auto
    wait: WaitFlag = True

    def ingest_options(self, settings: Settings, **fields: Any) -> IngestOptions:
        """This run's `IngestOptions`: these flags plus a command's own `fields` (source, filters)."""
        options = IngestOptions.from_fields(
            settings,
            token=self.token,
            username=self.username,
            max_files=self.max_files,
            max_bytes=self.max_bytes,
            max_file_bytes=self.max_file_bytes,
            clone_timeout=self.clone_timeout,
            reindex=self.reindex,
            **fields,
        )
        options.dense = self.wait
        return options


def with_run_flags(command: Callable[..., None]) -> Callable[..., None]:
    """`command(..., flags: RunFlags)` as a typer command taking its own options and `RunFlags`' fields."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "flags"]
    shared = list(inspect.signature(RunFlags, eval_str=True).parameters.values())

    @functools.wraps(command)
    def run(**values: Any) -> None:
        flags = RunFlags(**{parameter.name: values.pop(parameter.name) for parameter in shared})
        command(**values, flags=flags)

    run.__signature__ = inspect.Signature([*own, *shared])  # type: ignore[attr-defined]
    return run


@app.command("ingest")
@with_run_flags
def ingest_command(
    location: Annotated[
        str, typer.Argument(help="A repository URL, ssh remote, file:// URL or local folder.")
    ],
    platform: Annotated[
        str | None,
        typer.Option(
            "--type",
            help="github, gitlab, bitbucket, git or local (default: from the host).",
            show_default=False,
        ),
    ] = None,
    ref: Annotated[
        str | None,
        typer.Option("--branch", "--ref", help="Branch, tag or commit to index.", show_default=False),
    ] = None,
    include_dirs: IncludeDirs = None,
    exclude_dirs: ExcludeDirs = None,
    include_files: IncludeFiles = None,
    exclude_files: ExcludeFiles = None,
    no_default_excludes: Annotated[
        bool, typer.Option("--no-default-excludes", help="Index vendored, build and lock files too.")
    ] = False,
    *,
    flags: RunFlags,
) -> None:
    """Index a repository, or update it if it is already indexed (only changed files are re-embedded).

    Filter patterns are gitignore-style, relative to the repository root, comma-separated or repeated.
    """
    with cli_errors(flags.as_json), _opened() as (settings, store):
        options = flags.ingest_options(
            settings,
            platform=platform,
            ref=ref,
            included_dirs=include_dirs,
            excluded_dirs=exclude_dirs,
            included_files=include_files,
            excluded_files=exclude_files,
            use_default_excludes=not no_default_excludes,
        )
        _run_and_report(IngestJob.for_ingest(location, options), settings, store, flags)


@app.command("update")
@with_run_flags
def update_command(
    repo: Annotated[str, typer.Argument(help="An indexed repository: its id, URL or local path.")],
    *,
    flags: RunFlags,
) -> None:
    """Fetch the latest commit of an indexed repository (same URL, ref, filters); re-index what changed."""
    with cli_errors(flags.as_json), _opened() as (settings, store):
        repo_id = resolve_repo_id(store, repo)
        job = IngestJob.for_update(repo_id, flags.ingest_options(settings))
        _run_and_report(job, settings, store, flags)
        wiki = None if flags.as_json else refresh_after_update(settings, repo_id)
        if wiki:
            console.print(wiki, highlight=False, soft_wrap=True)


@app.command("embed")
def embed_command(
    repo: Annotated[str, typer.Argument(help="An indexed repository: its id, URL or local path.")],
    as_json: JsonFlag = False,
    progress: ProgressFlag = ProgressMode.auto,
) -> None:
    """Finish embedding an index left `lexical` or `partial` (by `ingest --no-wait`, Ctrl-C or a crash)."""
    with cli_errors(as_json), _opened() as (settings, store):
        repo_id = resolve_repo_id(store, repo)
        if progress is ProgressMode.auto:
            progress = ProgressMode.rich if err_console.is_terminal else ProgressMode.none
        with ProgressSink(progress) as sink:
            record = finish_embedding(repo_id, store=store, embedder=get_embedder(settings), progress=sink)
        if as_json:
            print(json.dumps(record.to_json()))
        else:
            console.print(
                f"[bold green]{record.index_state}[/] {record.id} "
                f"({record.dense_chunks}/{record.dense_total} chunks embedded)",
                highlight=False,
                soft_wrap=True,
            )


@app.command("list")
def list_command(as_json: JsonFlag = False) -> None:
    """List indexed repositories."""
    with cli_errors(as_json), _opened() as (_, store):
        records = store.list()
        if as_json:
            repos = [record.to_json() for record in records]
            print(json.dumps({"repos": repos, "chunker_version": CHUNKER_VERSION}))
            return
        if not records:
            console.print("no repositories indexed yet: try `repolens ingest LOCATION` (a URL or a folder)")
            return
        rows = [
            (
                record.id,
                (record.commit or "-")[:12],
                str(record.file_count),
                str(record.chunk_count),
                _short_state(record.index_state, record.dense_chunks, record.dense_total)
                + ("*" if rechunk_advice(record) else ""),
                record.updated_at[:16].replace("T", " "),
            )
            for record in records
        ]
        for line in _listing_lines(rows, console.width):
            console.print(line, highlight=False, soft_wrap=True)
        for record in records:
            if advice := rechunk_advice(record):
                console.print(f"* {record.id}: {advice}", highlight=False, soft_wrap=True)
        console.print("[dim]`repolens show REPO` has the rest (URL, ref, filters, embedder, languages)[/]")


_LIST_HEADERS = ("id", "commit", "files", "chunks", "state", "updated (UTC)")
_LIST_RIGHT_ALIGNED = {2, 3}  # the counts
_LIST_GAP = "  "


def _listing_lines(rows: Sequence[tuple[str, ...]], width: int) -> list[Text]:
    """`repolens list` as aligned columns within `width`. An id is what you copy, so it never folds:
    one too long for what the other columns leave gets a line of its own, its row under it."""
    columns = list(zip(_LIST_HEADERS, *rows, strict=True))
    widths = [max(len(value) for value in column) for column in columns]
    room = max(len(_LIST_HEADERS[0]), width - sum(widths[1:]) - len(_LIST_GAP) * (len(widths) - 1))
    widths[0] = max([len(_LIST_HEADERS[0])] + [len(row[0]) for row in rows if len(row[0]) <= room])

    def line(values: tuple[str, ...]) -> str:
        cells = [
            value.rjust(size) if number in _LIST_RIGHT_ALIGNED else value.ljust(size)
            for number, (value, size) in enumerate(zip(values, widths, strict=True))
        ]
        return _LIST_GAP.join(cells).rstrip()

    lines = [Text(line(_LIST_HEADERS), style="bold")]
    for row in rows:
        if len(row[0]) > widths[0]:
            lines.append(Text(row[0]))
            row = ("", *row[1:])
        lines.append(Text(line(row)))
    return lines


def _short_state(state: str, dense_chunks: int, dense_total: int) -> str:
    """`partial 800/1787` as `partial 45%`: short enough for its column."""
    if state.startswith("partial") and dense_total:
        return f"partial {100 * dense_chunks // dense_total}%"
    return state


@app.command("show")
def show_command(
    repo: Annotated[str, typer.Argument(help="An indexed repository: its id, URL or local path.")],
    as_json: JsonFlag = False,
) -> None:
    """Show what is known about an indexed repository, with its files per language."""
    with cli_errors(as_json), _opened() as (_, store):
        index = store.open(resolve_repo_id(store, repo))
        data = {**index.record.to_json(), "languages": index.languages()}
        if as_json:
            print(json.dumps(data))
            return
        column = max(len(key) for key in data) + 1  # every value starts under the first
        for key, value in data.items():
            if key == "filters" and isinstance(value, dict):
                shown: Any = filters_text(value)
            elif key == "chunker_version":
                shown = f"{value} ({_chunker_state(value)})"
            elif isinstance(value, dict):
                shown = ", ".join(f"{k} {v}" for k, v in value.items())
            else:
                shown = value
            # A long value wraps under itself, not under the keys (and no line is padded with spaces).
            text = textwrap.fill(
                str(shown) if shown not in (None, "") else "-",
                width=max(40, console.width),
                initial_indent=f"{key:<{column}}",
                subsequent_indent=" " * column,
                break_long_words=False,
                break_on_hyphens=False,
            )
            shown_line = Text(text[:column], style="bold") + Text(text[column:])
            console.print(shown_line, highlight=False, soft_wrap=True)


def _chunker_state(version: int) -> str:
    """Whether an index's chunks are this RepoLens's, or the next update re-chunks every file."""
    if version == CHUNKER_VERSION:
        return "current"
    return f"this RepoLens chunks with version {CHUNKER_VERSION}: the next update re-chunks every file"


def rechunk_advice(record: RepoRecord) -> str | None:
    """What `list` and `doctor` say of an index built by another chunker (None: this one's): the
    versions, and the fix, a plain update."""
    reason = outdated_chunker(record.chunker_version, CHUNKER_VERSION)
    if reason is None:
        return None
    return f"chunked by another chunker ({reason}): a plain `repolens update {record.id}` re-chunks it"


def filters_text(filters: dict[str, Any]) -> str:
    """A record's filters as a person reads them: what was chosen, and whether the defaults applied
    (`default exclusions, .gitignore; exclude dirs: tests, docs`), not a dump of empty lists."""
    parts = ["default exclusions" if filters.get("use_defaults", True) else "no default exclusions"]
    if filters.get("respect_gitignore", True):
        parts.append(".gitignore")
    chosen = [
        f"{name.replace('_', ' ')}: {', '.join(values)}"
        for name, values in filters.items()
        if isinstance(values, list) and values
    ]
    return "; ".join([", ".join(parts), *chosen])


@app.command("delete")
def delete_command(
    repo: Annotated[str, typer.Argument(help="An indexed repository: its id, URL or local path.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Delete a repository's index and its clone (the original repository is not touched)."""
    with cli_errors(as_json), _opened() as (_, store):
        repo_id = resolve_repo_id(store, repo)
        confirmed = yes or (sys.stdin.isatty() and typer.confirm(f"Delete the index of {repo_id}?"))
        if confirmed:
            store.delete(repo_id)
            if as_json:
                print(json.dumps({"deleted": repo_id}))
            else:
                console.print(f"deleted {repo_id}", highlight=False, soft_wrap=True)
    if not confirmed:
        hint = f"not deleted: confirm interactively or pass --yes to delete {escape(repo_id)}"
        print_message(err_console, hint)
        raise typer.Exit(2)
