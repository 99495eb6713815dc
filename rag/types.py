"""Value types shared by ingest, the store, retrieval and the API."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from rag.identifiers import name_words
from rag.pickling import pickled_by_fields


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of one file: a function, class, section or window of lines.

    Lines are 1-based and inclusive. `symbol` is the enclosing symbol path such
    as `Client.send`, or None for chunks outside any symbol.
    """

    path: str
    language: str
    start_line: int
    end_line: int
    symbol: str | None
    text: str
    # The signature and first doc line of the definitions enclosing the chunk that its text does
    # not show (one per line), so a method's chunk says which class it belongs to.
    context: str | None = None

    @property
    def header(self) -> str:
        """The line naming the chunk (camelCase names also in words), and its context lines,
        prepended to the text that is embedded."""
        where = f"{self.path}:{self.start_line}-{self.end_line}"
        named = f"# {where} {self.symbol}{name_words(self.symbol)}" if self.symbol else f"# {where}"
        return f"{named}\n{self.context}" if self.context else named

    @property
    def embed_text(self) -> str:
        return f"{self.header}\n{self.text}"

    @property
    def content_hash(self) -> str:
        """Hash of what is embedded: equal hashes mean a reusable vector."""
        return hashlib.sha256(self.embed_text.encode("utf-8")).hexdigest()


# A merged hit's label lists this many names, then `…` (`SearchHit.label`).
LISTED_NAMES = 3


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A retrieved span of a file, with its fused relevance score."""

    path: str
    language: str
    start_line: int
    end_line: int
    symbol: str | None
    text: str
    score: float
    # Why it ranked (`Retriever.search(..., explain=True)`): role, intent, ranks, boosts.
    explain: dict[str, Any] | None = None
    # A hit merged from chunks of several definitions: their names in line order (`f`, `g`). `symbol`
    # stays its best-ranked chunk's, which ranking and the code graph's walk go by; `label` is for readers.
    names: tuple[str, ...] = ()

    @property
    def label(self) -> str | None:
        """What the hit is called in search results and citations: every definition it spans, in line
        order (`f, g`, at most `LISTED_NAMES`, then `…`), as the chunker names a chunk of two functions.
        Named after its best-ranked chunk alone, a hit holding `f` then `g` read as if all were `g`."""
        if len(self.names) < 2:
            return self.symbol
        return ", ".join(self.names[:LISTED_NAMES]) + (", …" if len(self.names) > LISTED_NAMES else "")

    def to_json(self) -> dict[str, Any]:
        data = {
            "path": self.path,
            "start_line": self.start_line,
            "end_line": self.end_line,
            "symbol": self.label,
            "language": self.language,
            "score": round(self.score, 6),
            "text": self.text,
        }
        if self.explain is not None:
            data["explain"] = self.explain
        return data


@dataclass(slots=True)
class RepoRecord:
    """What the registry knows about one indexed repository (never a credential)."""

    id: str
    url: str
    platform: str
    ref: str | None
    commit: str | None
    embedder: str
    dimension: int
    filters: dict[str, Any] = field(default_factory=dict)
    file_count: int = 0
    chunk_count: int = 0
    created_at: str = ""
    updated_at: str = ""
    version: int = 0
    # Cloned with a token: every API request for its content must prove access (see ingest.access).
    private: bool = False
    # Lexical-first ingest: `dense_chunks` of the `dense_total` chunks worth embedding have vectors.
    # `index_state` is `complete`, `lexical` (none yet) or `partial n/m`; records from before say complete.
    index_state: str = "complete"
    dense_chunks: int = 0
    dense_total: int = 0
    # The `ingest.chunking.CHUNKER_VERSION` its chunks were made with; 0: a record from before it was
    # kept (an update re-chunks every file of an index whose version is not the running one).
    chunker_version: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "platform": self.platform,
            "ref": self.ref,
            "commit": self.commit,
            "embedder": self.embedder,
            "dimension": self.dimension,
            "filters": self.filters,
            "file_count": self.file_count,
            "chunk_count": self.chunk_count,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "version": self.version,
            "private": self.private,
            "index_state": self.index_state,
            "dense_chunks": self.dense_chunks,
            "dense_total": self.dense_total,
            "chunker_version": self.chunker_version,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RepoRecord:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})
