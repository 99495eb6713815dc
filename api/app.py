"""The FastAPI application: HTTP routes, `/ws/chat`, MCP at `/mcp`, and the web page.

The lifespan runs the MCP session manager and stops the ingest job pool on shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import mcp_server
from api.routes import chat_http, chat_ws, config, deepwiki, jobs, repos, search, web, wiki
from api.services import Services
from rag.redact import install_log_redaction
from rag.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    install_log_redaction()
    services = Services.from_settings(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            async with mcp.running():
                yield
        finally:
            services.stop()

    app = FastAPI(title="RepoLens", version="0.1.0", lifespan=lifespan)
    app.state.services = services
    # `wiki` before `repos`: its `/api/repos/{id}/wiki` paths would otherwise match `/api/repos/{id}`.
    for module in (config, deepwiki, wiki, repos, jobs, search, chat_http, chat_ws):
        app.include_router(module.router)
    mcp = mcp_server.mount(app, services)
    web.mount(app)
    return app
