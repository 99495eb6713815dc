"""Copy a local store's repositories into PostgreSQL (`repolens migrate-store`), without re-embedding.

Each repository's live version is read as stored (SQLite rows, FAISS vectors, the FTS5 token
columns) and written as one full build of the PostgreSQL store: one transaction per repository,
so a failure leaves that repository as it was in the database and the local store is never
changed. BM25 postings are made from the very tokens FTS5 indexed, so lexical search ranks as it
did locally; the code graph's per-file rows are copied and resolved again at commit (the same
resolver, the same edges). Repositories the database already has are left alone unless
`replace` is set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from rag.roles import DEFAULT_ROLE
from rag.store.index import RepoIndex
from rag.store.pg import lexical as pg_lexical
from rag.store.pg.builder import PgIndexBuilder
from rag.store.pg.store import PgStore
from rag.store.schema import open_readonly
from rag.store.store import Store

_BATCH = 2_000


@dataclasses.dataclass(frozen=True, slots=True)
class Migrated:
    """What happened to one repository: `copied`, or `skipped` (already in the database)."""

    id: str
    outcome: str
    files: int = 0
    chunks: int = 0
    vectors: int = 0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def summary(self) -> str:
        if self.outcome == "skipped":
            return f"{self.id}: already in the database, skipped (--replace copies it again)"
        return f"{self.id}: copied {self.files} files, {self.chunks} chunks, {self.vectors} vectors"


def migrate_store(
    local: Store,
    target: PgStore,
    *,
    replace: bool = False,
    progress: Callable[[Migrated], None] | None = None,
) -> list[Migrated]:
    """Copy every repository of `local` into `target`; returns one `Migrated` per repository."""
    results = []
    for record in local.list():
        if not replace and target.get(record.id) is not None:
            result = Migrated(record.id, "skipped")
        else:
            result = _copy(local.open(record.id), target)
        results.append(result)
        if progress is not None:
            progress(result)
    return results


def _rows(index: RepoIndex, sql: str) -> Iterator[list[tuple[Any, ...]]]:
    """Rows of the version's SQLite file in batches (a second, private connection: no lock needed)."""
    conn = open_readonly(index.version_dir / "meta.sqlite")
    try:
        cursor = conn.execute(sql)
        while batch := cursor.fetchmany(_BATCH):
            yield batch
    finally:
        conn.close()


def _copy(index: RepoIndex, target: PgStore) -> Migrated:
    record = dataclasses.replace(index.record)
    with target.builder(record, None) as builder:
        conn = builder.conn
        present = {row[0] for batch in _rows(index, "SELECT name FROM sqlite_master") for row in batch}
        vectorless = (
            {row[0] for batch in _rows(index, "SELECT id FROM vectorless") for row in batch}
            if "vectorless" in present
            else set()
        )
        roles = index.roles()  # decided from the text for a version written before roles were stored
        with conn.cursor() as cursor:
            with cursor.copy("COPY files (path, sha256, language, size, text, role) FROM STDIN") as copy:
                for batch in _rows(index, "SELECT path, sha256, language, size, text FROM files"):
                    for row in batch:
                        copy.write_row((*row, roles.get(row[0], DEFAULT_ROLE)))
            for table, columns in _TABLES:
                if table not in present:  # a version from before lexical-first ingest or the graph
                    continue
                names = ", ".join(columns)
                with cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                    for batch in _rows(index, f"SELECT {names} FROM {table}"):
                        for row in batch:
                            copy.write_row(row)
            # Copied ids: later definitions of an update must be numbered after them.
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence('definitions', 'id'), COALESCE(MAX(id), 0) + 1, false) "
                "FROM definitions"
            )
            _copy_chunks(index, builder, cursor)
        dense = 0
        for batch in _rows(index, "SELECT id FROM chunks ORDER BY id"):
            ids = [int(chunk_id) for (chunk_id,) in batch if chunk_id not in vectorless]
            if ids:
                vectors = index.faiss.reconstruct_batch(np.asarray(ids, dtype=np.int64))
                with conn.cursor() as cursor:
                    builder.insert_vectors(cursor, list(zip(ids, vectors, strict=True)))
                dense += len(ids)
        committed = builder.commit()
    return Migrated(record.id, "copied", committed.file_count, committed.chunk_count, dense)


def _copy_chunks(index: RepoIndex, builder: PgIndexBuilder, cursor: Any) -> None:
    """Chunks with their postings, from the token columns FTS5 holds for each chunk."""
    tokens = {
        int(rowid): (path.split(), symbol.split(), body.split())
        for batch in _rows(index, "SELECT rowid, path, symbol, body FROM lexical")
        for rowid, path, symbol, body in batch
    }
    with cursor.copy(
        "COPY chunks (id, path, language, start_line, end_line, symbol, text, content_hash, lexical_length) "
        "FROM STDIN"
    ) as copy:
        postings: list[tuple[str, int, float]] = []
        for batch in _rows(
            index, "SELECT id, path, language, start_line, end_line, symbol, text, content_hash FROM chunks"
        ):
            for row in batch:
                chunk_postings, length = pg_lexical.postings_of_terms(
                    int(row[0]), tokens.get(int(row[0]), ([], [], []))
                )
                postings.extend(chunk_postings)
                copy.write_row((*row, length))
    with cursor.copy("COPY postings (term, chunk_id, frequency) FROM STDIN") as copy:
        for posting in postings:
            copy.write_row(posting)
    builder.next_id = max(tokens, default=0) + 1


# Tables copied row for row, when the version has them (files, chunks, postings and vectors: `_copy`).
_TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("vectorless", ("id", "priority", "embed_text")),
    ("definitions", ("id", "path", "name", "qualname", "kind", "parent", "start_line", "end_line", "bases")),
    ("imports", ("path", "line", "module", "name", "alias")),
    ("refs", ("path", "line", "scope", "name", "kind", "receiver")),
    ("graph_files", ("path", "version")),
)
