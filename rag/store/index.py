"""One loaded, read-only version of a repository's index.

Loaded once per process by `Store.open` and shared by every request and
thread: FAISS searches are thread-safe, and SQLite access goes through one
lock (queries are short; the connection is immutable).
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import faiss
import numpy as np

from rag import lexical
from rag.errors import EmbedderMismatchError, IndexCorruptError
from rag.roles import DEFAULT_ROLE, file_role
from rag.store.integrity import corrupt, verify_checksums
from rag.store.schema import (
    CHUNK_COLUMNS,
    DEFINITION_COLUMNS,
    FAISS_FILE,
    META_FILE,
    RECORD_FILE,
    CodeDefinition,
    CodeEdge,
    FileInfo,
    StoredChunk,
    has_column,
    open_readonly,
    row_to_chunk,
)
from rag.types import RepoRecord

# One query is a memory-bound scan: OpenMP threads only fight the embedder and the event loop for the
# cores (100k chunks under load: 34 ms with one thread, 175 ms with two).
faiss.omp_set_num_threads(1)
# Results `RepoIndex._lookup` keeps per loaded version (a few hundred bytes each).
LOOKUP_MEMO_ROWS = 4096


class EmbedderLike(Protocol):
    """The two attributes an index is tied to (any `rag.embedders.Embedder`)."""

    @property
    def name(self) -> str: ...
    @property
    def dimension(self) -> int: ...


class RepoIndex:
    """Dense and lexical search plus chunk and file lookups over one version."""

    def __init__(self, version_dir: Path) -> None:
        self.version_dir = version_dir
        try:
            self.record = RepoRecord.from_json(json.loads((version_dir / RECORD_FILE).read_text()))
            verify_checksums(version_dir)
            self.faiss = faiss.read_index(str(version_dir / FAISS_FILE))
            self._conn = open_readonly(version_dir / META_FILE)
            self._conn.execute("SELECT COUNT(*) FROM chunks").fetchone()
        except (FileNotFoundError, IndexCorruptError):
            raise
        except (RuntimeError, sqlite3.DatabaseError, ValueError, KeyError, TypeError) as error:
            raise corrupt(version_dir, f"{type(error).__name__}: {str(error)[:120]}") from None
        self._lock = threading.Lock()
        self._roles: dict[str, str] | None = None
        self._lookups: dict[tuple[str, tuple[object, ...]], tuple[tuple[Any, ...], ...]] = {}

    @property
    def size(self) -> int:
        """Number of vectors (= chunks)."""
        return int(self.faiss.ntotal)

    def check_embedder(self, embedder: EmbedderLike) -> None:
        """Refuse to mix embedders: a query vector from another model matches nothing meaningful."""
        if embedder.name == self.record.embedder and embedder.dimension == self.record.dimension:
            return
        raise EmbedderMismatchError(
            f"{self.record.id} was indexed with the embedder {self.record.embedder} "
            f"({self.record.dimension} dimensions) but the configured embedder is {embedder.name} "
            f"({embedder.dimension} dimensions); re-index with "
            f"`repolens ingest {self.record.url} --reindex` or configure the original embedder"
        )

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def _lookup(self, sql: str, params: Sequence[object]) -> tuple[tuple[Any, ...], ...]:
        """`_query` for the small graph lookups a search repeats (definitions by name or path, spans,
        chunks at a line), remembered for this version: its database never changes.

        A question's retrieval makes ~45 of them. Each SQLite call lets go of the GIL and then waits for
        it behind the event loop (up to the 5 ms switch interval while the loop streams other answers),
        so at 200 streams a search with ~3 ms of CPU took 30-600 ms. Remembered rows are tuples of
        plain values: the garbage collector stops tracking them, so full collections do not walk them.
        At most `LOOKUP_MEMO_ROWS` results are kept, the oldest dropped first.
        """
        key = (sql, tuple(params))
        rows = self._lookups.get(key)
        if rows is None:
            rows = tuple(self._query(sql, params))
            with self._lock:
                if len(self._lookups) >= LOOKUP_MEMO_ROWS:
                    self._lookups.pop(next(iter(self._lookups)), None)
                self._lookups[key] = rows
        return rows

    def _allowed_ids(self, path_glob: str | None, language: str | None) -> np.ndarray:
        where: list[str] = []
        params: list[object] = []
        if language:
            where.append("language = ?")
            params.append(language)
        rows = self._query(f"SELECT id, path FROM chunks WHERE {' AND '.join(where) or 'TRUE'}", params)
        ids = [chunk_id for chunk_id, path in rows if not path_glob or lexical.path_matches(path, path_glob)]
        return np.asarray(ids, dtype=np.int64)

    def dense_search(
        self, vector: np.ndarray, k: int, *, path_glob: str | None = None, language: str | None = None
    ) -> list[tuple[int, float]]:
        """The `k` nearest chunks by cosine similarity, as `(chunk_id, score)`, best first.

        Filters become a FAISS id selector, so a filtered search still returns
        `k` hits when that many chunks pass the filter.
        """
        if k <= 0 or self.size == 0:
            return []
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        params = None
        if path_glob or language:
            allowed = self._allowed_ids(path_glob, language)
            if allowed.size == 0:
                return []
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))  # type: ignore[call-arg]  # faiss stubs lack `sel`
        scores, ids = self.faiss.search(query, min(k, self.size), params=params)
        # `tolist()` first: converting numpy scalars one by one held the GIL ~10x longer (rank_depth hits).
        return [(i, s) for i, s in zip(ids[0].tolist(), scores[0].tolist(), strict=True) if i >= 0]

    def lexical_search(
        self, query: str, k: int, *, path_glob: str | None = None, language: str | None = None
    ) -> list[tuple[int, float]]:
        """BM25 over the code-aware tokens of `rag.lexical`, as `(chunk_id, score)`, best first."""
        with self._lock:
            return lexical.lexical_search(self._conn, query, k, path_glob=path_glob, language=language)

    def get_chunks(self, ids: Sequence[int]) -> list[StoredChunk]:
        """Chunks in the order of `ids` (unknown ids are left out)."""
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = self._query(f"SELECT {CHUNK_COLUMNS} FROM chunks WHERE id IN ({marks})", [int(i) for i in ids])
        by_id = {row[0]: row_to_chunk(row) for row in rows}
        return [by_id[int(i)] for i in ids if int(i) in by_id]

    def chunks_for_file(self, path: str) -> list[StoredChunk]:
        rows = self._query(f"SELECT {CHUNK_COLUMNS} FROM chunks WHERE path = ? ORDER BY start_line", [path])
        return [row_to_chunk(row) for row in rows]

    def find_symbol(self, symbol: str) -> list[StoredChunk]:
        """Chunks whose symbol is `symbol` or ends with `.symbol` (`send` finds `HttpClient.send`)."""
        rows = self._query(
            f"SELECT {CHUNK_COLUMNS} FROM chunks WHERE symbol = ? OR symbol LIKE ? ESCAPE '\\' "
            "ORDER BY path, start_line",
            [symbol, "%." + symbol.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")],
        )
        return [row_to_chunk(row) for row in rows]

    def roles(self) -> dict[str, str]:
        """`path -> role` of every file (`rag.roles`), loaded once per version.

        A version written before roles were stored gets them decided from its files here.
        """
        if self._roles is None:
            if has_column(self._conn, "files", "role"):
                roles = dict(self._query("SELECT path, role FROM files"))
            else:
                roles = {
                    path: file_role(path, text) for path, text in self._query("SELECT path, text FROM files")
                }
            self._roles = roles
        return self._roles

    def file_role(self, path: str) -> str:
        return self.roles().get(path, DEFAULT_ROLE)

    def symbol_spans(self, path: str, symbol: str) -> list[tuple[int, int]]:
        """`(start_line, end_line)` of the chunks of `path` named `symbol`, in line order (no texts read)."""
        rows = self._lookup(
            "SELECT start_line, end_line FROM chunks WHERE path = ? AND symbol = ? ORDER BY start_line",
            [path, symbol],
        )
        return [(int(start), int(end)) for start, end in rows]

    def chunk_ids_at(self, path: str, line: int) -> list[int]:
        """Ids of the chunks of `path` that hold `line`."""
        rows = self._lookup(
            "SELECT id FROM chunks WHERE path = ? AND start_line <= ? AND end_line >= ?", [path, line, line]
        )
        return [int(row[0]) for row in rows]

    def file_text(self, path: str) -> str | None:
        rows = self._query("SELECT text FROM files WHERE path = ?", [path])
        return rows[0][0] if rows else None

    def list_files(self) -> list[FileInfo]:
        rows = self._query(
            "SELECT f.path, f.language, f.size, f.sha256, COUNT(c.id) FROM files f "
            "LEFT JOIN chunks c ON c.path = f.path GROUP BY f.path ORDER BY f.path"
        )
        return [FileInfo(*row) for row in rows]

    def file_info(self, path: str) -> FileInfo | None:
        rows = self._query(
            "SELECT f.path, f.language, f.size, f.sha256, COUNT(c.id) FROM files f "
            "LEFT JOIN chunks c ON c.path = f.path WHERE f.path = ? GROUP BY f.path",
            [path],
        )
        return FileInfo(*rows[0]) if rows else None

    def languages(self) -> dict[str, int]:
        """Files per language, most common first."""
        rows = self._query(
            "SELECT language, COUNT(*) AS n FROM files GROUP BY language ORDER BY n DESC, language"
        )
        return dict(rows)

    def file_hashes(self) -> dict[str, str]:
        """`path -> sha256` of every file: what an update diffs against."""
        return dict(self._query("SELECT path, sha256 FROM files"))

    # code graph ----------------------------------------------------------------------------------

    @functools.cached_property
    def has_graph(self) -> bool:
        """False for a version indexed before the code graph existed (its next update adds it), and
        for the lexical-first version of a new repository (its graph comes with the next version)."""
        rows = self._query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'edges'")
        return bool(rows) and bool(self._query("SELECT 1 FROM graph_files LIMIT 1"))

    def has_graph_known(self) -> bool:
        """`has_graph`, True only once it has been looked up (False before, without a query): for a
        caller on an event loop, where no SQLite runs."""
        return bool(self.__dict__.get("has_graph", False))

    @functools.cached_property
    def graph_version(self) -> int | None:
        """The extractor version (`rag.graph_types.GRAPH_VERSION`) of this version's code graph: its
        oldest graphed file's, None without a graph. What an update compares with the current extractor
        (`graph_change`) and what an offline wiki page records it was built from."""
        if not self.has_graph:
            return None
        [(oldest,)] = self._query("SELECT MIN(version) FROM graph_files")
        return None if oldest is None else int(oldest)

    def _definitions(
        self, where: str, params: Sequence[object], *, attributes: bool = False
    ) -> list[CodeDefinition]:
        """Definitions matching `where`; stored attributes (`Client.timeout`) only with `attributes`."""
        if not self.has_graph:
            return []
        kinds = "('impl')" if attributes else "('impl', 'attribute')"
        rows = self._lookup(
            f"SELECT {DEFINITION_COLUMNS} FROM definitions WHERE {where} AND kind NOT IN {kinds} "
            "ORDER BY path, start_line",
            params,
        )
        return [CodeDefinition(*row) for row in rows]

    def definitions_named(self, name: str) -> list[CodeDefinition]:
        """Definitions whose short name is `name` (one index lookup; what doc-to-code boosts use)."""
        return self._definitions("name = ?", [name])

    def definition(self, name: str) -> list[CodeDefinition]:
        """Definitions of `name`: a qualified name (`Router.add_route`, or its tail `routing.Router.add`
        written with the module) or a short one (`add_route`), exact qualified matches first. Stored
        attributes count (`Client.timeout`), after the code definitions of a short name."""
        exact = self._definitions("qualname = ?", [name], attributes=True)
        if exact:
            return exact
        parts = name.replace("::", ".").split(".")
        for start in range(1, len(parts)):
            found = self._definitions("qualname = ?", [".".join(parts[start:])], attributes=True)
            if found:
                return found
        return self.definitions_named(parts[-1]) or self._definitions(
            "name = ? AND kind = 'attribute'", [parts[-1]], attributes=True
        )

    def definitions_in(self, path: str) -> list[CodeDefinition]:
        return self._definitions("path = ?", [path])

    def definition_at(self, path: str, line: int) -> CodeDefinition | None:
        """The innermost definition of `path` containing `line`."""
        found = self._definitions("path = ? AND start_line <= ? AND end_line >= ?", [path, line, line])
        return min(found, key=lambda d: d.end_line - d.start_line, default=None)

    def attributes_of(self, definition: CodeDefinition) -> list[CodeDefinition]:
        """The attributes `definition`'s constructor stores from its arguments (`self.timeout = timeout`)."""
        return self._definitions(
            "path = ? AND parent = ? AND kind = 'attribute'", [definition.path, definition.qualname],
            attributes=True,
        )  # fmt: skip

    def definition_by_id(self, definition_id: int) -> CodeDefinition | None:
        found = self._definitions("id = ?", [definition_id], attributes=True)
        return found[0] if found else None

    def _edges(self, where: str, params: Sequence[object]) -> list[CodeEdge]:
        if not self.has_graph:
            return []
        rows = self._query(
            f"SELECT kind, path, line, name, exact, src_id, dst_id FROM edges WHERE {where} "
            "ORDER BY exact DESC, path, line",
            params,
        )
        ids = sorted({i for row in rows for i in row[5:] if i is not None})
        by_id: dict[int, CodeDefinition] = {}
        for start in range(0, len(ids), 500):
            batch = ids[start : start + 500]
            by_id.update(
                (d.id, d)
                for d in self._definitions(f"id IN ({','.join('?' * len(batch))})", batch, attributes=True)
            )
        return [
            CodeEdge(kind, path, line, name, bool(exact), by_id.get(src) if src else None, by_id[dst])
            for kind, path, line, name, exact, src, dst in rows
            if dst in by_id
        ]

    def callers(self, definition: CodeDefinition, kinds: Sequence[str] = ("call",)) -> list[CodeEdge]:
        """Who calls `definition` (each edge's `source`; None for module-level code)."""
        marks = ",".join("?" * len(kinds))
        return self._edges(f"dst_id = ? AND kind IN ({marks})", [definition.id, *kinds])

    def callees(
        self, definition: CodeDefinition, kinds: Sequence[str] = ("call", "read", "store")
    ) -> list[CodeEdge]:
        """What `definition` calls, the settings and stored attributes it reads, and the constructor
        arguments it stores, in line order."""
        marks = ",".join("?" * len(kinds))
        edges = self._edges(f"src_id = ? AND kind IN ({marks})", [definition.id, *kinds])
        return sorted(edges, key=lambda edge: edge.line)

    def references(self, definition: CodeDefinition) -> list[CodeEdge]:
        """Every resolved use of `definition`: calls, reads, stores (of an attribute) and subclasses."""
        return self._edges("dst_id = ?", [definition.id])

    def subclasses(self, definition: CodeDefinition) -> list[CodeDefinition]:
        """Classes that extend, implement or embed `definition` directly."""
        return [edge.source for edge in self.callers(definition, ("inherit",)) if edge.source is not None]

    def superclasses(self, definition: CodeDefinition) -> list[CodeDefinition]:
        return [edge.target for edge in self._edges("src_id = ? AND kind = 'inherit'", [definition.id])]

    def imports_of(self, path: str) -> list[tuple[int, str, str]]:
        """(line, bound name, indexed file) of what `path` imports."""
        if not self.has_graph:
            return []
        return self._query(
            "SELECT line, alias, target_path FROM import_edges WHERE path = ? ORDER BY line", [path]
        )

    def importers_of(self, path: str) -> list[tuple[str, int, str]]:
        """(file, line, bound name) of the indexed files that import `path`."""
        if not self.has_graph:
            return []
        return self._query(
            "SELECT path, line, alias FROM import_edges WHERE target_path = ? ORDER BY path, line", [path]
        )

    def vectorless_ids(self) -> set[int]:
        """Chunks with no vector: lexical-only content, or (partial index) not embedded yet."""
        try:
            return {row[0] for row in self._query("SELECT id FROM vectorless")}
        except sqlite3.OperationalError:  # a version from before lexical-first ingest
            return set()

    def close(self) -> None:
        with self._lock:
            self._conn.close()
