"""A server stopped mid-answer ends every stream with a clear last frame, on every transport.

One real `repolens serve` (a subprocess: SIGTERM reaches uvicorn and the app as in production)
over a data dir where the fixture repository is indexed, answering through the session's fake
provider with a long, slow answer. Each transport begins an answer (WebSocket events and compatible
modes, HTTP chat plain and SSE, OpenAI's API, MCP's `ask_question`) and MCP's `index_repository`
begins a long ingest; once each has streamed something, the server gets one SIGTERM. Each client
must then see its transport's form of the `server_stopping` error (not a cut connection), and the
server must exit soon after, without a traceback. The scenario runs once for the module; each test
reads one transport's outcome.

Before: uvicorn waited `timeout_graceful_shutdown` (2 s), then cut the HTTP streams (an incomplete
chunked body) and logged a `CancelledError` traceback each, and closed the WebSockets mid-answer
with code 1012 and no frame saying why.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from mcp import Client

from ingest import ingest
from rag.embedders import get_embedder
from rag.store import Store
from tests.support.chat import PROVIDER, provider_env, settings_for
from tests.support.cluster import healthy, wait_for
from tests.support.fake_provider import FakeResponse, _server
from tests.support.live_server import serve_on_a_free_port
from tests.support.repos import commit_all, git, make_fixture_repo, write_files

QUESTION = "How does the CLI reach the HTTP client?"
# Long enough that no answer ends by itself during the scenario (600 pieces at 20 a second).
SLOW_ANSWER = FakeResponse(text=" ".join(f"word{i}" for i in range(600)), chunks=600, delay=0.05)
ANSWERS = 6  # the transports below that ask the provider
BIG_REPO_FILES = 3000  # an ingest that is still running when the server stops
STARTED_CAP_S = 120  # only a hung scenario waits this long
STOPPED_CAP_S = 60
STOPPING = "the server is stopping: "


@dataclass
class Outcome:
    """What one client saw: its frames (or text), and how the stream ended."""

    frames: list[Any] = field(default_factory=list)
    text: str = ""
    close_code: int | None = None
    status: int | None = None
    error: str | None = None
    broken: str | None = None  # the client's exception: a connection cut mid-stream


def _outcome(scenario: Scenario, name: str) -> Outcome:
    outcome = scenario.outcomes[name]
    assert outcome.broken is None, f"the stream did not end cleanly: {outcome.broken}"
    return outcome


def _chat_body(repo: Path, **fields: Any) -> dict[str, Any]:
    return {
        "repo_url": str(repo),
        "type": "local",
        "messages": [{"role": "user", "content": QUESTION}],
        **PROVIDER,
        **fields,
    }


async def _ws_events(base: str, repo: Path, started: asyncio.Event) -> Outcome:
    outcome = Outcome()
    async with websockets.connect(base.replace("http", "ws") + "/ws/chat") as ws:
        await ws.send(json.dumps(_chat_body(repo, protocol="events")))
        try:
            async for message in ws:
                frame = json.loads(message)
                outcome.frames.append(frame)
                if frame["type"] == "token":
                    started.set()
        except websockets.ConnectionClosed:
            pass
        outcome.close_code = ws.close_code
    return outcome


async def _ws_compat(base: str, repo: Path, started: asyncio.Event) -> Outcome:
    outcome = Outcome()
    async with websockets.connect(base.replace("http", "ws") + "/ws/chat") as ws:
        await ws.send(json.dumps(_chat_body(repo)))
        try:
            async for message in ws:
                outcome.frames.append(message)
                started.set()
        except websockets.ConnectionClosed:
            pass
        outcome.close_code = ws.close_code
    return outcome


async def _http(base: str, body: dict[str, Any], path: str, started: asyncio.Event) -> Outcome:
    """A streamed POST read to its end: an incomplete body (a cut connection) raises here."""
    outcome = Outcome()
    async with (
        httpx.AsyncClient(timeout=STARTED_CAP_S) as client,
        client.stream("POST", base + path, json=body) as response,
    ):
        outcome.status = response.status_code
        async for piece in response.aiter_text():
            outcome.text += piece
            if piece.strip():
                started.set()
    return outcome


async def _http_plain(base: str, repo: Path, started: asyncio.Event) -> Outcome:
    return await _http(base, _chat_body(repo), "/chat/completions/stream", started)


async def _http_events(base: str, repo: Path, started: asyncio.Event) -> Outcome:
    outcome = Outcome()
    with_token = asyncio.Event()
    reading = asyncio.ensure_future(
        _http(base, _chat_body(repo, protocol="events"), "/chat/completions/stream", with_token)
    )
    await with_token.wait()
    started.set()
    outcome = await reading
    outcome.frames = [json.loads(line[6:]) for line in outcome.text.splitlines() if line.startswith("data: ")]
    return outcome


async def _openai(base: str, repo_id: str, started: asyncio.Event) -> Outcome:
    body = {
        "model": f"repolens/{repo_id}",
        "messages": [{"role": "user", "content": QUESTION}],
        "stream": True,
        "repolens": PROVIDER,
    }
    outcome = await _http(base, body, "/v1/chat/completions", started)
    outcome.frames = [line[6:] for line in outcome.text.splitlines() if line.startswith("data: ")]
    return outcome


async def _mcp(base: str, tool: str, arguments: dict[str, Any], started: asyncio.Event, when: str) -> Outcome:
    """A tool call; `started` once a progress message starts with `when`."""
    outcome = Outcome()

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        outcome.frames.append(message or "")
        if (message or "").startswith(when):
            started.set()

    async with Client(base + "/mcp") as client:
        result = await client.call_tool(tool, arguments, progress_callback=on_progress)
    outcome.error = result.content[0].text if result.is_error else None
    outcome.text = "" if result.is_error else result.content[0].text
    return outcome


def _big_repo(path: Path) -> Path:
    path.mkdir()
    files = {
        f"pkg/m_{n:04d}.py": f"def f_{n}(value):\n    return value + {n}\n" for n in range(BIG_REPO_FILES)
    }
    write_files(path, files)
    git(path, "init", "-q", "-b", "main")
    commit_all(path, "initial")
    return path


@dataclass
class Scenario:
    outcomes: dict[str, Outcome]
    server_output: str
    exit_code: int | None
    stopped_after_s: float


def _clients(
    base: str, repo: Path, repo_id: str, big: Path
) -> dict[str, Callable[[asyncio.Event], Awaitable[Outcome]]]:
    ask = {"repo": repo_id, "question": QUESTION, **PROVIDER}
    return {
        "ws_events": lambda started: _ws_events(base, repo, started),
        "ws_compat": lambda started: _ws_compat(base, repo, started),
        "http_plain": lambda started: _http_plain(base, repo, started),
        "http_events": lambda started: _http_events(base, repo, started),
        "openai": lambda started: _openai(base, repo_id, started),
        "mcp_ask": lambda started: _mcp(base, "ask_question", ask, started, "generating"),
        "mcp_index": lambda started: _mcp(
            base, "index_repository", {"location": str(big)}, started, "indexing"
        ),
    }


async def _stop_mid_stream(
    clients: dict[str, Callable[[asyncio.Event], Awaitable[Outcome]]], server: subprocess.Popen[bytes]
) -> tuple[dict[str, Outcome], float]:
    """Begin every client's stream; once all are streaming, SIGTERM the server; read them to the end."""
    started = {name: asyncio.Event() for name in clients}
    tasks = {name: asyncio.ensure_future(client(started[name])) for name, client in clients.items()}

    async def all_started() -> None:
        for event in started.values():
            await event.wait()

    ready = asyncio.ensure_future(all_started())
    deadline = time.monotonic() + STARTED_CAP_S
    while not ready.done():
        pending = [ready, *(task for task in tasks.values() if not task.done())]
        done, _ = await asyncio.wait(
            pending, timeout=deadline - time.monotonic(), return_when="FIRST_COMPLETED"
        )
        ended = [name for name, task in tasks.items() if task in done]
        assert not ended, f"{ended} ended before the stop: {[tasks[name].result() for name in ended]}"
        assert done, (
            f"not streaming after {STARTED_CAP_S} s: {[n for n, e in started.items() if not e.is_set()]}"
        )
    server.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    results = await asyncio.wait_for(asyncio.gather(*tasks.values(), return_exceptions=True), STOPPED_CAP_S)
    await asyncio.to_thread(server.wait, STOPPED_CAP_S)
    elapsed = time.monotonic() - stopped_at
    outcomes = {
        name: Outcome(broken=repr(result)) if isinstance(result, BaseException) else result
        for name, result in zip(tasks, results, strict=True)
    }
    return outcomes, elapsed


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    root = tmp_path_factory.mktemp("stop")
    home = root / "home"
    repo = make_fixture_repo(root / "weatherline")
    big = _big_repo(root / "big")
    settings = settings_for(home)
    store = Store(home)
    ingest(str(repo), store=store, embedder=get_embedder(settings))
    [record] = store.list()
    fake = _server()
    fake.reset()
    fake.script(*[SLOW_ANSWER] * ANSWERS)
    env = {**os.environ, **provider_env(), "REPOLENS_HOME": str(home)}
    port, server = serve_on_a_free_port(
        lambda port: subprocess.Popen(
            [str(Path(sys.executable).parent / "repolens"), "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/health", lambda: healthy(base), STARTED_CAP_S)
        outcomes, elapsed = asyncio.run(_stop_mid_stream(_clients(base, repo, record.id, big), server))
        output = server.communicate(timeout=STOPPED_CAP_S)[0].decode()
    finally:
        server.kill()
        fake.reset()
    yield Scenario(outcomes, output, server.returncode, elapsed)


def _is_stopping_error(frame: dict[str, Any]) -> bool:
    return (
        frame["type"] == "error"
        and frame["code"] == "server_stopping"
        and frame["message"].startswith(STOPPING)
    )


def test_websocket_events_mode_gets_the_error_and_done_frames_then_a_service_restart_close(
    stopped: Scenario,
) -> None:
    outcome = _outcome(stopped, "ws_events")
    *answer, error, done = outcome.frames
    assert any(frame["type"] == "token" for frame in answer)
    assert _is_stopping_error(error) and done["type"] == "done"
    assert outcome.close_code == 1012  # uvicorn's close, once the frames are out


def test_websocket_compatible_mode_gets_the_error_text_then_a_normal_close(stopped: Scenario) -> None:
    outcome = _outcome(stopped, "ws_compat")
    assert outcome.frames[-1].startswith(f"Error: {STOPPING}") and len(outcome.frames) > 1
    assert outcome.close_code == 1000


def test_http_plain_text_answer_ends_with_the_error_line_and_a_complete_body(stopped: Scenario) -> None:
    outcome = _outcome(stopped, "http_plain")
    answer, error = outcome.text.rsplit("\nError: ", 1)
    assert outcome.status == 200 and answer.startswith("word0") and error.startswith(STOPPING)


def test_http_sse_answer_ends_with_the_error_and_done_events(stopped: Scenario) -> None:
    *answer, error, done = _outcome(stopped, "http_events").frames
    assert any(frame["type"] == "token" for frame in answer)
    assert _is_stopping_error(error) and done["type"] == "done"


def test_openai_stream_ends_with_an_error_chunk_of_code_server_stopping(stopped: Scenario) -> None:
    outcome = _outcome(stopped, "openai")
    error = json.loads(outcome.frames[-1])["error"]
    assert error["code"] == "server_stopping" and error["message"].startswith(STOPPING)
    assert any("word0" in frame for frame in outcome.frames)


def test_mcp_ask_question_ends_with_a_server_stopping_tool_error(stopped: Scenario) -> None:
    error = _outcome(stopped, "mcp_ask").error
    assert error is not None and f"server_stopping: {STOPPING}the answer ends here" in error


def test_mcp_index_repository_ends_with_a_server_stopping_tool_error(stopped: Scenario) -> None:
    outcome = _outcome(stopped, "mcp_index")
    assert outcome.error is not None and f"server_stopping: {STOPPING}index_repository" in outcome.error
    assert outcome.frames  # it had reported progress (and was still running: it ended with the stop)


def test_the_server_exits_soon_without_cutting_a_stream_or_a_traceback(stopped: Scenario) -> None:
    # Bounded: the streams' last frames (at most `api.shutdown.DRAIN_S`), then uvicorn's own stop.
    assert stopped.stopped_after_s < STOPPED_CAP_S
    assert "Traceback" not in stopped.server_output, stopped.server_output
    assert "timeout graceful shutdown exceeded" not in stopped.server_output, stopped.server_output
