"""`repolens serve`: the API, `/ws/chat` and the web page under uvicorn.

Host and port default to `REPOLENS_HOST` / `PORT` (deepwiki-open's variable), the data dir
to `REPOLENS_HOME`; every log line, uvicorn's included, goes through `rag.redact`.
The app is imported when `serve` runs, so other `repolens` commands do not pay for it.
`--workers N` runs N server processes on one port (uvicorn's process manager): each has its own
event loop and embedder, so streaming and retrieval scale past one core.
"""

from __future__ import annotations

import ipaddress
import os

import typer
from rich.markup import escape

from api.cli.app import app, cli_errors, err_console, print_message
from rag.settings import Settings


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Interface to bind (default: REPOLENS_HOST or 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default: PORT or 8000)."),
    log_level: str = typer.Option("info", help="uvicorn log level: critical, error, warning, info, debug."),
    workers: int = typer.Option(
        1,
        min=1,
        max=64,
        help="Server processes sharing the port (each loads its own embedder), for more concurrent chats.",
    ),
) -> None:
    """Serve the HTTP API, the WebSocket chat and the web page."""
    with cli_errors():
        from api.server import serve as run_server

        settings = Settings.from_env()
        bind = host or settings.host
        # The app (in every worker) validates `Host` against the bound address: tell it which.
        os.environ["REPOLENS_HOST"] = bind
        if settings.api_key is None and not is_loopback(bind):
            warn_open_server(bind)
        run_server(bind, port or settings.port, log_level=log_level, workers=workers)


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def warn_open_server(host: str) -> None:
    print_message(
        err_console,
        f"[bold red]WARNING: serving on {escape(host)} without REPOLENS_API_KEY: anyone who can reach this "
        "address can ingest, read and delete indexes and use your model keys.[/] Set REPOLENS_API_KEY "
        "(and REPOLENS_ALLOWED_HOSTS to the names clients use), or bind 127.0.0.1.",
    )
