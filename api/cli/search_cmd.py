"""`repolens search`: hybrid search over an indexed repository, for people and for scripts."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.syntax import Syntax
from rich.text import Text

from api.cli.app import app, cli_errors, console, err_console, print_message
from ingest import resolve_repo_id
from rag.embedders import get_embedder
from rag.lexical import path_matches
from rag.retrieval import MAX_K, Retriever, SearchError, index_note, search_payload
from rag.settings import Settings
from rag.store import RepoIndex, open_store
from rag.types import SearchHit

EXCERPT_LINES = 12


class SearchMode(StrEnum):
    """`--mode` choices (the retriever's `MODES`)."""

    hybrid = "hybrid"
    dense = "dense"
    lexical = "lexical"


def read_queries(path: Path) -> Iterator[tuple[Any, str]]:
    """`(id, query)` from a JSON-lines file of `{"id": ..., "query": ...}` objects; blank lines skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise SearchError(f"cannot read the queries file {path}: {error.strerror}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise SearchError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(item, dict) or not isinstance(item.get("query"), str):
            raise SearchError(f'{path}:{number}: expected an object like {{"id": 1, "query": "..."}}')
        yield item.get("id", number), item["query"]


def explain_line(explain: dict[str, Any]) -> str:
    """One line: `role source · intent code · dense #3 · lexical #1 · role ×1.0 · link +0.0051 from …`."""
    parts = [f"role {explain['role']}", f"intent {explain['intent']}"]
    for ranking in ("dense", "lexical"):
        rank = explain.get(f"{ranking}_rank")
        parts.append(f"{ranking} #{rank}" if rank else f"{ranking} -")
    if "role_weight" in explain:
        parts.append(f"role ×{explain['role_weight']}")
    if "path_weight" in explain:
        parts.append(f"file name ×{explain['path_weight']}")
    if "name_weight" in explain:
        parts.append(f"name ×{explain['name_weight']}")
    if "link_boost" in explain:
        parts.append(
            f"link +{explain['link_boost']:.4f} from {explain['linked_from']} ({explain['linked_name']})"
        )
    if "public_twin_of" in explain:
        parts.append(f"public twin of {explain['public_twin_of']}")
    if "exact_boost" in explain:
        parts.append("named in the query")
    return " · ".join(parts)


def print_hits(hits: list[SearchHit], why_none: str | None = None) -> None:
    """path:lines, symbol and a highlighted excerpt per hit; `why_none`: what the filters left out."""
    if not hits:
        print_message(console, f"no results: {escape(why_none)}" if why_none else "no results")
        return
    for rank, hit in enumerate(hits, start=1):
        title = Text.assemble(
            (f"{rank}. ", "bold"),
            (f"{hit.path}:{hit.start_line}-{hit.end_line}", "bold cyan"),
            (f"  {hit.label}" if hit.label else "", "magenta"),
            (f"  score {hit.score:.4f}", "dim"),
        )
        console.print(title, soft_wrap=True)  # one line: a long symbol must not push the score to column 0
        if hit.explain is not None:
            # Indented as a whole (a wrapped tail stays under the hit, not at column 0), never padded.
            wrapped = textwrap.fill(
                explain_line(hit.explain), width=console.width, initial_indent="   ", subsequent_indent="   "
            )
            console.print(wrapped, style="dim", highlight=False, markup=False, soft_wrap=True)
        lines = hit.text.splitlines()
        excerpt = "\n".join(lines[:EXCERPT_LINES])
        # On a terminal long code lines wrap under themselves; piped (grep, a file) each stays one line.
        on_terminal = console.is_terminal
        console.print(
            Syntax(
                excerpt,
                Syntax.guess_lexer(hit.path, excerpt),
                line_numbers=True,
                start_line=hit.start_line,
                word_wrap=on_terminal,
                background_color="default",  # the terminal's own: no lines padded with spaces to the width
            ),
            soft_wrap=not on_terminal,
        )
        if len(lines) > EXCERPT_LINES:
            console.print(f"   … {len(lines) - EXCERPT_LINES} more lines", style="dim")
        console.print()


def filters_match_nothing(index: RepoIndex, path: str | None, language: str | None) -> str | None:
    """Why `--path` or `--language` leaves nothing to search, when it does: a bare "no results"
    read as if the query had found nothing (`--language rust` in a Go repository, a mistyped folder)."""
    languages = index.languages()
    if language and language not in languages:
        return f"no file here is in language {language!r} (its languages: {', '.join(languages)})"
    if path and not any(path_matches(file, path) for file in index.file_hashes()):
        return f"no indexed file matches --path {path!r}"
    return None


@app.command("search")
def search_command(
    repo: Annotated[str, typer.Argument(help="Repository id, URL or local path of an indexed repository.")],
    query: Annotated[str | None, typer.Argument(help="What to look for (omit with --queries-file).")] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=MAX_K, help="Number of results.")] = 10,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of highlighted excerpts.")
    ] = False,
    path: Annotated[
        str | None,
        typer.Option("--path", help="Only files under this prefix or matching this glob ('src', '*.py')."),
    ] = None,
    language: Annotated[str | None, typer.Option("--language", help="Only chunks in this language.")] = None,
    mode: Annotated[SearchMode, typer.Option("--mode", help="Ranking to use.")] = SearchMode.hybrid,
    queries_file: Annotated[
        Path | None,
        typer.Option("--queries-file", help='JSON lines of {"id", "query"}: one JSON line per query.'),
    ] = None,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain", help="Show why each hit ranked: file role, intent, dense/lexical ranks, boosts."
        ),
    ] = False,
) -> None:
    """Search an indexed repository: exact identifiers and paraphrases alike."""
    with cli_errors(as_json or queries_file is not None):
        if (query is None) == (queries_file is None):
            raise SearchError("give either a query or --queries-file")
        settings = Settings.from_env()
        with open_store(settings) as store:
            index = store.open(resolve_repo_id(store, repo))
            retriever = Retriever(index, None if mode is SearchMode.lexical else get_embedder(settings))
            options: dict[str, Any] = {
                "path_glob": path,
                "language": language,
                "mode": mode.value,
                "explain": explain,
            }
            if queries_file is not None:
                for query_id, text in read_queries(queries_file):
                    hits = retriever.search(text, k, **options)
                    results = [hit.to_json() for hit in hits]
                    print(json.dumps({"id": query_id, "query": text, "results": results}), flush=True)
                return
            assert query is not None
            hits = retriever.search(query, k, **options)
            if as_json:
                print(json.dumps(search_payload(store, index.record, query, hits)))
            else:
                if (note := index_note(store, index.record)) is not None:
                    print_message(err_console, f"note: {escape(note.text)}", style="dim")
                print_hits(hits, None if hits else filters_match_nothing(index, path, language))
