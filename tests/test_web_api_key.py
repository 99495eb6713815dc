"""The page on a server with `REPOLENS_API_KEY`: it loads, asks for the key once, keeps it in
sessionStorage, and sends it on HTTP (X-API-Key) and on the WebSocket (`?api_key=`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Dialog, expect

from tests.support.browser import browser  # noqa: F401 (the fixture)
from tests.support.chat import settings_for
from tests.support.live_server import LiveServer

pytestmark = pytest.mark.browser
API_KEY = "rl-page-api-key-0123456789"
TIMEOUT_MS = 30_000


@pytest.fixture
def keyed_server(tmp_path: Path) -> Iterator[LiveServer]:
    from api.app import create_app

    settings = settings_for(tmp_path / "home", REPOLENS_API_KEY=API_KEY)
    server = LiveServer(lambda: create_app(settings)).start()
    yield server
    server.stop()


def test_the_page_asks_for_the_key_once_and_uses_it_everywhere(
    browser: Browser,  # noqa: F811 (the fixture)
    keyed_server: LiveServer,
) -> None:
    context = browser.new_context()
    page = context.new_page()
    prompts: list[str] = []

    def answer(dialog: Dialog) -> None:
        prompts.append(dialog.message)
        dialog.accept(API_KEY)

    page.on("dialog", answer)
    sockets: list[str] = []
    page.on("websocket", lambda socket: sockets.append(socket.url))
    page.goto(keyed_server.base_url)
    expect(page.locator("body[data-ready=true]")).to_have_count(1, timeout=TIMEOUT_MS)
    expect(page.locator("body[data-socket=open]")).to_have_count(1, timeout=TIMEOUT_MS)
    assert len(prompts) == 1 and "API key" in prompts[0]
    assert page.evaluate("sessionStorage.getItem('repolens.apiKey')") == API_KEY
    assert any(f"api_key={API_KEY}" in url for url in sockets)
    page.reload()  # same tab: the key is remembered, no second prompt
    expect(page.locator("body[data-socket=open]")).to_have_count(1, timeout=TIMEOUT_MS)
    assert len(prompts) == 1
    context.close()
