"""One repository's index read from PostgreSQL: the local `RepoIndex`, with queries sent to a pool.

The chunk, file and code-graph lookups of `RepoIndex` are plain SQL over tables that have the same
names and columns in a repository's PostgreSQL schema, so this class inherits them and only
replaces how a query runs (`_query`: the repository's schema first on the `search_path`, `?`
placeholders as psycopg's `%s`) and the parts that are FAISS, FTS5 or SQLite specific: dense
search (pgvector HNSW, exact when filtered), lexical search (`rag.store.pg.lexical`), roles and
the graph check.

An index object stands for the version that was current when `PgStore.open` made it; the store
hands out a new one after a swap. Rows are read live, so a request that straddles a swap may see
the new version's rows for its later queries (chunk ids it no longer finds are left out, as after
a local swap).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from rag import lexical
from rag.store.index import RepoIndex
from rag.store.pg import lexical as pg_lexical
from rag.store.pg.errors import database_errors
from rag.types import RepoRecord


class PgRepoIndex(RepoIndex):
    """Dense and lexical search plus chunk and file lookups over one repository's schema."""

    def __init__(
        self,
        pool: ConnectionPool[psycopg.Connection[TupleRow]],
        schema: str,
        record: RepoRecord,
        *,
        ef_search: int,
    ) -> None:
        # No `super().__init__`: that opens a version folder; everything it sets up is replaced here.
        self.pool = pool
        self.schema = schema
        self.record = record
        # HNSW candidates per query (`REPOLENS_PG_EF_SEARCH`, pgvector's `hnsw.ef_search`); an
        # HNSW scan returns at most this many hits, so a query asking for more raises it to `k`
        # (up to pgvector's limit, 1000).
        self.ef_search = ef_search
        self._roles = None

    @property
    def size(self) -> int:
        """Number of vectors (chunks that have one)."""
        rows = self._query("SELECT COUNT(*) FROM vectors")
        return int(rows[0][0])

    def _run(
        self,
        sql: str,
        params: Sequence[object] | dict[str, object] = (),
        *,
        exact: bool = False,
        ef_search: int | None = None,
    ) -> list[tuple[Any, ...]]:
        """`sql` (psycopg placeholders) in one transaction with this repository's schema first."""
        with database_errors(), self.pool.connection() as conn, conn.transaction():
            # One round trip sets the transaction up: a filtered nearest-neighbour query scans the
            # filtered rows exactly instead of the HNSW graph (which filters after its scan).
            conn.execute(
                "SELECT set_config('search_path', %s, true), set_config('hnsw.ef_search', %s, true), "
                "set_config('enable_indexscan', %s, true)",
                (f"{self.schema}, public", str(ef_search or self.ef_search), "off" if exact else "on"),
            )
            return conn.execute(sql, params).fetchall()

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """The inherited lookups' SQLite-style SQL (`?` placeholders), run on PostgreSQL."""
        return self._run(sql.replace("%", "%%").replace("?", "%s"), params)

    def _lookup(self, sql: str, params: Sequence[object]) -> tuple[tuple[Any, ...], ...]:
        """Every lookup asks the database: nothing here says a schema's rows stay as they are while
        this index is cached, which the SQLite version's memo relies on."""
        return tuple(self._query(sql, params))

    def dense_search(
        self, vector: np.ndarray, k: int, *, path_glob: str | None = None, language: str | None = None
    ) -> list[tuple[int, float]]:
        """The `k` nearest chunks by cosine similarity, as `(chunk_id, score)`, best first.

        Unfiltered: an HNSW scan (approximate, `ef_search` candidates). Filtered: an exact scan of
        the chunks that pass the filter, so it still returns `k` hits when that many pass.
        """
        if k <= 0:
            return []
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(-1)
        sql = "SELECT id, 1 - (embedding <=> %s) FROM vectors"
        params: list[object] = [query]
        if path_glob or language:
            allowed = self._allowed_ids(path_glob, language)
            if allowed.size == 0:
                return []
            sql += " WHERE id = ANY(%s)"
            params.append(allowed.tolist())
        sql += " ORDER BY embedding <=> %s LIMIT %s"
        params += [query, k]
        exact = bool(path_glob or language)
        rows = self._run(sql, params, exact=exact, ef_search=min(max(self.ef_search, k), 1000))
        return [(int(chunk_id), float(score)) for chunk_id, score in rows]

    def lexical_search(
        self, query: str, k: int, *, path_glob: str | None = None, language: str | None = None
    ) -> list[tuple[int, float]]:
        """BM25 over the code-aware tokens of `rag.lexical`, ranked as the local store ranks them."""
        paths = None
        if path_glob:
            paths = [
                p for (p,) in self._query("SELECT path FROM files") if lexical.path_matches(p, path_glob)
            ]
        with database_errors(), self.pool.connection() as conn, conn.transaction():
            set_search_path(conn, self.schema)
            return pg_lexical.search(conn, query, k, paths=paths, language=language)

    def roles(self) -> dict[str, str]:
        if self._roles is None:
            self._roles = {str(path): str(role) for path, role in self._query("SELECT path, role FROM files")}
        return self._roles

    @functools.cached_property
    def has_graph(self) -> bool:
        return True  # every repository schema has the graph tables

    def close(self) -> None:
        """Nothing to close: connections belong to the store's pool."""


def set_search_path(conn: psycopg.Connection[TupleRow], schema: str, *, session: bool = False) -> None:
    """Put `schema` first (`public` holds pgvector's type): for the rest of the current transaction,
    or of the connection with `session` (a builder's own connection)."""
    conn.execute("SELECT set_config('search_path', %s, %s)", (f"{schema}, public", not session))
