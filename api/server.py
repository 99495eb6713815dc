"""How a RepoLens app is run under uvicorn: one place for the options `repolens serve`,
the test fixture `tests.support.live_server` and `bench/chat_bench.py` share.

The WebSocket transport limit is set well above the application's own request limit
(`REPOLENS_MAX_REQUEST_BYTES`, checked in `api.schemas`) so an over-long request gets a
specific `bad_request` error instead of uvicorn dropping the connection with code 1009.
Server-side pings keep idle `/ws/chat` sockets alive through proxies.

A server process freezes its startup heap before it serves (`freeze_startup_heap`): the garbage
collector's full collections then skip the ~170k objects every process has once the app is built,
and run a tenth as often (`collect_fully_less_often`).
"""

from __future__ import annotations

import errno
import gc
import logging
import socket
from typing import Any

import uvicorn

from rag.errors import ConfigError
from rag.redact import RedactingFilter, install_log_redaction

WS_PING_INTERVAL_S = 20.0
WS_PING_TIMEOUT_S = 20.0
WS_TRANSPORT_MAX_BYTES = 16 * 1024 * 1024
WORKER_HEALTHCHECK_S = 60
# Generation-1 collections between two full ones in a server process (CPython: 10).
FULL_COLLECTION_AFTER = 100


def uvicorn_config(app: Any, host: str, port: int, **overrides: Any) -> uvicorn.Config:
    """A uvicorn config with RepoLens' WebSocket settings; `overrides` win."""
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "ws": "websockets-sansio",
        "ws_ping_interval": WS_PING_INTERVAL_S,
        "ws_ping_timeout": WS_PING_TIMEOUT_S,
        "ws_max_size": WS_TRANSPORT_MAX_BYTES,
        # Token frames are a few bytes: compressing each costs more CPU than it saves on loopback or LAN.
        "ws_per_message_deflate": False,
        "lifespan": "on",
        "log_level": "warning",
        "timeout_graceful_shutdown": 2,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


def create_worker_app() -> Any:
    """The app factory each `--workers` process calls: its own services, its own log redaction."""
    from api.app import create_app

    redact_server_logs()
    app = create_app()
    prepare_serving_process()
    return app


def prepare_serving_process() -> None:
    """What a server process does to its garbage collector once the app is built, before it serves."""
    freeze_startup_heap()
    collect_fully_less_often()


def collect_fully_less_often() -> None:
    """Run a full collection after `FULL_COLLECTION_AFTER` generation-1 collections instead of CPython's 10.

    With the startup heap frozen, what a full collection walks is the live conversations (~68,000
    objects at 200 streams): 36-49 ms of CPU holding the GIL, about once per 9 s at that load, stalling
    every stream's next frame. Young collections, which free most garbage, run as before; cyclic
    garbage that outlived two of them waits longer to be freed.
    """
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_AFTER)


def freeze_startup_heap() -> None:
    """Move every object alive now (modules, the app, its routes and models) out of the cyclic
    garbage collector's reach, once the app is built and before it serves.

    A full (generation 2) collection walks every tracked object and holds the GIL meanwhile, so the
    event loop stalls for its whole length: with the startup heap (~170k objects) one took 100-130 ms
    in the 200-stream bench (`python -m bench chat` with `REPOLENS_BENCH_CHAT_PROBE=1`), and every
    stream's next frame waited through it. These objects live as long as the process, so walking
    them never frees anything. Frozen objects are still freed by reference counting; what requests
    make later (sessions, indexes) is collected as before. The collection first drops startup's own
    garbage, so none of it is kept for good.
    """
    gc.collect()
    gc.freeze()


def serve(host: str, port: int, *, log_level: str, workers: int = 1) -> None:
    """Run the server in this process, or in `workers` processes sharing one listening socket."""
    check_can_listen(host, port)
    if workers <= 1:
        from api.app import create_app

        config = uvicorn_config(create_app(), host, port, log_level=log_level)
        redact_server_logs()
        prepare_serving_process()
        uvicorn.Server(config).run()
        return
    from uvicorn.supervisors import Multiprocess

    config = uvicorn_config(
        "api.server:create_worker_app",
        host,
        port,
        log_level=log_level,
        factory=True,
        workers=workers,
        # A worker loads the embedder before it serves; on a busy machine that outlasts uvicorn's 5 s,
        # which would have the supervisor kill and restart workers that are merely starting.
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
    )
    redact_server_logs()
    Multiprocess(config, sockets=[config.bind_socket()]).run()


def check_can_listen(host: str, port: int) -> None:
    """Fail at once, in words and with `bad_config`'s exit code, when the address cannot be bound.

    uvicorn finds out only after the app is built (the embedder loaded: seconds), then logs
    `[Errno 98] error while attempting to bind on address ...` and exits with 3, the CLI's code for
    "not found". The probe binds as uvicorn does (IPv6 for a host with a colon, SO_REUSEADDR) and
    lets go: a server started between this and uvicorn's bind still gets uvicorn's own error.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {port} on {host} is in use (another `repolens serve`?): stop that server, or "
                    "serve on another port with --port (or PORT)"
                ) from None
            reason = error.strerror or str(error)
            raise ConfigError(
                f"cannot listen on {host} port {port}: {reason} (--host or REPOLENS_HOST, --port or PORT)"
            ) from None


def redact_server_logs() -> None:
    """Mask secrets in uvicorn's own log handlers too (they do not propagate to the root logger)."""
    install_log_redaction()
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(existing, RedactingFilter) for existing in handler.filters):
                handler.addFilter(RedactingFilter())
