"""The `repolens` command line.

Exit codes (documented in the README): 0 success, 1 unexpected error, 2 usage error,
3 not found, 4 authentication failed, 5 a limit was exceeded, 6 provider error,
7 source unreachable or invalid, 8 index built with another embedder, 9 the repository is
being indexed by another process, 10 nothing left to index after filters, 130 interrupted,
141 the reader of the output closed it early (`| head -1`).
"""

from __future__ import annotations

from api.cli import (  # noqa: F401  (register commands)
    ask_cmd,
    doctor_cmd,
    ingest_cmds,
    mcp_cmd,
    migrate_cmd,
    search_cmd,
    serve_cmd,
    setup_cmd,
    wiki_cmd,
    worker_cmd,
)
from api.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]

if __name__ == "__main__":
    main()
