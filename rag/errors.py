"""The base of every error a user may see.

Each error carries a stable `code` (used in WebSocket/SSE `error` frames, HTTP
responses and CLI exit codes) and a message that is safe to show: it never
contains a token or an API key.
"""

from __future__ import annotations


class RepoLensError(Exception):
    """An expected failure with a clear, secret-free message."""

    code: str = "error"
    http_status: int = 400

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class NotFoundError(RepoLensError):
    code = "not_found"
    http_status = 404


class EmbedderMismatchError(RepoLensError):
    """The index was built with another embedder than the one asked to query it."""

    code = "embedder_mismatch"
    http_status = 409
