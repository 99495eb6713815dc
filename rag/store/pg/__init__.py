"""The PostgreSQL + pgvector store backend (`REPOLENS_DATABASE_URL`): see `rag.store.pg.schema`."""

from rag.store.pg.store import PgStore, PgTuning

__all__ = ["PgStore", "PgTuning"]
