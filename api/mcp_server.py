"""RepoLens as an MCP server: tools and resources for coding agents (Claude, Cursor, VS Code, ...).

Built on the official SDK's `MCPServer`; the same server object is served two ways:

- over stdio by `repolens mcp` (a client launches it; same data dir and settings as the CLI);
- over streamable HTTP at `/mcp` of the FastAPI app (`mount(app, services)`): the SDK's session
  manager runs inside the app's lifespan, and every request first passes the app's Origin rule
  (`api.origins`), like `/ws/chat`.

Tools (descriptions below are what the model reads): `list_repositories`, `index_repository`,
`search_code`, `read_file`, `ask_question`, `find_definition` / `find_callers` (the code graph of
`RepoIndex`), `read_wiki_structure` / `read_wiki_page` (the generated wiki). Resources:
`repolens://{repo}/{path}` for every file of an indexed repository (the repo id percent-encoded, e.g. `repolens://github.com%2Fo%2Fr/src/a.py`).

Nothing here re-implements RepoLens logic: ingests are jobs of the app's pool (`ingest.jobs`),
search and file reads through `api.repo_content`, answers through `api.chat_session`. A private
repository needs its token: the `X-Repo-Token` header over HTTP, or the tools' `token` argument
(the only way over stdio). Errors are tool errors (`isError: true`) whose text says what to fix;
messages pass through `rag.redact`, so a token never comes back. A server that stops (`api.shutdown`)
ends a running `ask_question` or `index_repository` at once with the tool error `server_stopping: ...`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar, cast
from urllib.parse import quote

from fastapi import FastAPI
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CallToolResult, Resource, TextContent, ToolAnnotations
from pydantic import Field
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from api.answer_text import CollectedAnswer, absolute_url, progress_line
from api.chat_session import detached_events
from api.errors import error_response
from api.origins import origin_allowed, refusal
from api.repo_content import open_readable, read_lines, search_repo
from api.routes.repos import IngestBody
from api.schemas import BadRequestError, max_request_bytes, parse_chat_request
from api.services import Services
from api.shutdown import ServerStop, streaming
from ingest import resolve_repo_id
from ingest.errors import AmbiguousRepoError
from ingest.jobs import IngestJob
from ingest.pipeline import did_you_mean
from rag.answer import AnswerCancelled, until_cancelled
from rag.citations import source_url
from rag.errors import ErrorCode, NotFoundError, RepoLensError
from rag.events import stopping_event
from rag.prompt import LANGUAGES
from rag.providers.catalog import require_choice
from rag.redact import redact, register_secret
from rag.retrieval import MAX_K, search_payload
from rag.roles import Role
from rag.store import RepoIndex
from rag.store.schema import CodeDefinition
from rag.types import RepoRecord
from rag.wiki.freshness import stale_pages
from rag.wiki.model import Wiki
from rag.wiki.store import WikiStore

T = TypeVar("T")

SERVER_NAME = "repolens"
REPO_TOKEN_HEADER = "x-repo-token"
RESOURCE_TEMPLATE = "repolens://{repo}/{+path}"
# A read_file answer stays a reasonable part of a model's context; longer files are read in pages.
READ_MAX_LINES = 400
READ_MAX_CHARS = 40_000
# resources/list names at most this many files (public repositories only).
RESOURCE_LIST_LIMIT = 2_000
INGEST_STOPPED = (
    "index_repository stops waiting here (an ingest this server runs is cancelled and the repository "
    "keeps its last committed version; one a `repolens worker` runs goes on: job {id})"
)

INSTRUCTIONS = """\
RepoLens answers questions about code repositories it has indexed (GitHub, GitLab, Bitbucket or
local folders). Start with list_repositories; if the repository you need is missing, call
index_repository with its URL or path. Then use search_code to find relevant code, read_file to
read exact lines, and ask_question for an explained answer with cited sources (deep_research=true
for questions that span many files). find_definition and find_callers follow the code graph (where a
symbol is defined, who calls it). read_wiki_structure and read_wiki_page read the repository's
generated wiki (overview, modules, guides, with cited lines) when one exists. Every `repo` argument
takes a repository id from list_repositories (e.g. github.com/encode/httpx), its URL, or its local
path. Private repositories need their access token: the X-Repo-Token HTTP header, or the `token`
argument."""

RepoArg = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2048,
        description="Repository id from list_repositories (e.g. 'github.com/encode/httpx'), "
        "its URL, or its local path.",
    ),
]
TokenArg = Annotated[
    str | None,
    Field(
        description="Access token of a private repository (over HTTP prefer the X-Repo-Token header). "
        "Never echoed back.",
        repr=False,
    ),
]


def _tool_errors(call: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Turn RepoLens' expected errors into tool errors with a secret-free message."""

    @functools.wraps(call)
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return await call(*args, **kwargs)
        except RepoLensError as error:
            raise ToolError(f"{error.code}: {redact(error.message)}") from None

    return wrapper


class RepoLensMCP(MCPServer):
    """`MCPServer` whose resource list is the files of the indexed repositories."""

    def __init__(self, services: Services) -> None:
        super().__init__(
            SERVER_NAME, title="RepoLens", instructions=INSTRUCTIONS, version="0.1.0", log_level="WARNING"
        )
        self.services = services
        # The serving app's stop while served over HTTP (`MCPEndpoint.running`); none over stdio.
        self.stop: ServerStop | None = None

    async def list_resources(self) -> list[Resource]:
        return [*await super().list_resources(), *await asyncio.to_thread(self._file_resources)]

    def _file_resources(self) -> list[Resource]:
        """Files of public repositories (a private one's file names are content too), up to a limit."""
        resources: list[Resource] = []
        for record in self.services.store.list():
            if record.private:
                continue
            for info in self.services.store.open(record.id).list_files():
                if len(resources) >= RESOURCE_LIST_LIMIT:
                    return resources
                resources.append(
                    Resource(
                        uri=resource_uri(record.id, info.path),
                        name=f"{record.id}/{info.path}",
                        mime_type="text/plain",
                        size=info.size,
                    )
                )
        return resources


def resource_uri(repo_id: str, path: str) -> str:
    return f"repolens://{quote(repo_id, safe='')}/{quote(path, safe='/')}"


def build_mcp_server(services: Services) -> RepoLensMCP:
    """The MCP server over `services` (tools and resources); serve it with stdio or `mount`."""
    server = RepoLensMCP(services)
    store = services.store

    def indexed(repo: str) -> RepoRecord:
        """The record of the indexed repository `repo` names (id, URL or path), or a tool error."""
        try:
            record = store.get(resolve_repo_id(store, repo.strip()))
        except AmbiguousRepoError:
            raise  # its message names the ids to use
        except NotFoundError:
            record = None
        if record is None:
            raise NotFoundError(
                f"no indexed repository matches {repo!r}{did_you_mean(store, repo.strip())}. Call "
                "list_repositories for the indexed ones, or index_repository to index it first."
            )
        return record

    def base_url(ctx: Context) -> str | None:
        """The server's own URL over HTTP (links to local repositories' files are made absolute)."""
        request = getattr(ctx.request_context, "request", None)
        return str(request.base_url) if request is not None and hasattr(request, "base_url") else None

    def repo_token(ctx: Context, token: str | None) -> str | None:
        """The tool's `token` argument, else the HTTP request's X-Repo-Token header."""
        headers = ctx.headers or {}
        value = token or headers.get(REPO_TOKEN_HEADER) or None
        register_secret(value)
        return value

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    async def list_repositories() -> dict[str, Any]:
        """List the repositories RepoLens has indexed: id (pass it as `repo` to the other tools), URL,
        commit, file and chunk counts, whether it is private (needs a token), and when it was indexed."""
        records = await asyncio.to_thread(store.list)
        return {"repositories": [_record_summary(record) for record in records]}

    @server.tool(
        annotations=ToolAnnotations(read_only_hint=False, idempotent_hint=True, open_world_hint=True)
    )
    @_tool_errors
    async def index_repository(
        ctx: Context,
        location: Annotated[
            str,
            Field(
                min_length=1,
                max_length=2048,
                description="Repository URL (https://github.com/o/r, https://gitlab.com/g/r, "
                "https://bitbucket.org/w/r, any git URL) or a local folder path on the RepoLens server.",
            ),
        ],
        type: Annotated[
            Literal["github", "gitlab", "bitbucket", "git", "local"] | None,
            Field(description="Where the repository lives; detected from the location when omitted."),
        ] = None,
        ref: Annotated[
            str | None, Field(description="Branch, tag or commit to index (default branch if omitted).")
        ] = None,
        token: TokenArg = None,
        include_dirs: Annotated[
            list[str] | None, Field(description="Only index these folders (gitignore-style patterns).")
        ] = None,
        exclude_dirs: Annotated[
            list[str] | None, Field(description="Skip these folders (e.g. ['tests', 'docs']).")
        ] = None,
        include_files: Annotated[
            list[str] | None, Field(description="Only index files matching these patterns (e.g. ['*.py']).")
        ] = None,
        exclude_files: Annotated[
            list[str] | None, Field(description="Skip files matching these patterns.")
        ] = None,
        reindex: Annotated[
            bool, Field(description="Rebuild from scratch instead of updating incrementally.")
        ] = False,
    ) -> dict[str, Any]:
        """Index a repository (or update it if already indexed: only changed files are re-embedded) so
        it can be searched and asked about. Clones remote repositories; reports progress while cloning,
        chunking and embedding; can take a minute for large repositories. Returns the repository
        record (use its `id` as `repo` in the other tools) and what changed."""
        secret = repo_token(ctx, token)
        body = IngestBody(
            repo_url=location,
            type=type,
            ref=ref,
            token=secret,
            included_dirs=include_dirs,
            excluded_dirs=exclude_dirs,
            included_files=include_files,
            excluded_files=exclude_files,
            reindex=reindex,
        )
        job = await services.submit_job(IngestJob.for_ingest(body.repo_url, body.options(services.settings)))
        result: dict[str, Any] | None = None
        step = 0
        stop = server.stop
        progress = until_cancelled(services.jobs.events(job), stop.event if stop is not None else None)
        try:
            with streaming(stop):
                async with contextlib.aclosing(progress) as events:
                    async for event in events:
                        if event["type"] == "status":
                            step += 1
                            await ctx.report_progress(step, None, progress_line(event))
                        elif event["type"] == "error":
                            raise RepoLensError(event["message"], code=event["code"])
                        elif event["type"] == "done":
                            record = RepoRecord.from_json(event["repo"])
                            summary = _record_summary(record)
                            result = {"repository": summary, "report": event["report"], "job": job.id}
        except AnswerCancelled:  # only the server's stop sets that event
            stopped = stopping_event(INGEST_STOPPED.format(id=job.id))
            raise RepoLensError(stopped["message"], code=stopped["code"]) from None
        if result is None:
            raise RepoLensError("the ingest ended without a result", code=ErrorCode.INTERNAL)
        return result

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    @_tool_errors
    async def search_code(
        ctx: Context,
        repo: RepoArg,
        query: Annotated[
            str,
            Field(
                min_length=1,
                max_length=10_000,
                description="What to find: a natural-language description ('where are retries handled'), "
                "an identifier ('HttpClient.send'), or a file name.",
            ),
        ],
        k: Annotated[int, Field(ge=1, le=MAX_K, description="How many results to return.")] = 10,
        path_glob: Annotated[
            str | None, Field(description="Only files matching this glob, e.g. 'src/**/*.py' or '*.go'.")
        ] = None,
        language: Annotated[
            str | None, Field(description="Only files of this language, e.g. 'python', 'go', 'javascript'.")
        ] = None,
        role: Annotated[
            Role | None,
            Field(
                description="Only files of this role: 'source' (implementation), 'test', 'docs', "
                "'example', 'config', ... (default: all, implementation ranked first)."
            ),
        ] = None,
        mode: Annotated[
            Literal["hybrid", "dense", "lexical"],
            Field(
                description="'hybrid' (default) mixes meaning and exact words; 'lexical' exact words only."
            ),
        ] = "hybrid",
        token: TokenArg = None,
    ) -> dict[str, Any]:
        """Search an indexed repository's code and docs. Returns the best-matching spans, best first:
        path, start_line/end_line, enclosing symbol, language, the file's role, score, the text, and a
        URL to the lines.
        Use read_file to see more around a hit."""
        record = indexed(repo)
        secret = repo_token(ctx, token)
        base = base_url(ctx)
        index, hits = await asyncio.to_thread(
            search_repo,
            services,
            record.id,
            query,
            k=k,
            path_glob=path_glob,
            language=language,
            mode=mode,
            role=role,
            token=secret,
        )
        found, roles = index.record, index.roles()
        payload = search_payload(services.store, found, query, hits)
        for result, hit in zip(cast(list[dict[str, Any]], payload["results"]), hits, strict=True):
            result["role"] = roles.get(hit.path)
            result["url"] = absolute_url(source_url(found, hit.path, hit.start_line, hit.end_line), base)
        return payload

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    @_tool_errors
    async def read_file(
        ctx: Context,
        repo: RepoArg,
        path: Annotated[
            str,
            Field(
                min_length=1,
                max_length=4096,
                description="File path relative to the repository root, e.g. 'src/app.py'.",
            ),
        ],
        start_line: Annotated[
            int | None, Field(ge=1, description="First line to read (1-based; default 1).")
        ] = None,
        end_line: Annotated[
            int | None, Field(ge=1, description="Last line to read, inclusive (default: the end).")
        ] = None,
        token: TokenArg = None,
    ) -> dict[str, Any]:
        """Read lines of a file of an indexed repository, as indexed (at the indexed commit). At most
        400 lines per call: when `truncated` is true, call again with start_line = end_line + 1.
        Returns the text with its line range, the file's total_lines, language and a URL."""
        record = indexed(repo)
        secret = repo_token(ctx, token)

        def read() -> dict[str, Any]:
            index = open_readable(services, record.id, secret)
            lines = read_lines(index, path, start_line, end_line)
            return _bounded(lines.to_json(), index.record, base_url(ctx))

        return await asyncio.to_thread(read)

    def latest_wiki(record: RepoRecord, language: str, secret: str | None) -> tuple[Wiki, RepoIndex]:
        """The newest wiki of `record` in `language` and the index it is read against, once the caller
        may read the repository (blocking)."""
        if language not in LANGUAGES:
            raise BadRequestError(f"language must be one of {', '.join(LANGUAGES)}")
        index = open_readable(services, record.id, secret)
        wiki = WikiStore(store).latest(record.id, language)
        if wiki is None:
            raise NotFoundError(
                f"{record.id} has no wiki in {language} yet: generate it with `repolens wiki {record.id}` "
                "(or POST /api/repos/{id}/wiki, or the web page's Wiki tab); --offline needs no model"
            )
        return wiki, index

    def wiki_outline(record: RepoRecord, language: str, secret: str | None) -> dict[str, Any]:
        """The outline, each page fresh or stale and why (the words of the HTTP API's `stale_reasons`)."""
        wiki, index = latest_wiki(record, language, secret)
        return wiki.outline(stale_pages(wiki, index))

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    @_tool_errors
    async def read_wiki_structure(
        ctx: Context,
        repo: RepoArg,
        language: Annotated[str, Field(description=f"Wiki language, one of: {', '.join(LANGUAGES)}.")] = "en",
        token: TokenArg = None,
    ) -> dict[str, Any]:
        """The table of contents of the repository's generated wiki: title, description, the commit and
        mode it was written at (offline = from the code alone), and its sections with their pages (id,
        title, description, importance, and `fresh`: false when the page no longer matches the indexed
        code or this RepoLens, with `stale_reason` saying why, e.g. 'their files changed'; the ids of
        those are `stale_pages`). Read a page's text with read_wiki_page."""
        record = indexed(repo)
        secret = repo_token(ctx, token)
        return await asyncio.to_thread(wiki_outline, record, language, secret)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    @_tool_errors
    async def read_wiki_page(
        ctx: Context,
        repo: RepoArg,
        page: Annotated[
            str,
            Field(min_length=1, max_length=500, description="Page id (or title) from read_wiki_structure."),
        ],
        language: Annotated[str, Field(description=f"Wiki language, one of: {', '.join(LANGUAGES)}.")] = "en",
        token: TokenArg = None,
    ) -> dict[str, Any]:
        """One page of the repository's generated wiki as Markdown (Mermaid diagrams in ```mermaid
        blocks, citations as path:start-end), with its files, related pages and its citations, each with
        a URL to the cited lines and `in_context` (false: those lines were not in its context)."""
        record = indexed(repo)
        secret = repo_token(ctx, token)
        wiki, _ = await asyncio.to_thread(latest_wiki, record, language, secret)
        found = wiki.page(page)
        if found is None:
            raise NotFoundError(f"the wiki of {record.id} has no page {page!r}; see read_wiki_structure")
        base = base_url(ctx)
        citations = [{**item, "url": absolute_url(item.get("url"), base)} for item in found.citations]
        return {
            "id": found.id,
            "title": found.title,
            "content": found.content,
            "filePaths": found.filePaths,
            "relatedPages": found.relatedPages,
            "importance": found.importance,
            "citations": citations,
            "commit": wiki.commit,
            "mode": wiki.mode,
        }

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=True))
    @_tool_errors
    async def ask_question(
        ctx: Context,
        repo: RepoArg,
        question: Annotated[
            str, Field(min_length=1, max_length=20_000, description="The question about the code.")
        ],
        deep_research: Annotated[
            bool,
            Field(
                description="Investigate across files with several tool-driven turns before answering: "
                "slower, better for 'how does X flow through the system' questions."
            ),
        ] = False,
        language: Annotated[
            str, Field(description=f"Answer language, one of: {', '.join(LANGUAGES)}.")
        ] = "en",
        file_path: Annotated[
            str | None, Field(description="A file of the repository to include whole in the context.")
        ] = None,
        provider: Annotated[
            str | None,
            Field(description="LLM provider to answer with (default: the server's configured one)."),
        ] = None,
        model: Annotated[
            str | None, Field(description="Model of that provider (default: its default).")
        ] = None,
        token: TokenArg = None,
    ) -> CallToolResult:
        """Ask a question about an indexed repository and get an explained answer grounded in its code,
        with file:line citations and a list of source links. Reports progress (retrieving, generating,
        research steps). Use search_code/read_file instead when you only need to locate code."""
        record = indexed(repo)
        if language not in LANGUAGES:
            raise BadRequestError(f"language must be one of {', '.join(LANGUAGES)}")
        require_choice(provider, model, services.settings)  # never an offline answer in its place
        fields: dict[str, Any] = {
            "repo_url": record.url,
            "type": record.platform,
            "ref": record.ref,
            "messages": [{"role": "user", "content": question}],
            "token": repo_token(ctx, token),
            "provider": provider,
            "model": model,
            "language": language,
            "filePath": file_path,
            "deep_research": deep_research,
        }
        request = parse_chat_request({name: value for name, value in fields.items() if value is not None})
        answer = CollectedAnswer()
        step = 0
        events = detached_events(services, request, server.stop)
        async with contextlib.aclosing(events):
            async for event in events:
                answer.add(event)
                if (line := progress_line(event)) is not None:
                    step += 1
                    await ctx.report_progress(step, None, line)
        if answer.error is not None:
            raise RepoLensError(answer.error["message"], code=answer.error["code"])
        done = answer.done or {}
        structured = {
            "repo": record.id,
            "answer": answer.text,
            "sources": answer.links(base_url(ctx)),
            "citations": answer.citations,
            "provider": done.get("provider"),
            "model": done.get("model"),
            "usage": answer.usage,
        }
        text = answer.text + answer.sources_markdown(base_url(ctx))
        return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured)

    def graph_index(repo: str, token: str | None, ctx: Context) -> RepoIndex:
        """The readable index of `repo`, refused with a clear message if it has no code graph yet."""
        index = open_readable(services, indexed(repo).id, repo_token(ctx, token))
        if not index.has_graph:
            raise NotFoundError(
                f"{index.record.id} was indexed before the code graph existed: call "
                "index_repository on it again (an update adds the graph)"
            )
        return index

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    @_tool_errors
    async def find_definition(
        ctx: Context,
        repo: RepoArg,
        symbol: Annotated[
            str,
            Field(
                min_length=1,
                max_length=500,
                description="A function, class, method or constant: short ('send') or qualified "
                "('HttpClient.send', 'client.HttpClient.send').",
            ),
        ],
        token: TokenArg = None,
    ) -> dict[str, Any]:
        """Find where a symbol is defined, from the repository's code graph (exact qualified matches
        first). Returns each definition's path, lines, kind, qualified name, its code and a URL."""

        def find() -> dict[str, Any]:
            index = graph_index(repo, token, ctx)
            found = index.definition(symbol.strip())
            if not found:
                raise NotFoundError(
                    f"no definition of {symbol!r} in {index.record.id}; try search_code "
                    "to find it by description"
                )
            base = base_url(ctx)
            return {
                "repo": index.record.id,
                "symbol": symbol,
                "definitions": [_definition_json(index, d, base, with_text=True) for d in found[:20]],
            }

        return await asyncio.to_thread(find)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    @_tool_errors
    async def find_callers(
        ctx: Context,
        repo: RepoArg,
        symbol: Annotated[
            str,
            Field(min_length=1, max_length=500, description="The function or method whose callers to find."),
        ],
        token: TokenArg = None,
    ) -> dict[str, Any]:
        """Find who calls a function or method, from the repository's code graph: each call site's
        path and line, and the calling definition. Follow the chain by calling it again on a caller."""

        def find() -> dict[str, Any]:
            index = graph_index(repo, token, ctx)
            targets = index.definition(symbol.strip())
            if not targets:
                raise NotFoundError(f"no definition of {symbol!r} in {index.record.id}")
            base = base_url(ctx)
            calls = []
            for target in targets[:10]:
                for edge in index.callers(target)[:100]:
                    calls.append(
                        {
                            "path": edge.path,
                            "line": edge.line,
                            "exact": edge.exact,
                            "caller": _definition_json(index, edge.source, base) if edge.source else None,
                            "callee": edge.target.qualname,
                            "url": absolute_url(
                                source_url(index.record, edge.path, edge.line, edge.line), base
                            ),
                        }
                    )
            return {"repo": index.record.id, "symbol": symbol, "callers": calls}

        return await asyncio.to_thread(find)

    @server.resource(
        RESOURCE_TEMPLATE,
        name="repository_file",
        description="A file of an indexed repository, as indexed. `repo` is the repository id, "
        "percent-encoded (github.com%2Fencode%2Fhttpx); `path` is relative to the repository root.",
        mime_type="text/plain",
    )
    async def repository_file(repo: str, path: str, ctx: Context) -> str:
        headers = ctx.headers or {}
        secret = headers.get(REPO_TOKEN_HEADER) or None
        register_secret(secret)

        def read() -> str:
            index = open_readable(services, repo, secret)
            return read_lines(index, path).text

        try:
            return await asyncio.to_thread(read)
        except NotFoundError as error:
            raise ResourceNotFoundError(redact(error.message)) from None
        except RepoLensError as error:
            raise ResourceError(f"{error.code}: {redact(error.message)}") from None

    return server


def _record_summary(record: RepoRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "url": record.url,
        "platform": record.platform,
        "ref": record.ref,
        "commit": record.commit,
        "private": record.private,
        "file_count": record.file_count,
        "chunk_count": record.chunk_count,
        "updated_at": record.updated_at,
    }


def _definition_json(
    index: RepoIndex, definition: CodeDefinition, base_url: str | None, *, with_text: bool = False
) -> dict[str, Any]:
    """A code-graph definition for a tool result (its code only when asked: callers stay short)."""
    data: dict[str, Any] = {
        "path": definition.path,
        "start_line": definition.start_line,
        "end_line": definition.end_line,
        "kind": definition.kind,
        "name": definition.name,
        "qualname": definition.qualname,
        "url": absolute_url(
            source_url(index.record, definition.path, definition.start_line, definition.end_line), base_url
        ),
    }
    if with_text:
        text = index.file_text(definition.path) or ""
        lines = text.splitlines()[definition.start_line - 1 : definition.end_line]
        data["text"] = "\n".join(lines[:READ_MAX_LINES])
    return data


def _bounded(lines: dict[str, Any], record: RepoRecord, base_url: str | None) -> dict[str, Any]:
    """At most `READ_MAX_LINES` lines and `READ_MAX_CHARS` characters, saying where to go on."""
    text_lines = lines["text"].split("\n")
    kept: list[str] = []
    size = 0
    for line in text_lines[:READ_MAX_LINES]:
        if kept and size + len(line) + 1 > READ_MAX_CHARS:
            break
        kept.append(line[:READ_MAX_CHARS])
        size += len(line) + 1
    end = lines["start_line"] + len(kept) - 1
    truncated = len(kept) < len(text_lines)
    return {
        **lines,
        "end_line": end,
        "text": "\n".join(kept),
        "truncated": truncated,
        "url": absolute_url(
            source_url(record, lines["path"], lines["start_line"], max(end, lines["start_line"])), base_url
        ),
    }


class MCPEndpoint:
    """The ASGI endpoint at `/mcp`: the app's Origin rule, then the SDK's session manager.

    The SDK's own Host/Origin check is off: it only knows loopback names, while the app decides
    which origins may call it (`REPOLENS_ALLOWED_ORIGINS`) for every route alike."""

    def __init__(self, server: RepoLensMCP, services: Services) -> None:
        self.server = server
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if not origin_allowed(origin, headers.get("host"), self.services.settings):
            await error_response(ErrorCode.FORBIDDEN_ORIGIN, refusal(origin or ""))(scope, receive, send)
            return
        await self.server.session_manager.handle_request(scope, receive, send)

    @contextlib.asynccontextmanager
    async def running(self, stop: ServerStop | None = None) -> AsyncIterator[None]:
        """Run a fresh session manager (one per app lifespan: the SDK's cannot be restarted); the
        tools that stream (`ask_question`, `index_repository`) end with `server_stopping` on `stop`."""
        self.server.streamable_http_app(
            stateless_http=True,
            max_request_body_size=max_request_bytes(self.services.settings),
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        self.server.stop = stop
        try:
            async with self.server.session_manager.run():
                yield
        finally:
            self.server.stop = None


def mount(app: FastAPI, services: Services) -> MCPEndpoint:
    """Serve MCP at `/mcp` of `app`; the caller runs `endpoint.running()` in the app's lifespan."""
    endpoint = MCPEndpoint(build_mcp_server(services), services)
    for path in ("/mcp", "/mcp/"):
        methods = ["GET", "POST", "DELETE"]
        # An ASGI endpoint, which Starlette accepts in place of a request handler.
        app.add_route(path, endpoint, methods=methods, include_in_schema=False)  # type: ignore[arg-type]
    return endpoint


def serve_stdio(services: Services) -> None:
    """`repolens mcp`: serve over stdin/stdout until the client closes them, then stop the services (an
    ingest still running is cancelled, its index left as it was): their ingest worker process, left
    running, kept the command from ever exiting."""
    try:
        asyncio.run(build_mcp_server(services).run_stdio_async())
    finally:
        services.stop()
