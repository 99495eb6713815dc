"""`repolens doctor`: check a data dir for what crashes and kills leave behind, and repair it.

With `REPOLENS_DATABASE_URL` set it checks the PostgreSQL store too (orphan repository schemas,
unfinished or broken registry rows: `rag.store.pg.doctor`), and leaves the wikis and clones of the
repositories indexed there alone.

Read-only unless `--repair`; `--json` prints `{"home", "findings": [...], "healthy", "outdated": [...]}`
(`outdated`: indexes chunked by another chunker version, which a plain update re-chunks; they do not
change the exit code). Exit code 0
when nothing is left to fix, 1 when a problem remains (a corrupt index with no intact version:
re-index it with `repolens ingest LOCATION --reindex`).
"""

from __future__ import annotations

import json

import typer

from api.cli.app import app, cli_errors, console
from api.cli.ingest_cmds import rechunk_advice
from rag.settings import Settings
from rag.store import open_store


@app.command()
def doctor(
    repair: bool = typer.Option(False, "--repair", help="Fix what can be fixed (never touches a held lock)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document for scripts."),
) -> None:
    """Check the data dir and the PostgreSQL store for damage; `--repair` fixes it.

    The data dir: leftover builds, dangling `current`, corrupt versions, stale locks. The PostgreSQL
    store, when one is configured: orphan schemas, unfinished registrations.
    """
    with cli_errors(as_json):
        settings = Settings.from_env()
        home = settings.home
        store = open_store(settings)
        try:
            findings = store.doctor(repair=repair)
            # Not damage (the index serves as it is), so not a finding: a plain update re-chunks it.
            outdated = [
                {"repo": record.id, "chunker_version": record.chunker_version, "advice": advice}
                for record in store.list()
                if (advice := rechunk_advice(record))
            ]
        finally:
            store.close()
        remaining = [finding for finding in findings if not finding.repaired]
        if as_json:
            print(
                json.dumps(
                    {
                        "home": str(home),
                        "findings": [finding.to_json() for finding in findings],
                        "healthy": not remaining,
                        "outdated": outdated,
                    }
                )
            )
        elif not findings:
            console.print(f"{home}: healthy", highlight=False)
        else:
            for finding in findings:
                state = "repaired" if finding.repaired else "found"
                console.print(
                    f"{state}: {finding.repo}: {finding.problem}: {finding.detail}", highlight=False
                )
            if remaining and not repair:
                console.print("run `repolens doctor --repair` to fix them", highlight=False)
        if not as_json:
            for item in outdated:
                console.print(f"outdated: {item['repo']}: {item['advice']}", highlight=False, soft_wrap=True)
    if remaining:
        raise typer.Exit(1)
