"""Writes the next version of a repository in PostgreSQL, in one transaction per version.

The local builder copies the live version and swaps a symlink; here MVCC does both jobs. The
builder changes its repository's rows in place inside one transaction (remove the files that
changed or left, add the new ones: unchanged files' rows and vectors are never touched), and the
same transaction writes the `versions` row and flips `repositories.current_version`. Readers see
the previous version until it commits; a build that fails, or a worker killed mid-build, is rolled
back whole by PostgreSQL. A full (re)build writes a fresh schema instead, so readers of the old
one are never blocked by the new one's DDL; the old schema is dropped after the swap.

One build per repository at a time, across every process and machine: a session-level advisory
lock on the builder's own connection (released when it closes, including when the process dies).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg.rows import TupleRow

from rag.graph_types import FileGraph
from rag.lexical import ChunkTerms, chunk_terms
from rag.roles import file_role
from rag.store import graph
from rag.store.builder import check_same_embedder, index_state, pending_count, pending_texts, utc_now
from rag.store.index import RepoIndex
from rag.store.layout import IndexBusyError
from rag.store.pg import lexical as pg_lexical
from rag.store.pg.errors import CONNECT_TIMEOUT_S, database_errors
from rag.store.pg.index import PgRepoIndex, set_search_path
from rag.store.pg.schema import REGISTRY, REPO_SCHEMA_VERSION, repo_ddl
from rag.store.schema import SourceFileLike
from rag.types import Chunk, RepoRecord

if TYPE_CHECKING:
    from rag.store.pg.store import PgStore


def lock_key(repo_id: str) -> str:
    """The advisory-lock name of a repository (hashed to a bigint by PostgreSQL)."""
    return f"repolens:{repo_id}"


def try_lock(conn: psycopg.Connection[TupleRow], repo_id: str, doing: str) -> None:
    """Take the repository's session lock on `conn`, or raise `IndexBusyError`."""
    (locked,) = conn.execute(
        "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (lock_key(repo_id),)
    ).fetchone() or (False,)
    conn.commit()
    if not locked:
        raise IndexBusyError(
            f"another process is {doing} {repo_id}; wait for it to finish or stop it, then try again"
        )


class PgIndexBuilder:
    """Context manager for one build: holds the repository lock, commits or leaves no trace.

    The same interface as the local `rag.store.IndexBuilder` (see there for the usage).
    """

    def __init__(self, store: PgStore, record: RepoRecord, base: RepoIndex | None) -> None:
        if base is not None:
            check_same_embedder(record, base.record)
        self.record = record
        self._store = store
        self._base: PgRepoIndex | None = None
        self._updating = base is not None
        self._conn: psycopg.Connection[TupleRow] | None = None
        self._base_ids_by_hash: dict[str, int] = {}
        self._old_schema: str | None = None
        self._files_changed = True
        self._graph_stale = False  # files changed since the graph was last resolved
        self._created_at = base.record.created_at if base is not None else record.created_at
        self.graph_resolve_s = 0.0

    # lifecycle ------------------------------------------------------------------------------------

    def __enter__(self) -> PgIndexBuilder:
        try:
            with database_errors():
                self._conn = psycopg.connect(self._store.url, connect_timeout=CONNECT_TIMEOUT_S)
                register_vector(self._conn)
                # A worker whose machine vanishes holds the lock until PostgreSQL notices the dead
                # connection: with these, about a minute on TCP (no effect on a unix socket).
                self._conn.execute(
                    "SELECT set_config('tcp_keepalives_idle', '30', false), "
                    "set_config('tcp_keepalives_interval', '10', false), "
                    "set_config('tcp_keepalives_count', '3', false)"
                )
                try_lock(self._conn, self.record.id, "indexing")
                self._refresh_stale_base()
                self._open_repository()
        except BaseException:
            self._discard()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._discard()

    @property
    def conn(self) -> psycopg.Connection[TupleRow]:
        assert self._conn is not None, "the builder is used outside its `with` block"
        return self._conn

    def _refresh_stale_base(self) -> None:
        """Another builder may have committed since `base` was opened: build on the newest version."""
        if self._updating and self._store.get(self.record.id) is not None:
            self._base = self._store.open(self.record.id)

    def _discard(self) -> None:
        """Roll back whatever was not committed and release the lock (closing the connection does)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):  # a dropped connection has nothing to roll back
                conn.rollback()
            conn.close()

    def _open_repository(self) -> None:
        conn = self.conn
        row = conn.execute(
            f"SELECT key, schema_name, current_version FROM {REGISTRY}.repositories WHERE id = %s",
            (self.record.id,),
        ).fetchone()
        if row is None:
            (key,) = conn.execute(
                f"INSERT INTO {REGISTRY}.repositories(id, schema_name, schema_version) "
                "VALUES (%s, '', %s) RETURNING key",
                (self.record.id, REPO_SCHEMA_VERSION),
            ).fetchone() or (0,)
            live_schema, current = None, 0
        else:
            key, live_schema, current = row
        (latest,) = conn.execute(
            f"SELECT COALESCE(MAX(version), 0) FROM {REGISTRY}.versions WHERE repo_key = %s", (key,)
        ).fetchone() or (0,)
        self._key = int(key)
        self._next_version = max(int(current), int(latest)) + 1
        if self._base is None or not live_schema:
            # A full build: a schema of its own, swapped in at commit.
            self._old_schema = live_schema or None
            self._schema = f"repo_{self._key}_v{self._next_version}"
            conn.execute(f"DROP SCHEMA IF EXISTS {self._schema} CASCADE")  # a dead build's, never live
            conn.execute(f"CREATE SCHEMA {self._schema}")
            set_search_path(conn, self._schema, session=True)
            tuning = self._store.tuning
            conn.execute(
                repo_ddl(self.record.dimension, m=tuning.hnsw_m, ef_construction=tuning.ef_construction)
            )
            self.next_id = 1
            return
        self._schema = str(live_schema)
        set_search_path(conn, self._schema, session=True)
        self._base_ids_by_hash = dict(
            conn.execute(
                "SELECT content_hash, MIN(id) FROM chunks JOIN vectors USING (id) GROUP BY content_hash"
            )
        )
        (max_id,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM chunks").fetchone() or (0,)
        self.next_id = int(max_id) + 1

    @property
    def base(self) -> PgRepoIndex | None:
        return self._base

    # reads ----------------------------------------------------------------------------------------

    def file_hashes(self) -> dict[str, str]:
        """`path -> sha256` of the files in the version being built."""
        return dict(self.conn.execute("SELECT path, sha256 FROM files"))

    def reusable_vectors(self, content_hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """Vectors the previous version already has for these texts (valid for the whole build)."""
        ids = {self._base_ids_by_hash[h] for h in set(content_hashes) if h in self._base_ids_by_hash}
        if not ids:
            return {}
        rows = self.conn.execute(
            "SELECT c.content_hash, v.embedding FROM vectors v JOIN chunks c USING (id) WHERE v.id = ANY(%s)",
            (sorted(ids),),
        )
        return {str(content_hash): vector.to_numpy().astype(np.float32) for content_hash, vector in rows}

    # writes ---------------------------------------------------------------------------------------

    def chunk_hashes(self, paths: Collection[str]) -> list[str]:
        """The content hash of every chunk of these files in the version being built (one per chunk)."""
        if not paths:
            return []
        rows = self.conn.execute("SELECT content_hash FROM chunks WHERE path = ANY(%s)", (list(paths),))
        return [str(row[0]) for row in rows]

    def remove_file(self, path: str) -> int:
        """Drop a file and its chunks; returns how many chunks left."""
        self._files_changed = True
        conn = self.conn
        ids = [int(row[0]) for row in conn.execute("SELECT id FROM chunks WHERE path = %s", (path,))]
        if ids:
            for table, column in (("vectorless", "id"), ("vectors", "id"), ("postings", "chunk_id")):
                conn.execute(f"DELETE FROM {table} WHERE {column} = ANY(%s)", (ids,))
            conn.execute("DELETE FROM chunks WHERE path = %s", (path,))
        conn.execute("DELETE FROM files WHERE path = %s", (path,))
        self._write_file_graph(path, None)
        return len(ids)

    def add_file(
        self,
        file: SourceFileLike,
        chunks: Sequence[Chunk],
        vectors: np.ndarray | Sequence[np.ndarray | None],
        file_graph: FileGraph | None = None,
        graph_version: int = 0,
        *,
        priority: int = 0,
        skip: Collection[int] = (),
        terms: Sequence[ChunkTerms] | None = None,
        hashes: Sequence[str] | None = None,
    ) -> int:
        """Add (or replace) a file with its chunks and their L2-normalised vectors, row for row (None:
        embedded later, in `priority` order; chunk indexes in `skip` never), and its code graph;
        `terms` and `hashes` are the chunks' `lexical.chunk_terms` and `content_hash` if already
        computed (by the chunk pool)."""
        if len(chunks) != len(vectors):
            raise ValueError(f"{file.path}: {len(chunks)} chunks but {len(vectors)} vectors")
        replaced = self.remove_file(file.path)
        conn = self.conn
        conn.execute(
            "INSERT INTO files(path, sha256, language, size, text, role) VALUES (%s, %s, %s, %s, %s, %s)",
            (file.path, file.sha256, file.language, file.size, file.text, file_role(file.path, file.text)),
        )
        ids = list(range(self.next_id, self.next_id + len(chunks)))
        self.next_id += len(chunks)
        postings: list[tuple[str, int, float]] = []
        rows = []
        terms = terms if terms is not None else [chunk_terms(chunk) for chunk in chunks]
        hashes = hashes if hashes is not None else [chunk.content_hash for chunk in chunks]
        for chunk_id, c, columns, content_hash in zip(ids, chunks, terms, hashes, strict=True):
            chunk_postings, length = pg_lexical.postings_of_terms(
                chunk_id, [text.split() for text in columns]
            )
            postings.extend(chunk_postings)
            rows.append(
                (
                    chunk_id,
                    c.path,
                    c.language,
                    c.start_line,
                    c.end_line,
                    c.symbol,
                    c.text,
                    content_hash,
                    length,
                )
            )
        with conn.cursor() as cursor:
            with cursor.copy(
                "COPY chunks (id, path, language, start_line, end_line, symbol, text, content_hash, "
                "lexical_length) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row(row)
            with cursor.copy("COPY postings (term, chunk_id, frequency) FROM STDIN") as copy:
                for posting in postings:
                    copy.write_row(posting)
            cursor.executemany(
                "INSERT INTO vectorless VALUES (%s, %s, %s)",
                [
                    (ids[row], priority, None if row in skip else chunks[row].embed_text)
                    for row, vector in enumerate(vectors)
                    if vector is None
                ],
            )
            self.insert_vectors(
                cursor,
                [(ids[row], vector) for row, vector in enumerate(vectors) if vector is not None],
            )
        if file_graph is not None:
            self._write_file_graph(file.path, file_graph, graph_version)
        return replaced

    def insert_vectors(
        self, cursor: psycopg.Cursor[TupleRow], rows: Sequence[tuple[int, np.ndarray]]
    ) -> None:
        dimension = self.record.dimension
        for _, vector in rows:
            if np.shape(vector)[-1] != dimension:
                raise ValueError(f"vectors have {np.shape(vector)[-1]} dimensions, not {dimension}")
        cursor.executemany(
            "INSERT INTO vectors (id, embedding) VALUES (%s, %s)",
            [(chunk_id, np.asarray(vector, dtype=np.float32).reshape(-1)) for chunk_id, vector in rows],
        )

    # code graph -----------------------------------------------------------------------------------

    def _write_file_graph(self, path: str, file_graph: FileGraph | None, version: int = 0) -> None:
        """Replace the graph rows of `path` (None: remove them), as the local builder does."""
        with self.conn.cursor() as cursor:
            for sql, rows in graph.file_graph_writes(path, file_graph, version):
                cursor.executemany(sql.replace("?", "%s"), rows)

    def files_needing_graph(self, version: int, languages: frozenset[str]) -> list[tuple[str, str, str]]:
        """(path, language, text) of kept files of `languages` with no graph, or one older than `version`."""
        rows = self.conn.execute(
            "SELECT f.path, f.language, f.text FROM files f LEFT JOIN graph_files g USING (path) "
            "WHERE f.language = ANY(%s) AND COALESCE(g.version, -1) < %s ORDER BY f.path",
            (sorted(languages), version),
        )
        return [(str(path), str(language), str(text)) for path, language, text in rows]

    def set_file_graph(self, path: str, file_graph: FileGraph, version: int) -> None:
        """Store the graph of a file already in the version (see `files_needing_graph`)."""
        self._files_changed = True
        self._write_file_graph(path, file_graph, version)

    def _resolve_graph(self) -> None:
        """Rebuild `import_edges` and `edges` with `rag.store.graph`'s resolver, run on an in-memory
        SQLite copy of the per-file rows (one resolver for both backends)."""
        conn = self.conn
        memory = sqlite3.connect(":memory:")
        try:
            memory.execute("CREATE TABLE files (path TEXT PRIMARY KEY, text TEXT NOT NULL)")
            graph.create_graph_schema(memory)
            read = " OR ".join(f"path LIKE '%%{name}'" for name in graph.RESOLVER_READS)
            copies = (
                ("files", f"SELECT path, CASE WHEN {read} THEN text ELSE '' END FROM files", 2),
                ("definitions", "SELECT id, path, name, qualname, kind, parent, start_line, end_line, bases "
                 "FROM definitions", 9),
                ("imports", "SELECT path, line, module, name, alias FROM imports", 5),
                ("refs", "SELECT path, line, scope, name, kind, receiver FROM refs", 6),
            )  # fmt: skip
            for table, select, width in copies:
                marks = ", ".join("?" * width)
                memory.executemany(f"INSERT INTO {table} VALUES ({marks})", conn.execute(select).fetchall())
            graph.resolve(memory)
            conn.execute("DELETE FROM import_edges")
            conn.execute("DELETE FROM edges")
            with conn.cursor() as cursor:
                with cursor.copy("COPY import_edges (path, line, alias, target_path) FROM STDIN") as copy:
                    for row in memory.execute("SELECT path, line, alias, target_path FROM import_edges"):
                        copy.write_row(row)
                with cursor.copy(
                    "COPY edges (src_id, dst_id, kind, path, line, name, exact) FROM STDIN"
                ) as copy:
                    for row in memory.execute(
                        "SELECT src_id, dst_id, kind, path, line, name, exact FROM edges"
                    ):
                        copy.write_row(row)
        finally:
            memory.close()

    # dense phase ----------------------------------------------------------------------------------

    def pending_texts(self, limit: int) -> list[tuple[str, str]]:
        """Up to `limit` `(content_hash, embed_text)` still to embed, in priority order, one per text."""
        return pending_texts(self.conn, limit)

    def pending_count(self) -> int:
        """Chunks that will get a vector but have none yet."""
        return pending_count(self.conn)

    def add_vectors(self, vectors: Mapping[str, np.ndarray]) -> int:
        """Give every pending chunk whose content hash is in `vectors` its vector; returns how many."""
        if not vectors:
            return 0
        rows = self.conn.execute(
            "SELECT c.id, c.content_hash FROM vectorless v JOIN chunks c ON c.id = v.id "
            "WHERE v.embed_text IS NOT NULL AND c.content_hash = ANY(%s)",
            (list(vectors),),
        ).fetchall()
        if not rows:
            return 0
        self.conn.execute("DELETE FROM vectorless WHERE id = ANY(%s)", ([int(row[0]) for row in rows],))
        with self.conn.cursor() as cursor:
            self.insert_vectors(
                cursor, [(int(chunk_id), vectors[content_hash]) for chunk_id, content_hash in rows]
            )
        return len(rows)

    # the swap -------------------------------------------------------------------------------------

    def commit(self, *, resolve_graph: bool = True) -> RepoRecord:
        """Flip `current_version` to the version built so far, in the transaction that wrote it.

        `resolve_graph=False` leaves the code graph's edges for the next commit to resolve."""
        with database_errors():
            return self._commit(resolve_graph)

    def _commit(self, resolve_graph: bool) -> RepoRecord:
        conn = self.conn
        self._graph_stale = self._graph_stale or self._files_changed
        if self._graph_stale and resolve_graph:
            started = time.monotonic()
            self._resolve_graph()
            self.graph_resolve_s += time.monotonic() - started
            self._graph_stale = False
        (files,) = conn.execute("SELECT COUNT(*) FROM files").fetchone() or (0,)
        (chunks,) = conn.execute("SELECT COUNT(*) FROM chunks").fetchone() or (0,)
        (pending, skipped) = conn.execute(
            "SELECT COUNT(embed_text), COUNT(*) - COUNT(embed_text) FROM vectorless"
        ).fetchone() or (0, 0)
        (dense,) = conn.execute("SELECT COUNT(*) FROM vectors").fetchone() or (0,)
        if chunks - pending - skipped != dense:
            raise RuntimeError(
                f"index inconsistent: {chunks} chunk rows, {pending + skipped} without a vector, "
                f"but {dense} vectors"
            )
        now = utc_now()
        self.record.version = self._next_version
        self.record.file_count = int(files)
        self.record.chunk_count = int(chunks)
        self.record.dense_chunks = int(dense)
        self.record.dense_total = int(chunks - skipped)
        self.record.index_state = index_state(self.record.dense_chunks, self.record.dense_total)
        self.record.created_at = self._created_at or now
        self.record.updated_at = now
        document = json.dumps(self.record.to_json())
        conn.execute(
            f"INSERT INTO {REGISTRY}.versions(repo_key, version, record) VALUES (%s, %s, %s)",
            (self._key, self._next_version, document),
        )
        conn.execute(
            f"UPDATE {REGISTRY}.repositories SET current_version = %s, record = %s, schema_name = %s, "
            "schema_version = %s WHERE key = %s",
            (self._next_version, document, self._schema, REPO_SCHEMA_VERSION, self._key),
        )
        conn.commit()
        if self._old_schema and self._old_schema != self._schema:
            conn.execute(f"DROP SCHEMA IF EXISTS {self._old_schema} CASCADE")
            conn.commit()
            self._old_schema = None
        self._next_version += 1
        self._files_changed = False
        self._created_at = self.record.created_at
        return dataclasses.replace(self.record)

    def checkpoint(self, *, resolve_graph: bool = True) -> RepoRecord:
        """Commit what is built so far as the live version, then keep building on top of it with the
        lock still held (lexical-first ingest: a searchable version, then dense ones)."""
        return self.commit(resolve_graph=resolve_graph)
