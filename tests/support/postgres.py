"""A real PostgreSQL 16 with pgvector for the store tests, from the `pgserver` wheel.

`postgres_server` (session scope) runs `initdb` and starts the server once, listening on a unix
socket only (no TCP port), and stops it and removes its data at the end of the run.
`postgres_url` (function scope) is a fresh, empty database on it for each test, so tests never see
each other's repositories. `make_store` runs a test once per backend (`local`, `postgres`).
Skipped only when the `pgserver` package is not installed (`make install` installs it).

As root, pgserver runs the server as a dedicated `pgserver` system user (PostgreSQL refuses to run
as root); it creates that user with `useradd` on first use and opens read and traverse
permissions on the folders above the data directory and its own binaries.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rag.store import Store

_databases = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    # platformdirs warns without XDG_RUNTIME_DIR (pgserver keeps its lock file there).
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="repolens-xdg-"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import pgserver
        except ImportError:
            pytest.skip("pgserver is not installed (make install installs it)")
        # Not under pytest's temporary folder: pytest keeps that folder private (0700) at every start,
        # also when another test run starts meanwhile, and the `pgserver` user must traverse it.
        parent = Path(tempfile.mkdtemp(prefix="repolens-pg-"))
        server = pgserver.get_server(parent / "data", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: Any) -> Iterator[str]:
    import psycopg

    name = f"repolens_test_{os.getpid()}_{next(_databases)}"
    admin = postgres_server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield postgres_server.get_uri(name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["local", "postgres"])
def make_store(request: pytest.FixtureRequest) -> Iterator[Callable[[Path], Store]]:
    """A factory of stores of one backend (the test runs once per backend): `make_store(home)`.

    Every PostgreSQL store of one test shares that test's database, as replicas would.
    """
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    opened: list[Store] = []

    def make(home: Path) -> Store:
        if url is None:
            store = Store(home)
        else:
            from rag.store.pg import PgStore

            store = PgStore(home, url)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()
