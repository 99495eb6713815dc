"""`/ws/chat` over a real uvicorn server with real WebSocket clients and the fake provider."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from ingest import ingest
from rag.store import Store
from tests.support.chat import ChatServer, provider_env, server_errors, settings_for
from tests.support.fake_provider import FakeProvider, FakeResponse
from tests.support.repos import commit_all, make_fixture_repo, write_files
from tests.support.stored import files_holding

TIMEOUT = 20.0


async def receive_json(ws: ClientConnection) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def until_done(ws: ClientConnection) -> list[dict[str, Any]]:
    """Every frame of one answer, up to and including its `done`."""
    frames = [await receive_json(ws)]
    while frames[-1]["type"] != "done":
        frames.append(await receive_json(ws))
    return frames


async def until_type(ws: ClientConnection, kind: str) -> list[dict[str, Any]]:
    frames = [await receive_json(ws)]
    while frames[-1]["type"] != kind:
        frames.append(await receive_json(ws))
    return frames


async def compat_frames(ws: ClientConnection) -> list[str]:
    """Every text frame until the server closes the socket (deepwiki's end of answer)."""
    frames = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            frames.append(await asyncio.wait_for(ws.recv(), TIMEOUT))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    return frames


def tokens(frames: list[dict[str, Any]]) -> str:
    return "".join(frame["text"] for frame in frames if frame["type"] == "token")


async def test_compatible_mode_streams_plain_text_then_closes(
    chat_server: ChatServer, fake_provider: FakeProvider
) -> None:
    answer = "The CLI calls ForecastService.run, which sends through HttpClient.send."
    # Pieces slower than the 20 ms coalescing window: each one is a frame of its own.
    fake_provider.script(FakeResponse(text=answer, chunks=6, delay=0.04))
    async with connect(f"{chat_server.server.ws_url}/ws/chat") as ws:
        await ws.send(json.dumps(chat_server.request()))
        frames = await compat_frames(ws)
    assert "".join(frames) == answer
    assert len(frames) >= 6
    body = fake_provider.requests[-1].body
    assert body["stream"] is True
    assert "weatherline/" in json.dumps(body["messages"])


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"messages": []}, "Error: No messages provided"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "Error: Last message must be from the user"),
        ({"messages": "what?"}, "Error: invalid request: messages: Input should be a valid list"),
        ("{not json", "Error: malformed JSON"),
        (json.dumps({"repo_url": "https://github.com/a/b", "type": "github"}), "Error: No messages provided"),
    ],
)
async def test_compatible_mode_errors_are_text_then_close(
    chat_server: ChatServer, payload: dict[str, Any] | str, expected: str
) -> None:
    raw = payload if isinstance(payload, str) else json.dumps({**chat_server.request(), **payload})
    async with connect(f"{chat_server.server.ws_url}/ws/chat") as ws:
        await ws.send(raw)
        frames = await compat_frames(ws)
    assert len(frames) == 1
    assert frames[0].startswith(expected)


async def test_events_mode_streams_typed_frames_and_keeps_the_socket_for_the_next_turn(
    chat_server: ChatServer, fake_provider: FakeProvider
) -> None:
    first_answer = "ForecastService.run calls HttpClient.send (weatherline/service.py)."
    fake_provider.script(
        FakeResponse(text=first_answer, chunks=4, delay=0.01), FakeResponse(text="It retries.", chunks=2)
    )
    async with connect(f"{chat_server.server.ws_url}/ws/chat") as ws:
        await ws.send(json.dumps(chat_server.request(protocol="events")))
        first = await until_done(ws)
        history = [
            {"role": "user", "content": "How does the CLI reach the HTTP client?"},
            {"role": "assistant", "content": tokens(first)},
            {"role": "user", "content": "Does it retry?"},
        ]
        await ws.send(json.dumps(chat_server.request(messages=history)))
        second = await until_done(ws)

    kinds = [frame["type"] for frame in first]
    assert kinds.index("sources") < kinds.index("token") < kinds.index("done")
    assert {frame["stage"] for frame in first if frame["type"] == "status"} >= {"retrieving", "generating"}
    assert tokens(first) == first_answer
    sources = next(frame for frame in first if frame["type"] == "sources")["sources"]
    assert sources and all(source["path"] and source["start_line"] >= 1 for source in sources)
    done = first[-1]
    assert set(done["usage"]) >= {"prompt_tokens", "completion_tokens"}
    assert done["timings"]["total_ms"] > 0

    assert tokens(second) == "It retries."
    assert second[-1]["type"] == "done"
    second_prompt = json.dumps(fake_provider.requests[-1].body["messages"])
    assert first_answer in second_prompt and "Does it retry?" in second_prompt


async def test_events_mode_ping_pong(chat_server: ChatServer) -> None:
    async with connect(f"{chat_server.server.ws_url}/ws/chat") as ws:
        await ws.send(json.dumps({"type": "ping"}))
        assert await receive_json(ws) == {"type": "pong"}
        await ws.send(json.dumps({"type": "ping"}))
        assert await receive_json(ws) == {"type": "pong"}


BAD_EVENTS_INPUT: list[tuple[str, Any, str]] = [
    ("malformed", "{oops", "malformed JSON"),
    ("not an object", "[1, 2]", "must be a JSON object"),
    ("messages of the wrong type", {"messages": "what?"}, "messages: Input should be a valid list"),
    ("k of the wrong type", {"k": "ten"}, "k: Input should be a valid integer"),
    ("bad role", {"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
    ("empty messages", {"messages": []}, "No messages provided"),
    (
        "last from assistant",
        {"messages": [{"role": "assistant", "content": "x"}]},
        "Last message must be from",
    ),
    ("too large", {"messages": [{"role": "user", "content": "x" * 1_100_000}]}, "over the limit of 1000000"),
    ("unknown frame", {"type": "dance"}, "unknown frame type 'dance'"),
]


@pytest.mark.parametrize(
    ("case", "payload", "expected"), BAD_EVENTS_INPUT, ids=[c[0] for c in BAD_EVENTS_INPUT]
)
async def test_events_mode_bad_input_gets_a_specific_error_and_the_socket_stays_usable(
    chat_server: ChatServer, fake_provider: FakeProvider, case: str, payload: Any, expected: str
) -> None:
    if isinstance(payload, dict) and "type" not in payload:
        payload = {**chat_server.request(), **payload}
    raw = payload if isinstance(payload, str) else json.dumps(payload)
    async with connect(f"{chat_server.server.ws_url}/ws/chat?protocol=events") as ws:
        await ws.send(raw)
        error = await receive_json(ws)
        assert error["type"] == "error"
        assert error["code"] == "bad_request"
        assert expected in error["message"]
        await ws.send(json.dumps({"type": "ping"}))
        assert await receive_json(ws) == {"type": "pong"}
        fake_provider.script(FakeResponse(text="Still here.", chunks=2))
        await ws.send(json.dumps(chat_server.request()))
        assert tokens(await until_done(ws)) == "Still here."


async def test_events_mode_is_selected_by_the_first_request(chat_server: ChatServer) -> None:
    """Without the query parameter, a bad request carrying `protocol: events` still keeps the socket."""
    async with connect(f"{chat_server.server.ws_url}/ws/chat") as ws:
        await ws.send(json.dumps({**chat_server.request(protocol="events"), "messages": []}))
        error = await receive_json(ws)
        assert (error["code"], error["message"]) == ("bad_request", "No messages provided")
        await ws.send(json.dumps({"type": "ping"}))
        assert await receive_json(ws) == {"type": "pong"}


async def test_cancel_stops_the_answer_and_closes_the_provider_stream(
    chat_server: ChatServer, fake_provider: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    fake_provider.script(FakeResponse(text="word " * 200, delay=0.05), FakeResponse(text="Next answer."))
    async with connect(f"{chat_server.server.ws_url}/ws/chat") as ws:
        await ws.send(json.dumps(chat_server.request(protocol="events")))
        await until_type(ws, "token")
        await ws.send(json.dumps({"type": "cancel"}))
        rest = await until_done(ws)
        errors = [frame for frame in rest if frame["type"] == "error"]
        assert [error["code"] for error in errors] == ["cancelled"]
        assert fake_provider.wait_for_disconnect(timeout=5)
        assert len(tokens(rest).split()) < 100
        await ws.send(json.dumps(chat_server.request()))
        assert tokens(await until_done(ws)) == "Next answer."
    assert server_errors(caplog) == []


async def test_a_provider_without_its_key_says_to_set_it_and_restart_the_server(
    chat_server: ChatServer,
) -> None:
    """The server read its settings when it started: a key put into `.env` now reaches it only after a
    restart, which the message did not say (a newcomer set the key and asked again, in vain)."""
    async with connect(f"{chat_server.server.ws_url}/ws/chat") as ws:
        await ws.send(json.dumps(chat_server.request(protocol="events", provider="google")))
        frames = await until_done(ws)
    error = next(frame for frame in frames if frame["type"] == "error")
    assert error["code"] == "not_configured"
    assert (
        "set GOOGLE_API_KEY in the environment or .env, then restart the server to pick it up"
        in (error["message"])
    )


async def test_the_offline_fallback_says_what_to_set_and_to_restart_the_server(
    live_server_factory: Any, tmp_path: Path
) -> None:
    """On a server with no provider, a chat naming one is answered offline; its status said only
    "openai is not configured", not how to configure it, nor that the server must restart then."""
    server = live_server_factory(settings_for(tmp_path / "bare-home"))
    request = first_question(make_fixture_repo(tmp_path / "bare-repo"))
    async with connect(f"{server.ws_url}/ws/chat") as ws:
        await ws.send(json.dumps(request))
        frames = await until_done(ws)
    assert not [frame for frame in frames if frame["type"] == "error"]
    notes = [
        frame["message"] for frame in frames if frame["type"] == "status" and frame["stage"] == "retrieving"
    ]
    assert (
        "openai is not configured (set OPENAI_API_KEY in the environment or .env, then restart the server to "
        "pick it up); answering offline from the retrieved code"
    ) in notes


async def test_a_second_request_while_answering_is_refused_as_busy(
    chat_server: ChatServer, fake_provider: FakeProvider
) -> None:
    fake_provider.script(FakeResponse(text="one two three four five six", delay=0.05))
    async with connect(f"{chat_server.server.ws_url}/ws/chat") as ws:
        await ws.send(json.dumps(chat_server.request(protocol="events")))
        await until_type(ws, "token")
        await ws.send(json.dumps(chat_server.request()))
        frames = await until_done(ws)
    busy = [frame for frame in frames if frame["type"] == "error"]
    assert [frame["code"] for frame in busy] == ["busy"]
    assert "one two three four five six".endswith(tokens(frames))
    assert len(fake_provider.requests) == 1


@pytest.mark.parametrize("protocol", ["events", None])
async def test_client_disconnect_mid_answer_closes_the_provider_stream(
    chat_server: ChatServer,
    fake_provider: FakeProvider,
    protocol: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_provider.script(FakeResponse(text="word " * 200, delay=0.05))
    request = chat_server.request(**({"protocol": protocol} if protocol else {}))
    async with connect(f"{chat_server.server.ws_url}/ws/chat") as ws:
        await ws.send(json.dumps(request))
        first = await asyncio.wait_for(ws.recv(), TIMEOUT)
        while protocol and json.loads(first)["type"] != "token":
            first = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert fake_provider.wait_for_disconnect(timeout=5)
    assert fake_provider.completed == 0
    assert server_errors(caplog) == []


async def test_provider_error_mid_stream_follows_the_partial_tokens(
    chat_server: ChatServer, fake_provider: FakeProvider
) -> None:
    fake_provider.script(FakeResponse(text="alpha beta gamma delta epsilon", fail_after=2))
    async with connect(f"{chat_server.server.ws_url}/ws/chat") as ws:
        await ws.send(json.dumps(chat_server.request(protocol="events")))
        frames = await until_done(ws)
    kinds = [frame["type"] for frame in frames]
    assert tokens(frames) == "alpha beta "
    assert kinds.index("error") > max(i for i, kind in enumerate(kinds) if kind == "token")
    error = frames[kinds.index("error")]
    assert error["code"] and error["message"]
    assert FAKE_KEY_FRAGMENT not in json.dumps(frames)


FAKE_KEY_FRAGMENT = "sk-fake-test-key"


async def test_provider_error_in_compatible_mode_is_an_error_text_frame(
    chat_server: ChatServer, fake_provider: FakeProvider
) -> None:
    fake_provider.script(FakeResponse(status=401))
    async with connect(f"{chat_server.server.ws_url}/ws/chat") as ws:
        await ws.send(json.dumps(chat_server.request()))
        frames = await compat_frames(ws)
    assert len(frames) == 1 and frames[0].startswith("Error: ")
    assert FAKE_KEY_FRAGMENT not in frames[0]


async def test_request_token_never_reaches_frames_or_logs(
    chat_server: ChatServer, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.support.live_server import free_port

    token = "ghp_SECRETtokenForTheChatTest1234567890"
    caplog.set_level(logging.DEBUG)
    request = chat_server.request(
        repo_url=f"http://127.0.0.1:{free_port()}/team/private.git",
        type="git",
        token=token,
        protocol="events",
    )
    async with connect(f"{chat_server.server.ws_url}/ws/chat") as ws:
        await ws.send(json.dumps(request))
        frames = await until_done(ws)
    error = next(frame for frame in frames if frame["type"] == "error")
    assert error["code"] == "unreachable"
    assert token not in json.dumps(frames)
    assert token not in caplog.text


def first_question(repo: Path) -> dict[str, Any]:
    """A chat request naming a repository that is not indexed yet (its first question)."""
    return {
        "repo_url": str(repo),
        "type": "local",
        "messages": [{"role": "user", "content": "What does HttpClient.send do?"}],
        "protocol": "events",
        "provider": "openai",
    }


async def test_first_request_indexes_the_repository_with_progress(
    live_server_factory: Any, tmp_path: Any, fake_provider: FakeProvider
) -> None:
    home = tmp_path / "fresh-home"
    server = live_server_factory(settings_for(home, **provider_env()))
    repo = make_fixture_repo(tmp_path / "fresh-repo")
    fake_provider.script(FakeResponse(text="Indexed and answered.", chunks=3))
    request = first_question(repo)
    async with connect(f"{server.ws_url}/ws/chat") as ws:
        await ws.send(json.dumps(request))
        frames = await until_done(ws)
    statuses = [frame for frame in frames if frame["type"] == "status"]
    indexing = [frame for frame in statuses if frame["stage"] == "indexing"]
    assert indexing, statuses
    assert any(frame.get("files_total", 0) > 0 for frame in indexing)
    assert any(
        frame.get("chunks_total", 0) > 0 and frame["chunks_done"] <= frame["chunks_total"]
        for frame in indexing
    )
    stages = [frame["stage"] for frame in statuses]
    assert stages.index("indexing") < stages.index("retrieving") < stages.index("generating")
    assert tokens(frames) == "Indexed and answered."
    assert frames[-1]["timings"]["index_ms"] > 0
    records = Store(home).list()
    assert [record.url for record in records] and records[0].chunk_count > 0


async def test_first_request_waits_while_another_process_builds_the_repository(
    live_server_factory: Any, tmp_path: Any, fake_provider: FakeProvider
) -> None:
    """Another process holds the repository's build (as a second `--workers` process answering the
    same first question does): the request says it waits instead of failing `busy`, and answers once
    the build is free (here the other process ends without a version, so this one indexes it)."""
    from ingest.sources import resolve_source
    from rag.store.layout import RepoLock

    home = tmp_path / "busy-home"
    server = live_server_factory(settings_for(home, **provider_env()))
    repo = make_fixture_repo(tmp_path / "busy-repo")
    fake_provider.script(FakeResponse(text="Answered after the wait.", chunks=3))
    repo_id = resolve_source(str(repo)).repo_id
    other_build = RepoLock(Store(home).paths(repo_id), repo_id).__enter__()
    request = first_question(repo)
    async with connect(f"{server.ws_url}/ws/chat") as ws:
        await ws.send(json.dumps(request))
        seen: list[dict[str, Any]] = []
        while not any("another process is indexing" in (frame.get("message") or "") for frame in seen):
            seen.append(await receive_json(ws))
            assert seen[-1]["type"] == "status", seen
        other_build.release_and_remove_if_unindexed()
        frames = seen + await until_done(ws)
    assert not [frame for frame in frames if frame["type"] == "error"], frames
    assert tokens(frames) == "Answered after the wait."
    assert Store(home).get(repo_id) is not None


async def test_compatible_request_with_percent_encoded_newline_filters_offline(
    live_server_factory: Any, tmp_path: Any
) -> None:
    """A deepwiki client's request: filters newline-separated and percent-encoded; no LLM configured."""
    home = tmp_path / "offline-home"
    server = live_server_factory(settings_for(home))
    repo = make_fixture_repo(tmp_path / "weatherline")
    request = {
        "repo_url": str(repo),
        "type": "local",
        "messages": [{"role": "user", "content": "How does main reach HttpClient.send?"}],
        "excluded_dirs": "server\nweb%2F",
        "excluded_files": "docs%2Farchitecture.md\nREADME%2Emd",
        "language": "en",
    }
    async with connect(f"{server.ws_url}/ws/chat") as ws:
        await ws.send(json.dumps(request))
        frames = await compat_frames(ws)
    answer = "".join(frames)
    assert not answer.startswith("Error:"), answer
    assert "offline" in answer.lower()
    assert "weatherline/client.py" in answer
    (record,) = Store(home).list()
    paths = {info.path for info in Store(home).open(record.id).list_files()}
    assert "weatherline/client.py" in paths
    assert not {"server/main.go", "web/chart.js", "docs/architecture.md", "README.md"} & paths


async def test_deepwiki_keeps_type_github_a_hint_for_a_local_folder_it_indexes(
    live_server_factory: Any, tmp_path: Any
) -> None:
    """deepwiki-open's page sends `type: github` whenever its URL has no `?type=`, a local folder's
    included: its first question still indexes the folder (as `local`) and answers, as before
    `type_mismatch` existed."""
    home = tmp_path / "deepwiki-home"
    server = live_server_factory(settings_for(home))
    repo = make_fixture_repo(tmp_path / "weatherline")
    request = {**first_question(repo), "type": "github", "protocol": None}
    async with connect(f"{server.ws_url}/ws/chat") as ws:
        await ws.send(json.dumps({key: value for key, value in request.items() if value is not None}))
        answer = "".join(await compat_frames(ws))
    assert not answer.startswith("Error:") and "weatherline/client.py" in answer, answer
    (record,) = Store(home).list()
    assert record.platform == "local"


@pytest.mark.parametrize("selected_by", ["body", "query"])
async def test_events_mode_refuses_a_type_the_folder_contradicts_and_keeps_the_socket(
    chat_server: ChatServer, fake_provider: FakeProvider, selected_by: str
) -> None:
    """RepoLens' own protocol refuses `type: github` for a local folder as `repolens ingest` does
    (`type_mismatch`, saying what to send); the same request in deepwiki's protocol is answered."""
    fake_provider.script(FakeResponse(text="Answered anyway.", chunks=1))
    query, fields = ("?protocol=events", {}) if selected_by == "query" else ("", {"protocol": "events"})
    async with connect(f"{chat_server.server.ws_url}/ws/chat{query}") as ws:
        await ws.send(json.dumps(chat_server.request(type="github", **fields)))
        refused = await until_done(ws)
        await ws.send(json.dumps({"type": "ping"}))
        assert (await receive_json(ws))["type"] == "pong"
    (error,) = [frame for frame in refused if frame["type"] == "error"]
    assert error["code"] == "type_mismatch"
    assert "is a local folder; leave --type out (it is detected) or give --type local" in error["message"]
    assert not [frame for frame in refused if frame["type"] == "token"]
    async with connect(f"{chat_server.server.ws_url}/ws/chat") as ws:
        await ws.send(json.dumps(chat_server.request(type="github")))
        assert "".join(await compat_frames(ws)) == "Answered anyway."


async def test_deep_research_in_events_mode_streams_research_frames(chat_server: ChatServer) -> None:
    request = chat_server.request(
        "How does main reach HttpClient.send?",
        protocol="events",
        deep_research=True,
        max_iterations=2,
        provider="offline",
        model=None,
    )
    async with connect(f"{chat_server.server.ws_url}/ws/chat") as ws:
        await ws.send(json.dumps(request))
        frames = await until_done(ws)
    research = [frame for frame in frames if frame["type"] == "research"]
    assert research and all(frame["max_iterations"] == 2 for frame in research)
    assert "weatherline/client.py" in tokens(frames)
    assert set(frames[-1]["research"]) >= {"turns", "tool_calls", "seconds"}


async def test_deep_research_tag_in_compatible_mode_runs_one_iteration(chat_server: ChatServer) -> None:
    request = chat_server.request(
        "[DEEP RESEARCH] How does main reach HttpClient.send?", provider="offline", model=None
    )
    async with connect(f"{chat_server.server.ws_url}/ws/chat") as ws:
        await ws.send(json.dumps(request))
        frames = await compat_frames(ws)
    answer = "".join(frames)
    assert answer.startswith("## Research Plan"), answer[:200]
    assert "## Next Steps" in answer


async def test_private_repository_is_indexed_with_the_request_token(
    chat_server: ChatServer, git_http_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Over a real smart-HTTP git server: a wrong token fails clearly, the right one indexes."""
    caplog.set_level(logging.DEBUG)
    git_http_server.add_repo(
        "acme/vault",
        {"vault/lock.py": 'def open_vault(code):\n    """Open the vault."""\n    return code * 2\n'},
    )
    request = chat_server.request(
        "What does open_vault return?",
        repo_url=git_http_server.url_for("acme/vault"),
        type="git",
        protocol="events",
    )
    async with connect(f"{chat_server.server.ws_url}/ws/chat") as ws:
        await ws.send(json.dumps({**request, "token": "wrong-token-1234567"}))
        refused = await until_done(ws)
        await ws.send(json.dumps({**request, "token": git_http_server.token}))
        frames = await until_done(ws)
    error = next(frame for frame in refused if frame["type"] == "error")
    assert error["code"] == "auth_failed" and "wrong-token" not in error["message"]
    stages = [frame["stage"] for frame in frames if frame["type"] == "status"]
    assert stages[0] == "cloning" and "indexing" in stages
    sources = next(frame for frame in frames if frame["type"] == "sources")["sources"]
    assert [source["path"] for source in sources] == ["vault/lock.py"]
    secret = git_http_server.token
    assert secret not in json.dumps(frames) and secret not in caplog.text
    # The dense phase goes on after the answer: scan what it leaves, not a version it is swapping.
    store = Store(chat_server.home)
    (vault,) = [record for record in store.list() if "acme/vault" in record.url]
    deadline = time.monotonic() + 60
    while store.get(vault.id).index_state != "complete" and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert files_holding(chat_server.home, secret.encode()) == []


async def test_pages_of_other_sites_cannot_open_the_socket(chat_server: ChatServer) -> None:
    url = f"{chat_server.server.ws_url}/ws/chat"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, origin=Origin("https://evil.example")):
            pass
    assert refused.value.response.status_code == 403
    for allowed in ("http://localhost:3000", chat_server.server.base_url):
        async with connect(url, origin=Origin(allowed)) as ws:
            await ws.send(json.dumps({"type": "ping"}))
            assert await receive_json(ws) == {"type": "pong"}


async def test_fast_tokens_are_coalesced_into_fewer_frames_without_losing_any(
    chat_server: ChatServer, fake_provider: FakeProvider
) -> None:
    answer = " ".join(f"piece{i}" for i in range(120))
    fake_provider.script(FakeResponse(text=answer, chunks=120, delay=0.001))
    async with connect(f"{chat_server.server.ws_url}/ws/chat") as ws:
        await ws.send(json.dumps(chat_server.request(protocol="events")))
        frames = await until_done(ws)
    token_frames = [frame for frame in frames if frame["type"] == "token"]
    assert tokens(frames) == answer
    assert len(token_frames) < 120
    assert [frame["type"] for frame in frames][-2:] == ["citations", "done"]


async def test_a_question_about_a_loaded_public_repository_takes_no_readiness_hop(
    chat_server: ChatServer, fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once this process has the live version loaded with its graph, a question skips `_readiness`'s
    thread hop (each hop waits for the GIL behind the streaming loop); after a swap, the first question
    goes through it again and sees the new version."""
    import api.chat_session

    hops: list[str] = []
    readiness = api.chat_session._readiness

    def counted(services: Any, graph: Any, token: str | None) -> Any:
        hops.append(graph.repo_id)
        return readiness(services, graph, token)

    monkeypatch.setattr(api.chat_session, "_readiness", counted)
    store = chat_server.server.app.state.services.store

    async def ask() -> list[dict[str, Any]]:
        async with connect(f"{chat_server.server.ws_url}/ws/chat") as ws:
            await ws.send(json.dumps(chat_server.request(protocol="events")))
            return await until_done(ws)

    fake_provider.script(*[FakeResponse(text="It calls HttpClient.send.")] * 3)
    await ask()  # loads the version if no earlier test did
    hops.clear()
    answered = await ask()
    assert tokens(answered) == "It calls HttpClient.send."
    assert hops == []
    loaded = store.loaded(chat_server.repo_id)
    assert loaded is not None and loaded.has_graph_known()

    services = chat_server.server.app.state.services
    write_files(chat_server.repo, {"weatherline/extra.py": "def extra():\n    return 1\n"})
    commit_all(chat_server.repo, "one more file")
    ingest(str(chat_server.repo), store=services.store, embedder=services.embedder)
    assert store.loaded(chat_server.repo_id) is None, "the loaded version is no longer the live one"
    answered = await ask()
    assert tokens(answered) == "It calls HttpClient.send."
    assert hops == [chat_server.repo_id]
    assert store.loaded(chat_server.repo_id) is not None
