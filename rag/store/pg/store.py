"""The registry of repositories in PostgreSQL, shared by every replica and worker on the database.

`PgStore` is a `Store`: the same methods with indexes in PostgreSQL (`rag.store.pg.schema`), while
what is per machine stays under `REPOLENS_HOME` as before (git clones, generated wikis). Opening
the store applies pending migrations; queries go through a small connection pool, and each build
gets a connection of its own (it holds the repository's advisory lock and one long transaction).
"""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from pgvector.psycopg import register_vector
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from rag.errors import ConfigError, NotFoundError
from rag.redact import register_secret
from rag.settings import Settings
from rag.store.doctor import Finding, check
from rag.store.index import RepoIndex
from rag.store.pg.builder import PgIndexBuilder, try_lock
from rag.store.pg.errors import CONNECT_TIMEOUT_S, database_errors
from rag.store.pg.index import PgRepoIndex
from rag.store.pg.schema import REGISTRY, migrate
from rag.store.store import Store
from rag.types import RepoRecord


@dataclass(frozen=True, slots=True)
class PgTuning:
    """The PostgreSQL store's knobs (`REPOLENS_PG_*` settings; see `rag.settings` for each)."""

    pool_size: int  # connections shared by the requests of one process (a query holds one for ms)
    ef_search: int  # HNSW candidates per dense query
    hnsw_m: int  # HNSW links per vector, for indexes built from now on
    ef_construction: int  # HNSW build candidates, for indexes built from now on

    @classmethod
    def from_settings(cls, settings: Settings) -> PgTuning:
        return cls(
            pool_size=settings.pg_pool_size,
            ef_search=settings.pg_ef_search,
            hnsw_m=settings.pg_hnsw_m,
            ef_construction=settings.pg_ef_construction,
        )


class PgStore(Store):
    """Repositories in PostgreSQL + pgvector; clones and wikis under `home` as in the local store."""

    def __init__(self, home: Path, url: str, tuning: PgTuning | None = None) -> None:
        super().__init__(home)
        self.url = url
        # Without `tuning`, the settings' defaults (not the environment: the caller passes those).
        self.tuning = tuning or PgTuning.from_settings(Settings.model_construct())
        try:  # the password is masked in every message from now on
            register_secret(str(conninfo_to_dict(url).get("password") or ""))
        except psycopg.ProgrammingError:
            raise ConfigError(
                "REPOLENS_DATABASE_URL is not a PostgreSQL URL (postgresql://user:pass@host/db)"
            ) from None
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
                migrate(conn)
        except psycopg.OperationalError as error:
            raise ConfigError(
                f"REPOLENS_DATABASE_URL: cannot use the database ({str(error).strip()[:200]})"
            ) from None
        self.pool: ConnectionPool[psycopg.Connection[TupleRow]] = ConnectionPool(
            url,
            min_size=1,
            max_size=self.tuning.pool_size,
            timeout=CONNECT_TIMEOUT_S,
            configure=register_vector,
            open=True,
            name="repolens-store",
        )
        self._indexes: dict[str, PgRepoIndex] = {}
        self._indexes_lock = threading.Lock()

    def doctor(self, *, repair: bool = False) -> list[Finding]:
        """The database's leftovers (`rag.store.pg.doctor`), then this machine's folders, whose
        wikis and clones of repositories indexed in the database are in use."""
        from rag.store.pg.doctor import check_database

        findings = check_database(self, repair=repair)
        return findings + check(self.home, repair=repair, shared=[record.id for record in self.list()])

    def close(self) -> None:
        self.pool.close()

    def _rows(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with database_errors(), self.pool.connection() as conn:
            return conn.execute(sql, params).fetchall()

    def list(self) -> list[RepoRecord]:
        rows = self._rows(f"SELECT record FROM {REGISTRY}.repositories WHERE current_version > 0 ORDER BY id")
        return [RepoRecord.from_json(_document(row[0])) for row in rows]

    def get(self, repo_id: str) -> RepoRecord | None:
        self.paths(repo_id)  # the same id check as the local store
        rows = self._rows(
            f"SELECT record FROM {REGISTRY}.repositories WHERE id = %s AND current_version > 0", (repo_id,)
        )
        return RepoRecord.from_json(_document(rows[0][0])) if rows else None

    def open(self, repo_id: str) -> PgRepoIndex:
        """The live version: one query to check it is still current, a new index after a swap."""
        self.paths(repo_id)
        rows = self._rows(
            f"SELECT schema_name, current_version, record FROM {REGISTRY}.repositories "
            "WHERE id = %s AND current_version > 0",
            (repo_id,),
        )
        if not rows:
            raise NotFoundError(f"{repo_id} is not indexed; run `repolens ingest LOCATION` first")
        schema, version, document = rows[0]
        with self._indexes_lock:
            cached = self._indexes.get(repo_id)
            if cached is not None and cached.schema == schema and cached.record.version == version:
                return cached
            index = PgRepoIndex(
                self.pool,
                str(schema),
                RepoRecord.from_json(_document(document)),
                ef_search=self.tuning.ef_search,
            )
            self._indexes[repo_id] = index
            return index

    def builder(self, record: RepoRecord, base: RepoIndex | None = None) -> PgIndexBuilder:
        """A builder for the next version (`with store.builder(...) as b: ...; b.commit()`)."""
        return PgIndexBuilder(self, record, base)

    def delete(self, repo_id: str) -> bool:
        """Remove the repository (rows, schema, versions) and its clone and wikis on this machine."""
        self.paths(repo_id)
        with database_errors(), psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            try_lock(conn, repo_id, "indexing or deleting")
            row = conn.execute(
                f"DELETE FROM {REGISTRY}.repositories WHERE id = %s RETURNING schema_name, current_version",
                (repo_id,),
            ).fetchone()
            if row is None or not int(row[1]):
                conn.rollback()
                return False
            conn.execute(f"DROP SCHEMA IF EXISTS {row[0]} CASCADE")
            conn.commit()
        with self._indexes_lock:
            self._indexes.pop(repo_id, None)
        shutil.rmtree(self.clone_dir(repo_id), ignore_errors=True)
        shutil.rmtree(self.paths(repo_id).root, ignore_errors=True)
        return True


def _document(value: object) -> dict[str, Any]:
    """A JSONB column as psycopg returns it (already parsed), or text from an older driver."""
    if isinstance(value, dict):
        return value
    parsed: dict[str, Any] = json.loads(str(value))
    return parsed
