"""Embedders: the offline MiniLM default, remote ones by configuration, and the vector cache.

`get_embedder(settings)` is the one entry point the rest of RepoLens uses.
"""

from __future__ import annotations

import functools

from rag.embedders import remote
from rag.embedders.base import Embedder, EmbedderError, embedder_for
from rag.embedders.cache import CachedEmbedder
from rag.embedders.local import DEFAULT_MODEL, LOCAL_MODELS, load_local_embedder
from rag.settings import Settings

__all__ = ["CachedEmbedder", "Embedder", "EmbedderError", "embedder_for", "get_embedder"]


def _local(settings: Settings) -> Embedder:
    model = (settings.embedding_model or DEFAULT_MODEL).strip().lower()
    return load_local_embedder(settings, model, settings.embedder_threads)


def _local_sibling(settings: Settings, model: str) -> Embedder | None:
    """Another local model, for an index built with it (e.g. before the default changed)."""
    if model not in LOCAL_MODELS:
        return None
    return load_local_embedder(settings, model, settings.embedder_threads)


def get_embedder(settings: Settings | None = None, *, cache_vectors: bool = True) -> Embedder:
    """The configured embedder (REPOLENS_EMBEDDER, default `local`), wrapped in the vector cache."""
    settings = settings or Settings.from_env()
    kind = settings.embedder
    embedder: Embedder
    if kind == "local":
        embedder = _local(settings)
    elif kind in ("openai", "azure", "ollama"):
        embedder = remote.openai_compatible(settings, kind)
    else:
        embedder = remote.google(settings)
    if not cache_vectors:
        return embedder
    siblings = functools.partial(_local_sibling, settings) if kind == "local" else None
    return CachedEmbedder(embedder, settings.home / "cache" / "embeddings", siblings)
