"""What every embedder offers, and the helpers they share.

An index stores its embedder's `name` and `dimension`, so a name must change
whenever the vectors would (another model, provider or quantisation).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from rag.errors import EmbedderError

__all__ = [
    "Embedder",
    "EmbedderError",
    "EmbedderWrapper",
    "Progress",
    "TokenCounter",
    "embedder_for",
    "run_token_counter",
]

Progress = Callable[[int, int], None]


@runtime_checkable
class Embedder(Protocol):
    """Read-only attributes, so wrappers (`CachedEmbedder`) and lazily sized embedders
    (`RemoteEmbedder.dimension`) satisfy it with properties."""

    @property
    def name(self) -> str: ...
    @property
    def dimension(self) -> int: ...
    @property
    def max_tokens(self) -> int: ...

    def count_tokens(self, text: str) -> int: ...

    def embed_documents(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


TokenCounter = Callable[[str], int]


@runtime_checkable
class CountsTokensPerRun(Protocol):
    """An embedder with a faster way to count the many overlapping texts of one ingest run (the
    chunker's candidate chunks) than calling `count_tokens` text by text."""

    def token_counter(self) -> TokenCounter: ...


def run_token_counter(embedder: Embedder) -> TokenCounter:
    """The counter the chunker uses for one ingest run with `embedder`: the same counts as
    `embedder.count_tokens`, faster where the embedder knows how."""
    if isinstance(embedder, CountsTokensPerRun):
        return embedder.token_counter()
    return embedder.count_tokens


class EmbedderWrapper:
    """An embedder in front of another (the vector cache, a benchmark's or test's recorder): every
    call it does not change goes to `inner`, so a wrapper states only what it adds."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = inner.name

    @property
    def dimension(self) -> int:
        """Read through: a remote embedder may learn its dimension only from its first answer."""
        return self.inner.dimension

    @property
    def max_tokens(self) -> int:
        return self.inner.max_tokens

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def token_counter(self) -> TokenCounter:
        return run_token_counter(self.inner)

    def embed_documents(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        return self.inner.embed_documents(texts, progress=progress)

    def embed_query(self, text: str) -> np.ndarray:
        return self.inner.embed_query(text)


@runtime_checkable
class ServesOtherModels(Protocol):
    """An embedder that can hand out its sibling for another model of the same kind (the local
    embedder: every local model runs offline), so an index keeps being read and updated with the
    model it was built with after the default changes."""

    def for_model(self, name: str) -> Embedder | None: ...


def embedder_for(embedder: Embedder, built_with: str) -> Embedder:
    """The embedder to read or update an index built with `built_with`: `embedder` itself, or its
    sibling for that model when it serves one; otherwise `embedder`, which the index then refuses
    (`embedder_mismatch`)."""
    if embedder.name == built_with or not isinstance(embedder, ServesOtherModels):
        return embedder
    return embedder.for_model(built_with) or embedder


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Row-wise unit length as float32, leaving all-zero rows at zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    result: np.ndarray = vectors / np.maximum(norms, 1e-12)
    return result


def batches(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def empty(dimension: int) -> np.ndarray:
    return np.zeros((0, dimension), dtype=np.float32)
