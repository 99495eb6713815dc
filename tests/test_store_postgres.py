"""End to end on the PostgreSQL store: ingest, update, search, ask offline and two servers sharing
one database, with a real PostgreSQL + pgvector (`tests.support.postgres`).

The store contract itself is tested on both backends by tests/test_store.py and
tests/test_code_graph.py; these are the paths a user takes with `REPOLENS_DATABASE_URL` set.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from api.cli import app
from ingest import ingest
from ingest import pipeline as ingest_pipeline
from ingest.chunking import CHUNKER_VERSION
from rag.embedders import Embedder
from rag.settings import Settings
from rag.store import IndexBusyError, Store, open_store
from rag.store.pg import PgStore
from rag.store.pg.errors import StoreUnavailableError
from tests.support.chat import settings_for
from tests.support.repos import commit_all
from tests.test_pipeline import RecordingEmbedder

runner = CliRunner()
QUERIES = [
    "HttpClient.send",
    "ZORBLAX_RETRY_CEILING",
    "forecast service run",
    "persist forecasts to disk",
    "chart",
]


@pytest.fixture
def pg_store(postgres_url: str, repolens_home: Path) -> Iterator[PgStore]:
    store = PgStore(repolens_home, postgres_url)
    yield store
    store.close()


def test_open_store_picks_postgres_when_the_database_url_is_set(postgres_url: str, tmp_path: Path) -> None:
    store = open_store(
        Settings.from_env(environ={"REPOLENS_HOME": str(tmp_path), "REPOLENS_DATABASE_URL": postgres_url})
    )
    try:
        assert isinstance(store, PgStore) and store.list() == []
    finally:
        store.close()
    with psycopg.connect(postgres_url) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM repolens.schema_migrations")]
    assert versions == [1]
    PgStore(tmp_path, postgres_url).close()  # migrations are idempotent


def test_a_store_used_as_a_context_manager_is_closed_on_an_error(postgres_url: str, tmp_path: Path) -> None:
    with pytest.raises(KeyError), PgStore(tmp_path, postgres_url) as store:
        raise KeyError("a command fails half way")
    assert store.pool.closed


def test_the_pg_settings_reach_the_pool_the_queries_and_the_hnsw_index(
    postgres_url: str, fixture_repo: Path, shared_embedder: Embedder, tmp_path: Path
) -> None:
    tuned = {
        "REPOLENS_PG_POOL_SIZE": "3",
        "REPOLENS_PG_EF_SEARCH": "10",
        "REPOLENS_PG_HNSW_M": "12",
        "REPOLENS_PG_EF_CONSTRUCTION": "48",
    }
    store = open_store(
        Settings.from_env(
            environ={"REPOLENS_HOME": str(tmp_path), "REPOLENS_DATABASE_URL": postgres_url, **tuned}
        )
    )
    try:
        assert isinstance(store, PgStore) and store.pool.max_size == 3
        index = store.open(ingest(str(fixture_repo), store=store, embedder=shared_embedder).repo_id)
        assert index.size > 10
        # The transaction every query runs in has the setting (also for a query asking for more).
        assert index._run("SELECT current_setting('hnsw.ef_search')") == [("10",)]
        query = shared_embedder.embed_query("retry ceiling of the http client")
        assert len(index.dense_search(query, index.size)) == index.size  # k > ef_search: raised to k
        with psycopg.connect(postgres_url) as conn:
            (options,) = conn.execute(
                "SELECT c.reloptions FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relname = 'vectors_hnsw' AND n.nspname = %s",
                (index.schema,),
            ).fetchone() or (None,)
        assert options == ["m=12", "ef_construction=48"]
    finally:
        store.close()


def test_a_database_that_cannot_be_reached_is_a_config_error(tmp_path: Path) -> None:
    from rag.errors import ConfigError

    url = f"postgresql://repolens:hunter2-secret@/nowhere?host={tmp_path}"
    with pytest.raises(ConfigError, match="REPOLENS_DATABASE_URL") as caught:
        PgStore(tmp_path, url)
    assert "hunter2-secret" not in str(caught.value)


def test_ingest_update_and_search(pg_store: PgStore, fixture_repo: Path, shared_embedder: Embedder) -> None:
    report = ingest(str(fixture_repo), store=pg_store, embedder=shared_embedder)
    index = pg_store.open(report.repo_id)
    assert index.record.index_state == "complete" and index.record.version >= 1
    assert index.size == index.record.dense_chunks > 0
    top, _ = index.dense_search(shared_embedder.embed_query("retry ceiling of the http client"), 3)[0]
    assert index.get_chunks([top])[0].path == "weatherline/client.py"

    (send,) = index.find_symbol("HttpClient")
    (fixture_repo / "weatherline" / "extra.py").write_text('def brand_new_helper():\n    return "x"\n')
    commit_all(fixture_repo, "add a helper")
    before = pg_store.get(report.repo_id)
    update = ingest(str(fixture_repo), store=pg_store, embedder=shared_embedder)
    after = pg_store.open(report.repo_id)
    assert before is not None and after.record.version > before.version
    assert after.record.file_count == before.file_count + 1
    assert update.chunks["removed"] == 0 and update.chunks["added"] >= 1
    assert send in after.get_chunks([send.id])  # an unchanged file's rows (and vector) stay as they were
    assert after.find_symbol("brand_new_helper")[0].path == "weatherline/extra.py"
    assert after.record.index_state == "complete"


def test_a_chunker_upgrade_rechunks_on_a_plain_update(
    pg_store: PgStore, fixture_repo: Path, shared_embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ingest(str(fixture_repo), store=pg_store, embedder=shared_embedder)
    assert first.record.chunker_version == CHUNKER_VERSION
    monkeypatch.setattr(ingest_pipeline, "CHUNKER_VERSION", CHUNKER_VERSION + 1)
    spy = RecordingEmbedder(shared_embedder)
    report = ingest(str(fixture_repo), store=pg_store, embedder=spy)
    assert report.files["rechunked"] == first.record.file_count
    assert report.rechunk_reason == f"chunker version {CHUNKER_VERSION} -> {CHUNKER_VERSION + 1}"
    assert spy.embedded == [] and report.chunks["reused"] == report.chunks["total"]  # same texts
    record = pg_store.get(first.repo_id)
    assert record is not None and record.chunker_version == CHUNKER_VERSION + 1
    assert record.version > first.record.version and record.index_state == "complete"
    # Another upgrade, with a file edited: the edit is published first, then the re-chunk.
    monkeypatch.setattr(ingest_pipeline, "CHUNKER_VERSION", CHUNKER_VERSION + 2)
    (fixture_repo / "weatherline" / "units.py").write_text('"""zqxwarbleflux conversions."""\n')
    commit_all(fixture_repo, "add units")
    states: list[tuple[int, bool]] = []

    def on_progress(event: ingest_pipeline.Progress) -> None:
        if event.stage == "searchable":
            live = pg_store.open(first.repo_id)
            states.append((live.record.chunker_version, bool(live.lexical_search("zqxwarbleflux", 3))))

    edited = ingest(str(fixture_repo), store=pg_store, embedder=spy, progress=on_progress)
    assert states == [(CHUNKER_VERSION + 1, True)]
    assert edited.files["added"] == 1 and edited.files["rechunked"] == record.file_count
    assert edited.record.chunker_version == CHUNKER_VERSION + 2 and edited.record.index_state == "complete"


def test_lexical_ranking_matches_the_local_store(
    pg_store: PgStore, fixture_repo: Path, shared_embedder: Embedder, tmp_path: Path
) -> None:
    local = Store(tmp_path / "local-home")
    repo_id = ingest(str(fixture_repo), store=local, embedder=shared_embedder).repo_id
    ingest(str(fixture_repo), store=pg_store, embedder=shared_embedder)
    local_index, pg_index = local.open(repo_id), pg_store.open(repo_id)
    for query in QUERIES:
        expected = local_index.lexical_search(query, 10)
        found = pg_index.lexical_search(query, 10)
        assert [c.symbol for c in pg_index.get_chunks([i for i, _ in found])][:3] == [
            c.symbol for c in local_index.get_chunks([i for i, _ in expected])
        ][:3], query
        assert [round(s, 3) for _, s in found] == pytest.approx([round(s, 3) for _, s in expected], abs=2e-3)
    glob = pg_index.lexical_search("forecast", 10, path_glob="web")
    assert glob and all(c.path.startswith("web/") for c in pg_index.get_chunks([i for i, _ in glob]))


@pytest.fixture
def opened_pg_stores(monkeypatch: pytest.MonkeyPatch) -> list[PgStore]:
    """Every `PgStore` made from now on (held, so an unclosed one keeps its connections: a command
    that leaves its pool to garbage collection is caught, not excused by a lucky collection)."""
    opened: list[PgStore] = []
    make = PgStore.__init__

    def recording(self: PgStore, *args: Any, **kwargs: Any) -> None:
        make(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(PgStore, "__init__", recording)
    return opened


def _connections(url: str) -> int:
    """Sessions on the test's database other than this query's own."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT COUNT(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row else 0


def _cli(url: str, opened: list[PgStore], *args: str) -> str:
    """Run `repolens <args>`; it succeeds, and every store it opened is closed with its connections."""
    before = len(opened)
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    assert len(opened) > before, f"{args[0]} opened no PostgreSQL store"
    assert [store.pool.closed for store in opened[before:]] == [True] * (len(opened) - before), args[0]
    deadline = time.monotonic() + 10.0  # a closed client's backend ends a moment after its socket closes
    while (left := _connections(url)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == 0, f"{args[0]} left {left} database sessions open"
    return result.stdout


def test_cli_ingest_search_and_offline_ask(
    postgres_url: str, fixture_repo: Path, monkeypatch: pytest.MonkeyPatch, opened_pg_stores: list[PgStore]
) -> None:
    """The user's commands on PostgreSQL, each closing the store it opened (a pool left open was
    collected later, at times in one of its own threads: psycopg_pool "cannot join current thread")."""
    monkeypatch.setenv("REPOLENS_DATABASE_URL", postgres_url)

    def cli(*args: str) -> str:
        return _cli(postgres_url, opened_pg_stores, *args)

    repo_id = json.loads(cli("ingest", str(fixture_repo), "--json").splitlines()[-1])["id"]
    found = json.loads(cli("search", repo_id, "HttpClient.send", "--json", "-k", "3"))
    assert found["results"][0]["path"] == "weatherline/client.py"
    answer = cli("ask", repo_id, "How does main reach HttpClient.send?", "--plain")
    assert "offline" in answer.lower() and "weatherline/client.py" in answer
    assert [repo["id"] for repo in json.loads(cli("list", "--json"))["repos"]] == [repo_id]
    assert json.loads(cli("show", repo_id, "--json"))["id"] == repo_id
    assert json.loads(cli("embed", repo_id, "--json"))["index_state"] == "complete"
    assert json.loads(cli("wiki", repo_id, "--offline", "--concise", "--json"))["pages"] > 0
    (fixture_repo / "weatherline" / "extra.py").write_text('def brand_new_helper():\n    return "x"\n')
    commit_all(fixture_repo, "add a helper")
    assert json.loads(cli("update", repo_id, "--json").splitlines()[-1])["files"]["added"] == 1
    assert json.loads(cli("doctor", "--json"))["healthy"]
    cli("delete", repo_id, "--yes")
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM repolens.repositories").fetchone() == (0,)


def test_two_servers_share_one_database(
    postgres_url: str, fixture_repo: Path, shared_embedder: Embedder, tmp_path: Path, live_server_factory
) -> None:
    writer = PgStore(tmp_path / "writer", postgres_url)
    repo_id = ingest(str(fixture_repo), store=writer, embedder=shared_embedder).repo_id
    writer.close()
    servers = [
        live_server_factory(settings_for(tmp_path / f"replica-{n}", REPOLENS_DATABASE_URL=postgres_url))
        for n in (1, 2)
    ]
    for server in servers:
        listed = httpx.get(f"{server.base_url}/api/repos", timeout=30).json()
        assert repo_id in json.dumps(listed)
        response = httpx.post(
            f"{server.base_url}/api/repos/{repo_id}/search",
            json={"query": "HttpClient.send", "k": 3},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert response.json()["results"][0]["path"] == "weatherline/client.py"


def test_migrate_store_copies_local_repositories_as_they_are(
    postgres_url: str,
    fixture_repo: Path,
    shared_embedder: Embedder,
    repolens_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local = Store(repolens_home)
    repo_id = ingest(str(fixture_repo), store=local, embedder=shared_embedder).repo_id
    monkeypatch.setenv("REPOLENS_DATABASE_URL", postgres_url)
    result = runner.invoke(app, ["migrate-store", "--json"])
    assert result.exit_code == 0, result.output
    source = local.open(repo_id)
    (copied,) = json.loads(result.stdout)["repos"]
    assert copied == {
        "id": repo_id,
        "outcome": "copied",
        "files": source.record.file_count,
        "chunks": source.record.chunk_count,
        "vectors": source.size,
    }
    pg_store = PgStore(repolens_home, postgres_url)
    try:
        moved = pg_store.open(repo_id)
        assert dataclasses.replace(moved.record, version=0, updated_at="") == dataclasses.replace(
            source.record, version=0, updated_at=""
        )
        assert moved.list_files() == source.list_files() and moved.roles() == source.roles()
        for query in QUERIES:
            found, expected = moved.lexical_search(query, 5), source.lexical_search(query, 5)
            assert [i for i, _ in found] == [i for i, _ in expected], query
            assert [s for _, s in found] == pytest.approx([s for _, s in expected], rel=1e-4)
            vector = shared_embedder.embed_query(query)
            assert [i for i, _ in moved.dense_search(vector, 5)] == [
                i for i, _ in source.dense_search(vector, 5)
            ]
        (send,) = moved.definition("HttpClient.send")
        assert [e.source.qualname for e in moved.callers(send) if e.source] == [
            e.source.qualname for e in source.callers(source.definition("HttpClient.send")[0]) if e.source
        ]
        again = runner.invoke(app, ["migrate-store"])
        assert again.exit_code == 0 and "skipped" in again.stdout

        (fixture_repo / "weatherline" / "extra.py").write_text("def helper():\n    return 1\n")
        commit_all(fixture_repo, "add a helper")
        ingest(str(fixture_repo), store=pg_store, embedder=shared_embedder)  # an update on the copy
        assert pg_store.open(repo_id).definition("helper")[0].path == "weatherline/extra.py"
    finally:
        pg_store.close()


def test_migrate_store_needs_a_database(repolens_home: Path) -> None:
    result = runner.invoke(app, ["migrate-store", "--json"])
    assert result.exit_code == 2, result.output
    assert "REPOLENS_DATABASE_URL" in json.loads(result.stdout)["error"]["message"]


_HALF_BUILD = """
import dataclasses, sys, time
from pathlib import Path
from rag.store.pg import PgStore
from rag.store.pg.errors import StoreUnavailableError
store = PgStore(Path(sys.argv[1]), sys.argv[2])
index = store.open(sys.argv[3])
with store.builder(dataclasses.replace(index.record), index) as builder:
    for path in list(builder.file_hashes()):
        builder.remove_file(path)
    print("half-built", flush=True)
    time.sleep(120)
"""


def test_a_killed_builder_loses_nothing_and_frees_the_lock(
    pg_store: PgStore, fixture_repo: Path, shared_embedder: Embedder, repolens_home: Path
) -> None:
    repo_id = ingest(str(fixture_repo), store=pg_store, embedder=shared_embedder).repo_id
    before = pg_store.open(repo_id).list_files()
    with subprocess.Popen(  # leaving the block closes the pipe and waits for the child
        [sys.executable, "-c", _HALF_BUILD, str(repolens_home), pg_store.url, repo_id],
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "half-built"
            with pytest.raises(IndexBusyError):  # the child holds the repository's lock
                pg_store.builder(pg_store.open(repo_id).record, pg_store.open(repo_id)).__enter__()
            assert pg_store.open(repo_id).list_files() == before  # its deletions are invisible
        finally:
            child.kill()
    deadline = time.monotonic() + 30
    while True:  # PostgreSQL ends the dead session's transaction and lock when it sees the socket close
        try:
            with pg_store.builder(dataclasses.replace(pg_store.open(repo_id).record), pg_store.open(repo_id)):
                break
        except IndexBusyError:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert pg_store.open(repo_id).list_files() == before
    assert pg_store.get(repo_id) == pg_store.open(repo_id).record


def test_a_database_that_goes_away_is_store_unavailable_not_internal(
    postgres_server: Any, fixture_repo: Path, shared_embedder: Embedder, tmp_path: Path
) -> None:
    admin = postgres_server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE DATABASE repolens_going_away")
    store = PgStore(tmp_path, postgres_server.get_uri("repolens_going_away"))
    try:
        repo_id = ingest(str(fixture_repo), store=store, embedder=shared_embedder).repo_id
        index = store.open(repo_id)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("DROP DATABASE repolens_going_away WITH (FORCE)")  # ends every session
        for call in (store.list, lambda: index.lexical_search("HttpClient", 3), lambda: index.list_files()):
            with pytest.raises(StoreUnavailableError) as caught:
                call()
            assert caught.value.code == "store_unavailable"
        with pytest.raises(StoreUnavailableError):
            store.builder(index.record, index).__enter__()
    finally:
        store.close()


def _doctor(*args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["doctor", "--json", *args])
    return result.exit_code, json.loads(result.stdout)


def _schemas(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {str(name) for (name,) in conn.execute("SELECT nspname FROM pg_namespace")}


def test_doctor_drops_orphan_schemas_and_unfinished_registrations(
    pg_store: PgStore,
    postgres_url: str,
    fixture_repo: Path,
    shared_embedder: Embedder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rag.store.pg.schema import repo_ddl

    repo_id = ingest(str(fixture_repo), store=pg_store, embedder=shared_embedder).repo_id
    live = pg_store.open(repo_id)
    key = int(live.schema.split("_")[1])
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        # What a full rebuild killed between its swap's COMMIT and its DROP leaves: the old schema.
        conn.execute(f"CREATE SCHEMA repo_{key}_v0")
        conn.execute(f"SET search_path = repo_{key}_v0, public")
        conn.execute(repo_ddl(live.record.dimension, m=16, ef_construction=64))
        (ghost,) = conn.execute(  # a registration whose version never committed, with its schema
            "INSERT INTO repolens.repositories(id, schema_name, schema_version) "
            "VALUES ('local/ghost', '', 1) RETURNING key"
        ).fetchone() or (0,)
        conn.execute(f"CREATE SCHEMA repo_{ghost}_v1")
        conn.execute("CREATE SCHEMA repo_notes")  # not named like the store's: never touched
    wiki = pg_store.paths(repo_id).root / "wikis" / "wiki.json"  # this machine's files of the repository
    wiki.parent.mkdir(parents=True)
    wiki.write_text("{}")
    pg_store.clone_dir(repo_id).mkdir(parents=True)
    monkeypatch.setenv("REPOLENS_DATABASE_URL", postgres_url)

    code, report = _doctor()
    assert code == 1 and not report["healthy"]
    assert sorted((f["repo"], f["problem"], f["repaired"]) for f in report["findings"]) == [
        ("local/ghost", "unfinished_registration", False),
        (repo_id, "orphan_schema", False),
    ]
    with pg_store.builder(dataclasses.replace(live.record), live):  # a build holds the lock
        code, report = _doctor("--repair")
    assert [(f["problem"], f["repaired"]) for f in report["findings"]] == [("unfinished_registration", True)]
    code, report = _doctor("--repair")
    assert [(f["problem"], f["repaired"]) for f in report["findings"]] == [("orphan_schema", True)]
    assert _doctor() == (0, {"home": str(pg_store.home), "findings": [], "healthy": True, "outdated": []})
    schemas = _schemas(postgres_url)
    assert {live.schema, "repo_notes"} <= schemas
    assert not {f"repo_{key}_v0", f"repo_{ghost}_v1"} & schemas
    assert wiki.is_file() and pg_store.clone_dir(repo_id).is_dir()
    assert pg_store.open(repo_id).lexical_search("HttpClient", 3)

    with psycopg.connect(postgres_url, autocommit=True) as conn:  # a live schema dropped by hand
        conn.execute(f"DROP SCHEMA {live.schema} CASCADE")
    code, report = _doctor("--repair")
    assert (repo_id, "missing_schema", True) in {
        (f["repo"], f["problem"], f["repaired"]) for f in report["findings"]
    }
    assert code == 0 and pg_store.list() == []
