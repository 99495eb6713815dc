"""Errors an ingest can end with, each with a stable `code`.

Callers (the CLI, the HTTP and WebSocket routes) map `code` to exit codes and
error frames, so codes never change once published. Messages are shown to
users as they are: they name the source (without credentials) and say what to
do, and never contain a token.
"""

from __future__ import annotations

from rag.errors import EmbedderMismatchError, ErrorCode, NotFoundError, RepoLensError

__all__ = [
    "AmbiguousRepoError",
    "AuthenticationError",
    "CloneTimeoutError",
    "EmbedderMismatchError",
    "HostUnreachableError",
    "IngestCancelled",
    "IngestError",
    "InvalidSourceError",
    "LimitExceededError",
    "NotASourceError",
    "PlatformMismatchError",
    "RepositoryNotFoundError",
    "UnknownRefError",
]


class IngestError(RepoLensError):
    """Any expected failure while resolving, fetching or indexing a repository."""

    code = ErrorCode.INGEST_FAILED


class InvalidSourceError(IngestError):
    """The location is not a URL or path we can ingest."""

    code = ErrorCode.BAD_URL


class AmbiguousRepoError(NotFoundError):
    """A short name (the last part of an id) that several indexed repositories share: every surface
    that takes names passes this message on as it is (it lists the ids to use instead)."""


class NotASourceError(InvalidSourceError):
    """The text is no URL, ssh remote or existing path at all (a bare word such as `cobra`). A command
    that also takes an indexed repository's name (`repolens ask`) reports such a text as a name
    that matches nothing, not as a malformed URL."""


class PlatformMismatchError(InvalidSourceError):
    """The platform named beside the location (`--type`, the API's `type`) contradicts it: a local
    folder said to be on GitHub, a github.com URL said to be GitLab. Ignoring it would index
    something other than what the user asked for without a word, so it is refused; only
    deepwiki-open's chat requests, whose `type` defaults to `github`, keep it as a hint."""

    code = ErrorCode.TYPE_MISMATCH


class HostUnreachableError(IngestError):
    """DNS failed or the connection was refused: nothing to do with credentials."""

    code = ErrorCode.UNREACHABLE


class AuthenticationError(IngestError):
    """The host refused the credentials (or asked for some and none were given)."""

    code = ErrorCode.AUTH_FAILED


class RepositoryNotFoundError(IngestError):
    """The host answered but has no such repository (or local path)."""

    code = ErrorCode.NOT_FOUND


class UnknownRefError(RepositoryNotFoundError):
    """The repository exists but the branch, tag or commit does not."""


class CloneTimeoutError(IngestError):
    """git did not finish within the allowed time; the partial clone is discarded."""

    code = ErrorCode.CLONE_TIMEOUT


class LimitExceededError(IngestError):
    """A size limit stopped the ingest; the message names the limit and how to raise it."""

    code = ErrorCode.LIMIT_EXCEEDED


class IngestCancelled(IngestError):
    """The user cancelled; the previous index is left untouched."""

    code = ErrorCode.CANCELLED
