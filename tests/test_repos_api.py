"""The repository routes over a real uvicorn server: SSE ingest/update, list, show, file view, delete."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingest import ingest
from ingest import pipeline as ingest_pipeline
from ingest.chunking import CHUNKER_VERSION
from rag.embedders import Embedder
from rag.graph_types import GRAPH_VERSION
from rag.store import Store
from tests.support.live_server import LiveServer
from tests.support.repos import commit_all, git, write_files

FILES = {
    "pkg/greeting.py": 'def greet(name: str) -> str:\n    """Say hello."""\n    return f"hello {name}"\n',
    "README.md": "# Greeter\n\nSays hello.\n",
    "notes.txt": "remember to greet politely\n",
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "greeter"
    path.mkdir()
    write_files(path, FILES)
    git(path, "init", "-q", "-b", "main")
    commit_all(path, "initial")
    return path


@pytest.fixture
def repo_id(repo: Path, repolens_home: Path, shared_embedder: Embedder) -> str:
    """The repository already indexed in the server's data dir (cheaply, with the shared vector cache)."""
    return ingest(str(repo), store=Store(repolens_home), embedder=shared_embedder).repo_id


def sse(client: httpx.Client, url: str, body: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """POST and collect every SSE frame as `{"event": name, **data}`; checks the frames are well formed."""
    events: list[dict[str, Any]] = []
    with client.stream("POST", url, json=body or {}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
                assert data["type"] == name
                events.append(data)
    return events


def test_ingest_streams_status_then_done_and_the_repo_is_listed(live_server: LiveServer, repo: Path) -> None:
    with httpx.Client(base_url=live_server.base_url, timeout=120) as client:
        events = sse(client, "/api/repos", {"repo_url": str(repo), "type": "local"})
        *statuses, done = events
        assert statuses and all(event["type"] == "status" for event in statuses)
        assert {event["stage"] for event in statuses} <= {"cloning", "indexing"}
        assert "embedding" in {event["step"] for event in statuses}
        # Lexical first: the searchable milestone comes before the dense phase, with the index state.
        steps = [event["step"] for event in statuses]
        assert steps.index("searchable") < len(steps) - 1 - steps[::-1].index("embedding")
        assert statuses[steps.index("searchable")]["index_state"] == "lexical"
        assert done["type"] == "done" and done["report"]["files"]["added"] == 3
        assert done["repo"]["index_state"] == "complete"
        repo_id = done["repo"]["id"]
        assert repo_id == f"local/{repo.resolve().as_posix().lstrip('/')}"

        listing = client.get("/api/repos").json()
        assert [item["id"] for item in listing["repos"]] == [repo_id]
        assert listing["repos"][0]["chunker_version"] == listing["chunker_version"] == CHUNKER_VERSION
        shown = client.get(f"/api/repos/{repo_id}").json()
        assert shown["commit"] == git(repo, "rev-parse", "HEAD") and shown["languages"]["python"] == 1


def test_update_streams_only_the_changes_and_delete_removes(
    live_server: LiveServer, repo: Path, repo_id: str
) -> None:
    write_files(repo, {"notes.txt": "remember to greet warmly\n"})
    commit_all(repo, "warmer")
    with httpx.Client(base_url=live_server.base_url, timeout=120) as client:
        done = sse(client, f"/api/repos/{repo_id}/update")[-1]
        assert done["type"] == "done"
        assert (done["report"]["files"]["changed"], done["report"]["files"]["unchanged"]) == (1, 2)
        assert done["repo"]["version"] >= 2 and done["repo"]["index_state"] == "complete"

        assert client.delete(f"/api/repos/{repo_id}").json() == {"deleted": repo_id}
        assert client.get(f"/api/repos/{repo_id}").status_code == 404
        assert client.delete(f"/api/repos/{repo_id}").status_code == 404
        assert client.post(f"/api/repos/{repo_id}/update", json={}).status_code == 404


def test_an_update_that_only_rebuilds_the_code_graph_says_what_it_did(
    live_server: LiveServer,
    repo: Path,
    repolens_home: Path,
    shared_embedder: Embedder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with monkeypatch.context() as upgraded_from:  # indexed by the previous extractor; the server is newer
        upgraded_from.setattr(ingest_pipeline, "GRAPH_VERSION", GRAPH_VERSION - 1)
        repo_id = ingest(str(repo), store=Store(repolens_home), embedder=shared_embedder).repo_id
    with httpx.Client(base_url=live_server.base_url, timeout=120) as client:
        *statuses, done = sse(client, f"/api/repos/{repo_id}/update")
    reason = f"graph version {GRAPH_VERSION - 1} -> {GRAPH_VERSION}"
    assert done["type"] == "done" and done["report"]["graph_reason"] == reason
    assert done["report"]["files"]["regraphed"] == 1 and done["report"]["files"]["unchanged"] == 3
    said = {(event["step"], event["message"]) for event in statuses}
    assert ("graph", f"rebuilding the code graph of 1 unchanged files: {reason}") in said


def test_file_view_serves_line_ranges_of_indexed_files_only(live_server: LiveServer, repo_id: str) -> None:
    with httpx.Client(base_url=live_server.base_url) as client:
        view = client.get(
            f"/api/repos/{repo_id}/file", params={"path": "pkg/greeting.py", "start": 2, "end": 3}
        )
        assert view.status_code == 200
        body = view.json()
        assert body["text"] == '    """Say hello."""\n    return f"hello {name}"'
        assert (body["start_line"], body["end_line"], body["total_lines"], body["language"]) == (
            2,
            3,
            3,
            "python",
        )
        whole = client.get(f"/api/repos/{repo_id}/file", params={"path": "README.md"}).json()
        assert whole["text"] == FILES["README.md"].rstrip("\n")

        for bad in ("../../../../etc/passwd", "/etc/passwd", "pkg/../README.md", "pkg//greeting.py", "..\\x"):
            response = client.get(f"/api/repos/{repo_id}/file", params={"path": bad})
            assert response.status_code == 400, bad
            assert "relative to the repository root" in response.json()["detail"]
        assert client.get(f"/api/repos/{repo_id}/file", params={"path": "missing.py"}).status_code == 404
        assert (
            client.get(f"/api/repos/{repo_id}/file", params={"path": "README.md", "start": 0}).status_code
            == 422
        )
        past_end = client.get(f"/api/repos/{repo_id}/file", params={"path": "README.md", "start": 50})
        assert past_end.status_code == 400
        unknown = client.get("/api/repos/github.com/acme/missing/file", params={"path": "README.md"})
        assert unknown.status_code == 404 and "not indexed" in unknown.json()["detail"]


def test_bad_requests_fail_before_streaming_and_ingest_errors_arrive_as_frames(
    live_server: LiveServer,
    repo: Path,
) -> None:
    with httpx.Client(base_url=live_server.base_url, timeout=120) as client:
        bad_url = client.post("/api/repos", json={"repo_url": "ftp://example.invalid/x"})
        assert bad_url.status_code == 400 and "ftp" in bad_url.json()["detail"]
        assert client.post("/api/repos", json={}).status_code == 422
        for body, detected in (
            ({"repo_url": str(repo), "type": "github"}, "local"),
            ({"repo_url": "https://github.com/acme/app", "type": "gitlab"}, "github"),
        ):
            contradicted = client.post("/api/repos", json=body)
            assert contradicted.status_code == 400 and contradicted.json()["code"] == "type_mismatch"
            assert contradicted.json()["detail"].endswith(f"or give --type {detected}")
        missing = client.post("/api/repos", json={"repo_url": str(repo / "nope")})
        assert missing.status_code == 404

        (error,) = [
            e
            for e in sse(client, "/api/repos", {"repo_url": str(repo), "included_files": "*.rs"})
            if e["type"] != "status"
        ]
        assert error["type"] == "error" and error["code"] == "empty"
        assert client.get("/api/repos").json() == {"repos": [], "chunker_version": CHUNKER_VERSION}


def test_deepwiki_style_filters_are_newline_separated_and_percent_encoded(
    live_server: LiveServer,
    repo: Path,
) -> None:
    body = {"repo_url": str(repo), "excluded_files": "README.md\nnotes%2Etxt"}
    with httpx.Client(base_url=live_server.base_url, timeout=120) as client:
        done = sse(client, "/api/repos", body)[-1]
        assert done["type"] == "done" and done["repo"]["file_count"] == 1
        assert done["repo"]["filters"]["exclude_files"] == ["README.md", "notes.txt"]


def test_a_client_that_disconnects_leaves_the_ingest_running(
    live_server: LiveServer, repo: Path, repolens_home: Path
) -> None:
    """Replaces "a client that disconnects cancels the ingest": the job finishes for the next request
    (an explicit cancel still cancels: tests/test_jobs.py)."""
    write_files(
        repo, {f"gen/part_{m}.py": f"def part_{m}(x):\n    return x * {m} + {m * m}\n" for m in range(60)}
    )
    commit_all(repo, "parts")
    with (
        httpx.Client(base_url=live_server.base_url, timeout=120) as client,
        client.stream("POST", "/api/repos", json={"repo_url": str(repo)}) as response,
    ):
        job_id = response.headers["X-RepoLens-Job"]
        for line in response.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:]).get("step") == "embedding":
                break
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = httpx.get(f"{live_server.base_url}/api/jobs/{job_id}").json()["state"]
        if state not in ("queued", "running"):
            break
        time.sleep(0.1)
    assert state == "done"
    assert [record.file_count for record in Store(repolens_home).list()] == [63]


def test_an_app_served_again_streams_an_ingest_to_its_end(
    live_server_factory: Callable[..., LiveServer], repo: Path
) -> None:
    """The stop watch (`api.shutdown`) is per serving: an app served again (the test servers do) runs in a
    new event loop. Before, its one event failed there and every ingest stream ended at once with
    `server_stopping`."""
    from api.app import create_app
    from rag.settings import Settings

    app = create_app(Settings.from_env())
    server = live_server_factory(app_factory=lambda: app)
    for serving in ("first", "again"):
        with httpx.Client(base_url=server.base_url, timeout=120) as client:
            events = sse(client, "/api/repos", {"repo_url": str(repo), "type": "local"})
        assert events[-1]["type"] == "done", (serving, events[-1])
        server.restart()
