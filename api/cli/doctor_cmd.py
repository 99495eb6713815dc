"""`repolens doctor`: check a data dir for what crashes and kills leave behind, and repair it.

Read-only unless `--repair`; `--json` prints `{"home", "findings": [...], "healthy"}`. Exit code 0
when nothing is left to fix, 1 when a problem remains (a corrupt index with no intact version:
re-index it with `repolens ingest <url> --reindex`).
"""

from __future__ import annotations

import json

import typer

from api.cli.app import app, cli_errors, console
from rag.settings import Settings
from rag.store.doctor import check


@app.command()
def doctor(
    repair: bool = typer.Option(False, "--repair", help="Fix what can be fixed (never touches a held lock)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document for scripts."),
) -> None:
    """Check the data dir (leftover builds, dangling `current`, corrupt versions, stale locks)."""
    with cli_errors(as_json):
        home = Settings.from_env().home
        findings = check(home, repair=repair)
        remaining = [finding for finding in findings if not finding.repaired]
        if as_json:
            print(
                json.dumps(
                    {
                        "home": str(home),
                        "findings": [finding.to_json() for finding in findings],
                        "healthy": not remaining,
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
    if remaining:
        raise typer.Exit(1)
