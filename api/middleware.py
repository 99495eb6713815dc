"""App-wide ASGI guards, installed once by `api.app.create_app` so every route is covered,
routes added later (`/v1`, `/mcp`, ...) included.

`RequestGuard` checks, in order:

- Host: `Host` must be a loopback name, the bound address or in `REPOLENS_ALLOWED_HOSTS`
  (`api.hosts`, Django's ALLOWED_HOSTS / Starlette's `TrustedHostMiddleware` rule), so DNS
  rebinding fails on HTTP and WebSocket (400 `untrusted_host`);
- URL cap: path plus query string over `MAX_URL_BYTES` (8 KiB) is a 414;
- API key: with `REPOLENS_API_KEY` set, every HTTP request and WebSocket must bring it
  (`Authorization: Bearer <key>` or `X-API-Key: <key>`; a WebSocket from a browser, which
  cannot set headers, sends `?api_key=<key>`, which the log redaction masks), except
  `/health` and the page shell (`GET /`, `/index.html`, `/assets/*`, `/favicon*`), so the
  page can load and ask for the key;
- rate limits: chat (`POST` paths with a `chat` segment) and ingest (`POST /api/repos`,
  `.../update`) requests per client address (`REPOLENS_RATE_LIMIT_CHAT` / `_INGEST`, the
  `limits` library's moving window, in the data dir's SQLite table (`api.rate_limit_store`, shared
  by every process on it) or in the queue's Redis: `RateLimits`); `/ws/chat` counts each chat
  request frame itself;
- body cap: a body over `REPOLENS_MAX_BODY_BYTES` is a 413 before any route parses it
  (`Content-Length` checked first; a chunked body is read up to the cap, then replayed);
- JSON limits: a JSON body nested deeper than `api.schemas.MAX_JSON_DEPTH`, with an over-long
  number, or malformed, is a 400 before a route parses it (`api.schemas.decode_json`).

Every HTTP refusal is the app's one error body (`api.errors`: `{"detail", "code"}`, the status
of `rag.errors.ERROR_TABLE`); a refused WebSocket handshake is a 403 (`_Reply`).
Each request runs in a `rag.redact.secret_scope`: a token a
request brings is masked while it runs (and in the jobs it starts) and forgotten afterwards.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time

from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter
from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from api.hosts import allowed_hosts, host_header_allowed
from api.rate_limit_store import SQLiteStorage
from api.schemas import MAX_JSON_DEPTH, BadRequestError, decode_json
from rag.errors import ErrorCode
from rag.redact import register_configured_secret, secret_scope
from rag.settings import Settings

API_KEY_QUERY = "api_key"
MAX_URL_BYTES = 8192
_OPEN_PATHS = ("/health",)
_PAGE_SHELL = ("/", "/index.html")
_PAGE_PREFIXES = ("/assets/", "/favicon")
_DISABLED = ("", "0", "off", "none", "unlimited")
# Redis keys of the shared budgets; a Redis that does not answer within this is treated as down.
RATE_LIMIT_KEY_PREFIX = "repolens:rate-limit"
_REDIS_TIMEOUT_S = 1.0
_WARN_EVERY_S = 60.0

logger = logging.getLogger(__name__)


class RateLimits:
    """Per-client request budgets for chat and ingest, shared by the middleware and `/ws/chat`.

    The counts live in the data dir (`api.rate_limit_store`, SQLite): every process serving one
    REPOLENS_HOME (`repolens serve --workers N`, or two servers on one data dir) draws on one
    budget per client, and a restart keeps it. With `REPOLENS_REDIS_URL` set (the job queue's
    Redis) they live in Redis instead (`limits`' Redis storage), for every replica of a
    deployment. A shared store that fails (a Redis that does not answer within a second, a data
    dir whose database cannot be written) does not take the API down with it: the request is
    counted in this process's memory instead (a per-process budget) and a warning is logged, at
    most once a minute, until the store answers again. Both stores are called off the event loop."""

    def __init__(self, settings: Settings) -> None:
        self._items: dict[str, RateLimitItem | None] = {
            "chat": _parse_limit(settings.rate_limit_chat),
            "ingest": _parse_limit(settings.rate_limit_ingest),
        }
        self._local = MovingWindowRateLimiter(MemoryStorage())
        self._data_dir: SQLiteStorage | None = None
        if settings.redis_url is not None:
            storage = storage_from_string(
                settings.redis_url.get_secret_value(),
                key_prefix=RATE_LIMIT_KEY_PREFIX,
                wrap_exceptions=True,
                socket_timeout=_REDIS_TIMEOUT_S,
                socket_connect_timeout=_REDIS_TIMEOUT_S,
            )
            self.store = "redis"
        else:
            storage = self._data_dir = SQLiteStorage(settings.home)
            self.store = "data dir"
        self._shared = MovingWindowRateLimiter(storage)
        self._warned_at = float("-inf")

    @property
    def shared(self) -> bool:
        """Whether the budgets are kept in Redis, for every replica (else in the data dir, for its host)."""
        return self.store == "redis"

    def close(self) -> None:
        """Close the data dir's database (a Redis connection pool closes with the process)."""
        if self._data_dir is not None:
            self._data_dir.close()

    async def hit(self, kind: str, client: str) -> str | None:
        """Count one request; a refusal message when `client` is over its `kind` budget."""
        item = self._items.get(kind)
        if item is None or await self._allowed(item, kind, client):
            return None
        return (
            f"too many {kind} requests from this client (limit {item}); wait and try again "
            f"(REPOLENS_RATE_LIMIT_{kind.upper()})"
        )

    async def _allowed(self, item: RateLimitItem, kind: str, client: str) -> bool:
        try:  # network or disk I/O, and another process's lock: off the event loop
            return await asyncio.to_thread(self._shared.hit, item, kind, client)
        except StorageError as error:
            self._warn(error)
        return self._local.hit(item, kind, client)

    def _warn(self, error: StorageError) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            where = "Redis store" if self.shared else "data dir's store"
            logger.warning(
                "rate limits are counted per process: the shared %s failed (%s: %s)",
                where,
                type(error.storage_error).__name__,
                error.storage_error,
            )


def _parse_limit(text: str) -> RateLimitItem | None:
    return None if text.strip().lower() in _DISABLED else parse(text)


def client_of(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def request_api_key(headers: Headers, query: QueryParams | None = None) -> str | None:
    authorization = headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    if headers.get("x-api-key"):
        return headers["x-api-key"].strip()
    return query.get(API_KEY_QUERY) if query is not None else None


def _rate_kind(method: str, path: str) -> str | None:
    if method != "POST":
        return None
    if path == "/api/repos" or (path.startswith("/api/repos/") and path.endswith("/update")):
        return "ingest"
    if "chat" in path.strip("/").split("/"):
        return "chat"
    return None


class RequestGuard:
    """See the module docstring: URL cap, API key, rate limits, body cap, JSON limits."""

    def __init__(self, app: ASGIApp, settings: Settings, rate_limits: RateLimits) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts(settings)
        self.max_url = MAX_URL_BYTES
        self.max_body = settings.max_body_bytes
        self.max_depth = MAX_JSON_DEPTH
        self.api_key = settings.api_key.get_secret_value() if settings.api_key else None
        register_configured_secret(self.api_key)
        self.rate_limits = rate_limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        with secret_scope():
            await self._guard(scope, receive, send)

    async def _guard(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        reply = _Reply(scope, receive, send)
        headers = Headers(scope=scope)
        if not host_header_allowed(headers.get("host"), self.allowed_hosts):
            await reply(
                ErrorCode.UNTRUSTED_HOST,
                "this server does not answer to the host this request names: add it to "
                "REPOLENS_ALLOWED_HOSTS to allow it",
            )
            return
        if len(scope.get("raw_path") or path.encode()) + len(scope.get("query_string", b"")) > self.max_url:
            await reply(ErrorCode.URL_TOO_LONG, f"the URL is longer than {self.max_url} bytes")
            return
        if self.api_key and not self._open(scope, path) and not self._key_ok(scope, headers):
            await reply(
                ErrorCode.UNAUTHORIZED,
                "this server needs its API key: send `Authorization: Bearer <key>` or `X-API-Key`",
            )
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        kind = _rate_kind(scope["method"], path)
        refusal = await self.rate_limits.hit(kind, client_of(scope)) if kind else None
        if refusal:
            await reply(ErrorCode.RATE_LIMITED, refusal)
            return
        await self._with_bounded_body(scope, receive, send, headers, reply)

    def _open(self, scope: Scope, path: str) -> bool:
        if path in _OPEN_PATHS:
            return True
        shell = path in _PAGE_SHELL or path.startswith(_PAGE_PREFIXES)
        return scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and shell

    def _key_ok(self, scope: Scope, headers: Headers) -> bool:
        query = QueryParams(scope.get("query_string", b"")) if scope["type"] == "websocket" else None
        given = request_api_key(headers, query)
        assert self.api_key is not None
        return given is not None and hmac.compare_digest(given.encode(), self.api_key.encode())

    async def _with_bounded_body(
        self, scope: Scope, receive: Receive, send: Send, headers: Headers, reply: _Reply
    ) -> None:
        too_large = f"the request body is over the limit of {self.max_body} bytes (REPOLENS_MAX_BODY_BYTES)"
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            await reply(ErrorCode.PAYLOAD_TOO_LARGE, too_large)
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE") and declared is None:
            await self.app(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body.extend(message.get("body", b""))
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                await reply(ErrorCode.PAYLOAD_TOO_LARGE, too_large)
                return
        if (
            body
            and "json" in headers.get("content-type", "")
            and (problem := self._json_problem(bytes(body)))
        ):
            await reply(ErrorCode.BAD_REQUEST, problem)
            return
        await self.app(scope, _replay(bytes(body), receive), send)

    def _json_problem(self, body: bytes) -> str | None:
        try:
            decode_json(body, max_depth=self.max_depth, require_object=False)
        except BadRequestError as error:
            return error.message
        return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the already-read body, then waits for the disconnect."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class _Reply:
    """Refuse one HTTP request with the app's error body, or a WebSocket before its handshake
    (close 1008: uvicorn answers the handshake with a 403; a denial response with the error body,
    ASGI's `websocket.http.response`, makes uvicorn's websockets-sansio log an ERROR per refusal,
    Kludex/uvicorn#3138)."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope, self.receive, self.send = scope, receive, send

    async def __call__(self, code: ErrorCode, message: str) -> None:
        if self.scope["type"] == "websocket":
            await self.receive()  # websocket.connect
            await self.send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
            return
        await error_response(code, message)(self.scope, self.receive, self.send)
