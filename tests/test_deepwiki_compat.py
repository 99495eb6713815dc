"""deepwiki-open's web front end against a real RepoLens server: its exact requests, the shapes it parses.

Requests are copied from its source (AsyncFuncAI/deepwiki-open, snapshot 2026-05): the Next.js routes in
`src/app/api/*` (which add `Content-Type: application/json`) and `src/app/[owner]/[repo]/page.tsx`
(the wiki cache, export, refresh and local-folder calls). Response checks mirror what that code reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest

from ingest import ingest
from rag.embedders import Embedder
from tests.support.chat import settings_for
from tests.support.live_server import LiveServer
from tests.support.repos import make_fixture_repo

API_KEY = "compat-test-api-key-123"
TIMEOUT = httpx.Timeout(30.0)
NEXT_HEADERS = {"Content-Type": "application/json"}


class Compat:
    def __init__(self, server: LiveServer, repo: Path) -> None:
        self.server, self.repo = server, repo

    def url(self, path: str) -> str:
        return self.server.base_url + path


@pytest.fixture(scope="module")
def compat(tmp_path_factory: pytest.TempPathFactory, shared_embedder: Embedder) -> Iterator[Compat]:
    """A server with an API key, local folders allowed, no LLM provider, and the fixture repo indexed."""
    from api.app import create_app

    root = tmp_path_factory.mktemp("compat")
    repo = make_fixture_repo(root / "weatherline")
    settings = settings_for(root / "home", REPOLENS_API_KEY=API_KEY, REPOLENS_ALLOW_LOCAL="1")
    app = create_app(settings)
    app.state.services.__dict__["embedder"] = shared_embedder  # the session's embedder, already loaded
    ingest(str(repo), store=app.state.services.store, embedder=shared_embedder)
    server = LiveServer(lambda: _behind_key_adding_proxy(app)).start()
    yield Compat(server, repo)
    server.stop()


def _behind_key_adding_proxy(app: Any) -> Any:
    """deepwiki's front end cannot send RepoLens' API key (`api.middleware` requires it on every
    route once set), so it is deployed behind a proxy that adds `X-API-Key`; this is that proxy."""

    async def proxy(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = [(k, v) for k, v in scope["headers"] if k != b"x-api-key"]
            scope = {**scope, "headers": [*headers, (b"x-api-key", API_KEY.encode())]}
        await app(scope, receive, send)

    proxy.state = app.state  # type: ignore[attr-defined]  # tests reach the app's services through it
    return proxy


def repo_info(compat: Compat) -> dict[str, Any]:
    """`effectiveRepoInfo` for a local folder, as its home page builds it."""
    return {
        "owner": "local",
        "repo": "weatherline",
        "type": "local",
        "token": "ghp_secret_token_never_stored",
        "localPath": str(compat.repo),
        "repoUrl": None,
    }


def wiki_page(page_id: str, title: str, content: str = "") -> dict[str, Any]:
    return {
        "id": page_id,
        "title": title,
        "content": content,
        "filePaths": ["weatherline/client.py"],
        "importance": "high",
        "relatedPages": [],
        "parentId": "section-overview",
    }


def test_auth_status_and_validate_map_onto_the_api_key(compat: Compat) -> None:
    status = httpx.get(compat.url("/auth/status"), headers=NEXT_HEADERS, timeout=TIMEOUT)
    assert status.status_code == 200 and status.json() == {"auth_required": True}
    for code, success in ((API_KEY, True), ("wrong", False), ("", False)):
        response = httpx.post(
            compat.url("/auth/validate"),
            headers=NEXT_HEADERS,
            content=json.dumps({"code": code}),
            timeout=TIMEOUT,
        )
        assert response.status_code == 200 and response.json() == {"success": success}


def test_auth_is_not_required_without_a_key(live_server_factory: Any, tmp_path: Path) -> None:
    server = live_server_factory(
        settings_for(tmp_path / "home", REPOLENS_LOCAL_ROOTS="", REPOLENS_ALLOW_PRIVATE_HOSTS="")
    )
    assert httpx.get(f"{server.base_url}/auth/status", timeout=TIMEOUT).json() == {"auth_required": False}
    response = httpx.post(f"{server.base_url}/auth/validate", json={"code": "anything"}, timeout=TIMEOUT)
    assert response.json() == {"success": True}


def test_wiki_cache_round_trip_as_the_front_end_drives_it(compat: Compat) -> None:
    info = repo_info(compat)
    query = {"owner": "local", "repo": "weatherline", "repo_type": "local", "language": "en"}
    # loadData(): the first visit finds no cache (200 with a null body).
    first = httpx.get(
        compat.url("/api/wiki_cache?" + urlencode({**query, "comprehensive": "true"})), timeout=TIMEOUT
    )
    assert first.status_code == 200 and first.json() is None
    # saveCache(): once every page has content.
    pages = [
        wiki_page("page-1", "Overview", "Weatherline fetches forecasts."),
        wiki_page("page-2", "HTTP client"),
    ]
    pages[1]["content"] = "`HttpClient.send` retries (weatherline/client.py:20-30)."
    structure = {
        "id": "wiki",
        "title": "Weatherline Wiki",
        "description": "A weather CLI",
        "pages": pages,
        "sections": [{"id": "section-overview", "title": "Overview", "pages": ["page-1", "page-2"]}],
        "rootSections": ["section-overview"],
    }
    body = {
        "repo": info,
        "language": "en",
        "comprehensive": True,
        "wiki_structure": structure,
        "generated_pages": {page["id"]: page for page in pages},
        "provider": "google",
        "model": "gemini-2.5-flash",
    }
    saved = httpx.post(
        compat.url("/api/wiki_cache"), headers=NEXT_HEADERS, content=json.dumps(body), timeout=TIMEOUT
    )
    assert saved.status_code == 200 and "message" in saved.json()
    cached = httpx.get(
        compat.url("/api/wiki_cache?" + urlencode({**query, "comprehensive": "true"})), timeout=TIMEOUT
    )
    data = cached.json()
    # What loadData() reads: wiki_structure (+ sections/rootSections), generated_pages, repo, provider, model.
    assert data["wiki_structure"]["title"] == "Weatherline Wiki"
    assert [page["id"] for page in data["wiki_structure"]["pages"]] == ["page-1", "page-2"]
    assert data["wiki_structure"]["rootSections"] == ["section-overview"]
    assert data["generated_pages"]["page-2"]["content"] == pages[1]["content"]
    assert data["generated_pages"]["page-1"]["parentId"] == "section-overview"
    assert (data["provider"], data["model"]) == ("google", "gemini-2.5-flash")
    assert data["repo"]["localPath"] == str(compat.repo) and data["repo"]["token"] is None
    stored = "".join(
        path.read_text() for path in (compat.server.app.state.services.settings.home).rglob("*.json")
    )
    assert "ghp_secret_token_never_stored" not in stored

    projects = httpx.get(compat.url("/api/processed_projects"), headers=NEXT_HEADERS, timeout=TIMEOUT).json()
    entry = next(project for project in projects if project["repo"] == "weatherline")
    assert set(entry) == {"id", "owner", "repo", "name", "repo_type", "submittedAt", "language"}
    assert (entry["name"], entry["repo_type"], entry["language"]) == ("local/weatherline", "local", "en")
    assert isinstance(entry["submittedAt"], int) and entry["submittedAt"] > 1_600_000_000_000

    # confirmRefresh(): DELETE with the model options and the authorization code.
    refresh = {
        **query,
        "provider": "google",
        "model": "gemini-2.5-flash",
        "is_custom_model": "false",
        "custom_model": "",
        "comprehensive": "true",
    }
    accept = {"Accept": "application/json"}
    wrong = httpx.delete(
        compat.url("/api/wiki_cache?" + urlencode({**refresh, "authorization_code": "nope"})),
        headers=accept,
        timeout=TIMEOUT,
    )
    assert wrong.status_code == 401
    right = {**refresh, "authorization_code": API_KEY, "excluded_dirs": "tests"}
    deleted = httpx.delete(compat.url("/api/wiki_cache?" + urlencode(right)), headers=accept, timeout=TIMEOUT)
    assert deleted.status_code == 200 and "message" in deleted.json()
    again = httpx.delete(compat.url("/api/wiki_cache?" + urlencode(right)), headers=accept, timeout=TIMEOUT)
    assert again.status_code == 404
    assert httpx.get(compat.url("/api/wiki_cache?" + urlencode(query)), timeout=TIMEOUT).json() is None


def test_a_hostile_owner_stays_inside_the_cache_folder(compat: Compat) -> None:
    info = {**repo_info(compat), "owner": "../../../etc", "repo": "passwd/.."}
    structure = {"id": "w", "title": "T", "description": "", "pages": [wiki_page("p", "P", "x")]}
    body = {
        "repo": info,
        "language": "en",
        "wiki_structure": structure,
        "generated_pages": {},
        "provider": "x",
    }
    body["model"] = "y"
    assert httpx.post(compat.url("/api/wiki_cache"), json=body, timeout=TIMEOUT).status_code == 200
    home = compat.server.app.state.services.settings.home
    assert all(path.parent == home / "wikicache" for path in home.rglob("deepwiki_cache_*"))


@pytest.mark.parametrize("fmt", ["markdown", "json"])
def test_export_wiki_is_an_attachment(compat: Compat, fmt: str) -> None:
    pages = [wiki_page("page-1", "Overview", "Intro text."), wiki_page("page-2", "Client", "Retries.")]
    body = {"repo_url": str(compat.repo), "type": "local", "pages": pages, "format": fmt}
    response = httpx.post(
        compat.url("/export/wiki"), headers=NEXT_HEADERS, content=json.dumps(body), timeout=TIMEOUT
    )
    assert response.status_code == 200
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment; filename=weatherline_wiki_")
    if fmt == "markdown":
        assert disposition.endswith(".md") and response.headers["content-type"].startswith("text/markdown")
        assert "## Overview" in response.text and "Retries." in response.text
    else:
        assert disposition.endswith(".json") and response.headers["content-type"].startswith(
            "application/json"
        )
        document = response.json()
        assert document["metadata"]["page_count"] == 2
        assert [page["title"] for page in document["pages"]] == ["Overview", "Client"]


def test_local_repo_structure(compat: Compat) -> None:
    # fetchRepositoryStructure(): `/local_repo/structure?path=${encodeURIComponent(localPath)}`
    response = httpx.get(
        compat.url(f"/local_repo/structure?path={quote(str(compat.repo), safe='')}"), timeout=TIMEOUT
    )
    assert response.status_code == 200
    data = response.json()
    tree = data["file_tree"].splitlines()
    assert tree == sorted(tree)
    assert "weatherline/client.py" in tree and "README.md" in tree
    assert not any(path.startswith(("node_modules/", ".git/")) for path in tree)
    assert data["readme"].startswith("# Weatherline")
    assert httpx.get(compat.url("/local_repo/structure"), timeout=TIMEOUT).status_code == 400
    missing = httpx.get(
        compat.url("/local_repo/structure?path=" + quote(str(compat.repo / "nope"))), timeout=TIMEOUT
    )
    assert missing.status_code == 404


def test_local_repo_structure_is_refused_by_default(live_server_factory: Any, tmp_path: Path) -> None:
    server = live_server_factory(
        settings_for(tmp_path / "home", REPOLENS_LOCAL_ROOTS="", REPOLENS_ALLOW_PRIVATE_HOSTS="")
    )
    response = httpx.get(
        f"{server.base_url}/local_repo/structure", params={"path": str(tmp_path)}, timeout=TIMEOUT
    )
    assert response.status_code == 403 and "REPOLENS_ALLOW_LOCAL" in response.json()["error"]
    outside = live_server_factory(
        settings_for(
            tmp_path / "home2", REPOLENS_ALLOW_LOCAL="1", REPOLENS_LOCAL_ROOTS=str(tmp_path / "allowed")
        )
    )
    refused = httpx.get(f"{outside.base_url}/local_repo/structure", params={"path": "/etc"}, timeout=TIMEOUT)
    assert refused.status_code == 403 and "REPOLENS_LOCAL_ROOTS" in refused.json()["error"]


def chat_body(compat: Compat, content: str, **fields: Any) -> dict[str, Any]:
    """The body page.tsx / Ask.tsx send to `/api/chat/stream` (provider `google`, not configured here)."""
    return {
        "repo_url": str(compat.repo),
        "type": "local",
        "messages": [{"role": "user", "content": content}],
        "provider": "google",
        "model": "gemini-2.5-flash",
        "language": "en",
        **fields,
    }


def test_chat_stream_through_the_next_proxy_is_plain_text(compat: Compat) -> None:
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    body = json.dumps(chat_body(compat, "Where is the retry ceiling defined?"))
    response = httpx.post(
        compat.url("/chat/completions/stream"), headers=headers, content=body, timeout=TIMEOUT
    )
    assert response.status_code == 200
    assert "event:" not in response.text and '"type"' not in response.text
    assert "weatherline/client.py" in response.text


def test_deep_research_with_an_unconfigured_provider_falls_back_offline(compat: Compat) -> None:
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    body = json.dumps(chat_body(compat, "[DEEP RESEARCH] How does the CLI reach the HTTP client?"))
    response = httpx.post(
        compat.url("/chat/completions/stream"), headers=headers, content=body, timeout=TIMEOUT
    )
    assert response.status_code == 200
    assert response.text.lstrip().startswith("## Research Plan")
    assert "not configured" not in response.text


def ws_answer(compat: Compat, body: dict[str, Any]) -> str:
    """What its `websocketClient.ts` collects: every text frame until the server closes the socket."""
    from websockets.exceptions import ConnectionClosedOK
    from websockets.sync.client import connect

    parts = []
    with connect(f"{compat.server.ws_url}/ws/chat", open_timeout=10) as ws:
        ws.send(json.dumps(body))
        try:
            while True:
                parts.append(ws.recv(timeout=30))
        except ConnectionClosedOK:
            pass
    return "".join(parts)


# The prompts of page.tsx (determineWikiStructure and generatePageContent), abridged where it adds nothing.
STRUCTURE_PROMPT = """Analyze this GitHub repository local/weatherline and create a wiki structure for it.

1. The complete file tree of the project:
<file_tree>
{tree}
</file_tree>

2. The README file of the project:
<readme>
{readme}
</readme>

Return your analysis in the following XML format:

<wiki_structure>
  <title>[Overall title for the wiki]</title>
  <description>[Brief description of the repository]</description>
  <pages>
    <page id="page-1">
      <title>[Page title]</title>
    </page>
  </pages>
</wiki_structure>

IMPORTANT FORMATTING INSTRUCTIONS:
- Return ONLY the valid XML structure specified above
- Start directly with <wiki_structure> and end with </wiki_structure>

IMPORTANT:
1. Create 8-12 pages that would make a comprehensive wiki for this repository"""

PAGE_PROMPT = """You are an expert technical writer and software architect.
Your task is to generate a comprehensive and accurate technical wiki page in Markdown format about a \
specific feature, system, or module within a given software project.

You will be given:
1. The "[WIKI_PAGE_TOPIC]" for the page you need to create.
2. A list of "[RELEVANT_SOURCE_FILES]" from the project that you MUST use as the sole basis for \
the content.

<details>
<summary>Relevant source files</summary>

The following files were used as context for generating this wiki page:

{files}
</details>

Immediately after the `<details>` block, the main title of the page should be a H1 Markdown heading: \
`# {title}`.
"""


def test_its_wiki_generation_works_offline_over_the_websocket(compat: Compat) -> None:
    """No model configured: the structure request gets the XML its parser reads, each page its content."""
    import xml.etree.ElementTree as ElementTree

    structure = httpx.get(
        compat.url("/local_repo/structure"), params={"path": str(compat.repo)}, timeout=TIMEOUT
    )
    prompt = STRUCTURE_PROMPT.format(
        **{"tree": structure.json()["file_tree"], "readme": structure.json()["readme"]}
    )
    body = chat_body(compat, prompt)
    text = ws_answer(compat, body)
    match = re.search(r"<wiki_structure>[\s\S]*?</wiki_structure>", text)  # page.tsx: else "No valid XML"
    assert match is not None, text[:300]
    root = ElementTree.fromstring(match.group())
    pages = root.findall("./pages/page")
    assert root.findtext("title") == "Weatherline wiki" and len(pages) >= 4
    module = next(page for page in pages if page.findtext("title") == "Module weatherline")
    files = [node.text for node in module.findall("./relevant_files/file_path")]
    assert "weatherline/client.py" in files
    assert module.findtext("parent_section") in {s.get("id") for s in root.findall("./sections/section")}

    listing = "\n".join(f"- [{path}](file://{path})" for path in files)
    page = ws_answer(compat, chat_body(compat, PAGE_PROMPT.format(files=listing, title="Module weatherline")))
    assert page.startswith("<details>") and "# Module weatherline" in page
    assert "Generated without a language model" in page and "`weatherline/service.py:10-21`" in page
