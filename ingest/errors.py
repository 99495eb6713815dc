"""Errors an ingest can end with, each with a stable `code`.

Callers (the CLI, the HTTP and WebSocket routes) map `code` to exit codes and
error frames, so codes never change once published. Messages are shown to
users as they are: they name the source (without credentials) and say what to
do, and never contain a token.
"""

from __future__ import annotations

from rag.errors import EmbedderMismatchError, RepoLensError

__all__ = [
    "AuthenticationError",
    "CloneTimeoutError",
    "EmbedderMismatchError",
    "HostUnreachableError",
    "IngestCancelled",
    "IngestError",
    "InvalidSourceError",
    "LimitExceededError",
    "RepositoryNotFoundError",
    "UnknownRefError",
]


class IngestError(RepoLensError):
    """Any expected failure while resolving, fetching or indexing a repository."""

    code = "ingest_failed"


class InvalidSourceError(IngestError):
    """The location is not a URL or path we can ingest."""

    code = "bad_url"


class HostUnreachableError(IngestError):
    """DNS failed or the connection was refused: nothing to do with credentials."""

    code = "unreachable"
    http_status = 502


class AuthenticationError(IngestError):
    """The host refused the credentials (or asked for some and none were given)."""

    code = "auth_failed"
    http_status = 401


class RepositoryNotFoundError(IngestError):
    """The host answered but has no such repository (or local path)."""

    code = "not_found"
    http_status = 404


class UnknownRefError(RepositoryNotFoundError):
    """The repository exists but the branch, tag or commit does not."""


class CloneTimeoutError(IngestError):
    """git did not finish within the allowed time; the partial clone is discarded."""

    code = "timeout"
    http_status = 504


class LimitExceededError(IngestError):
    """A size limit stopped the ingest; the message names the limit and how to raise it."""

    code = "limit_exceeded"
    http_status = 413


class IngestCancelled(IngestError):
    """The user cancelled; the previous index is left untouched."""

    code = "cancelled"
    http_status = 499
