"""What research needs from the server: the shape of `api.services.Services`, without importing `api`."""

from __future__ import annotations

from typing import Any, Protocol

from rag.settings import Settings


class ResearchServices(Protocol):
    @property
    def store(self) -> Any: ...

    @property
    def embedder(self) -> Any: ...

    @property
    def settings(self) -> Settings: ...
