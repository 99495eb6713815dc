"""Which store a process uses: the one function every entry point calls (`open_store`).

The local store (FAISS + SQLite under `REPOLENS_HOME`) needs no configuration and stays the default.
With `REPOLENS_DATABASE_URL` set, indexes live in PostgreSQL + pgvector (`rag.store.pg`), shared by
every API replica and ingest worker pointed at the same database; clones and wikis stay under
`REPOLENS_HOME`. The PostgreSQL driver is imported only then, so a local install never loads it.
"""

from __future__ import annotations

from rag.settings import Settings
from rag.store.store import Store


def open_store(settings: Settings) -> Store:
    """The configured store: PostgreSQL when `settings.database_url` is set, else the local one."""
    if settings.database_url is None:
        return Store(settings.home)
    from rag.store.pg import PgStore, PgTuning

    return PgStore(settings.home, settings.database_url.get_secret_value(), PgTuning.from_settings(settings))
