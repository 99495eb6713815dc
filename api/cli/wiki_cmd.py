"""`repolens wiki`: generate or update the wiki of an indexed repository, and export it."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from api.cli.app import app, cli_errors, console, err_console
from ingest import resolve_repo_id
from rag.errors import ErrorCode, RepoLensError
from rag.plural import plural
from rag.prompt import LANGUAGES, known_language
from rag.providers.catalog import require_choice
from rag.settings import Settings
from rag.wiki.export import wiki_json, wiki_markdown, wiki_zip
from rag.wiki.freshness import NEW, because, stale_pages
from rag.wiki.generate import WikiOptions, generate_wiki
from rag.wiki.model import Wiki
from rag.wiki.store import WikiStore

if TYPE_CHECKING:  # imported on use: the service layer (FastAPI and all) would slow every command
    from api.services import Services


class ExportFormat(StrEnum):
    md = "md"
    json = "json"
    zip = "zip"


def export_bytes(wiki: Wiki, repo_url: str, fmt: str) -> bytes:
    if fmt == "md":
        return wiki_markdown(wiki, repo_url).encode("utf-8")
    if fmt == "json":
        return wiki_json(wiki, repo_url).encode("utf-8")
    return wiki_zip(wiki, repo_url)


async def _run(services: Services, repo_id: str, options: WikiOptions, quiet: bool) -> dict[str, Any]:
    outcome: dict[str, Any] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err_console,
        disable=quiet or not err_console.is_terminal,  # piped: no bar drawn once at the end
    ) as progress:
        task = progress.add_task("reading the code", total=None)
        async for event in generate_wiki(services, repo_id, options):
            kind = event["type"]
            if kind == "status":
                progress.update(task, description=event["message"])
            elif kind == "wiki" and event["event"] == "structure":
                progress.update(task, total=event["total"], description=f"writing {event['total']} pages")
            elif kind == "wiki" and event["event"] == "page":
                verb = "kept" if event["reused"] else "wrote"
                progress.update(task, completed=event["index"], description=f"{verb} {event['title']}")
            elif kind == "wiki" and event["event"] == "note" and not quiet:
                progress.console.print(f"[yellow]note:[/] {event['message']}", highlight=False)
            elif kind == "error":
                raise RepoLensError(event["message"], code=event["code"])
            elif kind == "done":
                outcome = event["wiki"]
    return outcome


def refresh_after_update(settings: Settings, repo_id: str) -> str | None:
    """After `repolens update`: bring an offline wiki up to date (cheap: no model), or say how many pages
    of a model-written wiki are out of date. None when the repository has no wiki."""
    from api.services import Services

    with Services.from_settings(settings) as services:
        latest = WikiStore(services.store).latest(repo_id)
        if latest is None:
            return None
        if latest.mode != "offline":
            stale = stale_pages(latest, services.store.open(repo_id))
            why = because(Counter(stale.values()))
            return (
                f"wiki: {len(stale)} of {len(latest.pages)} pages out of date{f' ({why})' if why else ''}; "
                f"`repolens wiki {repo_id}` rewrites only those"
            )
        options = WikiOptions(offline=True, language=latest.language, comprehensive=latest.comprehensive)
        outcome = asyncio.run(_run(services, repo_id, options, quiet=True))
        written, total, why = outcome["regenerated"], outcome["pages"], because(outcome["reasons"])
        return f"wiki: {written} of {total} pages regenerated" + (
            f": {why}" if why else " (the others cite no changed file)"
        )


def what_happened(outcome: dict[str, Any]) -> str:
    """The run in words: `up to date: 13 pages unchanged, nothing regenerated`, `2 pages regenerated,
    11 unchanged`, `all 13 pages written` (a new wiki). (`13 pages written ... (0 regenerated,
    13 unchanged)` read as if pages were both written and not.)"""
    written, kept = outcome["regenerated"], outcome["reused"]
    if written == 0:
        return f"up to date: {plural(kept, 'page')} unchanged, nothing regenerated"
    new = outcome["reasons"].get(NEW, 0)
    if kept == 0:  # a new wiki, or one rewritten whole (`--force`, a new generator or model)
        if 0 < new < written:  # else "all 20 pages regenerated" above "regenerated: 17 because ..."
            return f"all {written} pages written: {written - new} regenerated, {new} new"
        verb = "regenerated" if because(outcome["reasons"]) else "written"
        return f"all {written} pages {verb}" if written > 1 else f"1 page {verb}"
    return f"{plural(written, 'page')} regenerated, {kept} unchanged"


def summary_lines(outcome: dict[str, Any], repo: str, width: int | None = None) -> list[str]:
    """What `repolens wiki` prints when done, each line wrapped to `width` (the console's: its
    terminal's, 80 when piped, where rich used to cut the first line mid-sentence). A command to
    copy stays on a line of its own, whole."""
    width = width or console.width
    made = "without a language model" if outcome["mode"] == "offline" else f"with {outcome['provider']}"
    said = [f"{outcome['title']}: {plural(outcome['pages'], 'page')}, made {made}", what_happened(outcome)]
    if why := because(outcome["reasons"]):  # never silently: an upgrade or a new model rewrote them
        said.append(f"  regenerated: {why}")
    if "export" in outcome:
        said.append(f"exported to {outcome['export']}")
    lines = [wrapped for line in said for wrapped in _wrapped(line, width)]
    if "export" not in outcome:  # where a newcomer reads what was just written
        lines += [
            "read it in the Wiki tab of `repolens serve`, or export it:",
            f"  repolens wiki {repo}{same_wiki_options(outcome)} --export md --out wiki.md",
        ]
    return lines


def same_wiki_options(outcome: dict[str, Any]) -> str:
    """The options that name the wiki just made, for a command that exports it: without them, the export
    of a `--language ja --concise` wiki exported (and generated first) the English one, and the export of
    an offline wiki with a provider configured would have had a model write a new one."""
    options = [] if outcome["language"] == "en" else [f"--language {outcome['language']}"]
    if not outcome["comprehensive"]:
        options.append("--concise")
    if outcome["mode"] == "offline":
        options.append("--offline")
    else:
        options += [f"--provider {outcome['provider']}", f"--model {outcome['model']}"]
    return "".join(f" {option}" for option in options)


def _wrapped(line: str, width: int) -> list[str]:
    """`line` in lines of at most `width`, continued under its indent; a path or URL is never cut."""
    indent = " " * (len(line) - len(line.lstrip()) + 2)
    return textwrap.wrap(
        line, width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    ) or [line]


@app.command("wiki")
def wiki_command(
    repo: Annotated[str, typer.Argument(help="Repository id, URL or local path of an indexed repository.")],
    offline: Annotated[
        bool, typer.Option("--offline", help="Write the wiki without a language model.")
    ] = False,
    language: Annotated[
        str, typer.Option("--language", help=f"Language of the pages: {', '.join(LANGUAGES)}.")
    ] = "en",
    concise: Annotated[bool, typer.Option("--concise", help="Fewer, shorter pages.")] = False,
    provider: Annotated[
        str | None, typer.Option("--provider", help="LLM provider (default: configured).")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model id of the provider.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Write every page again, even unchanged ones.")
    ] = False,
    export: Annotated[
        ExportFormat | None, typer.Option("--export", help="Also export: md, json or zip.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Where to write the export (default: stdout).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Generate the wiki of an indexed repository (only pages whose files changed are rewritten).

    With no provider configured and none named it is written offline; a `--provider` or `--model` that
    is not set up is an error (`not_configured`, exit 6), like `repolens ask`'s, never offline pages in
    their place."""
    with cli_errors(as_json):
        known_language(language)
        if export is ExportFormat.zip and out is None:  # before writing anything, not after
            raise RepoLensError("a zip export needs --out <file>.zip", code=ErrorCode.BAD_REQUEST)
        from api.services import Services

        settings = Settings.from_env()
        if not offline:  # a provider or model named but not set up is refused, not replaced by offline pages
            require_choice(provider, model, settings)
        with Services.from_settings(settings) as services:
            repo_id = resolve_repo_id(services.store, repo)
            options = WikiOptions(
                offline=offline,
                language=language,
                comprehensive=not concise,
                provider=provider,
                model=model,
                force=force,
            )
            quiet = as_json or (export is not None and out is None)
            outcome = asyncio.run(_run(services, repo_id, options, quiet))
            if export is not None:
                wiki = WikiStore(services.store).load(repo_id, outcome["commit"], language, not concise)
                if wiki is None:
                    raise RepoLensError("the wiki was not saved", code=ErrorCode.INTERNAL)
                record = services.store.get(repo_id)
                data = export_bytes(wiki, record.url if record else repo_id, export.value)
                if out is None:
                    typer.echo(data.decode("utf-8"))
                    return
                out.write_bytes(data)
                outcome["export"] = str(out)
        if as_json:
            print(json.dumps(outcome))
            return
        for line in summary_lines(outcome, repo):
            console.print(line, highlight=False, markup=False, soft_wrap=True)  # wrapped by `summary_lines`
