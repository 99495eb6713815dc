"""The FastAPI application: HTTP routes, `/ws/chat`, and the web page."""

from __future__ import annotations

from fastapi import FastAPI

from api.routes import chat_http, chat_ws, config, deepwiki, repos, search, web, wiki
from api.services import Services
from rag.redact import install_log_redaction
from rag.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    install_log_redaction()
    app = FastAPI(title="RepoLens", version="0.1.0")
    app.state.services = Services.from_settings(settings)
    # `wiki` before `repos`: its `/api/repos/{id}/wiki` paths would otherwise match `/api/repos/{id}`.
    for module in (config, deepwiki, wiki, repos, search, chat_http, chat_ws):
        app.include_router(module.router)
    web.mount(app)
    return app
