"""A real `redis-server` on 127.0.0.1 for the queue tests (Debian's package, installed by `make install`).

`redis_server` (session fixture) starts one server with no persistence on a port the kernel
picked and stops it at the end of the session (tests that need an empty queue flush a database of
their own in it); `start_redis` counts a server as started only when the one that
answers is its own process (`INFO`'s process id): another process may bind the port first (a test
session in another checkout), and its server must never be mistaken for ours. Tests skip with a
clear reason where `redis-server` is missing (a developer machine without `make install`), never
in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.support.live_server import free_port

HOST = "127.0.0.1"
_START_TIMEOUT_S = 10.0
_BIND_ATTEMPTS = 5


@dataclass(frozen=True)
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port)


def start_redis(folder: Path) -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            raise RuntimeError("redis-server is missing: `make install` installs it")
        pytest.skip("redis-server is not installed (run `make install`)")
    folder.mkdir(parents=True, exist_ok=True)
    for _ in range(_BIND_ATTEMPTS):
        port = free_port()
        command = [binary, "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no"]
        command += ["--dir", str(folder), "--protected-mode", "yes", "--loglevel", "warning"]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        server = RedisServer(port, process)
        if _answers_as(server):
            return server
        stop_redis(server)
    raise RuntimeError(f"redis-server lost its port to another process {_BIND_ATTEMPTS} times")


def _answers_as(server: RedisServer) -> bool:
    """Wait until `server`'s own process answers on its port (False: it exited, the port was taken)."""
    deadline = time.monotonic() + _START_TIMEOUT_S
    client = server.client()
    try:
        while server.process.poll() is None and time.monotonic() < deadline:
            try:
                if int(client.info("server")["process_id"]) == server.process.pid:
                    return True
            except redis.ConnectionError:
                pass
            time.sleep(0.05)
        return False
    finally:
        client.close()


def stop_redis(server: RedisServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    stop_redis(server)
