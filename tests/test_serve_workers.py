"""`repolens serve --workers N`: N server processes behind one port, each answering on its own.

Deterministic on a starved machine: the test waits for the workers to say they are ready (their
uvicorn log lines), not for a deadline, and proves that each worker serves by pausing the other
(SIGSTOP): every connection then has to be accepted by the one left running. The server counts as
started only once its own process holds its port (`serve_on_a_free_port`): another test session's
server may take a port between the pick and the bind, and would then answer our health checks.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx
from websockets.sync.client import connect

from tests.support.live_server import serve_on_a_free_port

# Only a hung test waits this long; a ready server is used as soon as its workers say so.
STARTUP_CAP_S = 600
_STARTED = re.compile(r"Started server process \[(\d+)\]")
_READY = "Application startup complete."


class ServerLog:
    """The lines a server writes to stderr, read by a thread (so the pipe never fills up) until it ends."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        with stream:
            for line in stream:
                with self._changed:
                    self.lines.append(line.rstrip("\n"))
                    self._changed.notify_all()
        with self._changed:
            self.lines.append("")  # end of the stream: the server exited
            self._changed.notify_all()

    def wait_for_ready_workers(self, count: int) -> list[int]:
        """The pids of `count` workers once each has logged that its app started."""

        def ready() -> bool:
            return sum(line.endswith(_READY) for line in self.lines) >= count or self.lines[-1:] == [""]

        with self._changed:
            self._changed.wait_for(ready, timeout=STARTUP_CAP_S)
            pids = [int(match[1]) for line in self.lines if (match := _STARTED.search(line))]
        assert len(pids) == count and ready(), "\n".join(self.lines)
        return pids

    def join(self) -> None:
        self._reader.join(30)


@contextmanager
def paused(pid: int) -> Iterator[None]:
    """The process `pid` stopped (SIGSTOP) for the duration: it cannot accept a connection."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_workers_share_one_port_and_each_serves(tmp_path: Path) -> None:
    repolens = Path(sys.executable).parent / "repolens"
    env = {**os.environ, "REPOLENS_HOME": str(tmp_path / "home")}
    started: list[int] = []
    with socket.socket() as other_server:  # another session's server, on the first port we are offered
        other_server.bind(("127.0.0.1", 0))
        other_server.listen()
        taken = other_server.getsockname()[1]

        def start(port: int) -> subprocess.Popen[str]:
            port = port if started else taken  # the first start loses its port to the other server
            started.append(port)
            command = [str(repolens), "serve", "--port", str(port), "--workers", "2", "--log-level", "info"]
            return subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)

        port, server = serve_on_a_free_port(start)
    assert server.stderr is not None
    log = ServerLog(server.stderr)
    try:
        assert started == [taken, port], "the server that lost its port was taken for ours"
        first, second = log.wait_for_ready_workers(2)
        health = f"http://127.0.0.1:{port}/health"
        for running, stopped in ((first, second), (second, first)):
            with paused(stopped):
                for _ in range(3):
                    assert httpx.get(health, timeout=30).json()["status"] == "healthy", f"worker {running}"
        with connect(f"ws://127.0.0.1:{port}/ws/chat?protocol=events", open_timeout=30) as ws:
            ws.send(json.dumps({"type": "ping"}))
            assert json.loads(ws.recv(timeout=30)) == {"type": "pong"}
        started = [int(match[1]) for line in log.lines if (match := _STARTED.search(line))]
        assert started == [first, second], "a worker was restarted while serving"
    finally:
        server.terminate()
        server.wait(60)
        log.join()
    assert server.returncode == 0
