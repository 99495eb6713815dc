"""A RepoLens deployment made of real processes, for the multi-replica tests and the queue bench.

`running_cluster(root, git, ...)` starts a redis-server of its own, two `repolens worker` and two
`repolens serve` processes (real uvicorn) and stops them all at the end; `Cluster` submits, watches
and kills through them. Every cluster is isolated from every other one on the machine, including
the clusters of test sessions that run at the same time in other checkouts:

- its own redis-server (so its workers only ever see its own jobs), its own REPOLENS_HOME (one
  shared by its processes, or one per process with `separate_homes=True`, as on separate machines);
- every server it starts listens on a port the kernel picked, and counts as started only once *its*
  process holds the listening socket (`tests.support.live_server.serve_on_a_free_port`): another
  process may take the port between the pick and the bind, and a health check on that port then
  answers from the winner, another cluster with other repositories. (That was the cause of "a
  cancelled job commits nothing" failing under load: another session's replica.)

No timing asserts: every wait polls with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import redis

from tests.support.git_http_server import GitHttpServer
from tests.support.live_server import serve_on_a_free_port
from tests.support.redis_server import RedisServer, start_redis, stop_redis

T = TypeVar("T")
REPOLENS = str(Path(sys.executable).parent / "repolens")
DEADLINE_S = 40.0
FILES = {"README.md": "# demo\n", "pkg/greeting.py": "def greet(name):\n    return f'hello {name}'\n"}
_SHARED_CACHE = Path(__file__).resolve().parent.parent.parent / "build" / "test-cache"


def wait_for(what: str, probe: Callable[[], T | None], deadline_s: float = DEADLINE_S) -> T:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Cluster:
    """API replicas and workers sharing one Redis and one store (a REPOLENS_HOME, or the database)."""

    root: Path
    env: dict[str, str]
    git: GitHttpServer
    redis: redis.Redis
    separate_homes: bool = False
    apis: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workers: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        """The shared REPOLENS_HOME; with `separate_homes`, the folder of every process's own one."""
        return self.root / "home"

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        name = f"{args[0]}-{len(self.processes)}"
        env = self.env
        if self.separate_homes:
            (self.home / name).mkdir(parents=True)
            env = {**env, "REPOLENS_HOME": str(self.home / name)}
        (self.root / "logs").mkdir(exist_ok=True)
        with open(self.root / "logs" / f"{name}.log", "wb") as log:
            process = subprocess.Popen(
                [REPOLENS, *args], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.processes.append(process)
        return process

    def start_worker(self) -> subprocess.Popen[bytes]:
        process = self.spawn("worker", "--jobs", "1")
        self.workers[process.pid] = process
        return process

    def start_api(self) -> str:
        port, _ = serve_on_a_free_port(
            lambda port: self.spawn("serve", "--port", str(port), "--log-level", "warning")
        )
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base} to answer", lambda: healthy(base))
        self.apis.append(base)
        return base

    def submit(self, api: str, body: dict[str, Any]) -> str:
        """POST /api/repos and stop listening at once (the job goes on): the job id."""
        with httpx.stream("POST", f"{api}/api/repos", json=body, timeout=30) as response:
            assert response.status_code == 200, response.read()
            return response.headers["x-repolens-job"]

    def cloning(self, api: str, name: str, job_id: str) -> dict[str, Any]:
        """The job's view once its worker's clone of `name` is held by the git server."""
        return wait_for(f"{name} cloning", lambda: self.git.held_count(name) and self.job(api, job_id))

    def job(self, api: str, job_id: str) -> dict[str, Any]:
        response = httpx.get(f"{api}/api/jobs/{job_id}", timeout=10)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def finished(self, api: str, job_id: str) -> dict[str, Any]:
        return wait_for(
            f"job {job_id} to finish",
            lambda: (job := self.job(api, job_id))["state"] in ("done", "failed", "cancelled") and job,
        )

    def worker_of(self, view: dict[str, Any]) -> subprocess.Popen[bytes]:
        """The worker process a job's view names (`host:pid`), taken out of the cluster's live workers."""
        return self.workers.pop(int(view["worker"].rpartition(":")[2]))

    def sigkill_during_update(self, name: str) -> tuple[str, str, dict[str, Any]]:
        """Ingest `name` through replica A, then update it through B and SIGKILL (process group) the
        worker cloning the new commit; the previous version must keep serving meanwhile. Returns the
        repository id, the new commit and the retried job's final view. The cluster has two workers
        again afterwards."""
        a, b = self.apis
        self.git.require_auth = False
        first_sha = self.git.add_repo(name, FILES)
        url = self.git.url_for(name)
        first = self.finished(a, self.submit(a, {"repo_url": url, "type": "git"}))
        assert first["state"] == "done" and first["repo"]["commit"] == first_sha, first
        repo_id = first["repo_id"]
        second_sha = self.git.add_repo(name, {"pkg/extra.py": "def extra():\n    return 2\n"})
        self.git.hold(name)
        try:
            job_id = self.submit(b, {"repo_url": url, "type": "git"})
            victim = self.worker_of(self.cloning(a, name, job_id))
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait(10)
            serving = httpx.get(f"{b}/api/repos/{repo_id}", timeout=10).json()
            assert serving["commit"] == first_sha, "the previous version keeps serving while the job waits"
        finally:
            self.git.release(name)
        retried = self.finished(a, job_id)
        self.start_worker()
        return repo_id, second_sha, retried

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def cluster_env(redis_url: str, **extra: str) -> dict[str, str]:
    """The processes' environment: this one without tokens or keys, the test caches, a 2 s lease."""
    inherited = {k: v for k, v in os.environ.items() if not k.endswith(("_TOKEN", "_API_KEY"))}
    return {
        **inherited,
        "TIKTOKEN_CACHE_DIR": str(_SHARED_CACHE / "tiktoken"),
        "HF_HUB_OFFLINE": "1",
        "REPOLENS_REDIS_URL": redis_url,
        "REPOLENS_QUEUE_KEY": "queue-test-key-3f9a",
        "REPOLENS_QUEUE_LEASE_S": "2",
        "REPOLENS_ALLOW_PRIVATE_HOSTS": "1",
        "REPOLENS_RATE_LIMIT_INGEST": "100000/minute",
        **extra,
    }


@contextlib.contextmanager
def running_cluster(root: Path, *, separate_homes: bool = False, **env: str) -> Iterator[Cluster]:
    """Two workers and two API replicas on a redis-server and a git server of their own, under `root`."""
    (root / "home").mkdir(parents=True)
    server: RedisServer = start_redis(root / "redis-data")
    git = GitHttpServer(root / "git")
    client = redis.Redis(host="127.0.0.1", port=server.port)
    settings = cluster_env(server.url, REPOLENS_HOME=str(root / "home"), **env)
    cluster = Cluster(root, settings, git, client, separate_homes=separate_homes)
    try:
        for _ in range(2):
            cluster.start_worker()
        for _ in range(2):
            cluster.start_api()
        yield cluster
    finally:
        cluster.stop()
        git.close()
        client.close()
        stop_redis(server)
