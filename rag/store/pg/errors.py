"""The PostgreSQL store's one error of its own: the database cannot be reached.

Every query the store sends goes through `database_errors()`, so a database that is down, restarting
or out of connections is a `store_unavailable` error (HTTP 503, with the cause and no password)
instead of an internal error, and nothing is changed: a build's transaction is rolled back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
from psycopg_pool import PoolTimeout

from rag.errors import ErrorCode, RepoLensError

# Seconds to wait for a connection (new, or from the pool) before the store is called unavailable.
CONNECT_TIMEOUT_S = 10


class StoreUnavailableError(RepoLensError):
    """PostgreSQL (`REPOLENS_DATABASE_URL`) cannot be reached or dropped the connection."""

    code = ErrorCode.STORE_UNAVAILABLE


@contextlib.contextmanager
def database_errors() -> Iterator[None]:
    try:
        yield
    except (psycopg.OperationalError, PoolTimeout) as error:
        cause = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise StoreUnavailableError(f"the PostgreSQL store cannot be reached: {cause}") from None
