"""The whole shared deployment with real engines: one PostgreSQL + pgvector store, one Redis queue,
two `repolens serve` replicas and two `repolens worker` processes, each process with a data dir of
its own, so the database is the only thing they share (as on separate machines).

A repository ingested through replica A is served by replica B; a worker SIGKILLed mid-job is
retried by the other while the previous version keeps serving, and nothing half-built is left in
the database. The queue's own guarantees are tested in tests/test_redis_queue.py (same helpers:
tests/support/cluster.py).
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from tests.support.cluster import FILES, Cluster, running_cluster


@pytest.fixture(scope="module")
def pg_cluster(
    postgres_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Cluster, str]]:
    database = f"repolens_cluster_{os.getpid()}"
    with psycopg.connect(postgres_server.get_uri(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {database}")
    url = postgres_server.get_uri(database)
    try:
        root = tmp_path_factory.mktemp("pg-cluster")
        with running_cluster(root, separate_homes=True, REPOLENS_DATABASE_URL=url) as cluster:
            yield cluster, url
    finally:
        with psycopg.connect(postgres_server.get_uri(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def test_a_repository_ingested_through_one_replica_is_served_by_the_other(
    pg_cluster: tuple[Cluster, str],
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
    database = urllib.parse.urlsplit(url).path.lstrip("/")
    for log in (cluster.root / "logs").glob("worker-*.log"):
        assert f"writing to PostgreSQL database {database} on " in log.read_text(), log.read_text()


def test_a_sigkilled_worker_is_retried_and_the_previous_version_keeps_serving(
    pg_cluster: tuple[Cluster, str],
) -> None:
    cluster, url = pg_cluster
    repo_id, second_sha, retried = cluster.sigkill_during_update("acme/killed-pg")
    assert retried["state"] == "done" and retried["attempt"] == 2, retried
    assert httpx.get(f"{cluster.apis[0]}/api/repos/{repo_id}", timeout=10).json()["commit"] == second_sha
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
