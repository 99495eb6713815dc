"""`repolens mcp`: RepoLens' MCP tools over stdio, for clients that launch their servers
(Claude Desktop, Cursor, VS Code). Same data dir and settings as the other commands; stdout
carries only MCP messages, logs go to stderr. See `api.mcp_server`."""

from __future__ import annotations

from api.cli.app import app, cli_errors
from rag.settings import Settings


@app.command()
def mcp() -> None:
    """Serve the MCP tools (list, index, search, read, ask) over stdin/stdout."""
    with cli_errors():
        from api.mcp_server import serve_stdio
        from api.services import Services

        # Held until the client restarts it, as a server's are.
        serve_stdio(Services.from_settings(Settings.from_env().for_server()))
