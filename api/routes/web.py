"""The web page at `/`: the built assets of `api/web` when present, else a notice.

The page is built by `make install` (`npm ci && npm run build` in `api/web`); a server
started from a fresh checkout still answers `/` with instructions instead of a 404.
`mount` is called last by `api.app.create_app` because the static mount catches every path.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DIST = Path(__file__).resolve().parent.parent / "web" / "dist"

_NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>RepoLens</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 4rem auto; line-height: 1.5">
<h1>RepoLens is running</h1>
<p>The web page has not been built yet. Run <code>make install</code> (or
<code>cd api/web &amp;&amp; npm ci &amp;&amp; npm run build</code>) and reload.</p>
<p>The API works already: <a href="/health">/health</a>, <a href="/docs">/docs</a>,
<code>/ws/chat</code> and <code>POST /chat/completions/stream</code>.</p>
</body></html>
"""


def mount(app: FastAPI) -> None:
    if (DIST / "index.html").is_file():
        app.mount("/", StaticFiles(directory=DIST, html=True), name="web")
        return

    @app.get("/", include_in_schema=False)
    async def not_built() -> HTMLResponse:
        return HTMLResponse(_NOT_BUILT)
