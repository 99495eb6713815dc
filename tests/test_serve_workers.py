"""`repolens serve --workers N`: N server processes behind one port, each answering on its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
from websockets.sync.client import connect

from tests.support.live_server import free_port


def workers_of(parent: psutil.Process) -> list[psutil.Process]:
    """uvicorn's worker processes (spawned children; not multiprocessing's resource tracker)."""
    found = []
    for child in parent.children():
        try:
            if child.is_running() and "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def wait_for_children(parent: psutil.Process, count: int, timeout: float = 60.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(children := workers_of(parent)) >= count:
            return children
        time.sleep(0.2)
    raise AssertionError(f"expected {count} worker processes, found {workers_of(parent)}")


def test_workers_share_one_port_and_each_serves(tmp_path: Path) -> None:
    port = free_port()
    repolens = Path(sys.executable).parent / "repolens"
    env = {**os.environ, "REPOLENS_HOME": str(tmp_path / "home")}
    server = subprocess.Popen(
        [str(repolens), "serve", "--port", str(port), "--workers", "2", "--log-level", "warning"], env=env
    )
    try:
        workers = wait_for_children(psutil.Process(server.pid), 2)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        # Many short connections: the kernel spreads them over both workers; all must answer.
        for _ in range(10):
            assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()["status"] == "healthy"
        with connect(f"ws://127.0.0.1:{port}/ws/chat?protocol=events") as ws:
            ws.send(json.dumps({"type": "ping"}))
            assert json.loads(ws.recv(timeout=10)) == {"type": "pong"}
        assert all(worker.is_running() for worker in workers), "a worker was restarted while serving"
    finally:
        server.terminate()
        server.wait(20)
    assert server.returncode == 0
