"""The long-lived objects a server process shares between requests.

Created once per app (see `api.app.create_app`) and handed to routes through
FastAPI dependency injection, so tests can build an app on a temporary data dir.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from fastapi import Request

from rag.embedders import Embedder, get_embedder
from rag.settings import Settings
from rag.store import Store


@dataclass
class Services:
    settings: Settings
    store: Store

    @functools.cached_property
    def embedder(self) -> Embedder:
        """Loaded on first use: the server starts fast and tests that never embed never pay."""
        return get_embedder(self.settings)

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        return cls(settings=settings, store=Store(settings.home))


def get_services(request: Request) -> Services:
    return request.app.state.services
