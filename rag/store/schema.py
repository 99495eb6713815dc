"""The SQLite half of a version: tables, row types and how connections are opened.

A version's `meta.sqlite` is written once by a builder and never changed after
the swap, so readers open it `immutable`: no locks, no journal, safe to share
between threads and to keep reading after the version directory was
garbage-collected (the open file stays valid on POSIX).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rag import lexical
from rag.roles import file_role
from rag.store.graph import create_graph_schema
from rag.types import Chunk, SearchHit

META_FILE = "meta.sqlite"
FAISS_FILE = "index.faiss"
RECORD_FILE = "record.json"

# The tables of a version (the PostgreSQL store creates the same ones: `rag.store.pg.schema`).
META_DDL = """
CREATE TABLE files (
    path TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    language TEXT NOT NULL,
    size INTEGER NOT NULL,
    text TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT 'source'
);
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    language TEXT NOT NULL,
    start_line INTEGER NOT NULL,
    end_line INTEGER NOT NULL,
    symbol TEXT,
    text TEXT NOT NULL,
    content_hash TEXT NOT NULL
);
CREATE INDEX chunks_path ON chunks(path, start_line);
CREATE INDEX chunks_hash ON chunks(content_hash);
CREATE INDEX chunks_symbol ON chunks(symbol);
"""

# Chunks with no vector yet (lexical-first ingest: embedded later, in `priority` order) or never
# (`embed_text` NULL: content with no semantic value, searchable lexically only). Created on every
# build connection, so versions written before it existed gain it on their next update.
VECTORLESS_DDL = """
CREATE TABLE IF NOT EXISTS vectorless (
    id INTEGER PRIMARY KEY,
    priority INTEGER NOT NULL,
    embed_text TEXT
);
CREATE INDEX IF NOT EXISTS vectorless_order ON vectorless(priority, id);
"""

CHUNK_COLUMNS = "id, path, language, start_line, end_line, symbol, text, content_hash"


class SourceFileLike(Protocol):
    """What the builder needs to know about a file (`ingest.reader.SourceFile` fits)."""

    @property
    def path(self) -> str: ...
    @property
    def language(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def size(self) -> int: ...


@dataclass(frozen=True, slots=True)
class StoredChunk:
    """A chunk as stored in a version, with its id in the FAISS index."""

    id: int
    path: str
    language: str
    start_line: int
    end_line: int
    symbol: str | None
    text: str
    content_hash: str

    def to_chunk(self) -> Chunk:
        return Chunk(self.path, self.language, self.start_line, self.end_line, self.symbol, self.text)

    def to_hit(self, score: float) -> SearchHit:
        return SearchHit(
            self.path, self.language, self.start_line, self.end_line, self.symbol, self.text, score
        )


@dataclass(frozen=True, slots=True)
class FileInfo:
    """One indexed file, without its text."""

    path: str
    language: str
    size: int
    sha256: str
    chunk_count: int


@dataclass(frozen=True, slots=True)
class CodeDefinition:
    """A definition of the code graph: `qualname` is dotted inside its file (`Router.add_route`)."""

    id: int
    path: str
    name: str
    qualname: str
    kind: str
    parent: str | None
    start_line: int
    end_line: int

    @property
    def ref(self) -> str:
        return f"{self.path}:{self.start_line}-{self.end_line}"


@dataclass(frozen=True, slots=True)
class CodeEdge:
    """A resolved use at `path:line`: a `call`, `read` or `inherit` from `source` to `target`.

    `source` is None for module-level code; `exact` is False when the name was matched only by being
    the one (or one of the few) definitions of that name in the repository.
    """

    kind: str
    path: str
    line: int
    name: str
    exact: bool
    source: CodeDefinition | None
    target: CodeDefinition


DEFINITION_COLUMNS = "id, path, name, qualname, kind, parent, start_line, end_line"


def create_schema(conn: sqlite3.Connection) -> None:
    """Tables of a brand-new version, including the lexical (FTS5) index."""
    conn.executescript(META_DDL)
    lexical.create_lexical_schema(conn)
    create_graph_schema(conn)


def open_for_build(path: Path) -> sqlite3.Connection:
    """A writable connection tuned for bulk writes: durability comes from fsync at commit.

    A new database gets its tables first; everything after runs in one transaction.
    """
    new = not path.exists()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    if new:
        create_schema(conn)
    conn.executescript(VECTORLESS_DDL)
    conn.execute("BEGIN")
    if not new:
        add_missing_columns(conn)
    return conn


def has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    return any(row[1] == column for row in conn.execute(f"PRAGMA table_info({table})"))


def add_missing_columns(conn: sqlite3.Connection) -> None:
    """Bring a version written before `files.role` existed up to date (roles decided from each file)."""
    if has_column(conn, "files", "role"):
        return
    conn.execute("ALTER TABLE files ADD COLUMN role TEXT NOT NULL DEFAULT 'source'")
    rows = conn.execute("SELECT path, text FROM files").fetchall()
    conn.executemany("UPDATE files SET role = ? WHERE path = ?", [(file_role(p, t), p) for p, t in rows])


def open_readonly(path: Path) -> sqlite3.Connection:
    uri = f"{path.resolve().as_uri()}?mode=ro&immutable=1"
    return sqlite3.connect(uri, uri=True, check_same_thread=False)


def row_to_chunk(row: tuple[Any, ...]) -> StoredChunk:
    return StoredChunk(*row)
