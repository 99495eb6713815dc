"""The shared job table (`ingest.job_table`, SQLite) and the store are never used on a server's event loop.

A job-table call is a SQLite transaction that can wait up to `BUSY_TIMEOUT_S` for another process's
write (`repolens serve --workers N`): on the loop it would stall every stream of the process. The guard
below records every SQLite use of every `JobTable` (opening it, each read, each write transaction) with
whether the calling thread runs an event loop; a real uvicorn server (in this process, its own loop in
a thread: `tests.support.live_server`) then serves what reaches the table from async code: a chat's
ingest on first use, over WebSocket and HTTP, the graph wait that follows it, a `cancel` frame during
that ingest, and the MCP `index_repository` tool. The sync routes (`/api/jobs`) run in the threadpool.
The same guard on the store's registry reads covers a chat's own reads (an `open` loads a new version).
"""

from __future__ import annotations

import asyncio
import json
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from websockets.asyncio.client import connect

from ingest.job_table import JobTable
from rag.store import Store
from tests.support.chat import provider_env, settings_for
from tests.support.fake_provider import FakeProvider, FakeResponse
from tests.support.repos import make_fixture_repo

TIMEOUT = 60.0
_OURS = ("ingest/job_table.py", "ingest/jobs.py", "tests/test_jobs_off_loop.py")


@dataclass(frozen=True)
class TableCall:
    use: str  # `__init__`, `_read` or `_write`
    on_loop: bool  # the calling thread runs an event loop
    caller: str  # the first frame outside the job modules: who reached the table
    stack: tuple[str, ...] = ()  # the names of every function on the calling thread's stack


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _caller() -> str:
    for frame in reversed(traceback.extract_stack()[:-2]):
        if not frame.filename.endswith(_OURS):
            return f"{Path(frame.filename).name}:{frame.lineno} {frame.name}"
    return "?"


def _guard(monkeypatch: pytest.MonkeyPatch, cls: type, uses: tuple[str, ...]) -> list[TableCall]:
    """Every call of `cls`'s `uses` from now on, with whether its thread runs an event loop."""
    calls: list[TableCall] = []
    for use in uses:
        original = getattr(cls, use)

        def guarded(self: Any, *args: Any, _original: Any = original, _use: str = use, **kw: Any) -> Any:
            stack = tuple(frame.name for frame in traceback.extract_stack())
            calls.append(TableCall(_use, _on_loop(), _caller(), stack))
            return _original(self, *args, **kw)

        monkeypatch.setattr(cls, use, guarded)
    return calls


@pytest.fixture
def table_calls(monkeypatch: pytest.MonkeyPatch) -> list[TableCall]:
    """Every SQLite use of a `JobTable` from now on (every public method goes through these)."""
    return _guard(monkeypatch, JobTable, ("__init__", "_read", "_write"))


@pytest.fixture
def store_calls(monkeypatch: pytest.MonkeyPatch) -> list[TableCall]:
    """Every read of the store's registry from now on (`open` may load a new version, FAISS and
    SQLite, and waits for the store's lock while another thread loads one; a `PgStore` queries)."""
    return _guard(monkeypatch, Store, ("get", "open", "list", "building"))


def _on_loop_calls(calls: list[TableCall]) -> list[str]:
    return sorted({f"{call.use} from {call.caller}" for call in calls if call.on_loop})


def _question(repo: Path, text: str = "What does HttpClient.send do?") -> dict[str, Any]:
    return {
        "repo_url": str(repo),
        "type": "local",
        "messages": [{"role": "user", "content": text}],
        "protocol": "events",
        "provider": "openai",
    }


async def _frames_until_done(ws: Any, first: str | None = None) -> list[dict[str, Any]]:
    frames = [json.loads(first)] if first is not None else []
    while not frames or frames[-1]["type"] != "done":
        frames.append(json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)))
    return frames


async def test_no_job_table_call_runs_on_the_event_loop(
    table_calls: list[TableCall], live_server_factory: Any, tmp_path: Path, fake_provider: FakeProvider
) -> None:
    server = live_server_factory(settings_for(tmp_path / "home", **provider_env()))
    fake_provider.script(FakeResponse(text="Indexed and answered.", chunks=3))
    first, cancelled, over_http, by_mcp = (
        make_fixture_repo(tmp_path / name) for name in ("first", "cancelled", "http", "mcp")
    )
    async with connect(f"{server.ws_url}/ws/chat") as ws:
        # The first question ingests the repository as a job, then waits for its graph.
        await ws.send(json.dumps(_question(first)))
        frames = await _frames_until_done(ws)
        assert "Indexed and answered." in "".join(f.get("text", "") for f in frames if f["type"] == "token")
        # A `cancel` frame while the next repository is being ingested cancels its job.
        await ws.send(json.dumps(_question(cancelled)))
        status = await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert json.loads(status)["type"] == "status"
        await ws.send(json.dumps({"type": "cancel"}))
        frames = await _frames_until_done(ws, status)
        assert [f["code"] for f in frames if f["type"] == "error"] == ["cancelled"]
    async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http:
        fake_provider.script(FakeResponse(text="Answered over HTTP.", chunks=2))
        answer = await http.post("/chat/completions/stream", json=_question(over_http))
        assert answer.status_code == 200 and '"type": "token"' in answer.text, answer.text
        listed = (await http.get("/api/jobs")).json()["jobs"]
        assert len(listed) >= 3
    async with Client(f"{server.base_url}/mcp") as client:
        indexed = await client.call_tool("index_repository", {"location": str(by_mcp)})
        assert not indexed.is_error, indexed.content

    on_loop = _on_loop_calls(table_calls)
    assert on_loop == [], "job-table calls on the event loop:\n" + "\n".join(on_loop)
    callers = {call.caller.split(" ")[-1] for call in table_calls}
    assert {"_submit_job", "_cancel_jobs", "list_jobs"} <= callers, callers  # the guard saw them all


async def test_a_chat_reads_the_store_off_the_event_loop(
    store_calls: list[TableCall], live_server_factory: Any, tmp_path: Path, fake_provider: FakeProvider
) -> None:
    """The chat's own store reads (is it indexed, the access check's record, the graph wait's open and
    polls) run in threads, like the answer's retrieval: first use, a second question, deep research."""
    server = live_server_factory(settings_for(tmp_path / "home", **provider_env()))
    repo = make_fixture_repo(tmp_path / "repo")
    async with connect(f"{server.ws_url}/ws/chat") as ws:
        for deep in (False, False, True):
            fake_provider.script(FakeResponse(text="Answered.", chunks=2))
            await ws.send(json.dumps({**_question(repo), "deep_research": deep}))
            frames = await _frames_until_done(ws)
            assert not [f for f in frames if f["type"] == "error"], frames
    # The OpenAI API finds the model's repository (here by the last part of its id) in a thread too.
    fake_provider.script(FakeResponse(text="Answered.", chunks=2))
    body = {"model": f"repolens/{repo.name}", "messages": [{"role": "user", "content": "How is retry done?"}]}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as http:
        completion = await http.post("/v1/chat/completions", json=body)
    assert completion.status_code == 200, completion.text
    on_loop = _on_loop_calls(store_calls)
    assert on_loop == [], "store reads on the event loop:\n" + "\n".join(on_loop)
    callers = {call.caller.split(" ")[-1] for call in store_calls}
    assert {"_readiness", "building_without_graph", "_model_record"} <= callers, callers  # the guard saw them
    # One thread hop per question: the graph's open runs inside the hop that read the record and
    # checked access (each hop waits for the GIL behind the streaming loop: three doubled the tail).
    graph_opens = [call for call in store_calls if call.caller.endswith(" building_without_graph")]
    assert graph_opens and all("_readiness" in call.stack for call in graph_opens), graph_opens
    # The OpenAI API's lookup of the model's repository shares its hop with the access check.
    lookups = [call for call in store_calls if call.caller.endswith(" _model_record")]
    assert lookups and all("_admitted_record" in call.stack for call in lookups), lookups
