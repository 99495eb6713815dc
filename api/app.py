"""The FastAPI application: HTTP routes, `/ws/chat`, MCP at `/mcp`, OpenAI's API at `/v1`, the web page.

The lifespan runs the MCP session manager and stops the ingest job pool on shutdown; while it runs,
SIGINT/SIGTERM first end the open streams, each with a last `server_stopping` frame (`api.shutdown`)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from api import mcp_server
from api.errors import code_for_status, error_response
from api.middleware import RateLimits, RequestGuard
from api.routes import chat_http, chat_ws, config, deepwiki, jobs, openai_api, repos, search, web, wiki
from api.services import Services
from api.shutdown import ServerStop, watch_exit_signals
from ingest.policy import SourcePolicy
from rag.errors import ErrorCode, RepoLensError
from rag.redact import install_log_redaction, redact
from rag.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = (settings or Settings.from_env()).for_server()
    install_log_redaction()
    services = Services.from_settings(settings)
    services.source_policy = SourcePolicy.for_server(settings)

    @asynccontextmanager
    async def lifespan(served: FastAPI) -> AsyncGenerator[None, None]:
        # One event per serving (in its loop: an app served again, as tests do, gets a new one).
        served.state.stopping = stop = ServerStop()
        try:
            with watch_exit_signals(stop):
                async with mcp.running(stop):
                    yield
        finally:
            services.stop()
            served.state.rate_limits.close()

    app = FastAPI(title="RepoLens", version="0.1.0", lifespan=lifespan)
    app.state.services = services
    # `wiki` before `repos`: its `/api/repos/{id}/wiki` paths would otherwise match `/api/repos/{id}`.
    for module in (config, deepwiki, wiki, repos, jobs, search, chat_http, chat_ws, openai_api):
        app.include_router(module.router)
    mcp = mcp_server.mount(app, services)
    app.add_exception_handler(RepoLensError, _repolens_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_exception)
    app.state.rate_limits = RateLimits(settings)
    app.add_middleware(RequestGuard, settings=settings, rate_limits=app.state.rate_limits)
    web.mount(app)
    return app


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    """FastAPI's 422 without the `input` it echoes: a 1 MB field must not come back (nor a token)."""
    assert isinstance(error, RequestValidationError)
    problems = [
        {"loc": list(item.get("loc", ())), "msg": str(item.get("msg", ""))[:300], "type": item.get("type")}
        for item in error.errors()[:20]
    ]
    return error_response(ErrorCode.BAD_REQUEST, problems, status=422)


async def _repolens_error(request: Request, error: Exception) -> JSONResponse:
    """A `RepoLensError` no route caught (an invalid id deep in a store call) is its table status
    and code, never a 500; the message is redacted like every message a client sees."""
    assert isinstance(error, RepoLensError)
    return error_response(error.code, redact(error.message))


async def _http_exception(request: Request, error: Exception) -> JSONResponse:
    """Starlette's own refusals (an unknown route, a wrong method) in the app's error body."""
    assert isinstance(error, HTTPException)
    return error_response(
        code_for_status(error.status_code), error.detail, status=error.status_code, headers=error.headers
    )
