"""A persistent content-hash → vector cache in front of any embedder.

Re-ingesting a repository, or another branch of it, re-embeds only text that
was never seen before. One SQLite file per embedder name keeps vectors of
different models apart; WAL mode lets several processes read and write at once.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from rag.embedders.base import Embedder, EmbedderWrapper, Progress, empty

log = logging.getLogger(__name__)

_LOOKUP_BATCH = 500
_SCHEMA = "CREATE TABLE IF NOT EXISTS vectors (hash BLOB PRIMARY KEY, vector BLOB NOT NULL) WITHOUT ROWID"


def content_hash(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def cache_file(cache_dir: Path, embedder_name: str) -> Path:
    return cache_dir / f"{urllib.parse.quote(embedder_name, safe='')}.sqlite"


class CachedEmbedder(EmbedderWrapper):
    """Wraps an embedder; documents are looked up by the SHA-256 of their text before embedding."""

    def __init__(
        self,
        embedder: Embedder,
        cache_dir: Path,
        siblings: Callable[[str], Embedder | None] | None = None,
    ) -> None:
        super().__init__(embedder)
        self._cache_dir = cache_dir
        self._siblings = siblings
        self._sibling_cache: dict[str, CachedEmbedder] = {}
        self.path = cache_file(cache_dir, embedder.name)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as error:
            log.warning("the vector cache %s is unreadable (%s); starting a new one", self.path, error)
            for leftover in self.path.parent.glob(f"{self.path.name}*"):
                leftover.unlink()
            self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def for_model(self, name: str) -> Embedder | None:
        """The same kind of embedder for model `name`, with its own cache (see `embedder_for`)."""
        with self._lock:
            if name not in self._sibling_cache:
                sibling = self._siblings(name) if self._siblings is not None else None
                if sibling is None:
                    return None
                self._sibling_cache[name] = CachedEmbedder(sibling, self._cache_dir)
            return self._sibling_cache[name]

    def embed_documents(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        if not texts:
            return empty(self.dimension)
        hashes = [content_hash(text) for text in texts]
        found = self._lookup(set(hashes))
        missing: dict[bytes, str] = {}
        for key, text in zip(hashes, texts, strict=True):
            if key not in found:
                missing.setdefault(key, text)
        total = len(missing) + len(found)
        if progress is not None:
            progress(len(found), total)
        if missing:

            def inner_progress(done: int, _: int) -> None:
                if progress is not None:
                    progress(len(found) + done, total)

            fresh = self.inner.embed_documents(list(missing.values()), progress=inner_progress)
            new = dict(zip(missing, np.asarray(fresh, dtype=np.float32), strict=True))
            self._store(new.items())
            found.update(new)
        return np.stack([found[key] for key in hashes]).astype(np.float32, copy=False)

    def lookup(self, hashes: Sequence[str]) -> list[np.ndarray | None]:
        """The cached vector of each text named by its hash, or None: what an ingest can use without
        embedding. A hash is the SHA-256 hex digest of the text's UTF-8 (`Chunk.content_hash`, which
        the chunk workers computed: the cache's key, so no text is built or hashed again here)."""
        keys = [bytes.fromhex(text_hash) for text_hash in hashes]
        found = self._lookup(set(keys)) if keys else {}
        return [found.get(key) for key in keys]

    def _lookup(self, keys: set[bytes]) -> dict[bytes, np.ndarray]:
        """Cached vectors by hash; a cache that cannot be read only costs re-embedding."""
        wanted = list(keys)
        size = self.dimension * 4
        found: dict[bytes, np.ndarray] = {}
        try:
            with self._lock:
                for start in range(0, len(wanted), _LOOKUP_BATCH):
                    part = wanted[start : start + _LOOKUP_BATCH]
                    query = f"SELECT hash, vector FROM vectors WHERE hash IN ({','.join('?' * len(part))})"
                    for key, blob in self._db.execute(query, part):
                        if len(blob) == size:
                            found[key] = np.frombuffer(blob, dtype=np.float32)
        except sqlite3.Error as error:
            log.warning("vector cache %s: lookup failed (%s); embedding everything", self.path, error)
        return found

    def _store(self, items: Iterable[tuple[bytes, np.ndarray]]) -> None:
        """Best effort: the vectors are already computed, so a failed write (disk full) is only logged."""
        rows = [(key, vector.astype(np.float32).tobytes()) for key, vector in items]
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany("INSERT OR REPLACE INTO vectors (hash, vector) VALUES (?, ?)", rows)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
        except sqlite3.Error as error:
            log.warning("vector cache %s: write failed (%s)", self.path, error)

    def close(self) -> None:
        with self._lock:
            self._db.close()
            siblings = list(self._sibling_cache.values())
            self._sibling_cache.clear()
        for sibling in siblings:
            sibling.close()
