"""How a RepoLens app is run under uvicorn: one place for the options `repolens serve`,
the test fixture `tests.support.live_server` and `bench/chat_bench.py` share.

The WebSocket transport limit is set well above the application's own request limit
(`REPOLENS_MAX_REQUEST_BYTES`, checked in `api.schemas`) so an over-long request gets a
specific `bad_request` error instead of uvicorn dropping the connection with code 1009.
Server-side pings keep idle `/ws/chat` sockets alive through proxies.
"""

from __future__ import annotations

import logging
from typing import Any

import uvicorn

from rag.redact import RedactingFilter, install_log_redaction

WS_PING_INTERVAL_S = 20.0
WS_PING_TIMEOUT_S = 20.0
WS_TRANSPORT_MAX_BYTES = 16 * 1024 * 1024


def uvicorn_config(app: Any, host: str, port: int, **overrides: Any) -> uvicorn.Config:
    """A uvicorn config with RepoLens' WebSocket settings; `overrides` win."""
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "ws": "websockets-sansio",
        "ws_ping_interval": WS_PING_INTERVAL_S,
        "ws_ping_timeout": WS_PING_TIMEOUT_S,
        "ws_max_size": WS_TRANSPORT_MAX_BYTES,
        "lifespan": "on",
        "log_level": "warning",
        "timeout_graceful_shutdown": 2,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


def redact_server_logs() -> None:
    """Mask secrets in uvicorn's own log handlers too (they do not propagate to the root logger)."""
    install_log_redaction()
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(existing, RedactingFilter) for existing in handler.filters):
                handler.addFilter(RedactingFilter())
