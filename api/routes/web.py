"""The web page at `/`: the built assets of `api/web` when present, else a notice.

The page is built by `make install` (`npm ci && npm run build` in `api/web`); a server
started from a fresh checkout still answers `/` with instructions instead of a 404.
`mount` is called last by `api.app.create_app` because the static mount catches every path.

Caching: Vite puts a content hash in every file name under `assets/`, so those are cached for
a year; `index.html` (which names the current hashes) is revalidated on every load, so a
rebuilt page reaches browsers at once.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from ingest.filters import DEFAULT_EXCLUDE_DIRS, DEFAULT_EXCLUDE_FILES

DIST = Path(__file__).resolve().parent.parent / "web" / "dist"
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"

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


class PageFiles(StaticFiles):
    """Static files with the cache policy above."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            hashed = path.startswith("assets/")
            response.headers["Cache-Control"] = IMMUTABLE if hashed else REVALIDATE
        return response


def filter_defaults() -> dict[str, list[str]]:
    """What every ingest skips unless told otherwise, so the page can show it next to the filters."""
    return {"excluded_dirs": list(DEFAULT_EXCLUDE_DIRS), "excluded_files": list(DEFAULT_EXCLUDE_FILES)}


def mount(app: FastAPI, dist: Path = DIST) -> None:
    app.get("/api/filters/defaults", tags=["config"])(filter_defaults)
    if (dist / "index.html").is_file():
        app.mount("/", PageFiles(directory=dist, html=True), name="web")
        return

    @app.get("/", include_in_schema=False)
    async def not_built() -> HTMLResponse:
        return HTMLResponse(_NOT_BUILT, headers={"Cache-Control": REVALIDATE})
