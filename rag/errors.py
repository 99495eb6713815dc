"""Every error code a user may see, its HTTP status and CLI exit code, and the base exception.

`ErrorCode` is the one list of codes; `ERROR_TABLE` the one table mapping each to an HTTP status
(routes), a CLI exit code (`repolens`) and a one-line meaning (the README's tables are generated
from it: `python -m rag.errors`). Codes travel in WebSocket/SSE `error` frames, HTTP JSON bodies
and `--json` output, so a published code never changes. Every `RepoLensError` carries one, and a
message that is safe to show: it never contains a token or an API key.

Adding a code: add the member, add its row to `ERROR_TABLE` (a test fails on a missing row), and
regenerate the README tables (a test fails on drift).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorCode(StrEnum):
    """Stable error codes (the wire values)."""

    BAD_REQUEST = "bad_request"
    BAD_CONFIG = "bad_config"
    FORBIDDEN_ORIGIN = "forbidden_origin"
    UNTRUSTED_HOST = "untrusted_host"
    UNAUTHORIZED = "unauthorized"
    RATE_LIMITED = "rate_limited"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    URL_TOO_LONG = "url_too_long"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    AUTH_FAILED = "auth_failed"
    LIMIT_EXCEEDED = "limit_exceeded"
    # LLM provider failures
    AUTH = "auth"
    MODEL_NOT_FOUND = "model_not_found"
    RATE_LIMIT = "rate_limit"
    CONTEXT_LENGTH = "context_length"
    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    BAD_RESPONSE = "bad_response"
    NOT_CONFIGURED = "not_configured"
    PROVIDER_ERROR = "provider_error"
    TOOL_ERROR = "tool_error"
    EMBEDDER_ERROR = "embedder_error"
    # sources and ingest
    BAD_URL = "bad_url"
    TYPE_MISMATCH = "type_mismatch"
    FORBIDDEN_SOURCE = "forbidden_source"
    FORBIDDEN_HOST = "forbidden_host"
    UNREACHABLE = "unreachable"
    CLONE_TIMEOUT = "clone_timeout"
    GIT_FAILED = "git_failed"
    INGEST_FAILED = "ingest_failed"
    CHUNK_BUDGET = "chunk_budget"
    EMPTY = "empty"
    # indexes
    EMBEDDER_MISMATCH = "embedder_mismatch"
    INDEX_CORRUPT = "index_corrupt"
    BUSY = "busy"
    QUEUE_UNAVAILABLE = "queue_unavailable"
    STORE_UNAVAILABLE = "store_unavailable"
    SERVER_STOPPING = "server_stopping"
    CANCELLED = "cancelled"
    INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    """How one code is reported: HTTP status, CLI exit code, and what it means (README)."""

    http_status: int
    exit_code: int
    meaning: str


_PROVIDER = 6
_SOURCE = 7

ERROR_TABLE: dict[ErrorCode, ErrorSpec] = {
    ErrorCode.BAD_REQUEST: ErrorSpec(
        400, 2, "invalid request or option (malformed JSON, wrong field type, `-k 0`)"
    ),
    ErrorCode.BAD_CONFIG: ErrorSpec(503, 2, "a setting has an invalid value; the message names the variable"),
    ErrorCode.FORBIDDEN_ORIGIN: ErrorSpec(403, 2, "a browser page from another site was refused"),
    ErrorCode.UNTRUSTED_HOST: ErrorSpec(
        400, 2, "the `Host` header names a host this server does not answer to (`REPOLENS_ALLOWED_HOSTS`)"
    ),
    ErrorCode.UNAUTHORIZED: ErrorSpec(
        401, 2, "`REPOLENS_API_KEY` is set and the request did not bring it (Bearer or X-API-Key)"
    ),
    ErrorCode.RATE_LIMITED: ErrorSpec(
        429, 2, "too many chat or ingest requests from this client (`REPOLENS_RATE_LIMIT_*`)"
    ),
    ErrorCode.PAYLOAD_TOO_LARGE: ErrorSpec(413, 2, "the request body is over `REPOLENS_MAX_BODY_BYTES`"),
    ErrorCode.URL_TOO_LONG: ErrorSpec(414, 2, "the URL (path and query string) is over 8 KiB"),
    ErrorCode.NOT_FOUND: ErrorSpec(
        404, 3, "unknown repository, local folder, ref, indexed file, job or route"
    ),
    ErrorCode.METHOD_NOT_ALLOWED: ErrorSpec(405, 2, "the route exists but not with this HTTP method"),
    ErrorCode.AUTH_FAILED: ErrorSpec(
        401, 4, "the git host refused the credentials, or a private repository's token is missing"
    ),
    ErrorCode.LIMIT_EXCEEDED: ErrorSpec(
        413, 5, "a size limit was exceeded; the message names the flag to raise it"
    ),
    ErrorCode.AUTH: ErrorSpec(
        502, _PROVIDER, "the LLM provider rejected the API key (check the named variable)"
    ),
    ErrorCode.MODEL_NOT_FOUND: ErrorSpec(502, _PROVIDER, "the LLM provider does not know the model"),
    ErrorCode.RATE_LIMIT: ErrorSpec(429, _PROVIDER, "the LLM provider's rate limit or quota was hit"),
    ErrorCode.CONTEXT_LENGTH: ErrorSpec(
        413, _PROVIDER, "the question (or prompt) does not fit the model's context"
    ),
    ErrorCode.UNAVAILABLE: ErrorSpec(
        502, _PROVIDER, "the LLM provider is unreachable, failed, or broke the stream"
    ),
    ErrorCode.TIMEOUT: ErrorSpec(
        504, _PROVIDER, "the LLM provider did not answer in time (`REPOLENS_LLM_TIMEOUT`)"
    ),
    ErrorCode.BAD_RESPONSE: ErrorSpec(
        502, _PROVIDER, "the LLM provider sent something unusable or refused the request"
    ),
    ErrorCode.NOT_CONFIGURED: ErrorSpec(
        400,
        _PROVIDER,
        "the requested provider has no key configured (or lacks the model `ask`, `wiki`, MCP or `/v1` named)",
    ),
    ErrorCode.PROVIDER_ERROR: ErrorSpec(502, _PROVIDER, "deep research stopped on a provider failure"),
    ErrorCode.TOOL_ERROR: ErrorSpec(
        502, _PROVIDER, "a deep-research tool failed; research ends with its findings"
    ),
    ErrorCode.EMBEDDER_ERROR: ErrorSpec(502, _PROVIDER, "the embedder failed or is misconfigured"),
    ErrorCode.BAD_URL: ErrorSpec(400, _SOURCE, "the location is not a URL or path RepoLens can ingest"),
    ErrorCode.TYPE_MISMATCH: ErrorSpec(
        400,
        _SOURCE,
        "the platform named (`--type`, the API's `type`) contradicts the location (a local folder "
        "named `github`); leave it out or name the location's own",
    ),
    ErrorCode.FORBIDDEN_SOURCE: ErrorSpec(
        403, _SOURCE, "the server does not index this local folder (`REPOLENS_ALLOW_LOCAL`, `_LOCAL_ROOTS`)"
    ),
    ErrorCode.FORBIDDEN_HOST: ErrorSpec(
        403, _SOURCE, "the git host resolves to a private address (`REPOLENS_ALLOW_PRIVATE_HOSTS`)"
    ),
    ErrorCode.UNREACHABLE: ErrorSpec(502, _SOURCE, "the git host is unreachable (DNS, refused connection)"),
    ErrorCode.CLONE_TIMEOUT: ErrorSpec(504, _SOURCE, "git did not finish cloning or fetching in time"),
    ErrorCode.GIT_FAILED: ErrorSpec(502, 11, "git failed for another reason (the message has git's output)"),
    ErrorCode.INGEST_FAILED: ErrorSpec(422, 11, "the ingest failed for another reason"),
    ErrorCode.CHUNK_BUDGET: ErrorSpec(422, 11, "a chunk cannot fit the embedder's token budget"),
    ErrorCode.EMPTY: ErrorSpec(422, 10, "nothing left to index after the filters"),
    ErrorCode.EMBEDDER_MISMATCH: ErrorSpec(
        409, 8, "the index was built with another embedder: re-index with `--reindex`"
    ),
    ErrorCode.INDEX_CORRUPT: ErrorSpec(409, 12, "an index file is damaged: re-index with `--reindex`"),
    ErrorCode.BUSY: ErrorSpec(
        409, 9, "another ingest of the repository (or answer on the socket) is running"
    ),
    ErrorCode.QUEUE_UNAVAILABLE: ErrorSpec(
        503, 2, "the shared job queue (`REPOLENS_REDIS_URL`) cannot be reached; nothing was queued"
    ),
    ErrorCode.STORE_UNAVAILABLE: ErrorSpec(
        503, 2, "the shared PostgreSQL store (`REPOLENS_DATABASE_URL`) cannot be reached; nothing was changed"
    ),
    ErrorCode.SERVER_STOPPING: ErrorSpec(
        503, 2, "the server is stopping: an event stream ends with this frame (its message says what goes on)"
    ),
    ErrorCode.CANCELLED: ErrorSpec(
        499, 130, "cancelled by the client or interrupted; the previous index is unchanged"
    ),
    ErrorCode.INTERNAL: ErrorSpec(
        500, 1, "a bug: the message names the exception, the log has the traceback"
    ),
}

#: Exit code of a command that failed on something that is not a `RepoLensError`.
UNEXPECTED_EXIT_CODE = ERROR_TABLE[ErrorCode.INTERNAL].exit_code


def error_spec(code: str) -> ErrorSpec:
    """The table row of `code`; an unknown code (a bug) is reported as `internal`."""
    try:
        return ERROR_TABLE[ErrorCode(code)]
    except ValueError:
        return ERROR_TABLE[ErrorCode.INTERNAL]


def http_status(code: str) -> int:
    return error_spec(code).http_status


def exit_code(code: str) -> int:
    return error_spec(code).exit_code


class RepoLensError(Exception):
    """An expected failure with a clear, secret-free message and an `ErrorCode`."""

    code: ErrorCode = ErrorCode.BAD_REQUEST

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = ErrorCode(code)

    def __str__(self) -> str:
        return self.message

    @property
    def http_status(self) -> int:
        return ERROR_TABLE[self.code].http_status

    @property
    def exit_code(self) -> int:
        return ERROR_TABLE[self.code].exit_code


class NotFoundError(RepoLensError):
    code = ErrorCode.NOT_FOUND


class EmbedderMismatchError(RepoLensError):
    """The index was built with another embedder than the one asked to query it."""

    code = ErrorCode.EMBEDDER_MISMATCH


class IndexCorruptError(RepoLensError):
    """An index file fails its checks (truncated, wrong checksum); re-indexing rebuilds it."""

    code = ErrorCode.INDEX_CORRUPT


class EmbedderError(RepoLensError):
    """An embedder could not load or answer, or is misconfigured; the message never holds a key
    (re-exported by `rag.embedders`)."""

    code = ErrorCode.EMBEDDER_ERROR


class ConfigError(RepoLensError):
    """A setting has a value RepoLens cannot use; the message names the variable."""

    code = ErrorCode.BAD_CONFIG


def markdown_tables() -> str:
    """The README's error tables (per code, then per exit code), generated from `ERROR_TABLE`."""
    lines = ["| error `code` | HTTP status | exit code | meaning |", "| --- | --- | --- | --- |"]
    lines += [
        f"| `{code}` | {spec.http_status} | {spec.exit_code} | {spec.meaning} |"
        for code, spec in ERROR_TABLE.items()
    ]
    by_exit: dict[int, list[str]] = {}
    for code, spec in ERROR_TABLE.items():
        by_exit.setdefault(spec.exit_code, []).append(f"`{code}`")
    lines += ["", "| exit code | error codes |", "| --- | --- |", "| 0 | success |"]
    lines += [f"| {number} | {', '.join(codes)} |" for number, codes in sorted(by_exit.items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_tables(), end="")
