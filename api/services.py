"""The long-lived objects a server process shares between requests.

Created once per app (see `api.app.create_app`) and handed to routes through
FastAPI dependency injection, so tests can build an app on a temporary data dir.
`repolens ask` builds the same object, so the CLI answers exactly like the server.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, field

from fastapi import Request, WebSocket

from rag.answer import AnswerService
from rag.embedders import Embedder, get_embedder
from rag.redact import register_secret
from rag.settings import Settings
from rag.store import Store


@dataclass
class Services:
    settings: Settings
    store: Store
    _index_locks: dict[str, asyncio.Lock] = field(default_factory=dict, repr=False)

    @functools.cached_property
    def embedder(self) -> Embedder:
        """Loaded on first use: the server starts fast and tests that never embed never pay."""
        return get_embedder(self.settings)

    @functools.cached_property
    def answers(self) -> AnswerService:
        return AnswerService(self.store, self.embedder, self.settings)

    def index_lock(self, repo_id: str) -> asyncio.Lock:
        """One lock per repository, so concurrent first questions about it ingest it once."""
        return self._index_locks.setdefault(repo_id, asyncio.Lock())

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        """Configured keys and tokens are masked in every log line and message from now on."""
        for secret in settings.secrets():
            register_secret(secret)
        return cls(settings=settings, store=Store(settings.home))


def get_services(request: Request) -> Services:
    return request.app.state.services


def get_ws_services(websocket: WebSocket) -> Services:
    return websocket.app.state.services
