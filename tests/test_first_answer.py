"""The first answer about a repository that is being indexed is explained from its code graph.

A new repository's ingest commits a searchable version first and its code graph a moment later
(`ingest.pipeline`'s `graph` milestone). A question asked in between waits for the graph, briefly
(`api.graph_wait`), or the answer says it is made without it (`rag.events.graph_building_event`):
- `repolens ask <path it indexes>` gives the code-graph answer and exits (the real command, and
  in-process with a graph that takes seconds);
- a chat over a real uvicorn server with a real WebSocket client, on its own first-use ingest (it
  waits) and right after `POST /api/repos` reached its searchable milestone (the wait runs out).

The fixture's graph takes milliseconds; a large repository's takes seconds: `slow_graph` stretches the
pipeline's graph step (the one delay these tests inject) so the window is there every time.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner
from websockets.asyncio.client import connect

from api.cli import app
from ingest import pipeline
from ingest.sources import resolve_source
from rag.events import GRAPH_BUILDING_STEP, UNFINISHED_INDEX_STEP
from rag.providers.offline import GRAPH_MISSING_NOTE, LABEL, labels
from rag.store import Store
from tests.support.chat import settings_for
from tests.support.live_server import LiveServer
from tests.support.repos import make_fixture_repo

QUESTION = "How does main reach HttpClient.send?"
GRAPH_TITLE = f"**{labels('en')['title']}**"
GRAPH_DELAY_S = 2.0  # longer than the fixture's retrieval and answer, however loaded the machine
TIMEOUT = 60.0
ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


class GraphGate:
    """The pipeline's graph step, made slow: it waits `delay_s` (`GRAPH_DELAY_S`; `hold()`: until
    `release()`)."""

    def __init__(self) -> None:
        self.delay_s = GRAPH_DELAY_S
        self.released = threading.Event()

    def hold(self) -> None:
        self.delay_s = TIMEOUT

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def slow_graph(monkeypatch: pytest.MonkeyPatch) -> Iterator[GraphGate]:
    """Released at teardown, so no build is left waiting."""
    gate = GraphGate()
    original = pipeline._Graphs.store

    def store(graphs: Any, builder: Any) -> None:
        gate.released.wait(gate.delay_s)
        original(graphs, builder)

    monkeypatch.setattr(pipeline._Graphs, "store", store)
    yield gate
    gate.release()


def wait_for_background_embed(stderr: str) -> None:
    """`ask` handed the rest of the dense phase to a detached `repolens embed`: let it finish here
    (it writes into this test's data dir)."""
    found = re.search(r"background \(pid (\d+)", stderr)
    if found is not None:
        pid = int(found.group(1))
        with_child = True
        try:
            os.waitpid(pid, 0)  # started by this process (an in-process `ask`)
        except ChildProcessError:
            with_child = False
        deadline = time.monotonic() + TIMEOUT
        while not with_child and os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.1)


# `ask` may leave a detached `repolens embed` running on purpose (the dense phase it hands on).
@pytest.mark.filterwarnings("ignore:subprocess .* is still running:ResourceWarning")
def test_first_ask_on_a_path_waits_for_the_code_graph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slow_graph: GraphGate
) -> None:
    """In-process (ingest in a thread, so the slowed graph step applies): the first `ask` on a path
    it indexes says it waits for the graph, then answers from it; without the wait it answered at the
    searchable version with the retrieval list."""
    monkeypatch.setenv("REPOLENS_INGEST_ISOLATION", "thread")
    repo = make_fixture_repo(tmp_path / "fresh")
    result = runner.invoke(app, ["ask", str(repo), QUESTION, "--json"])
    assert result.exit_code == 0, result.output
    wait_for_background_embed(result.stderr)
    events = [json.loads(line) for line in result.stdout.splitlines()]
    text = "".join(e["text"] for e in events if e["type"] == "token")
    assert text.startswith(GRAPH_TITLE), text[:300]
    assert "`main()`" in text and "`HttpClient.send()`" in text
    waiting = [e for e in events if e["type"] == "status" and e.get("step") == GRAPH_BUILDING_STEP]
    assert [e["stage"] for e in waiting] == ["indexing"], waiting  # it waited, and did not run out
    statuses = [e.get("step") or e["stage"] for e in events if e["type"] == "status"]
    assert statuses.index("searchable") < statuses.index(GRAPH_BUILDING_STEP) < statuses.index("retrieving")


def test_first_ask_as_a_command_answers_from_the_graph_and_exits(tmp_path: Path, repolens_home: Path) -> None:
    """The real command, with the default ingest worker process: it answers from the code graph and
    exits (it used to stay alive for ever after the answer: nothing stopped the worker process), and
    the dense phase it did not finish completes in the background."""
    repo = make_fixture_repo(tmp_path / "command")
    env = {**os.environ, "REPOLENS_HOME": str(repolens_home)}
    env.pop("REPOLENS_INGEST_ISOLATION", None)
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        # Files, not pipes, and a session of its own: a command that never ends is killed whole (its
        # worker process held the pipes open past a timeout's kill).
        asking = subprocess.Popen(
            [sys.executable, "-c", "from api.cli import main; main()", "ask", str(repo), QUESTION, "--plain"],
            env=env,
            stdout=stdout,
            stderr=stderr,
            cwd=ROOT,
            start_new_session=True,
        )
        try:
            returncode = asking.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(asking.pid, signal.SIGKILL)
            asking.wait()
            answered = out.read_text()[:300]
            raise AssertionError(f"`repolens ask` did not end after its answer:\n{answered}") from None
    answer = out.read_text()
    assert returncode == 0, err.read_text()
    assert answer.startswith(GRAPH_TITLE), answer[:300]
    assert LABEL not in answer
    store = Store(repolens_home)
    repo_id = resolve_source(str(repo)).repo_id
    deadline = time.monotonic() + 120
    while store.get(repo_id).index_state != "complete" and time.monotonic() < deadline:
        time.sleep(0.2)
    record = store.get(repo_id)
    assert record.index_state == "complete" and store.open(repo_id).size == record.chunk_count


def fresh_server(live_server_factory: Any, home: Path, **env: str) -> LiveServer:
    """A server without any provider key (offline answers), running ingest jobs in its own threads
    (so the slowed graph step applies)."""
    server: LiveServer = live_server_factory(settings_for(home, REPOLENS_INGEST_ISOLATION="thread", **env))
    return server


async def answer_frames(server: LiveServer, repo: Path) -> list[dict[str, Any]]:
    request = {
        "repo_url": str(repo),
        "type": "local",
        "messages": [{"role": "user", "content": QUESTION}],
        "protocol": "events",
    }
    frames: list[dict[str, Any]] = []
    async with connect(f"{server.ws_url}/ws/chat") as ws:
        await ws.send(json.dumps(request))
        while not frames or frames[-1]["type"] != "done":
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)))
    return frames


def tokens(frames: list[dict[str, Any]]) -> str:
    return "".join(frame["text"] for frame in frames if frame["type"] == "token")


async def test_first_chat_waits_for_the_code_graph(
    live_server_factory: Any, tmp_path: Path, slow_graph: GraphGate
) -> None:
    server = fresh_server(live_server_factory, tmp_path / "home")
    frames = await answer_frames(server, make_fixture_repo(tmp_path / "first-chat"))
    assert not [frame for frame in frames if frame["type"] == "error"], frames
    assert tokens(frames).startswith(GRAPH_TITLE), tokens(frames)[:300]
    waited = [f for f in frames if f["type"] == "status" and f.get("step") == GRAPH_BUILDING_STEP]
    assert [f["stage"] for f in waited] == ["indexing"] and "waiting" in waited[0]["message"], waited


async def test_a_chat_while_the_graph_is_still_building_says_so(
    live_server_factory: Any, tmp_path: Path, slow_graph: GraphGate
) -> None:
    """`POST /api/repos` reached its searchable milestone and its graph is held back: a chat waits
    `REPOLENS_GRAPH_WAIT_S`, then answers with the retrieval list, saying why, in a status frame and in
    the text (the only thing the text-only transports show: the OpenAI-compatible API here)."""
    slow_graph.hold()
    home = tmp_path / "home"
    server = fresh_server(live_server_factory, home, REPOLENS_GRAPH_WAIT_S="0.3")
    repo = make_fixture_repo(tmp_path / "after-ingest")

    def ingest_until_searchable() -> None:
        with (
            httpx.Client(base_url=server.base_url, timeout=TIMEOUT) as client,
            client.stream("POST", "/api/repos", json={"repo_url": str(repo), "type": "local"}) as response,
        ):
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: ") and json.loads(line[6:]).get("step") == "searchable":
                    return  # the client goes; the job goes on

    await asyncio.to_thread(ingest_until_searchable)
    frames = await answer_frames(server, repo)
    assert not [frame for frame in frames if frame["type"] == "error"], frames
    said = [f for f in frames if f["type"] == "status" and f.get("step") == GRAPH_BUILDING_STEP]
    assert [f["stage"] for f in said] == ["indexing", "retrieving"], said
    assert "still being built" in said[-1]["message"]
    text = tokens(frames)
    assert text.startswith(f"**{LABEL}**") and GRAPH_MISSING_NOTE.strip() in text
    repo_id = resolve_source(str(repo)).repo_id
    # A text-only transport (the OpenAI-compatible API) carries the same note in its text.
    body = {"model": f"repolens/{repo_id}", "messages": [{"role": "user", "content": QUESTION}]}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as client:
        completion = (await client.post("/v1/chat/completions", json=body)).json()
    assert GRAPH_MISSING_NOTE.strip() in completion["choices"][0]["message"]["content"], completion
    slow_graph.release()
    deadline = time.monotonic() + TIMEOUT
    while not Store(home).open(repo_id).has_graph and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    frames = await answer_frames(server, repo)  # the graph is live: no wait, no note
    assert not [f for f in frames if f.get("step") == GRAPH_BUILDING_STEP]
    assert tokens(frames).startswith(GRAPH_TITLE)


async def test_a_chat_waits_for_a_build_another_process_holds(
    live_server_factory: Any, tmp_path: Path
) -> None:
    """The live version has no graph yet (`ingest --no-wait` left it to `repolens embed`) and another
    process holds the repository's build (a second `repolens serve --workers` process, a CLI ingest, a
    background `repolens embed`): the chat waits for it too, then says the answer is made without it.
    With nobody building, it neither waits nor says so."""
    from ingest import IngestOptions, ingest
    from rag.embedders import get_embedder
    from rag.store.layout import RepoLock

    home = tmp_path / "home"
    settings = settings_for(home)
    repo = make_fixture_repo(tmp_path / "elsewhere")
    report = ingest(str(repo), IngestOptions(dense=False), store=Store(home), embedder=get_embedder(settings))
    assert not Store(home).open(report.repo_id).has_graph
    server = fresh_server(live_server_factory, home, REPOLENS_GRAPH_WAIT_S="0.3")
    other_build = RepoLock(Store(home).paths(report.repo_id), report.repo_id).__enter__()
    try:
        frames = await answer_frames(server, repo)
    finally:
        other_build.__exit__(None, None, None)
    said = [f["stage"] for f in frames if f["type"] == "status" and f.get("step") == GRAPH_BUILDING_STEP]
    assert said == ["indexing", "retrieving"], frames
    assert GRAPH_MISSING_NOTE.strip() in tokens(frames)
    assert not [f for f in frames if f.get("step") == UNFINISHED_INDEX_STEP], frames  # it is being built
    frames = await answer_frames(server, repo)
    assert not [f for f in frames if f.get("step") == GRAPH_BUILDING_STEP], frames
    # Nobody is building it (as after a Ctrl-C during the first `repolens ask`): the retrieval list no
    # longer comes without a word; the frame and the text say the index is unfinished and the fix.
    fix = f"run `repolens embed {report.repo_id}` (or update the repository) to finish it"
    (said,) = [f for f in frames if f.get("step") == UNFINISHED_INDEX_STEP]
    assert said["index_state"] == "lexical" and fix in said["message"]
    assert tokens(frames).startswith(f"**{LABEL}**") and f"**Note:** {said['message']}." in tokens(frames)
    body = {"model": f"repolens/{report.repo_id}", "messages": [{"role": "user", "content": QUESTION}]}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=TIMEOUT) as client:
        completion = (await client.post("/v1/chat/completions", json=body)).json()
    assert fix in completion["choices"][0]["message"]["content"], completion


async def test_a_repository_without_graph_code_never_waits_nor_needs_the_job_queue(
    live_server_factory: Any, tmp_path: Path, shared_embedder: Any
) -> None:
    """A complete index of text the graph does not understand has no graph, and nothing is building it:
    its chats neither wait nor look up the job queue (here a Redis queue that is down), so they answer."""
    from ingest import ingest
    from tests.support.live_server import free_port
    from tests.support.repos import commit_all, git, write_files

    home = tmp_path / "home"
    repo = tmp_path / "notes"
    repo.mkdir()
    write_files(repo, {"README.md": "# Notes\n\nHow main reaches HttpClient.send is written down here.\n"})
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "notes")
    report = ingest(str(repo), store=Store(home), embedder=shared_embedder)
    assert report.record.index_state == "complete" and not Store(home).open(report.repo_id).has_graph
    server = fresh_server(live_server_factory, home, REPOLENS_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    frames = await answer_frames(server, repo)
    assert not [f for f in frames if f["type"] == "error" or f.get("step") == GRAPH_BUILDING_STEP], frames
    assert "README.md" in tokens(frames)
