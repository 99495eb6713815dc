"""Ingest jobs: a bounded pool, one job per repository, jobs outlive their clients, status over HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
import pytest

from ingest import IngestOptions
from ingest.job_table import JobTable
from ingest.jobs import IngestJob, JobPool, JobState
from rag.embedders import Embedder
from rag.embedders.base import Progress
from rag.settings import Settings
from rag.store import Store
from tests.support.live_server import LiveServer
from tests.support.repos import commit_all, git, write_files


class GatedEmbedder:
    """The real embedder, held at its first batch until `gate` opens (a job that stays running)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name, self.dimension, self.max_tokens = inner.name, inner.dimension, inner.max_tokens
        self.gate = threading.Event()
        self.entered = threading.Event()

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def embed_documents(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(60)
        return self.inner.embed_documents(texts, progress)

    def embed_query(self, text: str) -> np.ndarray:
        return self.inner.embed_query(text)


def make_repo(path: Path, marker: str) -> Path:
    path.mkdir()
    write_files(path, {"app.py": f"def {marker}():\n    return '{marker}'\n"})
    git(path, "init", "-q", "-b", "main")
    commit_all(path, "initial")
    return path


def wait_for(condition, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def gated(shared_embedder: Embedder) -> GatedEmbedder:
    return GatedEmbedder(shared_embedder)


def test_one_worker_runs_one_job_at_a_time_and_joins_per_repository(
    tmp_path: Path, repolens_home: Path, gated: GatedEmbedder
) -> None:
    pool = JobPool(Store(repolens_home), lambda: gated, workers=1, table=JobTable(repolens_home))
    options = IngestOptions.from_fields(Settings.from_env())
    first_repo, second_repo = make_repo(tmp_path / "one", "alpha"), make_repo(tmp_path / "two", "beta")
    try:
        first = pool.submit(IngestJob.for_ingest(str(first_repo), options))
        assert pool.submit(IngestJob.for_ingest(str(first_repo), options)) is first  # joined
        second = pool.submit(IngestJob.for_ingest(str(second_repo), options))
        assert gated.entered.wait(60)
        assert first.state is JobState.RUNNING and second.state is JobState.QUEUED
        assert len(pool.list()) == 2
        gated.gate.set()
        wait_for(lambda: first.finished and second.finished)
        assert first.state is second.state is JobState.DONE
        assert {record.id for record in Store(repolens_home).list()} == {first.repo_id, second.repo_id}
        assert first.to_json()["repo"]["id"] == first.repo_id and "token" not in str(first.to_json())
    finally:
        gated.gate.set()
        pool.shutdown()


def test_cancel_stops_a_running_and_a_queued_job(
    tmp_path: Path, repolens_home: Path, gated: GatedEmbedder
) -> None:
    pool = JobPool(Store(repolens_home), lambda: gated, workers=1, table=JobTable(repolens_home))
    options = IngestOptions.from_fields(Settings.from_env())
    try:
        running = pool.submit(IngestJob.for_ingest(str(make_repo(tmp_path / "one", "alpha")), options))
        queued = pool.submit(IngestJob.for_ingest(str(make_repo(tmp_path / "two", "beta")), options))
        assert gated.entered.wait(60)
        pool.cancel(queued.id)
        pool.cancel(running.id)
        gated.gate.set()
        wait_for(lambda: running.finished and queued.finished)
        assert running.state is queued.state is JobState.CANCELLED
        assert running.final_event()["code"] == "cancelled" and queued.error is not None
        # lexical-first: the searchable version committed before embedding stays; its dense phase stopped
        assert [record.index_state for record in Store(repolens_home).list()] == ["lexical"]
    finally:
        gated.gate.set()
        pool.shutdown()


def test_pool_size_is_a_setting() -> None:
    assert Settings.from_env({"REPOLENS_INGEST_WORKERS": "3"}).ingest_workers == 3
    assert Settings.from_env({}).ingest_workers == 2
    assert Settings.from_env({}).ingest_isolation == "process"


def sse_types(response: httpx.Response) -> list[str]:
    return [line[len("event: ") :] for line in response.text.splitlines() if line.startswith("event: ")]


def test_two_requests_for_one_repository_share_one_job(live_server: LiveServer, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "shared", "gamma")
    results: list[httpx.Response] = []

    def post() -> None:
        results.append(
            httpx.post(f"{live_server.base_url}/api/repos", json={"repo_url": str(repo)}, timeout=120)
        )

    threads = [threading.Thread(target=post) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert [sse_types(response)[-1] for response in results] == ["done", "done"]
    jobs = httpx.get(f"{live_server.base_url}/api/jobs").json()["jobs"]
    ids = {response.headers["X-RepoLens-Job"] for response in results}
    # both joined one job, or the second arrived after the first finished (an update with nothing new)
    assert len(ids) == len(jobs) and {job["state"] for job in jobs} == {"done"}
    shown = httpx.get(f"{live_server.base_url}/api/jobs/{jobs[0]['id']}").json()
    assert shown["repo_id"] == jobs[0]["repo_id"] and shown["progress"]["stage"]


def test_unknown_job_is_404(live_server: LiveServer) -> None:
    assert httpx.get(f"{live_server.base_url}/api/jobs/nope").status_code == 404
    assert httpx.post(f"{live_server.base_url}/api/jobs/nope/cancel").status_code == 404
    assert httpx.get(f"{live_server.base_url}/api/jobs/nope/events").status_code == 404


def test_chat_ingest_on_first_use_is_a_job(live_server: LiveServer, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "chatted", "delta")
    body = {
        "repo_url": str(repo),
        "type": "local",
        "protocol": "events",
        "provider": "offline",
        "messages": [{"role": "user", "content": "what does delta return?"}],
    }
    response = httpx.post(f"{live_server.base_url}/chat/completions/stream", json=body, timeout=120)
    assert response.status_code == 200 and sse_types(response)[-1] == "done"
    # The answer starts at the searchable milestone; the job's dense phase may still be running.
    deadline = time.monotonic() + 120
    while True:
        jobs = httpx.get(f"{live_server.base_url}/api/jobs").json()["jobs"]
        if jobs and jobs[0]["state"] != "running" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [(job["kind"], job["state"]) for job in jobs] == [("ingest", "done")]
    assert jobs[0]["repo_id"].endswith("chatted")
