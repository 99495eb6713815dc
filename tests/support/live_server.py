"""A real uvicorn server running a RepoLens app, for tests that speak HTTP or WebSocket.

Usage (tests/conftest.py lists this module in `pytest_plugins`, so the fixtures are everywhere)::

    def test_health(live_server):
        assert httpx.get(f"{live_server.base_url}/health").status_code == 200

    def test_with_provider(live_server_factory, fake_provider, monkeypatch):
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        monkeypatch.setenv("OPENAI_BASE_URL", fake_provider.base_url)
        server = live_server_factory()          # Settings.from_env() read *now*
        ...
        server.restart()                        # same port, a fresh app (e.g. to test reconnects)

- `live_server`: a server for `create_app(Settings.from_env())`, started once the per-test
  `REPOLENS_HOME` is set (tests/conftest.py), stopped after the test.
- `live_server_factory(settings=None, *, app_factory=None, **uvicorn_overrides)`: start one
  with explicit `Settings` or any ASGI app factory; every server it started is stopped at teardown.
- `LiveServer`: `.base_url` (`http://127.0.0.1:<port>`), `.ws_url` (`ws://127.0.0.1:<port>`),
  `.port`, `.app` (the running app: `app.state.services` for the store), `.stop()`, `.start()`,
  `.restart()` (stop, then serve a freshly built app on the same port).

The server binds 127.0.0.1 on a free port and runs in a background thread with its own event
loop, with the same uvicorn options as `repolens serve` (`api.server.uvicorn_config`).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn

from api.server import uvicorn_config
from rag.settings import Settings

HOST = "127.0.0.1"
_START_TIMEOUT_S = 15.0
_STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class LiveServer:
    """One uvicorn server in a thread; restartable on the same port."""

    def __init__(self, app_factory: Callable[[], Any], *, port: int | None = None, **overrides: Any) -> None:
        self._app_factory = app_factory
        self._overrides = overrides
        self.port = port or free_port()
        self.app: Any = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}"

    def start(self) -> LiveServer:
        if self._thread is not None:
            raise RuntimeError("the live server is already running")
        self.app = self._app_factory()
        server = uvicorn.Server(uvicorn_config(self.app, HOST, self.port, **self._overrides))
        thread = threading.Thread(target=server.run, name=f"live-server-{self.port}", daemon=True)
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"the live server on port {self.port} failed to start (see the log above)")
            if time.monotonic() > deadline:
                server.should_exit = True
                raise RuntimeError(
                    f"the live server on port {self.port} did not start within {_START_TIMEOUT_S}s"
                )
            time.sleep(0.01)
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(_STOP_TIMEOUT_S)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(_STOP_TIMEOUT_S)
        self._server = self._thread = None

    def restart(self) -> LiveServer:
        self.stop()
        return self.start()


@pytest.fixture
def live_server_factory() -> Iterator[Callable[..., LiveServer]]:
    started: list[LiveServer] = []

    def default_app(settings: Settings | None) -> Any:
        from api.app import create_app

        return create_app(settings or Settings.from_env())

    def start(
        settings: Settings | None = None, *, app_factory: Callable[[], Any] | None = None, **overrides: Any
    ) -> LiveServer:
        factory = app_factory or (lambda: default_app(settings))
        server = LiveServer(factory, **overrides).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def live_server(live_server_factory: Callable[..., LiveServer]) -> LiveServer:
    return live_server_factory()
