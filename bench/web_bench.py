"""The web page: first-load weight, time to ready, and how fast a streamed answer renders.

Runs in this process: a real server on a data dir holding the fixture repository, the fake
OpenAI-style provider, and Debian's headless chromium (as in tests/test_web_e2e.py).

Figures:
- `first_load`: bytes of the JS and CSS that `index.html` loads (raw and gzip); Mermaid and
  the highlight languages it pulls in are separate chunks fetched on first use, not counted.
- `page_ready_ms`: a fresh browser context opens `/` until the page has its configuration,
  the repository list and its conversation (median and max of `LOADS`).
- `render`: an answer of `WORDS` words with a code block every 100 words, streamed as
  `CHUNKS` chunks with no provider delay, so the page's markdown/highlight/sanitise loop is the
  bottleneck: Enter → first text on screen, Enter → final render, and chunks rendered per second.
Skipped (with the reason) when chromium or the built page is missing.
"""

from __future__ import annotations

import gzip
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect, sync_playwright

from api.routes.web import DIST
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, skip_reason
from tests.support.chat import settings_for
from tests.support.fake_provider import FAKE_API_KEY, FakeProvider, FakeResponse
from tests.support.live_server import LiveServer
from tests.support.repos import make_fixture_repo

LOADS = 7
WORDS = 2000
CHUNKS = 400
TIMEOUT_MS = 60_000


def _first_load() -> dict[str, int]:
    html = (DIST / "index.html").read_text()
    raw = compressed = 0
    for asset in re.findall(r'(?:src|href)="/(assets/[^"]+\.(?:js|css))"', html):
        data = (DIST / asset).read_bytes()
        raw += len(data)
        compressed += len(gzip.compress(data))
    return {"bytes": raw, "gzip_bytes": compressed}


def _long_answer() -> str:
    parts = []
    for block in range(WORDS // 100):
        parts.append(" ".join(f"word{block}_{index}" for index in range(100)))
        parts.append(f"```python\ndef step_{block}(value: int) -> int:\n    return value * {block}\n```")
    return "\n\n".join(parts)


def _ready(page: Page, base_url: str) -> float:
    started = time.perf_counter()
    page.goto(base_url)
    expect(page.locator("body[data-ready=true]")).to_have_count(1, timeout=TIMEOUT_MS)
    return (time.perf_counter() - started) * 1000


def _render(page: Page) -> dict[str, float]:
    answer = page.locator(".turn.assistant").first
    box = page.get_by_label("Question")
    box.fill("Stream a long answer.")
    started = time.perf_counter()
    box.press("Enter")
    expect(answer.locator(".markdown")).not_to_be_empty(timeout=TIMEOUT_MS)
    first = time.perf_counter()
    expect(answer).to_have_attribute("data-state", "done", timeout=TIMEOUT_MS)
    done = time.perf_counter()
    return {
        "first_text_ms": round((first - started) * 1000, 1),
        "total_ms": round((done - started) * 1000, 1),
        "chunks_per_s": round(CHUNKS / (done - first), 1),
    }


def run() -> dict[str, Any]:
    reason = skip_reason()
    if reason:
        return {"skipped": reason}
    from api.app import create_app
    from ingest import ingest

    provider = FakeProvider()
    provider.start()
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        root = Path(folder)
        env = {"OPENAI_API_KEY": FAKE_API_KEY, "OPENAI_BASE_URL": provider.base_url}
        app = create_app(settings_for(root / "home", **env))
        services = app.state.services
        ingest(str(make_fixture_repo(root / "repo")), store=services.store, embedder=services.embedder)
        server = LiveServer(lambda: app).start()
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            loads = []
            for _ in range(LOADS):
                context = browser.new_context()
                loads.append(_ready(context.new_page(), server.base_url))
                context.close()
            context = browser.new_context()
            page = context.new_page()
            _ready(page, server.base_url)
            provider.script(FakeResponse(text=_long_answer(), chunks=CHUNKS))
            render = _render(page)
            context.close()
        finally:
            browser.close()
            server.stop()
            provider.stop()
    return {
        "first_load": _first_load(),
        "page_ready_ms": {"median": round(statistics.median(loads), 1), "max": round(max(loads), 1)},
        "render": {"words": WORDS, "chunks": CHUNKS, **render},
    }
