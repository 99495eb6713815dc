"""The whole shared deployment with real engines: one PostgreSQL + pgvector store, one Redis queue,
two `repolens serve` replicas and two `repolens worker` processes, each process with a data dir of
its own, so the database is the only thing they share (as on separate machines).

A repository ingested through replica A is served by replica B; a worker SIGKILLed mid-job is
retried by the other while the previous version keeps serving, and nothing half-built is left in
the database. The queue's own guarantees are tested in tests/test_redis_queue.py (same helpers).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import redis

from tests.conftest import SHARED_CACHE
from tests.support.git_http_server import GitHttpServer
from tests.support.redis_server import RedisServer
from tests.test_redis_queue import FILES, REPOLENS, Cluster, _healthy, wait_for


class SeparateHomes(Cluster):
    """A `Cluster` whose every process gets its own REPOLENS_HOME (clones and wikis stay per machine)."""

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        home = self.home / f"{args[0]}-{len(self.processes)}"
        home.mkdir()
        log = open(self.logs / f"{args[0]}-{len(self.processes)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [REPOLENS, *args],
            env={**self.env, "REPOLENS_HOME": str(home)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.processes.append(process)
        return process


@pytest.fixture(scope="module")
def pg_cluster(
    redis_server: RedisServer, postgres_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[SeparateHomes, str]]:
    root = tmp_path_factory.mktemp("pg-cluster")
    (root / "homes").mkdir()
    (root / "logs").mkdir()
    database = f"repolens_cluster_{os.getpid()}"
    with psycopg.connect(postgres_server.get_uri(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {database}")
    url = postgres_server.get_uri(database)
    git = GitHttpServer(root / "git")
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, db=2)
    client.flushdb()
    env = {
        **{k: v for k, v in os.environ.items() if not k.endswith("_TOKEN") and not k.endswith("_API_KEY")},
        "TIKTOKEN_CACHE_DIR": str(SHARED_CACHE / "tiktoken"),
        "HF_HUB_OFFLINE": "1",
        "REPOLENS_REDIS_URL": f"{redis_server.url.rsplit('/', 1)[0]}/2",
        "REPOLENS_DATABASE_URL": url,
        "REPOLENS_QUEUE_KEY": "queue-test-key-pg-7c1e",
        "REPOLENS_QUEUE_LEASE_S": "2",
        "REPOLENS_ALLOW_PRIVATE_HOSTS": "1",
        "REPOLENS_RATE_LIMIT_INGEST": "100000/minute",
    }
    cluster = SeparateHomes(root / "homes", env, git, client, root / "logs")
    try:
        for _ in range(2):
            cluster.start_worker()
        for _ in range(2):
            cluster.start_api()
        for api in cluster.apis:
            wait_for(f"{api} to answer", lambda api=api: _healthy(api))
        yield cluster, url
    finally:
        cluster.stop()
        git.close()
        client.close()
        with psycopg.connect(postgres_server.get_uri(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def test_a_repository_ingested_through_one_replica_is_served_by_the_other(
    pg_cluster: tuple[SeparateHomes, str],
) -> None:
    cluster, url = pg_cluster
    a, b = cluster.apis
    cluster.git.require_auth = False
    cluster.git.add_repo("acme/shared", FILES)
    job = cluster.finished(
        a, cluster.submit(a, {"repo_url": cluster.git.url_for("acme/shared"), "type": "git"})
    )
    assert job["state"] == "done", job
    repo_id = job["repo_id"]
    assert repo_id in {repo["id"] for repo in httpx.get(f"{b}/api/repos", timeout=10).json()["repos"]}
    found = httpx.post(f"{b}/api/repos/{repo_id}/search", json={"query": "greet", "k": 3}, timeout=30).json()
    assert found["results"][0]["path"] == "pkg/greeting.py"
    with psycopg.connect(url) as conn:
        assert conn.execute(
            "SELECT current_version FROM repolens.repositories WHERE id = %s", (repo_id,)
        ).fetchone()
    assert not list(cluster.home.glob("*/repos/*/current")), "no process wrote a local index"


def test_a_sigkilled_worker_is_retried_and_the_previous_version_keeps_serving(
    pg_cluster: tuple[SeparateHomes, str],
) -> None:
    cluster, url = pg_cluster
    a, b = cluster.apis
    cluster.git.require_auth = False
    first_sha = cluster.git.add_repo("acme/killed-pg", FILES)
    source = cluster.git.url_for("acme/killed-pg")
    first = cluster.finished(a, cluster.submit(a, {"repo_url": source, "type": "git"}))
    assert first["state"] == "done" and first["repo"]["commit"] == first_sha
    repo_id = first["repo_id"]

    second_sha = cluster.git.add_repo("acme/killed-pg", {"pkg/extra.py": "def extra():\n    return 2\n"})
    cluster.git.hold("acme/killed-pg")
    try:
        job_id = cluster.submit(b, {"repo_url": source, "type": "git"})
        running = cluster.cloning(a, "acme/killed-pg", job_id)
        victim = cluster.workers.pop(int(running["worker"].rpartition(":")[2]))
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(10)
        serving = httpx.get(f"{b}/api/repos/{repo_id}", timeout=10).json()
        assert serving["commit"] == first_sha, "the previous version keeps serving while the job waits"
    finally:
        cluster.git.release("acme/killed-pg")
    retried = cluster.finished(a, job_id)
    assert retried["state"] == "done" and retried["attempt"] == 2, retried
    assert httpx.get(f"{a}/api/repos/{repo_id}", timeout=10).json()["commit"] == second_sha
    with psycopg.connect(url) as conn:
        (schema,) = conn.execute(
            "SELECT schema_name FROM repolens.repositories WHERE id = %s", (repo_id,)
        ).fetchone() or ("",)
        schemas = {
            row[0] for row in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'repo\\_%'")
        }
        files = {row[0] for row in conn.execute(f"SELECT path FROM {schema}.files")}
    assert files == {"README.md", "pkg/greeting.py", "pkg/extra.py"}
    with psycopg.connect(url) as conn:
        registered = {row[0] for row in conn.execute("SELECT schema_name FROM repolens.repositories")}
    assert schema in schemas and schemas == registered, (
        "one schema per repository: nothing half-built is left"
    )
    cluster.start_worker()
