"""The wiki over HTTP on a real server: generate (SSE progress), read, export; deepwiki's client sees it."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from urllib.parse import quote, urlencode

import httpx
import pytest

from ingest import ingest
from rag.embedders import Embedder
from rag.wiki import freshness
from rag.wiki.export import wiki_from_json
from tests.support.chat import settings_for, sse_events
from tests.support.live_server import LiveServer
from tests.support.repos import make_fixture_repo

TIMEOUT = httpx.Timeout(30.0)


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, shared_embedder: Embedder
) -> Iterator[tuple[LiveServer, str]]:
    from api.app import create_app

    root = tmp_path_factory.mktemp("wiki-api")
    app = create_app(settings_for(root / "home"))
    app.state.services.__dict__["embedder"] = shared_embedder
    report = ingest(
        str(make_fixture_repo(root / "weatherline")), store=app.state.services.store, embedder=shared_embedder
    )
    server = LiveServer(lambda: app).start()
    yield server, report.repo_id
    server.stop()


def wiki_url(served: tuple[LiveServer, str], suffix: str = "") -> str:
    server, repo_id = served
    return f"{server.base_url}/api/repos/{quote(repo_id, safe='/')}/wiki{suffix}"


def test_generate_read_and_export(served: tuple[LiveServer, str]) -> None:
    server, repo_id = served
    assert httpx.get(wiki_url(served), timeout=TIMEOUT).status_code == 404
    assert httpx.get(wiki_url(served, "s"), timeout=TIMEOUT).json() == {"wikis": []}  # /wikis: no 404
    response = httpx.post(wiki_url(served), json={"language": "en"}, timeout=TIMEOUT)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[0]["type"] == "status" and events[-1]["type"] == "done"
    structure = next(event for event in events if event.get("event") == "structure")
    pages = [event for event in events if event.get("event") == "page"]
    assert structure["mode"] == "offline" and len(pages) == structure["total"] >= 4
    assert events[-1]["wiki"]["regenerated"] == structure["total"]

    wiki = httpx.get(wiki_url(served), timeout=TIMEOUT).json()
    assert wiki["repo_id"] == repo_id and wiki["stale_pages"] == []
    [listed] = httpx.get(wiki_url(served, "s"), timeout=TIMEOUT).json()["wikis"]
    assert (listed["language"], listed["mode"], listed["pages"]) == ("en", "offline", structure["total"])
    assert "overview" in wiki["pages"] and wiki["structure"]["sections"]
    assert wiki["pages"]["module-weatherline"]["citations"][0]["url"].startswith("/api/repos/")

    again = sse_events(httpx.post(wiki_url(served), json={}, timeout=TIMEOUT).text)
    assert again[-1]["wiki"]["reused"] == structure["total"] and again[-1]["wiki"]["regenerated"] == 0

    exported = httpx.get(wiki_url(served, "/export?format=json"), timeout=TIMEOUT)
    assert exported.headers["content-disposition"].startswith("attachment; filename=")
    assert wiki_from_json(exported.text).pages.keys() == wiki["pages"].keys()
    markdown = httpx.get(wiki_url(served, "/export?format=md"), timeout=TIMEOUT)
    assert markdown.headers["content-type"].startswith("text/markdown") and "## Overview" in markdown.text
    archive = httpx.get(wiki_url(served, "/export?format=zip"), timeout=TIMEOUT)
    assert "index.md" in zipfile.ZipFile(io.BytesIO(archive.content)).namelist()

    # deepwiki-open's front end, asking for the same folder, is given the server's wiki.
    query = urlencode({"owner": "local", "repo": "weatherline", "repo_type": "local", "language": "en"})
    cached = httpx.get(f"{server.base_url}/api/wiki_cache?{query}", timeout=TIMEOUT).json()
    assert cached["wiki_structure"]["title"] == wiki["structure"]["title"]
    assert cached["generated_pages"]["overview"]["content"] == wiki["pages"]["overview"]["content"]
    assert [page["id"] for page in cached["wiki_structure"]["pages"]] == list(cached["generated_pages"])
    projects = httpx.get(f"{server.base_url}/api/processed_projects", timeout=TIMEOUT).json()
    assert any(p["name"] == "local/weatherline" and p["repo_type"] == "local" for p in projects)


def test_after_an_upgrade_of_the_generator_the_wiki_says_which_pages_are_stale_and_why(
    served: tuple[LiveServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    httpx.post(wiki_url(served), json={}, timeout=TIMEOUT)  # a wiki of this RepoLens (or the one there)
    assert httpx.get(wiki_url(served), timeout=TIMEOUT).json()["stale_pages"] == []
    monkeypatch.setattr(freshness, "OFFLINE_GENERATOR_VERSION", freshness.OFFLINE_GENERATOR_VERSION + 1)
    reason = f"the wiki generator changed (version {freshness.OFFLINE_GENERATOR_VERSION - 1} -> "
    reason += f"{freshness.OFFLINE_GENERATOR_VERSION})"
    wiki = httpx.get(wiki_url(served), timeout=TIMEOUT).json()
    assert sorted(wiki["stale_pages"]) == sorted(wiki["pages"])  # what the Wiki tab counts as out of date
    assert wiki["stale_reasons"] == dict.fromkeys(wiki["stale_pages"], reason)

    events = sse_events(httpx.post(wiki_url(served), json={}, timeout=TIMEOUT).text)
    pages = [event for event in events if event.get("event") == "page"]
    assert pages and all(not event["reused"] and event["reason"] == reason for event in pages)
    assert (
        events[-1]["wiki"]["reasons"] == {reason: len(pages)} == {reason: events[-1]["wiki"]["regenerated"]}
    )
    assert httpx.get(wiki_url(served), timeout=TIMEOUT).json()["stale_reasons"] == {}


def test_wiki_errors_are_clear(served: tuple[LiveServer, str]) -> None:
    server, _ = served
    unknown = httpx.post(
        f"{server.base_url}/api/repos/github.com/nobody/nothing/wiki", json={}, timeout=TIMEOUT
    )
    assert unknown.status_code == 404 and "not indexed" in unknown.json()["detail"]
    language = httpx.post(wiki_url(served), json={"language": "xx"}, timeout=TIMEOUT)
    assert language.status_code == 400 and "unknown language" in language.json()["detail"]
    concurrency = httpx.post(wiki_url(served), json={"concurrency": 99}, timeout=TIMEOUT)
    assert concurrency.status_code == 422
    missing = httpx.get(wiki_url(served) + "?language=ja", timeout=TIMEOUT)
    assert missing.status_code == 404
