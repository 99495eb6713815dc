"""Ingest jobs shared through the data dir's job table (`ingest.job_table`), without Redis.

Each `JobPool` here has its own `JobTable` (its own connection and process lease) on one
REPOLENS_HOME, as each `repolens serve --workers N` process has: what one pool runs, another shows,
joins, watches and cancels; the running limit holds across them; a job whose process died (a real
subprocess, SIGKILLed) is reported `failed`, not `running` forever; and no token reaches the disk.
The real multi-process server is tested in tests/test_serve_workers_jobs.py.

No timing asserts: every wait polls with a deadline.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest import IngestOptions
from ingest.job_table import JobTable
from ingest.jobs import WAITING_FOR_SLOT, IngestJob, JobPool, JobState, StoredJob
from rag.embedders import Embedder
from rag.settings import Settings
from rag.store import Store
from tests.support.git_http_server import GitHttpServer
from tests.support.stored import files_holding
from tests.test_jobs import GatedEmbedder, make_repo, wait_for


@pytest.fixture
def gated(shared_embedder: Embedder) -> GatedEmbedder:
    return GatedEmbedder(shared_embedder)


@pytest.fixture
def pools(repolens_home: Path, gated: GatedEmbedder) -> Iterator[tuple[JobPool, JobPool]]:
    """Two processes' pools on one data dir, one running job each at most (and on the host: 1)."""
    made = [JobPool(Store(repolens_home), lambda: gated, 1, table=JobTable(repolens_home)) for _ in range(2)]
    try:
        yield made[0], made[1]
    finally:
        gated.gate.set()
        for pool in made:
            pool.shutdown()
            pool.table.close()


def options() -> IngestOptions:
    return IngestOptions.from_fields(Settings.from_env())


async def test_a_job_run_by_one_process_is_shown_joined_watched_and_cancelled_by_another(
    tmp_path: Path, pools: tuple[JobPool, JobPool], gated: GatedEmbedder
) -> None:
    a, b = pools
    repo = str(make_repo(tmp_path / "watched", "alpha"))
    job = a.submit(IngestJob.for_ingest(repo, options()))
    assert gated.entered.wait(60)

    seen = b.get(job.id)
    assert isinstance(seen, StoredJob) and seen.state is JobState.RUNNING
    assert seen.to_json()["worker"] == job.worker and seen.to_json()["progress"]["stage"] == "embedding"
    assert [listed.id for listed in b.list()] == [job.id]
    joined = b.submit(IngestJob.for_ingest(repo, options()))
    assert joined.id == job.id and b.running_here() == [], "the other process joins; it runs nothing"

    frames = b.events(joined)
    first = await anext(frames)
    assert first["type"] == "status" and first["step"] == "embedding", first
    assert b.cancel(job.id).id == job.id
    wait_for(job.cancel.is_set, timeout=30)  # the owner saw the flag within its poll
    gated.gate.set()
    rest = [frame async for frame in frames]
    assert rest[-1]["type"] == "error" and rest[-1]["code"] == "cancelled"
    assert joined.state is JobState.CANCELLED and joined.error is not None
    assert job.state is JobState.CANCELLED
    assert b.get(job.id).to_json()["state"] == "cancelled"  # type: ignore[union-attr]


def test_the_running_limit_holds_across_processes_and_a_queued_job_cancels_at_once(
    tmp_path: Path, pools: tuple[JobPool, JobPool], gated: GatedEmbedder
) -> None:
    a, b = pools
    running = a.submit(IngestJob.for_ingest(str(make_repo(tmp_path / "one", "alpha")), options()))
    assert gated.entered.wait(60)
    waiting = b.submit(IngestJob.for_ingest(str(make_repo(tmp_path / "two", "beta")), options()))
    cancelled = b.submit(IngestJob.for_ingest(str(make_repo(tmp_path / "three", "gamma")), options()))
    wait_for(lambda: "note" in a.get(waiting.id).to_json())  # type: ignore[union-attr]
    shown = a.get(waiting.id).to_json()  # type: ignore[union-attr]
    assert shown["state"] == "queued" and shown["note"] == WAITING_FOR_SLOT.format(limit=1)

    # b's pool has one thread, busy waiting for `waiting`'s slot: `cancelled` is queued behind it.
    ended = a.cancel(cancelled.id)
    assert ended.state is JobState.CANCELLED and ended.to_json()["error"]["code"] == "cancelled"
    assert a.submit(IngestJob.for_ingest(str(tmp_path / "three"), options())).id != cancelled.id

    gated.gate.set()
    wait_for(lambda: running.finished and waiting.finished and cancelled.finished)
    assert (running.state, waiting.state, cancelled.state) == (
        JobState.DONE,
        JobState.DONE,
        JobState.CANCELLED,
    )
    assert waiting.started_at is not None and running.finished_at is not None
    assert waiting.started_at >= running.finished_at, "one job at a time on the host"


_CRASHING_OWNER = """
import sys, time
from pathlib import Path
from ingest.job_table import JobTable
table = JobTable(Path(sys.argv[1]))
view = {"id": "0123456789abcdef", "kind": "ingest", "repo_id": "local/crashed", "state": "queued",
        "created_at": time.time(), "started_at": None, "finished_at": None, "progress": None,
        "error": None, "repo": None, "worker": table.worker}
table.create(view["id"], view["repo_id"], view["created_at"], view)
print(table.claim(view["id"], 2, {**view, "state": "running", "started_at": time.time()}), flush=True)
time.sleep(600)
"""


async def test_a_job_whose_process_was_killed_is_reported_failed_not_running(
    repolens_home: Path, pools: tuple[JobPool, JobPool]
) -> None:
    _, b = pools
    command = [sys.executable, "-c", _CRASHING_OWNER, str(repolens_home)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as owner:
        try:
            assert owner.stdout is not None and owner.stdout.readline().strip() == "running"
            job = b.get("0123456789abcdef")
            assert job is not None and job.state is JobState.RUNNING, "a live owner's job runs"
        finally:
            owner.send_signal(signal.SIGKILL)
    job = b.get("0123456789abcdef")
    assert job is not None and job.state is JobState.FAILED
    assert job.error is not None and job.error.code == "ingest_failed"
    assert "stopped before it finished" in job.error.message
    assert [frame async for frame in b.events(job)][-1]["code"] == "ingest_failed"
    assert b.table.get(job.id).view["finished_at"] <= time.time()  # type: ignore[union-attr]
    # The dead process's lease file is gone; the live pools' ones stay (and a new table sweeps).
    leases = {path.stem for path in (repolens_home / "jobs" / "owners").iterdir()}
    assert leases == {pool.table.owner for pool in pools}
    JobTable(repolens_home).close()
    assert {path.stem for path in (repolens_home / "jobs" / "owners").iterdir()} == leases


def test_a_per_request_token_never_reaches_the_job_table(
    repolens_home: Path, pools: tuple[JobPool, JobPool], git_http_server: GitHttpServer, gated: GatedEmbedder
) -> None:
    a, b = pools
    gated.gate.set()
    git_http_server.add_repo("acme/private-jobs", {"app.py": "def secret_sauce():\n    return 1\n"})
    url = git_http_server.url_for("acme/private-jobs")
    with_token = IngestOptions.from_fields(Settings.from_env(), platform="git", token=git_http_server.token)
    in_url = url.replace("http://", f"http://user:{git_http_server.token}@")
    job = a.submit(IngestJob.for_ingest(url, with_token))
    wait_for(lambda: job.finished)
    assert job.state is JobState.DONE, job.error
    again = a.submit(
        IngestJob.for_ingest(in_url, IngestOptions.from_fields(Settings.from_env(), platform="git"))
    )
    wait_for(lambda: again.finished)
    shown = json.dumps([stored.to_json() for stored in b.list()])
    assert git_http_server.token not in shown
    assert files_holding(repolens_home, git_http_server.token.encode()) == []
    assert (repolens_home / "jobs" / "jobs.sqlite3").exists()


def test_a_new_table_sweeps_the_lease_files_of_ended_processes(repolens_home: Path) -> None:
    owners = repolens_home / "jobs" / "owners"
    ended = "import sys, pathlib, ingest.job_table as t; t.JobTable(pathlib.Path(sys.argv[1]))"
    subprocess.run([sys.executable, "-c", ended, str(repolens_home)], check=True)
    assert len(list(owners.iterdir())) == 1, "a process that ends leaves its (unlocked) lease file"
    table = JobTable(repolens_home)
    try:
        assert [path.stem for path in owners.iterdir()] == [table.owner]
    finally:
        table.close()
    assert list(owners.iterdir()) == []
