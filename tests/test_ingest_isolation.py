"""The server's ingest jobs run in lower-priority worker processes (ingest/isolated.py).

Before (issue 9): jobs ran in threads of the server process, so scanning and chunking took the GIL
from the event loop; during a 2,000-file ingest the first token of 100 concurrent streams came
~1.3 s later (`python -m bench ingest_load`; figures in docs/reliability.md).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from ingest import IngestOptions
from ingest.isolated import ProcessPool
from ingest.job_table import JobTable
from ingest.jobs import IngestJob, JobPool, JobState
from rag.embedders import Embedder
from rag.settings import Settings
from rag.store import Store
from tests.support.git_http_server import GitHttpServer
from tests.support.live_server import serve_on_a_free_port
from tests.support.repos import commit_all, git, write_files

pytest_plugins = ["tests.support.git_http_server"]


def _repo(path: Path, files: int) -> Path:
    path.mkdir()
    write_files(
        path,
        {
            f"pkg/module_{n:04d}.py": f"def function_{n}(value):\n    return value + {n}\n"
            for n in range(files)
        },
    )
    git(path, "init", "-q", "-b", "main")
    commit_all(path, "initial")
    return path


def _no_embedder() -> Embedder:
    raise AssertionError("a process pool's jobs never use the server's embedder")


@pytest.fixture
def pool(repolens_home: Path) -> Iterator[JobPool]:
    settings = Settings.from_env()
    jobs = JobPool(
        Store(repolens_home),
        _no_embedder,
        workers=1,
        processes=ProcessPool(settings),
        table=JobTable(repolens_home),
    )
    yield jobs
    jobs.shutdown()


def _wait(condition, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _options() -> IngestOptions:
    return IngestOptions.from_fields(Settings.from_env())


def test_jobs_run_in_a_lower_priority_process_and_its_logs_reach_the_server(
    pool: JobPool,
    repolens_home: Path,
    git_http_server: GitHttpServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    git_http_server.require_auth = False
    git_http_server.add_repo("acme/isolated", {"app.py": "def isolated():\n    return 1\n"})
    caplog.set_level(logging.DEBUG)
    job = pool.submit(IngestJob.for_ingest(f"{git_http_server.base_url}/acme/isolated.git", _options()))
    _wait(lambda: job.finished)
    assert job.state is JobState.DONE, job.error
    assert job.progress is not None  # progress crossed the pipe
    assert [record.id for record in Store(repolens_home).list()] == [job.repo_id]  # same data dir
    assert pool.processes is not None
    [worker] = pool.processes.pids()
    assert worker != os.getpid()
    expected = min(19, os.getpriority(os.PRIO_PROCESS, 0) + Settings.from_env().ingest_nice)
    assert os.getpriority(os.PRIO_PROCESS, worker) == expected
    forwarded = [
        record for record in caplog.records if record.name == "ingest.git" and record.process == worker
    ]
    assert forwarded, "the worker's git log lines were not forwarded"

    second = pool.submit(IngestJob.for_ingest(str(_repo(repolens_home.parent / "small", 2)), _options()))
    _wait(lambda: second.finished)
    assert second.state is JobState.DONE and pool.processes.pids() == [worker]  # the worker is reused


def test_cancel_reaches_the_worker(pool: JobPool, tmp_path: Path) -> None:
    job = pool.submit(IngestJob.for_ingest(str(_repo(tmp_path / "big", 400)), _options()))
    _wait(lambda: job.progress is not None or job.finished)
    pool.cancel(job.id)
    _wait(lambda: job.finished)
    assert job.state is JobState.CANCELLED and job.final_event()["code"] == "cancelled"


def test_a_killed_worker_fails_its_job_and_the_next_job_gets_a_new_one(
    pool: JobPool, tmp_path: Path, repolens_home: Path
) -> None:
    job = pool.submit(IngestJob.for_ingest(str(_repo(tmp_path / "big", 400)), _options()))
    _wait(lambda: job.progress is not None or job.finished)
    assert pool.processes is not None
    [worker] = pool.processes.pids()
    os.kill(worker, signal.SIGKILL)
    _wait(lambda: job.finished)
    assert job.state is JobState.FAILED
    assert job.final_event()["code"] == "ingest_failed"
    assert "stopped unexpectedly" in job.final_event()["message"]

    small = pool.submit(IngestJob.for_ingest(str(_repo(tmp_path / "small", 2)), _options()))
    _wait(lambda: small.finished)
    assert small.state is JobState.DONE and pool.processes.pids() != [worker]
    assert small.repo_id in {record.id for record in Store(repolens_home).list()}


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_server_stopped_mid_ingest_leaves_no_process_no_leaked_semaphore_and_no_traceback(
    tmp_path: Path, repolens_home: Path
) -> None:
    """Stopped while a client reads the ingest's progress. Before: the worker's multiprocessing
    queues held named semaphores that only the server's exit handlers release, and uvicorn ends a
    SIGTERMed server by re-raising the signal (no exit handlers): "resource_tracker: There appear to
    be 11 leaked semaphore objects"."""
    repo = _repo(tmp_path / "big", 400)
    port, server = serve_on_a_free_port(
        lambda port: subprocess.Popen(
            [str(Path(sys.executable).parent / "repolens"), "serve", "--port", str(port)],
            env={**os.environ, "REPOLENS_ALLOW_LOCAL": "1", "REPOLENS_INGEST_ISOLATION": "process"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _answers(f"{base}/health"))
        with httpx.stream(
            "POST", f"{base}/api/repos", json={"repo_url": str(repo), "type": "local"}, timeout=60
        ) as response:  # a client watching the progress while the server stops
            assert response.status_code == 200
            frames = response.iter_lines()
            next(frames)
            jobs = f"{base}/api/jobs"
            _wait(lambda: any(job["state"] == "running" for job in httpx.get(jobs).json()["jobs"]))
            tree = psutil.Process(server.pid).children(recursive=True)
            assert tree, "the ingest worker process"
            server.send_signal(signal.SIGTERM)
            last = [line for line in frames if line.startswith("data: ")][-1]
        output = server.communicate(timeout=60)[0].decode()
    finally:
        server.kill()
    assert "leaked" not in output and "resource_tracker" not in output, output
    # Before: uvicorn cancelled the open stream after its graceful timeout and logged a CancelledError
    # traceback; now the stream ends at once with a frame that says why.
    assert json.loads(last.removeprefix("data: "))["code"] == "server_stopping"
    assert "Traceback" not in output and "Cancel" not in output, output
    _wait(lambda: not any(_running(process) for process in tree), timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
