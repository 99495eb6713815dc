"""Ingest: sources, filters, reading, chunking, embedding jobs, index building and update.

The public surface is small: `ingest(location, options, store=..., embedder=...)`
indexes (or incrementally updates) a repository, `update(repo_id, ...)` re-fetches
one with its stored settings; both return an `IngestReport` and emit `Progress`.
"""

from ingest.pipeline import (
    IngestOptions,
    IngestReport,
    Progress,
    finish_embedding,
    ingest,
    resolve_repo_id,
    update,
)

__all__ = [
    "IngestOptions",
    "IngestReport",
    "Progress",
    "finish_embedding",
    "ingest",
    "resolve_repo_id",
    "update",
]
