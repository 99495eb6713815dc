"""The data dir's rate-limit store (`api.rate_limit_store`): one budget per client for every process.

- the moving window decides exactly as `limits`' own memory storage does (the same clock script
  through both);
- processes hitting one data dir at once let exactly `limit` requests through between them (real
  subprocesses, one `BEGIN IMMEDIATE` transaction per hit);
- a real `repolens serve --workers 2` (uvicorn, no Redis) refuses a client's requests on one worker
  process once the other has used its budget: HTTP 429 `rate_limited` and the WebSocket `error`
  frame. To know which process answers, the test pauses the other one (SIGSTOP, as
  tests/test_serve_workers.py does).
(Two in-process servers on one data dir, and the fallback to memory: tests/test_server_guards.py.)

No timing asserts: every wait polls with a deadline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from websockets.sync.client import connect

from api.rate_limit_store import SQLiteStorage
from tests.support.live_server import serve_on_a_free_port
from tests.test_serve_workers import ServerLog, paused

STOP_CAP_S = 300
CHAT = {"repo_url": "/nonexistent/never", "type": "local", "messages": [{"role": "user", "content": "hi"}]}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_the_moving_window_decides_as_limits_memory_storage_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr("time.time", clock)  # both storages read `time.time()` at call time
    memory = MovingWindowRateLimiter(MemoryStorage())
    one, other = SQLiteStorage(tmp_path), SQLiteStorage(tmp_path)  # two connections: two processes
    shared = [MovingWindowRateLimiter(one), MovingWindowRateLimiter(other)]
    item = parse("3/10 seconds")
    script = [0, 1, 2, 5, 9.99, 10.0, 10.5, 11.0, 11.5, 12.5, 13, 25, 25, 25, 25, 30]
    decisions, expected = [], []
    for step, at in enumerate(script):
        clock.now = 1_000_000.0 + at
        expected.append(memory.hit(item, "chat", "10.0.0.1"))
        decisions.append(shared[step % 2].hit(item, "chat", "10.0.0.1"))
        assert shared[1 - step % 2].test(item, "chat", "10.0.0.1") == memory.test(item, "chat", "10.0.0.1")
    assert decisions == expected, (decisions, expected)
    assert decisions[:4] == [True, True, True, False] and not all(decisions[11:15])
    assert shared[0].hit(item, "chat", "10.0.0.2")  # another client, its own budget
    assert shared[0].get_window_stats(item, "chat", "10.0.0.1").remaining == (
        memory.get_window_stats(item, "chat", "10.0.0.1").remaining
    )
    one.clear(item.key_for("chat", "10.0.0.1"))
    assert shared[1].hit(item, "chat", "10.0.0.1")
    one.close()
    other.close()


def test_rows_every_window_left_are_swept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr("time.time", clock)
    store = SQLiteStorage(tmp_path)
    limiter = MovingWindowRateLimiter(store)
    for client in range(50):  # 50 clients that never come back
        assert limiter.hit(parse("5/minute"), "chat", f"10.0.0.{client}")
    clock.now += 3600
    assert limiter.hit(parse("5/minute"), "ingest", "10.0.0.1")
    with store._write() as db:
        assert db.execute("SELECT count(*) FROM hits").fetchone() == (1,)
    store.close()


_HAMMER = """
import sys
from pathlib import Path
from limits import parse
from limits.strategies import MovingWindowRateLimiter
from api.rate_limit_store import SQLiteStorage

home, tries = Path(sys.argv[1]), int(sys.argv[2])
limiter = MovingWindowRateLimiter(SQLiteStorage(home))
limiter.storage.check()  # the database opened before the start
sys.stdin.read()  # every process starts hitting at once (the test closes their stdin together)
print(sum(limiter.hit(parse("500/hour"), "chat", "127.0.0.1") for _ in range(tries)))
"""


def test_processes_hitting_one_data_dir_at_once_let_exactly_the_limit_through(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _HAMMER, str(tmp_path), "250"],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for process in processes:  # all of them ready to go, then all released together
        assert process.stdin is not None
        process.stdin.close()
    outputs = []
    for process in processes:
        assert process.stdout is not None
        outputs.append(process.stdout.read())
        process.stdout.close()
        process.wait(120)
    assert all(process.returncode == 0 for process in processes)
    allowed = [int(output) for output in outputs]
    assert sum(allowed) == 500, allowed  # 1,000 tries, one budget of 500


def test_a_client_over_its_budget_on_one_worker_process_is_refused_by_the_other(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "REPOLENS_HOME": str(tmp_path / "home"),
        "REPOLENS_RATE_LIMIT_INGEST": "3/minute",
        "REPOLENS_RATE_LIMIT_CHAT": "1/minute",
    }
    env.pop("REPOLENS_REDIS_URL", None)
    repolens = Path(sys.executable).parent / "repolens"
    command = [str(repolens), "serve", "--workers", "2", "--log-level", "info", "--port"]
    port, server = serve_on_a_free_port(
        lambda port: subprocess.Popen([*command, str(port)], env=env, stderr=subprocess.PIPE, text=True)
    )
    assert server.stderr is not None
    log = ServerLog(server.stderr)
    base = f"http://127.0.0.1:{port}"
    refused = {"repo_url": "/nope/x", "type": "local"}  # refused at once (a missing folder): counted, cheap
    try:
        first, second = log.wait_for_ready_workers(2)
        with paused(second):  # every connection now reaches `first`
            statuses = [
                httpx.post(f"{base}/api/repos", json=refused, timeout=60).status_code for _ in range(2)
            ]
            chat = httpx.post(f"{base}/chat/completions/stream", json=CHAT, timeout=60)
        assert 429 not in statuses and 500 not in statuses and chat.status_code != 429, (statuses, chat.text)
        with paused(first):  # and now `second`, which has counted nothing itself
            third = httpx.post(f"{base}/api/repos", json=refused, timeout=60)
            fourth = httpx.post(f"{base}/api/repos", json=refused, timeout=60)
            with connect(f"ws://127.0.0.1:{port}/ws/chat?protocol=events", open_timeout=60) as ws:
                ws.send(json.dumps({**CHAT, "protocol": "events"}))
                frame = json.loads(ws.recv(timeout=60))
        assert third.status_code not in (429, 500), third.text
        assert fourth.status_code == 429 and fourth.json()["code"] == "rate_limited", fourth.text
        assert frame["type"] == "error" and frame["code"] == "rate_limited", frame
    finally:
        server.terminate()
        try:
            server.wait(STOP_CAP_S)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(STOP_CAP_S)
        log.join()
    assert server.returncode == 0, "\n".join(log.lines[-30:])
