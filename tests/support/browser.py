"""Headless Debian chromium driven by Playwright's Python package, for the web page's end-to-end tests.

Playwright's own browser download does not work offline, so the system chromium is launched
by path. `browser_or_skip()` says why the browser tests cannot run (no chromium, page not built)
instead of failing on a machine that merely lacks them.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from api.routes.web import DIST

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"


def skip_reason() -> str | None:
    if not CHROMIUM.is_file() and not shutil.which("chromium"):
        return "chromium is not installed (make install, or apt-get install chromium)"
    if not (DIST / "index.html").is_file():
        return f"the web page is not built ({DIST} is missing): run make install"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless chromium for a whole test module (starting it costs about a second)."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    executable = CHROMIUM if CHROMIUM.is_file() else Path(shutil.which("chromium") or "")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        yield launched
        launched.close()
