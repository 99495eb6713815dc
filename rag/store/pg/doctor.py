"""`repolens doctor` on the PostgreSQL store: what a killed process or a hand edit leaves in the database.

A build runs in one transaction, so a killed build leaves nothing: its rows and its new schema roll
back with it. What can be left:

- `orphan_schema`: a repository schema (`repo_<key>` or `repo_<key>_v<n>`) that is no repository's
  live version. A full rebuild drops the old schema right after the swap commits, in a second
  statement: a process killed between the two leaves the old one behind. Unreferenced, so harmless
  but for its disk space; dropped.
- `unfinished_registration`: a registry row that never got a committed version (`current_version`
  0; not written by this version of the builder, which registers inside its build transaction, but
  by a hand edit or an older build); removed with its schemas.
- `missing_schema`: a live repository whose schema is gone (dropped by hand): nothing can be
  served; the row is removed, so the repository must be ingested again.

Only schemas named like the store's own are looked at (anything else in the database is left alone).
A repository being built or deleted right now (its advisory lock is held) is skipped, as the local
doctor skips a locked folder, and every repair re-reads the registry under that lock.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import psycopg
from psycopg.rows import TupleRow

from rag.store.doctor import Finding
from rag.store.layout import IndexBusyError
from rag.store.pg.builder import try_lock
from rag.store.pg.errors import CONNECT_TIMEOUT_S, database_errors
from rag.store.pg.schema import REGISTRY

if TYPE_CHECKING:
    from rag.store.pg.store import PgStore

_REPO_SCHEMA = re.compile(r"repo_(\d+)(?:_v\d+)?")
_SCHEMAS_SQL = "SELECT nspname FROM pg_namespace WHERE nspname ~ '^repo_[0-9]+(_v[0-9]+)?$' ORDER BY nspname"
_ROWS_SQL = f"SELECT key, id, schema_name, current_version FROM {REGISTRY}.repositories ORDER BY key"


def check_database(store: PgStore, *, repair: bool = False) -> list[Finding]:
    """Every problem found in the store's database (each `repaired` when `repair` fixed it)."""
    with database_errors(), psycopg.connect(store.url, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        # One snapshot for both lists: a build committing meanwhile changes neither half alone.
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        rows = {
            int(key): (str(repo), str(schema), int(current))
            for key, repo, schema, current in conn.execute(_ROWS_SQL)
        }
        schemas = [str(name) for (name,) in conn.execute(_SCHEMAS_SQL)]
        conn.rollback()
        findings: list[Finding] = []
        for key, (repo, schema, current) in rows.items():
            if current == 0:
                finding = Finding(
                    repo, "unfinished_registration", "registered, but no version ever committed"
                )
            elif schema not in schemas:
                finding = Finding(
                    repo, "missing_schema", f"{schema} is gone: re-index with `repolens ingest`"
                )
            else:
                continue
            fixed = _locked(conn, repo, repair, functools.partial(_remove_row, conn, key))
            if fixed is not None:
                finding.repaired = fixed
                findings.append(finding)
        live = {schema for _, schema, current in rows.values() if current}
        for name in schemas:
            key = _key_of(name)
            if name in live or (key in rows and not rows[key][2]):
                continue  # live, or removed with its unfinished registration above
            owner = rows[key][0] if key in rows else None
            finding = Finding(
                owner or name,
                "orphan_schema",
                f"schema {name} is no repository's live version (left by a killed rebuild or delete)",
            )
            fixed = _locked(conn, owner, repair, functools.partial(_drop_orphan, conn, name))
            if fixed is not None:
                finding.repaired = fixed
                findings.append(finding)
    return findings


def _key_of(schema: str) -> int:
    match = _REPO_SCHEMA.fullmatch(schema)
    assert match is not None, schema
    return int(match.group(1))


def _locked(
    conn: psycopg.Connection[TupleRow], repo: str | None, repair: bool, fix: Callable[[], bool]
) -> bool | None:
    """Whether `fix` repaired the problem (run only when `repair`), holding `repo`'s lock (none
    for a schema without a registry row); None, and nothing done, while a build or delete holds it."""
    if repo is not None:
        try:
            try_lock(conn, repo, "checking")
        except IndexBusyError:
            return None
    try:
        if not repair:
            return False
        fixed = fix()
        conn.commit()
        return fixed
    finally:
        if repo is not None:
            conn.execute("SELECT pg_advisory_unlock_all()")
            conn.commit()


def _drop_orphan(conn: psycopg.Connection[TupleRow], schema: str) -> bool:
    """Drop `schema` unless, read again under the lock, it has become a live version."""
    (live,) = conn.execute(
        f"SELECT EXISTS (SELECT 1 FROM {REGISTRY}.repositories "
        "WHERE schema_name = %s AND current_version > 0)",
        (schema,),
    ).fetchone() or (True,)
    if live:
        return False
    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return True


def _remove_row(conn: psycopg.Connection[TupleRow], key: int) -> bool:
    """Remove repository `key` and its schemas if, read again under the lock, it has no committed
    version or its live schema is gone."""
    removed = conn.execute(
        f"DELETE FROM {REGISTRY}.repositories WHERE key = %s AND (current_version = 0 OR NOT EXISTS "
        "(SELECT 1 FROM pg_namespace WHERE nspname = schema_name)) RETURNING key",
        (key,),
    ).fetchone()
    if removed is None:
        return False
    for (schema,) in conn.execute(_SCHEMAS_SQL).fetchall():
        if _key_of(str(schema)) == key:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return True
