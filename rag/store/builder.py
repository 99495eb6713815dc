"""Writes a new version of a repository's index beside the live one.

An update starts from a copy of the live version (SQLite file and FAISS
index), removes the files that changed or left, and adds the new ones; the
unchanged majority is never touched, so a 10-file update of a large repository
costs a file copy plus the new embeddings. Until `commit()` swaps `current`,
readers (and a crash) only ever see the previous version.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import faiss
import numpy as np

from rag import lexical
from rag.errors import EmbedderMismatchError
from rag.graph_types import FileGraph
from rag.roles import file_role
from rag.store import graph
from rag.store.index import RepoIndex
from rag.store.integrity import CHECKSUM_FILE, write_checksums
from rag.store.layout import BUILD_PREFIX, RepoLock, RepoPaths, fsync_dir
from rag.store.schema import (
    FAISS_FILE,
    META_FILE,
    RECORD_FILE,
    SourceFileLike,
    open_for_build,
)
from rag.types import Chunk, RepoRecord


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_same_embedder(record: RepoRecord, base: RepoRecord) -> None:
    """An update must embed with the model its base version was built with (vectors would not compare)."""
    if (base.embedder, base.dimension) != (record.embedder, record.dimension):
        raise EmbedderMismatchError(
            f"cannot update {record.id} built with {base.embedder} using {record.embedder}; "
            f"re-index with `repolens ingest {base.url} --reindex`"
        )


class IndexBuilder:
    """Context manager for one build: holds the repo lock, commits or leaves no trace.

    Usage::

        with store.builder(record, base) as builder:
            builder.remove_file("old.py")
            builder.add_file(source_file, chunks, vectors)
            builder.record.commit = sha
            builder.commit()
    """

    def __init__(self, paths: RepoPaths, record: RepoRecord, base: RepoIndex | None) -> None:
        if base is not None:
            check_same_embedder(record, base.record)
        self.record = record
        self._paths = paths
        self._base = base
        self._lock = RepoLock(paths, record.id)
        self._dir = paths.root / f"{BUILD_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        self._committed = False
        self._removed_ids: list[int] = []
        self._added_ids: list[np.ndarray] = []
        self._added_vectors: list[np.ndarray] = []
        self._base_ids_by_hash: dict[str, int] = {}
        self.graph_resolve_s = 0.0  # time `commit` spent resolving the code graph (for ingest timings)
        self._created_at = base.record.created_at if base is not None else ""
        self._files_changed = True
        self._graph_stale = False  # files changed since the graph was last resolved

    def __enter__(self) -> IndexBuilder:
        self._lock.__enter__()
        try:
            self._refresh_stale_base()
            self._paths.remove_leftover_builds()
            self._dir.mkdir(parents=True)
            self._open_working_copy()
        except BaseException:
            self._discard()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._committed:
            self._discard()
        else:
            self._lock.__exit__(exc_type, exc, tb)

    def _refresh_stale_base(self) -> None:
        """Another builder may have committed since `base` was opened: build on the newest version."""
        if self._base is None:
            return
        target = self._paths.current_target()
        if target is not None and self._paths.root / target != self._base.version_dir:
            self._base = RepoIndex(self._paths.root / target)

    def _discard(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None:
            conn.close()
        shutil.rmtree(self._dir, ignore_errors=True)
        self._lock.release_and_remove_if_unindexed()

    def _open_working_copy(self) -> None:
        if self._base is None:
            self._conn = open_for_build(self._dir / META_FILE)
            self._faiss = faiss.IndexIDMap2(faiss.IndexFlatIP(self.record.dimension))
            self._next_id = 1
            return
        shutil.copyfile(self._base.version_dir / META_FILE, self._dir / META_FILE)
        self._conn = open_for_build(self._dir / META_FILE)
        graph.create_graph_schema(self._conn)  # a version from before the code graph gains its tables
        self._faiss = faiss.clone_index(self._base.faiss)  # type: ignore[assignment]  # a clone has its type
        self._base_ids_by_hash = dict(
            self._conn.execute(
                "SELECT content_hash, id FROM chunks WHERE id NOT IN (SELECT id FROM vectorless)"
            )
        )
        (max_id,) = self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM chunks").fetchone()
        self._next_id = int(max_id) + 1

    @property
    def base(self) -> RepoIndex | None:
        return self._base

    def file_hashes(self) -> dict[str, str]:
        """`path -> sha256` of the files in the version being built."""
        return dict(self._conn.execute("SELECT path, sha256 FROM files"))

    def reusable_vectors(self, content_hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """Vectors the previous version already has for these texts (valid for the whole build)."""
        found = {h: self._base_ids_by_hash[h] for h in set(content_hashes) if h in self._base_ids_by_hash}
        if not found:
            return {}
        ids = np.fromiter(found.values(), dtype=np.int64, count=len(found))
        vectors = self._faiss.reconstruct_batch(ids)
        return dict(zip(found.keys(), vectors, strict=True))

    def chunk_hashes(self, paths: Collection[str]) -> list[str]:
        """The content hash of every chunk of these files in the version being built (one per chunk),
        read before they are replaced: what ingest's report compares the new chunks with."""
        marks = ",".join("?" * len(paths))
        query = f"SELECT content_hash FROM chunks WHERE path IN ({marks})"  # placeholders only
        return [row[0] for row in self._conn.execute(query, list(paths))] if paths else []

    def remove_file(self, path: str) -> int:
        """Drop a file and its chunks; returns how many chunks left."""
        self._files_changed = True
        ids = [row[0] for row in self._conn.execute("SELECT id FROM chunks WHERE path = ?", (path,))]
        self._conn.execute(
            "DELETE FROM vectorless WHERE id IN (SELECT id FROM chunks WHERE path = ?)", (path,)
        )
        self._conn.execute("DELETE FROM chunks WHERE path = ?", (path,))
        self._conn.execute("DELETE FROM files WHERE path = ?", (path,))
        graph.write_file_graph(self._conn, path, None)
        lexical.delete_chunks(self._conn, ids)
        self._removed_ids.extend(ids)
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
        terms: Sequence[lexical.ChunkTerms] | None = None,
        hashes: Sequence[str] | None = None,
    ) -> int:
        """Add (or replace) a file with its chunks and their L2-normalised vectors, row for row,
        and its code graph (None: a language the graph does not understand).

        A `None` vector makes the chunk searchable lexically now and embedded later (`add_vectors`,
        in `priority` order, lowest first); chunk indexes in `skip` are never embedded (no semantic
        value). `terms` and `hashes`: the chunks' `lexical.chunk_terms` and `content_hash`, row for
        row, if already computed (by the chunk pool). Returns how many chunks of a previous copy of
        the file were replaced.
        """
        if len(chunks) != len(vectors):
            raise ValueError(f"{file.path}: {len(chunks)} chunks but {len(vectors)} vectors")
        replaced = self.remove_file(file.path)
        self._conn.execute(
            "INSERT INTO files(path, sha256, language, size, text, role) VALUES (?, ?, ?, ?, ?, ?)",
            (file.path, file.sha256, file.language, file.size, file.text, file_role(file.path, file.text)),
        )
        ids = np.arange(self._next_id, self._next_id + len(chunks), dtype=np.int64)
        self._next_id += len(chunks)
        hashes = hashes if hashes is not None else [chunk.content_hash for chunk in chunks]
        rows = [
            (int(chunk_id), c.path, c.language, c.start_line, c.end_line, c.symbol, c.text, content_hash)
            for chunk_id, c, content_hash in zip(ids, chunks, hashes, strict=True)
        ]
        self._conn.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        terms = terms if terms is not None else [lexical.chunk_terms(chunk) for chunk in chunks]
        lexical.index_terms(
            self._conn, ((int(chunk_id), *row) for chunk_id, row in zip(ids, terms, strict=True))
        )
        if file_graph is not None:
            graph.write_file_graph(self._conn, file.path, file_graph, graph_version)
        present = [row for row, vector in enumerate(vectors) if vector is not None]
        missing = [
            (int(ids[row]), priority, None if row in skip else chunks[row].embed_text)
            for row, vector in enumerate(vectors)
            if vector is None
        ]
        self._conn.executemany("INSERT INTO vectorless VALUES (?, ?, ?)", missing)
        if present:
            self._added_ids.append(ids[present])
            self._added_vectors.append(
                np.asarray([vectors[row] for row in present], dtype=np.float32).reshape(len(present), -1)
            )
        return replaced

    def files_needing_graph(self, version: int, languages: frozenset[str]) -> list[tuple[str, str, str]]:
        """(path, language, text) of kept files of `languages` with no graph, or one older than `version`
        (an update of a version built before the graph, or by an older extractor)."""
        have = graph.graphed_files(self._conn)
        rows = self._conn.execute("SELECT path, language FROM files").fetchall()
        stale = [path for path, language in rows if language in languages and have.get(path, -1) < version]
        found = []
        for path in stale:
            (language, text) = self._conn.execute(
                "SELECT language, text FROM files WHERE path = ?", (path,)
            ).fetchone()
            found.append((path, language, text))
        return found

    def set_file_graph(self, path: str, file_graph: FileGraph, version: int) -> None:
        """Store the graph of a file already in the version (see `files_needing_graph`)."""
        self._files_changed = True
        graph.write_file_graph(self._conn, path, file_graph, version)

    def pending_texts(self, limit: int) -> list[tuple[str, str]]:
        """Up to `limit` `(content_hash, embed_text)` still to embed, in priority order, one per text."""
        return pending_texts(self._conn, limit)

    def pending_count(self) -> int:
        """Chunks that will get a vector but have none yet."""
        return pending_count(self._conn)

    def add_vectors(self, vectors: Mapping[str, np.ndarray]) -> int:
        """Give every pending chunk whose content hash is in `vectors` its vector; returns how many."""
        if not vectors:
            return 0
        rows = self._conn.execute(
            "SELECT c.id, c.content_hash FROM vectorless v JOIN chunks c ON c.id = v.id "
            "WHERE v.embed_text IS NOT NULL"
        ).fetchall()
        filled = [(chunk_id, content_hash) for chunk_id, content_hash in rows if content_hash in vectors]
        if not filled:
            return 0
        self._conn.executemany("DELETE FROM vectorless WHERE id = ?", [(chunk_id,) for chunk_id, _ in filled])
        self._added_ids.append(np.asarray([chunk_id for chunk_id, _ in filled], dtype=np.int64))
        self._added_vectors.append(
            np.asarray([vectors[content_hash] for _, content_hash in filled], dtype=np.float32)
        )
        return len(filled)

    def _apply_vector_changes(self) -> None:
        if self._removed_ids:
            self._faiss.remove_ids(np.asarray(self._removed_ids, dtype=np.int64))  # type: ignore[arg-type]  # faiss wraps arrays
        if self._added_ids:
            vectors = np.ascontiguousarray(np.concatenate(self._added_vectors))
            if vectors.shape[1] != self.record.dimension:
                raise ValueError(f"vectors have {vectors.shape[1]} dimensions, not {self.record.dimension}")
            self._faiss.add_with_ids(vectors, np.concatenate(self._added_ids))

    def commit(self, *, resolve_graph: bool = True) -> RepoRecord:
        """Write the version, swap `current` to it atomically, and drop older versions.

        `resolve_graph=False` leaves the code graph's edges as they were (a lexical checkpoint whose
        graph comes next): the next commit resolves them."""
        self._apply_vector_changes()
        self._graph_stale = self._graph_stale or self._files_changed
        if self._graph_stale and resolve_graph:  # a dense checkpoint only adds vectors: as resolved
            started = time.monotonic()
            graph.resolve(self._conn)
            self.graph_resolve_s += time.monotonic() - started
            self._graph_stale = False
        (files,) = self._conn.execute("SELECT COUNT(*) FROM files").fetchone()
        (chunks,) = self._conn.execute("SELECT COUNT(*) FROM chunks").fetchone()
        (pending, skipped) = self._conn.execute(
            "SELECT COUNT(embed_text), COUNT(*) - COUNT(embed_text) FROM vectorless"
        ).fetchone()
        if chunks - pending - skipped != self._faiss.ntotal:
            raise RuntimeError(
                f"index inconsistent: {chunks} chunk rows, {pending + skipped} without a vector, "
                f"but {self._faiss.ntotal} vectors"
            )
        self._conn.execute("COMMIT")
        self._conn.close()
        self._conn = None  # type: ignore[assignment]  # closed; the builder is done

        number = self._paths.next_version()
        now = utc_now()
        self.record.version = number
        self.record.file_count = int(files)
        self.record.chunk_count = int(chunks)
        self.record.dense_chunks = int(self._faiss.ntotal)
        self.record.dense_total = int(chunks - skipped)
        self.record.index_state = index_state(self.record.dense_chunks, self.record.dense_total)
        self.record.created_at = self._created_at or now
        self.record.updated_at = now
        faiss.write_index(self._faiss, str(self._dir / FAISS_FILE))
        (self._dir / RECORD_FILE).write_text(json.dumps(self.record.to_json(), indent=2))
        write_checksums(self._dir)
        for name in (META_FILE, FAISS_FILE, RECORD_FILE, CHECKSUM_FILE):
            _fsync_file(self._dir / name)
        fsync_dir(self._dir)

        target = self._paths.version_dir(number)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(self._dir, target)
        fsync_dir(target.parent)
        self._paths.swap_current(target)
        self._committed = True
        self._paths.remove_old_versions()
        return self.record

    def checkpoint(self, *, resolve_graph: bool = True) -> RepoRecord:
        """Commit what is built so far as the live version, then keep building on top of it with the
        lock still held (lexical-first ingest: a searchable version, then dense ones). A crash after
        this leaves the checkpoint serving; the next build starts from it."""
        committed = self.commit(resolve_graph=resolve_graph)
        self._committed = False
        self.record = dataclasses.replace(committed)
        self._created_at = committed.created_at
        self._dir = self._paths.root / f"{BUILD_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        self._dir.mkdir(parents=True)
        shutil.copyfile(self._paths.version_dir(committed.version) / META_FILE, self._dir / META_FILE)
        self._conn = open_for_build(self._dir / META_FILE)
        self._removed_ids, self._added_ids, self._added_vectors = [], [], []
        self._files_changed = False
        return dataclasses.replace(committed)


class SqlConnection(Protocol):
    """What the dense-phase queries below need of a connection: SQLite's and psycopg's both fit."""

    def execute(self, query: str, /) -> Iterable[Any]: ...


# The dense phase's two queries, plain SQL that the SQLite and the PostgreSQL schemas share.
def pending_texts(conn: SqlConnection, limit: int) -> list[tuple[str, str]]:
    """Up to `limit` `(content_hash, embed_text)` still to embed, in priority order, one per text."""
    rows = conn.execute(
        "SELECT c.content_hash, v.embed_text FROM vectorless v JOIN chunks c ON c.id = v.id "
        "WHERE v.embed_text IS NOT NULL ORDER BY v.priority, v.id"
    )
    found: dict[str, str] = {}
    for content_hash, text in rows:
        found.setdefault(content_hash, text)
        if len(found) >= limit:
            break
    return list(found.items())


def pending_count(conn: SqlConnection) -> int:
    """Chunks that will get a vector but have none yet."""
    for (count,) in conn.execute("SELECT COUNT(*) FROM vectorless WHERE embed_text IS NOT NULL"):
        return int(count)
    return 0


def index_state(dense_chunks: int, dense_total: int) -> str:
    """`complete`, `lexical` (no vector yet) or `partial n/m`, as records and status frames say it."""
    if dense_chunks >= dense_total:
        return "complete"
    return "lexical" if dense_chunks == 0 else f"partial {dense_chunks}/{dense_total}"


def _fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())
