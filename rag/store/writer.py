"""`IndexWriter`: what ingest needs from a store's builder, whichever backend wrote it.

The local `IndexBuilder` (a working copy of FAISS + SQLite, swapped by a symlink) and the PostgreSQL
`PgIndexBuilder` (one transaction per version) both fit it; `Store.builder` returns one.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Protocol

import numpy as np

from rag.graph_types import FileGraph
from rag.lexical import ChunkTerms
from rag.store.index import RepoIndex
from rag.store.schema import SourceFileLike
from rag.types import Chunk, RepoRecord


class IndexWriter(Protocol):
    """One build: holds the repository lock, commits (or checkpoints) versions or leaves no trace."""

    record: RepoRecord
    graph_resolve_s: float  # time `commit` spent resolving the code graph (for ingest timings)

    def __enter__(self) -> IndexWriter: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...
    @property
    def base(self) -> RepoIndex | None: ...
    def file_hashes(self) -> dict[str, str]: ...
    def reusable_vectors(self, content_hashes: Iterable[str]) -> dict[str, np.ndarray]: ...
    def chunk_hashes(self, paths: Collection[str]) -> list[str]: ...
    def remove_file(self, path: str) -> int: ...
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
    ) -> int: ...
    def files_needing_graph(self, version: int, languages: frozenset[str]) -> list[tuple[str, str, str]]: ...
    def set_file_graph(self, path: str, file_graph: FileGraph, version: int) -> None: ...
    def pending_texts(self, limit: int) -> list[tuple[str, str]]: ...
    def pending_count(self) -> int: ...
    def add_vectors(self, vectors: Mapping[str, np.ndarray]) -> int: ...
    def commit(self, *, resolve_graph: bool = True) -> RepoRecord: ...
    def checkpoint(self, *, resolve_graph: bool = True) -> RepoRecord: ...
