"""Ingest jobs on the Redis queue, with real engines: redis-server, two `repolens serve` replicas
(real uvicorn) and two `repolens worker` processes on one shared REPOLENS_HOME, cloning from the
token-guarded git server (tests/support/cluster.py: isolated from every other cluster on the
machine). A job submitted on replica A is watched and cancelled from replica B
(HTTP and WebSocket), a repository is never ingested twice at once, a SIGKILLed worker's job is
retried by the other worker while the previous version keeps serving, and no token reaches Redis.

No timing asserts: every wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from arq.constants import in_progress_key_prefix, job_key_prefix
from websockets.asyncio.client import connect

from ingest.jobs import IngestJob, JobState
from ingest.pipeline import IngestOptions
from ingest.redis_queue import QUEUE_NAME, IngestWorker, RedisJobQueue, _Stop, job_key, repo_lock_key
from rag.errors import ConfigError
from rag.settings import Settings
from rag.store import Store
from tests.support.cluster import (
    FILES,
    REPOLENS,
    Cluster,
    cluster_env,
    running_cluster,
    wait_for,
)
from tests.support.live_server import owns_listener, serve_on_a_free_port
from tests.support.redis_server import RedisServer


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("queue-cluster")) as cluster:
        yield cluster


def _sse_frames(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield json.loads(line.removeprefix("data: "))


def test_a_job_submitted_on_one_replica_is_watched_and_cancelled_from_the_other(cluster: Cluster) -> None:
    a, b = cluster.apis
    cluster.git.add_repo("acme/watched", FILES)
    cluster.git.require_auth = False
    cluster.git.hold("acme/watched")
    body = {"repo_url": cluster.git.url_for("acme/watched"), "type": "git"}
    try:
        job_id = cluster.submit(a, body)
        running = cluster.cloning(b, "acme/watched", job_id)
        assert running["state"] == "running" and running["worker"]
        assert job_id in {job["id"] for job in httpx.get(f"{b}/api/jobs", timeout=10).json()["jobs"]}
        lock = cluster.redis.get("repolens:repo:" + running["repo_id"] + ":lock")
        assert lock, "the worker holds the repository's lock while it builds"

        # The same repository asked on replica B joins the running job (one ingest per repository),
        # and B's stream shows its progress, then the cancel sent to B.
        with httpx.stream("POST", f"{b}/api/repos", json=body, timeout=30) as response:
            assert response.headers["x-repolens-job"] == job_id
            frames = _sse_frames(response)
            first = next(frames)
            assert first["type"] == "status" and first["stage"] == "cloning"
            assert httpx.post(f"{b}/api/jobs/{job_id}/cancel", timeout=10).status_code == 200
            rest = list(frames)
    finally:
        cluster.git.release("acme/watched")
    assert rest[-1]["type"] == "error" and rest[-1]["code"] == "cancelled"
    ended = cluster.finished(a, job_id)
    assert ended["state"] == "cancelled" and ended["error"]["code"] == "cancelled"
    assert httpx.get(f"{a}/api/repos", timeout=10).json()["repos"] == [], "a cancelled job commits nothing"
    assert not cluster.redis.exists("repolens:repo:" + running["repo_id"] + ":job"), "the slot is freed"
    assert not cluster.redis.exists("repolens:repo:" + running["repo_id"] + ":lock"), "the lock is released"


async def test_the_chat_on_one_replica_queues_its_ingest_and_a_cancel_from_the_other_ends_it(
    cluster: Cluster,
) -> None:
    a, b = cluster.apis
    cluster.git.add_repo("acme/socket", FILES)
    cluster.git.require_auth = False
    cluster.git.hold("acme/socket")
    url = cluster.git.url_for("acme/socket")
    try:
        async with connect(a.replace("http://", "ws://") + "/ws/chat?protocol=events") as ws:
            request = {"repo_url": url, "type": "git", "messages": [{"role": "user", "content": "greet?"}]}
            await ws.send(json.dumps(request))
            frames = [json.loads(await ws.recv())]
            assert frames[0]["type"] == "status"
            # The ingest-on-first-use is a job on the queue, seen and cancelled from replica B.
            job = wait_for(
                "the chat's ingest job on replica B",
                lambda: [
                    job
                    for job in httpx.get(f"{b}/api/jobs", timeout=10).json()["jobs"]
                    if job["repo_id"].endswith("acme/socket")
                ],
            )[0]
            wait_for("a worker to clone", lambda: cluster.git.held_count("acme/socket"))
            assert httpx.post(f"{b}/api/jobs/{job['id']}/cancel", timeout=10).status_code == 200
            while frames[-1]["type"] != "done":
                frames.append(json.loads(await ws.recv()))
    finally:
        cluster.git.release("acme/socket")
    assert [frame["code"] for frame in frames if frame["type"] == "error"] == ["cancelled"]
    assert cluster.finished(a, job["id"])["state"] == "cancelled"


def _all_redis_text(client: redis.Redis) -> bytes:
    """Every key and value in Redis, as bytes (strings, hashes, streams, sorted sets, lists)."""
    dump = []
    for key in client.scan_iter(count=1000):
        dump.append(key)
        kind = client.type(key)
        if kind == b"string":
            dump.append(client.get(key) or b"")
        elif kind == b"hash":
            dump.extend(b"%s=%s" % item for item in client.hgetall(key).items())
        elif kind == b"stream":
            for _, fields in client.xrange(key):
                dump.extend(b"%s=%s" % item for item in fields.items())
        elif kind == b"zset":
            dump.extend(client.zrange(key, 0, -1))
        elif kind == b"list":
            dump.extend(client.lrange(key, 0, -1))
        elif kind == b"set":
            dump.extend(client.smembers(key))
    return b"\n".join(dump)


def test_a_private_repository_token_never_reaches_redis_in_clear(cluster: Cluster) -> None:
    a, b = cluster.apis
    cluster.git.add_repo("acme/private", FILES)
    cluster.git.require_auth = True
    token = cluster.git.token
    spellings = [token.encode(), base64.b64encode(token.encode())]
    users = ("x-access-token", "oauth2", "git")
    spellings += [base64.b64encode(f"{user}:{token}".encode()) for user in users]
    try:
        cluster.git.hold("acme/private")
        body = {"repo_url": cluster.git.url_for("acme/private"), "type": "git", "token": token}
        job_id = cluster.submit(a, body)
        wait_for("a worker to clone", lambda: cluster.git.held_count("acme/private"))
        while_queued = _all_redis_text(cluster.redis)
        cluster.git.release("acme/private")
        done = cluster.finished(b, job_id)
        assert done["state"] == "done", done
        # A token pasted into the URL is taken out of the stored location and sealed too.
        pasted = cluster.git.url_for("acme/private").replace("http://", f"http://x-access-token:{token}@")
        second = cluster.submit(b, {"repo_url": pasted, "type": "git", "reindex": True})
        assert cluster.finished(a, second)["state"] == "done"
    finally:
        cluster.git.release("acme/private")
        cluster.git.require_auth = False
    after = _all_redis_text(cluster.redis)
    assert b"sealed=" in while_queued, "the token travels sealed while the job runs"
    for text in (while_queued, after):
        for spelling in spellings:
            assert spelling not in text
    assert b"sealed=" not in after, "the sealed token is deleted when the job ends"
    listed = httpx.get(f"{a}/api/repos", timeout=10).json()["repos"]
    assert any(repo["id"].endswith("acme/private") and repo["private"] for repo in listed)


def test_a_sigkilled_worker_is_retried_by_the_other_and_the_previous_version_keeps_serving(
    cluster: Cluster,
) -> None:
    repo_id, second_sha, retried = cluster.sigkill_during_update("acme/killed")
    assert retried["state"] == "done", retried
    assert retried["attempt"] == 2 and int(retried["worker"].rpartition(":")[2]) in cluster.workers
    assert retried["repo"]["commit"] == second_sha
    assert httpx.get(f"{cluster.apis[0]}/api/repos/{repo_id}", timeout=10).json()["commit"] == second_sha
    assert not list(cluster.home.glob("repos/*/build-*")), "no half-built version is left behind"


def test_a_sigterm_hands_the_running_job_back_to_the_queue_for_another_worker(cluster: Cluster) -> None:
    a, b = cluster.apis
    cluster.git.require_auth = False
    cluster.git.add_repo("acme/stopped", FILES)
    cluster.git.hold("acme/stopped")
    try:
        job_id = cluster.submit(a, {"repo_url": cluster.git.url_for("acme/stopped"), "type": "git"})
        running = cluster.cloning(b, "acme/stopped", job_id)
        stopped = cluster.worker_of(running)
        stopped.send_signal(signal.SIGTERM)
        assert stopped.wait(30) == 0, "the worker stops cleanly"
        retried = wait_for(
            "the job's next run", lambda: (job := cluster.job(a, job_id)).get("attempt") == 2 and job
        )
    finally:
        cluster.git.release("acme/stopped")
    assert retried["worker"] != running["worker"]
    assert cluster.finished(b, job_id)["state"] == "done"
    cluster.start_worker()


def test_repolens_worker_check_reports_a_live_worker_and_needs_the_redis_url(cluster: Cluster) -> None:
    check = subprocess.run([REPOLENS, "worker", "--check"], env=cluster.env, capture_output=True, timeout=60)
    assert check.returncode == 0, check.stderr
    env = {k: v for k, v in cluster.env.items() if k != "REPOLENS_REDIS_URL"}
    missing = subprocess.run([REPOLENS, "worker"], env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "REPOLENS_REDIS_URL" in missing.stderr


# In-process checks of the queue itself (no worker needed), on their own Redis database.


def _queue(redis_url: str, **env: str) -> RedisJobQueue:
    return RedisJobQueue(Settings.from_env({"REPOLENS_REDIS_URL": redis_url, **env}))


@pytest.fixture
def queue_url(redis_server: RedisServer) -> str:
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, db=1)
    client.flushdb()
    client.close()
    return f"redis://127.0.0.1:{redis_server.port}/1"


def test_a_per_request_token_needs_the_queue_key(queue_url: str, tmp_path: Path) -> None:
    queue = _queue(queue_url)
    job = IngestJob.for_ingest("https://github.com/acme/demo", IngestOptions(token="ghp_secret_token_1234"))
    with pytest.raises(ConfigError, match="REPOLENS_QUEUE_KEY"):
        queue.submit(job)
    queue.shutdown()


def test_a_queued_job_cancels_at_once_and_its_repository_can_be_queued_again(queue_url: str) -> None:
    queue = _queue(queue_url)
    try:

        def demo() -> IngestJob:
            return IngestJob.for_ingest("https://github.com/acme/demo", IngestOptions())

        job = queue.submit(demo())
        assert queue.submit(demo()).id == job.id
        assert [listed.id for listed in queue.list()] == [job.id]
        cancelled = queue.cancel(job.id)
        assert cancelled.state is JobState.CANCELLED and cancelled.to_json()["error"]["code"] == "cancelled"
        assert queue.submit(demo()).id != job.id
        client = redis.Redis.from_url(queue_url)
        assert client.hget(job_key(job.id), "final")
        waiting = queue.submit(demo())
        assert client.pttl(job_key_prefix + waiting.id) > 6 * 24 * 3600 * 1000, (
            "a job waits days for a worker"
        )
        client.close()
    finally:
        queue.shutdown()


def test_an_unreachable_redis_is_a_clear_queue_unavailable_error(tmp_path: Path) -> None:
    from tests.support.git_http_server import closed_port

    queue = _queue(f"redis://127.0.0.1:{closed_port()}/0")
    with pytest.raises(Exception) as raised:
        queue.list()
    assert getattr(raised.value, "code", None) == "queue_unavailable"
    queue.shutdown()


async def test_a_watcher_sees_the_queued_frame_then_the_cancel_and_the_job_ends_cancelled(
    queue_url: str,
) -> None:
    queue = _queue(queue_url)
    try:
        job = queue.submit(IngestJob.for_ingest("https://github.com/acme/watch", IngestOptions()))
        events = queue.events(job)
        first = await anext(events)
        assert (first["type"], first["stage"]) == ("status", "queued")
        queue.cancel(job.id)
        final = await anext(events)
        assert (final["type"], final["code"]) == ("error", "cancelled")
        assert job.state is JobState.CANCELLED and job.error is not None
        with pytest.raises(StopAsyncIteration):
            await anext(events)
    finally:
        queue.shutdown()


def test_a_job_the_queue_lost_is_replaced_by_the_next_request_for_its_repository(queue_url: str) -> None:
    queue = _queue(queue_url)
    client = redis.Redis.from_url(queue_url, decode_responses=True)
    try:
        lost = queue.submit(IngestJob.for_ingest("https://github.com/acme/lost", IngestOptions()))
        view = json.loads(client.hget(job_key(lost.id), "view") or "{}")
        client.hset(job_key(lost.id), "view", json.dumps({**view, "created_at": view["created_at"] - 60}))
        assert (
            queue.submit(IngestJob.for_ingest("https://github.com/acme/lost", IngestOptions())).id == lost.id
        )
        client.zrem(QUEUE_NAME, lost.id)  # arq lost it (a flushed key, a failure outside RepoLens' code)
        fresh = queue.submit(IngestJob.for_ingest("https://github.com/acme/lost", IngestOptions()))
        assert fresh.id != lost.id
        ended = queue.get(lost.id)
        assert ended is not None and ended.state is JobState.FAILED and ended.error is not None
        assert "lost by the queue" in ended.error.message
    finally:
        client.close()
        queue.shutdown()


async def test_a_worker_whose_lease_ran_out_stops_its_build_and_reports_nothing(
    queue_url: str, tmp_path: Path
) -> None:
    settings = Settings.from_env({"REPOLENS_REDIS_URL": queue_url, "REPOLENS_QUEUE_LEASE_S": "1"})
    worker = IngestWorker(settings, Store(tmp_path / "home"), jobs=1)
    lock = worker.records.redis.lock(repo_lock_key("github.com/acme/slow"), timeout=1, thread_local=False)
    assert lock.acquire(blocking=False)
    worker.records.redis.delete(repo_lock_key("github.com/acme/slow"))  # expired while the worker stalled
    stop = _Stop()
    await asyncio.wait_for(worker._heartbeat("arq:in-progress:some-job", lock, stop), 10)
    assert stop.is_set() and stop.lost_lease

    # The lock is still this run's, but another run took the job over (a later attempt): stop too.
    assert lock.acquire(blocking=False)
    view = {"id": "job-1", "state": "running", "worker": "another-host:1", "attempt": 2}
    worker.records.redis.hset(job_key("job-1"), "view", json.dumps(view))
    taken = _Stop()
    await asyncio.wait_for(worker._heartbeat("arq:in-progress:job-1", lock, taken, attempt=1), 10)
    assert taken.is_set() and taken.lost_lease
    worker.records.close()


def test_a_worker_loads_its_embedder_before_it_takes_jobs(cluster: Cluster) -> None:
    for log in sorted((cluster.root / "logs").glob("worker-*.log")):
        lines = wait_for(
            f"{log.name} ready", lambda log=log: "taking jobs" in log.read_text() and log.read_text()
        )
        loading, ready = lines.index("loading the embedder"), lines.index("embedder minilm")
        assert loading < ready < lines.index("taking jobs"), lines


def test_a_worker_whose_embedder_is_broken_stops_at_start_with_the_reason(
    queue_url: str, tmp_path: Path
) -> None:
    env = cluster_env(queue_url, REPOLENS_HOME=str(tmp_path), REPOLENS_EMBEDDING_MODEL="no-such-model")
    started = subprocess.run([REPOLENS, "worker"], env=env, capture_output=True, text=True, timeout=120)
    assert started.returncode != 0
    assert "unknown local embedding model 'no-such-model'" in started.stderr
    assert "taking jobs" not in started.stderr


async def test_a_job_whose_worker_died_shows_queued_with_the_reason_and_cancels_at_once(
    queue_url: str,
) -> None:
    queue = _queue(queue_url)
    client = redis.Redis.from_url(queue_url, decode_responses=True)
    try:
        job = queue.submit(IngestJob.for_ingest("https://github.com/acme/orphan", IngestOptions()))
        view = json.loads(client.hget(job_key(job.id), "view") or "{}")
        # A worker took it, then was SIGKILLed: the view still says running, and its lease ran out.
        running = {**view, "state": "running", "worker": "lost-host:4242", "attempt": 1}
        client.hset(job_key(job.id), "view", json.dumps(running))
        for seen in (queue.get(job.id), *[listed for listed in queue.list() if listed.id == job.id]):
            assert seen is not None
            shown = seen.to_json()
            assert shown["state"] == "queued" and "lost-host:4242" in shown["note"], shown
            assert "run 2 of 3" in shown["note"]
        events = queue.events(job)
        await anext(events)  # the latest frame so far
        stalled = await asyncio.wait_for(anext(events), 30)
        assert (stalled["type"], stalled["stage"]) == ("status", "queued") and "stopped" in stalled["message"]

        # While a worker holds it (its in-progress key), it is running as stored.
        client.set(in_progress_key_prefix + job.id, "1", px=60_000)
        held = queue.get(job.id)
        assert held is not None and held.to_json()["state"] == "running"
        client.delete(in_progress_key_prefix + job.id)

        # No worker will ever report its end: a cancel ends it here and now.
        cancelled = queue.cancel(job.id)
        assert cancelled.state is JobState.CANCELLED, cancelled.to_json()
        await events.aclose()
    finally:
        client.close()
        queue.shutdown()


def test_a_worker_whose_redis_is_unreachable_stops_at_once_with_queue_unavailable(tmp_path: Path) -> None:
    from tests.support.git_http_server import closed_port

    env = cluster_env(f"redis://127.0.0.1:{closed_port()}/0", REPOLENS_HOME=str(tmp_path))
    started = subprocess.run([REPOLENS, "worker"], env=env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 2, started.stderr
    assert "the job queue (REPOLENS_REDIS_URL) is unavailable" in started.stderr
    assert "loading the embedder" not in started.stderr and "unexpected" not in started.stderr


def test_a_test_server_counts_as_started_only_on_a_port_its_own_process_holds() -> None:
    """The clusters' isolation: a server that lost its port to another process (which then answers on
    it) is never taken for ours; the helper starts it again on another port."""
    serve = "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); "
    serve += "s.listen(); time.sleep(60)"
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        taken = foreign.getsockname()[1]
        assert owns_listener(os.getpid(), taken)
        tried: list[int] = []

        def start(port: int) -> subprocess.Popen[bytes]:
            tried.append(port)  # the first start binds the taken port, as if another process won the race
            return subprocess.Popen([sys.executable, "-c", serve, str(taken if len(tried) == 1 else port)])

        port, process = serve_on_a_free_port(start)
        try:
            assert len(tried) == 2 and port == tried[1] != taken
            assert owns_listener(process.pid, port) and not owns_listener(process.pid, taken)
        finally:
            process.kill()
            process.wait()
