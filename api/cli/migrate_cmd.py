"""`repolens migrate-store`: copy the local store under REPOLENS_HOME into PostgreSQL.

Every repository's live version moves as it is, vectors included (nothing is embedded again);
repositories the database already has are skipped unless `--replace`. The local store is only
read, so it stays usable until `REPOLENS_DATABASE_URL` is set for good.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from api.cli.app import app, cli_errors, console
from rag.errors import ConfigError
from rag.settings import Settings
from rag.store import Store


@app.command("migrate-store")
def migrate_store_command(
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="PostgreSQL URL to copy into (default: REPOLENS_DATABASE_URL; prefer the variable, "
            "a password on the command line shows in process lists).",
            show_default=False,
        ),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Copy repositories the database already has again.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document for scripts.")] = False,
) -> None:
    """Copy every repository of the local store into PostgreSQL (no re-embedding)."""
    with cli_errors(as_json):
        settings = Settings.from_env()
        url = to or (settings.database_url.get_secret_value() if settings.database_url else None)
        if not url:
            raise ConfigError("set REPOLENS_DATABASE_URL (or pass --to) to the PostgreSQL to copy into")
        from rag.store.pg import PgStore, PgTuning
        from rag.store.pg.migrate import Migrated, migrate_store

        def show(result: Migrated) -> None:
            if not as_json:
                console.print(result.summary, highlight=False)

        target = PgStore(settings.home, url, PgTuning.from_settings(settings))
        try:
            results = migrate_store(Store(settings.home), target, replace=replace, progress=show)
        finally:
            target.close()
        if as_json:
            print(json.dumps({"repos": [result.to_json() for result in results]}))
        elif not results:
            console.print(f"{settings.home}: no repositories to copy", highlight=False)
