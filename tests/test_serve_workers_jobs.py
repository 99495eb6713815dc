"""Ingest jobs on a real `repolens serve --workers 2` (uvicorn, no Redis): any worker answers for any job.

The two worker processes share the data dir's job table (`ingest.job_table`). To know which process
answers a request, the test pauses the other one (SIGSTOP, as tests/test_serve_workers.py does):
every connection is then accepted by the one left running. A job is started on one process (the
clone held by the token-guarded git server, so it stays running), then the OTHER process shows it,
streams its progress (HTTP SSE, and the chat's WebSocket ingest-on-first-use), and cancels it; the
process running it stops within its poll. Also: the running limit holds across the processes
(`REPOLENS_INGEST_WORKERS=1`), a job whose process was SIGKILLed is reported `failed` by the
survivor, and no token reaches the data dir.

No timing asserts: every wait polls with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from ingest.jobs import WAITING_FOR_SLOT
from tests.support.cluster import FILES, wait_for
from tests.support.git_http_server import GitHttpServer
from tests.support.live_server import serve_on_a_free_port
from tests.support.stored import files_holding
from tests.test_serve_workers import ServerLog, paused

ENDED = ("done", "failed", "cancelled")
# Only a hung server takes this long to stop (a worker starting under load loads its embedder first).
STOP_CAP_S = 300


@dataclass
class Workers:
    """A `repolens serve --workers 2` and the git server its repositories come from."""

    base: str
    pids: list[int]
    home: Path
    git: GitHttpServer
    log: ServerLog

    def body(self, name: str) -> dict[str, Any]:
        """An ingest request for `name` with its token (the git server demands one)."""
        return {"repo_url": self.git.url_for(name), "type": "git", "token": self.git.token}

    def new_repo(self, name: str) -> dict[str, Any]:
        self.git.add_repo(name, FILES)
        return self.body(name)

    def submit(self, body: dict[str, Any]) -> str:
        """POST /api/repos and stop listening at once (the job goes on): the job id."""
        with httpx.stream("POST", f"{self.base}/api/repos", json=body, timeout=60) as response:
            assert response.status_code == 200, response.read()
            return response.headers["x-repolens-job"]

    def job(self, job_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.base}/api/jobs/{job_id}", timeout=60)
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        return view

    def owner(self, view: dict[str, Any]) -> int:
        """The pid of the worker process running a job (its view's `worker`, `host:pid`)."""
        host, _, pid = view["worker"].rpartition(":")
        assert host == socket.gethostname() and int(pid) in self.pids, view
        return int(pid)

    def other(self, pid: int) -> int:
        return next(other for other in self.pids if other != pid)

    def finished(self, job_id: str) -> dict[str, Any]:
        return wait_for(f"job {job_id} to end", lambda: (view := self.job(job_id))["state"] in ENDED and view)


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    root = tmp_path_factory.mktemp("serve-workers-jobs")
    git = GitHttpServer(root / "git")
    env = {
        **os.environ,
        "REPOLENS_HOME": str(root / "home"),
        "REPOLENS_INGEST_WORKERS": "1",
        "REPOLENS_INGEST_ISOLATION": "thread",  # no ingest process to spawn: the clones are held anyway
    }
    env.pop("REPOLENS_REDIS_URL", None)
    repolens = Path(sys.executable).parent / "repolens"
    command = [str(repolens), "serve", "--workers", "2", "--log-level", "info", "--port"]
    port, server = serve_on_a_free_port(
        lambda port: subprocess.Popen([*command, str(port)], env=env, stderr=subprocess.PIPE, text=True)
    )
    assert server.stderr is not None
    log = ServerLog(server.stderr)
    try:
        pids = log.wait_for_ready_workers(2)
        yield Workers(f"http://127.0.0.1:{port}", pids, root / "home", git, log)
    finally:
        for name in list(git.gates):
            git.release(name.strip("/").removesuffix(".git"))
        server.terminate()
        try:
            server.wait(STOP_CAP_S)
        except subprocess.TimeoutExpired:
            server.kill()  # the assertion below reports it; the test session goes on
            server.wait(STOP_CAP_S)
        log.join()
        git.close()
    assert server.returncode == 0, "\n".join(log.lines[-30:])


def _sse_frames(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield json.loads(line.removeprefix("data: "))


def _running(workers: Workers, name: str, *, on: int) -> tuple[str, dict[str, Any]]:
    """Start an ingest of `name` (its clone held) on worker process `on`: its job id and view."""
    body = workers.new_repo(name)
    workers.git.hold(name)
    with paused(workers.other(on)):
        job_id = workers.submit(body)
    view = wait_for(f"{name} cloning", lambda: workers.git.held_count(name) and workers.job(job_id))
    assert view["state"] == "running" and workers.owner(view) == on, view
    return job_id, view


def test_the_other_process_shows_joins_streams_and_cancels_a_running_job(workers: Workers) -> None:
    owner = workers.pids[0]
    job_id, _ = _running(workers, "acme/watched", on=owner)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(paused(owner))  # resumed on the way out, whatever happens
            # Only the other process can answer now: status, list, join, progress (SSE), cancel.
            for _ in range(3):
                view = workers.job(job_id)
                assert view["state"] == "running" and view["progress"]["stage"] == "cloning", view
            listed = httpx.get(f"{workers.base}/api/jobs", timeout=60).json()["jobs"]
            assert job_id in [job["id"] for job in listed]
            body = workers.body("acme/watched")
            joining = stack.enter_context(
                httpx.stream("POST", f"{workers.base}/api/repos", json=body, timeout=60)
            )
            assert joining.headers["x-repolens-job"] == job_id, "a second request joins the running job"
            watching = stack.enter_context(
                httpx.stream("GET", f"{workers.base}/api/jobs/{job_id}/events", timeout=60)
            )
            assert watching.status_code == 200 and watching.headers["x-repolens-job"] == job_id
            streams = [_sse_frames(joining), _sse_frames(watching)]
            for frames in streams:
                first = next(frames)
                assert first["type"] == "status" and first["stage"] == "cloning", first
            assert httpx.post(f"{workers.base}/api/jobs/{job_id}/cancel", timeout=60).status_code == 200
            os.kill(owner, signal.SIGCONT)  # the owner resumes, sees the cancel and stops
            ends = [list(frames)[-1] for frames in streams]
    finally:
        workers.git.release("acme/watched")
    for last in ends:
        assert last["type"] == "error" and last["code"] == "cancelled", ends
    ended = workers.finished(job_id)
    assert ended["state"] == "cancelled" and ended["error"]["code"] == "cancelled"
    for pid in workers.pids:  # both processes answer, and agree
        with paused(workers.other(pid)):
            assert workers.job(job_id)["state"] == "cancelled"
    answers = [httpx.get(f"{workers.base}/api/jobs/{job_id}", timeout=60) for _ in range(20)]
    assert {(answer.status_code, answer.json()["state"]) for answer in answers} == {(200, "cancelled")}
    with httpx.stream("GET", f"{workers.base}/api/jobs/{job_id}/events", timeout=60) as ended_stream:
        assert [frame["code"] for frame in _sse_frames(ended_stream)] == ["cancelled"], "its last frame only"


def test_the_chat_of_one_process_indexes_as_a_job_the_other_cancels(workers: Workers) -> None:
    chat, canceller = workers.pids
    body = workers.new_repo("acme/socket")
    workers.git.hold("acme/socket")
    request = {**body, "provider": "offline", "messages": [{"role": "user", "content": "greet?"}]}
    try:
        with paused(canceller):
            ws = connect(
                f"{workers.base.replace('http://', 'ws://')}/ws/chat?protocol=events", open_timeout=60
            )
        with ws:
            ws.send(json.dumps(request))
            frames = [json.loads(ws.recv(timeout=60))]
            assert frames[0]["type"] == "status"
            wait_for("the chat's clone", lambda: workers.git.held_count("acme/socket"))
            with paused(chat):
                jobs = httpx.get(f"{workers.base}/api/jobs", timeout=60).json()["jobs"]
                job = next(job for job in jobs if job["repo_id"].endswith("acme/socket"))
                assert job["state"] == "running" and workers.owner(job) == chat
                assert (
                    httpx.post(f"{workers.base}/api/jobs/{job['id']}/cancel", timeout=60).status_code == 200
                )
            while frames[-1]["type"] != "done":
                frames.append(json.loads(ws.recv(timeout=60)))
    finally:
        workers.git.release("acme/socket")
    assert [frame["code"] for frame in frames if frame["type"] == "error"] == ["cancelled"], frames
    assert workers.finished(job["id"])["state"] == "cancelled"


def test_the_chat_of_the_other_process_joins_the_job_and_streams_its_progress(workers: Workers) -> None:
    owner = workers.pids[0]
    job_id, _ = _running(workers, "acme/joined-chat", on=owner)
    request = {**workers.body("acme/joined-chat"), "provider": "offline"}
    request["messages"] = [{"role": "user", "content": "greet?"}]
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(paused(owner))
            ws = stack.enter_context(
                connect(
                    f"{workers.base.replace('http://', 'ws://')}/ws/chat?protocol=events", open_timeout=60
                )
            )
            ws.send(json.dumps(request))
            frames = [json.loads(ws.recv(timeout=60)) for _ in range(2)]
            # its own "fetching" frame, then the running job's latest one, read from the job table
            assert [frame["type"] for frame in frames] == ["status", "status"], frames
            assert "step" not in frames[0] and frames[1]["step"] == "cloning", frames
            assert httpx.post(f"{workers.base}/api/jobs/{job_id}/cancel", timeout=60).status_code == 200
            os.kill(owner, signal.SIGCONT)
            while frames[-1]["type"] != "done":
                frames.append(json.loads(ws.recv(timeout=60)))
    finally:
        workers.git.release("acme/joined-chat")
    assert [frame["code"] for frame in frames if frame["type"] == "error"] == ["cancelled"], frames
    assert workers.finished(job_id)["state"] == "cancelled"


def test_the_running_limit_holds_across_the_processes(workers: Workers) -> None:
    first, second = workers.pids
    running_id, _ = _running(workers, "acme/first", on=first)
    body = workers.new_repo("acme/second")
    workers.git.hold("acme/second")
    try:
        with paused(first):
            waiting_id = workers.submit(body)
            waiting = wait_for("the note", lambda: (view := workers.job(waiting_id)).get("note") and view)
        assert waiting["state"] == "queued" and workers.owner(waiting) == second
        assert waiting["note"] == WAITING_FOR_SLOT.format(limit=1)
        assert httpx.post(f"{workers.base}/api/jobs/{running_id}/cancel", timeout=60).status_code == 200
        assert workers.finished(running_id)["state"] == "cancelled"
        started = wait_for(
            "the second clone", lambda: workers.git.held_count("acme/second") and workers.job(waiting_id)
        )
        assert started["state"] == "running" and "note" not in started
        assert httpx.post(f"{workers.base}/api/jobs/{waiting_id}/cancel", timeout=60).status_code == 200
        # Wait while the clone is still held: released, so small a build could end `done` before the
        # owner's poll (0.25 s) passes the cancel on.
        assert workers.finished(waiting_id)["state"] == "cancelled"
    finally:
        workers.git.release("acme/first")
        workers.git.release("acme/second")


def test_a_job_whose_process_was_killed_is_reported_failed_by_the_other(workers: Workers) -> None:
    """Last in this module: the SIGKILLed worker is replaced by uvicorn's supervisor."""
    victim = workers.pids[1]
    job_id, _ = _running(workers, "acme/crashed", on=victim)
    try:
        os.kill(victim, signal.SIGKILL)
        ended = workers.finished(job_id)
        assert ended["state"] == "failed" and ended["error"]["code"] == "ingest_failed", ended
        assert f":{victim})" in ended["error"]["message"]
        again = workers.submit(workers.body("acme/crashed"))
        assert again != job_id, "the dead job no longer holds its repository"
        assert httpx.post(f"{workers.base}/api/jobs/{again}/cancel", timeout=60).status_code == 200
        assert workers.finished(again)["state"] == "cancelled"
    finally:
        workers.git.release("acme/crashed")
    # uvicorn's supervisor replaces the killed worker; the server stops cleanly once it is ready.
    workers.log.wait_for_ready_workers(3)
    assert files_holding(workers.home, workers.git.token.encode()) == [], "no token on disk"
