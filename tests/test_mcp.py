"""The MCP server, driven by the `mcp` SDK's own client over streamable HTTP and over stdio.

HTTP: a real uvicorn server (fresh data dir, the fake provider configured) serves `/mcp`; the
fixture repository is indexed through the `index_repository` tool itself, and a private
repository on a token-guarded git server through the same tool with its token. stdio: a real
`repolens mcp` subprocess with its own REPOLENS_HOME.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from api import mcp_server
from ingest.access import clear_cache
from rag.wiki import freshness
from tests.support.chat import provider_env, settings_for
from tests.support.fake_provider import FakeProvider, FakeResponse
from tests.support.live_server import LiveServer
from tests.support.repos import INDEXED_PATHS, RARE_IDENTIFIER, make_fixture_repo

TOOLS = {
    "list_repositories",
    "index_repository",
    "search_code",
    "read_file",
    "ask_question",
    "find_definition",
    "find_callers",
    "read_wiki_structure",
    "read_wiki_page",
}
PRIVATE_SOURCE = 'def open_vault(code):\n    """Open the vault with a code."""\n    return code * 2\n'


@dataclass
class McpSetup:
    server: LiveServer
    repo: Path
    repo_id: str
    index_result: dict[str, Any]
    index_progress: list[tuple[float, str | None]]
    private_id: str
    private_url: str
    token: str
    git_requests: list[Any] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{self.server.base_url}/mcp"

    @asynccontextmanager
    async def client(self, headers: dict[str, str] | None = None) -> AsyncIterator[Client]:
        """An MCP session with the server; `headers` go on every request (their HTTP client is ours
        to close: the MCP SDK only closes the clients it creates)."""
        if headers is None:
            async with Client(self.url) as client:
                yield client
            return
        async with (
            httpx2.AsyncClient(headers=headers) as http,
            Client(streamable_http_client(self.url, http_client=http)) as client,
        ):
            yield client


@pytest.fixture(scope="module")
def mcp_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpSetup]:
    from api.app import create_app
    from tests.support.git_http_server import GitHttpServer

    root = tmp_path_factory.mktemp("mcp")
    repo = make_fixture_repo(root / "weatherline")
    git = GitHttpServer(root / "git")
    git.add_repo("acme/vault", {"vault/lock.py": PRIVATE_SOURCE})
    home = root / "home"
    server = LiveServer(lambda: create_app(settings_for(home, **provider_env()))).start()
    progress: list[tuple[float, str | None]] = []

    async def index() -> tuple[dict[str, Any], dict[str, Any]]:
        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append((value, message))

        async with Client(f"{server.base_url}/mcp") as client:
            public = await client.call_tool(
                "index_repository", {"location": str(repo)}, progress_callback=on_progress
            )
            private = await client.call_tool(
                "index_repository",
                {"location": git.url_for("acme/vault"), "type": "git", "token": git.token},
            )
        assert not public.is_error, public.content
        assert not private.is_error, private.content
        return public.structured_content, private.structured_content

    try:
        public, private = asyncio.run(index())
        yield McpSetup(
            server=server,
            repo=repo,
            repo_id=public["repository"]["id"],
            index_result=public,
            index_progress=progress,
            private_id=private["repository"]["id"],
            private_url=git.url_for("acme/vault"),
            token=git.token,
        )
    finally:
        server.stop()
        git.close()


@pytest.fixture(autouse=True)
def fresh_access_cache() -> Iterator[None]:
    clear_cache()
    yield
    clear_cache()


async def call(setup: McpSetup, tool: str, arguments: dict[str, Any], **client: Any) -> Any:
    async with setup.client(**client) as session:
        return await session.call_tool(tool, arguments)


def error_text(result: Any) -> str:
    assert result.is_error, result
    return result.content[0].text


async def test_tools_are_listed_with_schemas_and_descriptions(mcp_http: McpSetup) -> None:
    async with mcp_http.client() as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert client.instructions and "list_repositories" in client.instructions
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert len(tool.description or "") > 60, tool.name
        assert tool.input_schema["type"] == "object"
        for name, prop in tool.input_schema.get("properties", {}).items():
            assert prop.get("description"), f"{tool.name}.{name} has no description"
    assert tools["search_code"].input_schema["required"] == ["repo", "query"]
    assert tools["search_code"].input_schema["properties"]["k"]["maximum"] == 100
    assert tools["read_file"].annotations.read_only_hint is True


def test_index_repository_reports_progress_and_returns_the_record(mcp_http: McpSetup) -> None:
    record = mcp_http.index_result["repository"]
    assert record["id"].startswith("local/") and record["file_count"] == len(INDEXED_PATHS)
    assert mcp_http.index_result["report"]["chunks"]["total"] == record["chunk_count"]
    values = [value for value, _ in mcp_http.index_progress]
    assert len(values) >= 3 and values == sorted(values)
    messages = " ".join(message or "" for _, message in mcp_http.index_progress)
    assert "embedding" in messages or "chunks" in messages


async def test_list_repositories_names_both_and_marks_the_private_one(mcp_http: McpSetup) -> None:
    result = await call(mcp_http, "list_repositories", {})
    repos = {repo["id"]: repo for repo in result.structured_content["repositories"]}
    assert repos[mcp_http.repo_id]["private"] is False
    assert repos[mcp_http.private_id]["private"] is True
    assert mcp_http.token not in json.dumps(result.structured_content)


async def test_search_code_finds_the_rare_identifier_with_a_working_link(mcp_http: McpSetup) -> None:
    # The repository may be named by its local path as well as by its id.
    result = await call(
        mcp_http, "search_code", {"repo": str(mcp_http.repo), "query": RARE_IDENTIFIER, "k": 3}
    )
    assert not result.is_error, result.content
    hits = result.structured_content["results"]
    assert hits[0]["path"] == "weatherline/client.py"
    assert RARE_IDENTIFIER in hits[0]["text"] and hits[0]["start_line"] >= 1
    assert hits[0]["url"].startswith(mcp_http.server.base_url + "/api/repos/")
    lines = httpx.get(hits[0]["url"], timeout=10)
    assert lines.status_code == 200 and RARE_IDENTIFIER in lines.json()["text"]


async def test_search_code_filters_by_language_and_glob(mcp_http: McpSetup) -> None:
    go = await call(mcp_http, "search_code", {"repo": mcp_http.repo_id, "query": "health", "language": "go"})
    assert {hit["language"] for hit in go.structured_content["results"]} == {"go"}
    js = await call(
        mcp_http, "search_code", {"repo": mcp_http.repo_id, "query": "chart", "path_glob": "web/*"}
    )
    assert all(hit["path"].startswith("web/") for hit in js.structured_content["results"])


async def test_search_code_filters_by_role(mcp_http: McpSetup) -> None:
    args = {"repo": mcp_http.repo_id, "query": "HttpClient retries", "k": 3}
    docs = (await call(mcp_http, "search_code", {**args, "role": "docs"})).structured_content["results"]
    assert docs and all(hit["role"] == "docs" and hit["path"].endswith(".md") for hit in docs)
    source = (await call(mcp_http, "search_code", {**args, "role": "source"})).structured_content["results"]
    assert source and all(hit["role"] == "source" for hit in source)
    assert "'source'" in error_text(await call(mcp_http, "search_code", {**args, "role": "poetry"}))


async def test_read_file_returns_the_lines_and_pages_long_files(
    mcp_http: McpSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = {"repo": mcp_http.repo_id, "path": "weatherline/client.py", "start_line": 9, "end_line": 9}
    result = (await call(mcp_http, "read_file", args)).structured_content
    assert result["text"] == f"{RARE_IDENTIFIER} = 7"
    assert (result["start_line"], result["end_line"], result["truncated"]) == (9, 9, False)
    assert result["total_lines"] > 30 and result["language"] == "python"

    monkeypatch.setattr(mcp_server, "READ_MAX_LINES", 5)
    page = await call(mcp_http, "read_file", {"repo": mcp_http.repo_id, "path": "weatherline/client.py"})
    assert page.structured_content["truncated"] is True
    assert (page.structured_content["start_line"], page.structured_content["end_line"]) == (1, 5)


async def test_find_definition_and_callers_follow_the_code_graph(mcp_http: McpSetup) -> None:
    found = await call(mcp_http, "find_definition", {"repo": mcp_http.repo_id, "symbol": "HttpClient.send"})
    assert not found.is_error, found.content
    definition = found.structured_content["definitions"][0]
    assert (definition["path"], definition["qualname"]) == ("weatherline/client.py", "HttpClient.send")
    assert "def send(" in definition["text"] and definition["url"].startswith(mcp_http.server.base_url)
    callers = await call(mcp_http, "find_callers", {"repo": mcp_http.repo_id, "symbol": "HttpClient.send"})
    sites = callers.structured_content["callers"]
    assert any(
        site["path"] == "weatherline/service.py" and site["caller"]["qualname"] == "ForecastService.run"
        for site in sites
    )
    up = await call(mcp_http, "find_callers", {"repo": mcp_http.repo_id, "symbol": "ForecastService.run"})
    assert any(
        site["caller"] and site["caller"]["name"] == "main" for site in up.structured_content["callers"]
    )
    missing = {"repo": mcp_http.repo_id, "symbol": "NoSuchThing"}
    assert "search_code" in error_text(await call(mcp_http, "find_definition", missing))


async def test_ask_question_offline_answers_with_sources(mcp_http: McpSetup) -> None:
    progress: list[str] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    question = "Where is the retry ceiling defined?"
    async with mcp_http.client() as client:
        result = await client.call_tool(
            "ask_question",
            {"repo": mcp_http.repo_id, "question": question, "provider": "offline"},
            progress_callback=on_progress,
        )
    assert not result.is_error, result.content
    text = result.content[0].text
    assert "weatherline/client.py" in text and "**Sources**" in text
    assert result.structured_content["provider"] == "offline"
    assert result.structured_content["sources"][0]["url"]
    assert any(line.startswith("retrieving") for line in progress)


async def test_ask_question_through_the_fake_provider(
    mcp_http: McpSetup, fake_provider: FakeProvider
) -> None:
    fake_provider.script(FakeResponse(text="The ceiling is set in weatherline/client.py:9-9.", chunks=3))
    args = {"repo": mcp_http.repo_id, "question": "What is the retry ceiling?", "provider": "openai"}
    result = await call(mcp_http, "ask_question", args)
    assert not result.is_error, result.content
    text = result.content[0].text
    assert text.startswith("The ceiling is set in weatherline/client.py:9-9.")
    assert "\n\n**Sources**\n- [weatherline/client.py:" in text
    assert result.structured_content["model"] and result.structured_content["usage"]["total_tokens"] > 0
    cited = result.structured_content["citations"]
    assert cited and cited[0]["path"] == "weatherline/client.py"
    assert fake_provider.requests[-1].body["stream"] is True


async def test_ask_question_deep_research_offline(mcp_http: McpSetup) -> None:
    args = {
        "repo": mcp_http.repo_id,
        "question": "How does main reach HttpClient.send?",
        "deep_research": True,
        "provider": "offline",
    }
    result = await call(mcp_http, "ask_question", args)
    assert not result.is_error, result.content
    assert "HttpClient" in result.content[0].text


async def test_provider_errors_come_back_as_tool_errors(
    mcp_http: McpSetup, fake_provider: FakeProvider
) -> None:
    fake_provider.script(FakeResponse(status=401))
    args = {"repo": mcp_http.repo_id, "question": "What is the retry ceiling?", "provider": "openai"}
    text = error_text(await call(mcp_http, "ask_question", args))
    assert "auth" in text


async def test_a_provider_or_model_the_server_lacks_is_a_tool_error(mcp_http: McpSetup) -> None:
    """An agent naming a model gets that model or an error: `offline` with `gpt-4o` was answered by
    the offline provider, the model dropped without a word."""
    args = {"repo": mcp_http.repo_id, "question": "What is the retry ceiling?"}
    text = error_text(
        await call(mcp_http, "ask_question", {**args, "provider": "offline", "model": "gpt-4o"})
    )
    assert "not_configured: offline" in text and "'gpt-4o'" in text and "grounded-excerpts" in text
    text = error_text(await call(mcp_http, "ask_question", {**args, "provider": "google"}))
    assert "GOOGLE_API_KEY" in text and "openai" in text and "restart the server" in text


async def test_unknown_repository_says_what_to_do(mcp_http: McpSetup) -> None:
    for tool, args in (
        ("search_code", {"repo": "github.com/nobody/nothing", "query": "x"}),
        ("read_file", {"repo": "github.com/nobody/nothing", "path": "a.py"}),
        ("ask_question", {"repo": "github.com/nobody/nothing", "question": "why?"}),
    ):
        text = error_text(await call(mcp_http, tool, args))
        assert "not_found" in text and "index_repository" in text and "list_repositories" in text
    typo = mcp_http.repo_id.rsplit("/", 1)[-1][:-1]  # `weatherlin`: the likely id is named
    text = error_text(await call(mcp_http, "search_code", {"repo": typo, "query": "retry"}))
    assert f"(did you mean {mcp_http.repo_id}?)" in text


async def test_a_short_name_two_repositories_share_is_said_with_their_ids(tmp_path: Path) -> None:
    """Before: `repo: "weatherline"` with two indexed weatherline folders said "no indexed repository
    matches 'weatherline'" (the ambiguity was swallowed); now the error names both ids, as the CLI does."""
    from api.app import create_app
    from ingest import ingest

    app = create_app(settings_for(tmp_path / "home", **provider_env()))
    services = app.state.services
    ids = [
        ingest(
            str(make_fixture_repo(tmp_path / part / "weatherline")),
            store=services.store,
            embedder=services.embedder,
        ).repo_id
        for part in ("one", "two")
    ]
    server = LiveServer(lambda: app).start()
    try:
        async with Client(f"{server.base_url}/mcp") as client:
            result = await client.call_tool("search_code", {"repo": "weatherline", "query": "retry"})
    finally:
        server.stop()
    text = error_text(result)
    assert "names several indexed repositories" in text and all(repo_id in text for repo_id in ids), text


@pytest.mark.parametrize(
    ("tool", "args", "expected"),
    [
        ("search_code", {"query": "x"}, "repo"),
        ("search_code", {"repo": "r", "query": "x", "k": 500}, "less than or equal to 100"),
        ("search_code", {"repo": "r", "query": ""}, "at least 1 character"),
        ("search_code", {"repo": "r", "query": "x", "mode": "fuzzy"}, "'hybrid', 'dense' or 'lexical'"),
        ("read_file", {"repo": "r", "path": "a.py", "start_line": 0}, "greater than or equal to 1"),
        ("index_repository", {"location": "x", "type": "svn"}, "'github', 'gitlab'"),
        ("ask_question", {"repo": "r"}, "question"),
    ],
)
async def test_bad_arguments_are_refused_with_the_field_named(
    mcp_http: McpSetup, tool: str, args: dict[str, Any], expected: str
) -> None:
    assert expected in error_text(await call(mcp_http, tool, args))


async def test_bad_paths_lines_and_locations_are_refused(mcp_http: McpSetup) -> None:
    traversal = {"repo": mcp_http.repo_id, "path": "../../etc/passwd"}
    assert "relative to the repository root" in error_text(await call(mcp_http, "read_file", traversal))
    missing = {"repo": mcp_http.repo_id, "path": "nope.py"}
    assert "not in the index" in error_text(await call(mcp_http, "read_file", missing))
    backwards = {"repo": mcp_http.repo_id, "path": "weatherline/client.py", "start_line": 9, "end_line": 3}
    assert "is after the end" in error_text(await call(mcp_http, "read_file", backwards))
    language = {"repo": mcp_http.repo_id, "question": "why?", "language": "klingon"}
    assert "language must be one of" in error_text(await call(mcp_http, "ask_question", language))
    assert "bad_url" in error_text(await call(mcp_http, "index_repository", {"location": "ftp://x/y"}))


async def test_unknown_tool_is_an_error(mcp_http: McpSetup) -> None:
    async with mcp_http.client() as client:
        try:
            result = await client.call_tool("delete_everything", {})
        except MCPError as error:
            assert "delete_everything" in str(error)
        else:
            assert "delete_everything" in error_text(result)


async def test_private_repository_needs_its_token_and_never_echoes_it(mcp_http: McpSetup) -> None:
    args = {"repo": mcp_http.private_id, "query": "open_vault"}
    refused = error_text(await call(mcp_http, "search_code", args))
    assert "auth_failed" in refused and "private" in refused and "X-Repo-Token" in refused

    wrong = error_text(await call(mcp_http, "search_code", {**args, "token": "not-the-token-123"}))
    assert "refused" in wrong and "not-the-token-123" not in wrong

    by_header = await call(mcp_http, "search_code", args, headers={"X-Repo-Token": mcp_http.token})
    assert not by_header.is_error, by_header.content
    assert by_header.structured_content["results"][0]["path"] == "vault/lock.py"
    by_argument = await call(
        mcp_http, "read_file", {"repo": mcp_http.private_id, "path": "vault/lock.py", "token": mcp_http.token}
    )
    assert by_argument.structured_content["text"] == PRIVATE_SOURCE.rstrip("\n")
    for result in (by_header, by_argument):
        assert mcp_http.token not in json.dumps(result.structured_content)
        assert mcp_http.token not in result.content[0].text


async def test_files_are_resources(mcp_http: McpSetup) -> None:
    async with mcp_http.client() as client:
        listed = {resource.uri for resource in (await client.list_resources()).resources}
        templates = (await client.list_resource_templates()).resource_templates
        uri = mcp_server.resource_uri(mcp_http.repo_id, "weatherline/client.py")
        contents = (await client.read_resource(uri)).contents
        with pytest.raises(MCPError):
            await client.read_resource(mcp_server.resource_uri(mcp_http.repo_id, "missing.py"))
        with pytest.raises(MCPError):
            await client.read_resource(mcp_server.resource_uri(mcp_http.private_id, "vault/lock.py"))
    assert uri in listed
    assert not any(mcp_http.private_id.replace("/", "%2F") in item for item in listed)
    assert templates[0].uri_template == "repolens://{repo}/{+path}"
    assert RARE_IDENTIFIER in contents[0].text


def test_pages_of_other_sites_may_not_call_mcp(mcp_http: McpSetup) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    response = httpx.post(mcp_http.url, json=body, headers={"Origin": "https://evil.example"}, timeout=10)
    assert response.status_code == 403 and response.json()["code"] == "forbidden_origin"


async def test_stdio_server_lists_indexes_searches_reads_and_asks(
    tmp_path: Path, fake_provider: FakeProvider
) -> None:
    repo = make_fixture_repo(tmp_path / "weatherline")
    env = {
        "REPOLENS_HOME": str(tmp_path / "stdio-home"),
        "TIKTOKEN_CACHE_DIR": os.environ["TIKTOKEN_CACHE_DIR"],
        "HF_HUB_OFFLINE": "1",
        **provider_env(),
    }
    params = StdioServerParameters(
        command=str(Path(sys.executable).with_name("repolens")), args=["mcp"], env=env
    )
    async with Client(params) as client:
        assert {tool.name for tool in (await client.list_tools()).tools} == TOOLS
        indexed = await client.call_tool("index_repository", {"location": str(repo)})
        assert not indexed.is_error, indexed.content
        repo_id = indexed.structured_content["repository"]["id"]
        listed = await client.call_tool("list_repositories", {})
        assert [item["id"] for item in listed.structured_content["repositories"]] == [repo_id]
        found = await client.call_tool("search_code", {"repo": repo_id, "query": RARE_IDENTIFIER})
        assert found.structured_content["results"][0]["path"] == "weatherline/client.py"
        # No HTTP server behind stdio: links to a local repository's lines stay server-relative.
        assert found.structured_content["results"][0]["url"].startswith("/api/repos/")
        read = await client.call_tool("read_file", {"repo": repo_id, "path": "README.md", "end_line": 1})
        assert read.structured_content["text"] == "# Weatherline"
        question = "What is the retry ceiling?"
        offline = await client.call_tool(
            "ask_question", {"repo": repo_id, "question": question, "provider": "offline"}
        )
        assert not offline.is_error and "weatherline/client.py" in offline.content[0].text
        # The provider the server's environment configures (here the fake) answers by default.
        fake_provider.script(FakeResponse(text="It is ZORBLAX_RETRY_CEILING in weatherline/client.py:9-9."))
        answered = await client.call_tool("ask_question", {"repo": repo_id, "question": question})
        assert answered.content[0].text.startswith("It is ZORBLAX_RETRY_CEILING")
        assert "unknown" in error_text(
            await client.call_tool("search_code", {"repo": "unknown", "query": "x"})
        )
        assert "less than or equal to 100" in error_text(
            await client.call_tool("search_code", {"repo": repo_id, "query": "x", "k": 1000})
        )


def test_stdio_server_exits_when_its_client_closes_stdin_after_an_ingest(tmp_path: Path) -> None:
    """`repolens mcp` that ran an ingest (in its ingest worker process) ends when the client closes its
    stdin: the worker process it left running kept it alive for ever (a client that does not kill its
    server piled them up)."""
    repo = make_fixture_repo(tmp_path / "weatherline")
    env = {**os.environ, "REPOLENS_HOME": str(tmp_path / "stdio-exit-home")}
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("repolens")), "mcp"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
        start_new_session=True,  # killed whole if it does not end
    )
    assert server.stdin is not None and server.stdout is not None

    def call(message: dict[str, Any]) -> dict[str, Any]:
        assert server.stdin is not None and server.stdout is not None
        server.stdin.write(json.dumps({"jsonrpc": "2.0", **message}) + "\n")
        server.stdin.flush()
        while "id" in message:
            answer: dict[str, Any] = json.loads(server.stdout.readline())
            if answer.get("id") == message["id"]:
                return answer
        return {}

    client = {"name": "test", "version": "1"}
    call(
        {
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": client},
        }
    )
    call({"method": "notifications/initialized"})
    indexed = call(
        {
            "id": 2,
            "method": "tools/call",
            "params": {"name": "index_repository", "arguments": {"location": str(repo)}},
        }
    )
    assert not indexed["result"].get("isError"), indexed
    server.stdin.close()
    try:
        assert server.wait(timeout=30) == 0
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        raise AssertionError("`repolens mcp` did not exit after its client closed stdin") from None
    finally:
        server.stdout.close()


async def test_wiki_tools_read_the_generated_wiki(mcp_http: McpSetup) -> None:
    missing = await call(mcp_http, "read_wiki_structure", {"repo": mcp_http.repo_id, "language": "ja"})
    assert "has no wiki in ja yet" in error_text(missing) and "repolens wiki" in error_text(missing)
    url = f"{mcp_http.server.base_url}/api/repos/{mcp_http.repo_id}/wiki"
    async with httpx.AsyncClient(timeout=30) as client:
        generated = await client.post(url, json={"offline": True})
    assert generated.status_code == 200 and "event: done" in generated.text

    outline = (await call(mcp_http, "read_wiki_structure", {"repo": mcp_http.repo_id})).structured_content
    assert outline["mode"] == "offline" and outline["title"] == "Weatherline wiki"
    pages = [page for section in outline["sections"] for page in section["pages"]]
    assert {"overview", "module-weatherline"} <= {page["id"] for page in pages}
    page = await call(mcp_http, "read_wiki_page", {"repo": str(mcp_http.repo), "page": "Module weatherline"})
    assert not page.is_error, page.content
    content = page.structured_content
    assert content["id"] == "module-weatherline" and "```mermaid" in content["content"]
    cited = next(item for item in content["citations"] if item["path"] == "weatherline/client.py")
    assert cited["in_context"] and cited["url"].startswith(mcp_http.server.base_url + "/api/repos/")
    assert httpx.get(cited["url"], timeout=10).status_code == 200
    unknown = await call(mcp_http, "read_wiki_page", {"repo": mcp_http.repo_id, "page": "nope"})
    assert "no page 'nope'" in error_text(unknown)


def outline_pages(outline: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {page["id"]: page for section in outline["sections"] for page in section["pages"]}


async def test_the_wiki_structure_says_which_pages_are_stale_and_why(
    mcp_http: McpSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the words of the HTTP API's `stale_reasons` (one definition: `rag.wiki.freshness`)."""
    url = f"{mcp_http.server.base_url}/api/repos/{mcp_http.repo_id}/wiki"
    async with httpx.AsyncClient(timeout=30) as client:
        assert "event: done" in (await client.post(url, json={"offline": True})).text
        outline = (await call(mcp_http, "read_wiki_structure", {"repo": mcp_http.repo_id})).structured_content
        pages = outline_pages(outline)
        assert pages and outline["stale_pages"] == []
        assert all(page["fresh"] and page["stale_reason"] is None for page in pages.values())

        # An upgrade of RepoLens that writes pages differently (the server runs in this process).
        monkeypatch.setattr(freshness, "OFFLINE_GENERATOR_VERSION", freshness.OFFLINE_GENERATOR_VERSION + 1)
        outline = (await call(mcp_http, "read_wiki_structure", {"repo": mcp_http.repo_id})).structured_content
        pages = outline_pages(outline)
        reason = f"the wiki generator changed (version {freshness.OFFLINE_GENERATOR_VERSION - 1} -> "
        assert all(not page["fresh"] and page["stale_reason"].startswith(reason) for page in pages.values())
        http = (await client.get(url)).json()
        assert sorted(outline["stale_pages"]) == sorted(pages) == sorted(http["stale_pages"])
        assert {page_id: page["stale_reason"] for page_id, page in pages.items()} == http["stale_reasons"]
