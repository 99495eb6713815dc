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

A server in another process (`repolens serve`, `git daemon`, ...) is started with
`serve_on_a_free_port(start)`: picking a free port and then starting a server races with any other
process doing the same (other test sessions run on this machine at the same time). The loser fails
to bind, and a health check on that port then answers from the winner, a server with other data.
The helper counts a server as started only once *its* process holds the port (`owns_listener`),
and starts it again on another port when it lost.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from api.server import uvicorn_config
from rag.settings import Settings

HOST = "127.0.0.1"
_START_TIMEOUT_S = 15.0
_STOP_TIMEOUT_S = 10.0
_BIND_ATTEMPTS = 5
_LISTEN_TIMEOUT_S = 90.0  # a cold `repolens serve` on a loaded CI machine binds after loading its app


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def owns_listener(pid: int, port: int) -> bool:
    """Whether process `pid` holds the listening TCP socket on IPv4 `port` (Linux: /proc)."""
    listening = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, state, inode = int(fields[1].rpartition(":")[2], 16), fields[3], fields[9]
        if local_port == port and state == "0A":  # 0A: LISTEN
            listening.add(f"socket:[{inode}]")
    if not listening:
        return False
    with contextlib.suppress(OSError):  # the process is gone
        return any(os.readlink(fd) in listening for fd in Path(f"/proc/{pid}/fd").iterdir())
    return False


def _listened_on(port: int) -> bool:
    """Whether some process listens on `port` (then a server of ours could not bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex((HOST, port)) == 0


Server = subprocess.Popen[Any]


def serve_on_a_free_port(start: Callable[[int], Server]) -> tuple[int, Server]:
    """Run `start(port)` until the process it returns holds its port (another process may take a port
    between the kernel handing it out and the server binding it: then the server exits; try again).
    Read the winner's output pipes only after this returns (a loser's are read and closed here)."""
    for _ in range(_BIND_ATTEMPTS):
        port = free_port()
        process = start(port)
        deadline = time.monotonic() + _LISTEN_TIMEOUT_S
        while process.poll() is None and not owns_listener(process.pid, port):
            if time.monotonic() > deadline:
                process.kill()
                process.communicate()
                raise AssertionError(f"{process.args} did not listen on port {port}")
            time.sleep(0.05)
        if process.poll() is None:
            return port, process
        process.communicate()  # the loser's output: its pipes closed
    raise AssertionError(f"{_BIND_ATTEMPTS} servers in a row lost their port to another process")


class LiveServer:
    """One uvicorn server in a thread; restartable on the same port."""

    def __init__(self, app_factory: Callable[[], Any], *, port: int | None = None, **overrides: Any) -> None:
        self._app_factory = app_factory
        self._overrides = overrides
        self._port_is_ours_to_pick = port is None
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
        """Serve a freshly built app; on a port picked here, again on another one if another
        process took it before uvicorn bound it (the pick-then-bind race)."""
        if self._thread is not None:
            raise RuntimeError("the live server is already running")
        for _ in range(_BIND_ATTEMPTS):
            if self._serve():
                self._port_is_ours_to_pick = False  # restart() serves on this port again
                return self
            if not (self._port_is_ours_to_pick and _listened_on(self.port)):
                break
            self.port = free_port()
        raise RuntimeError(f"the live server on port {self.port} failed to start (see the log above)")

    def _serve(self) -> bool:
        """Whether the server started (False: it could not bind its port and stopped)."""
        self.app = self._app_factory()
        server = uvicorn.Server(uvicorn_config(self.app, HOST, self.port, **self._overrides))

        def run() -> None:
            with contextlib.suppress(SystemExit):  # uvicorn's way out when it cannot bind its port
                server.run()

        thread = threading.Thread(target=run, name=f"live-server-{self.port}", daemon=True)
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive():
                return False
            if time.monotonic() > deadline:
                server.should_exit = True
                raise RuntimeError(
                    f"the live server on port {self.port} did not start within {_START_TIMEOUT_S}s"
                )
            time.sleep(0.01)
        self._server, self._thread = server, thread
        return True

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
