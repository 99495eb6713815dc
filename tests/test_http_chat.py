"""`POST /chat/completions/stream` over a real uvicorn server: plain text, SSE, errors, disconnects."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from api.origins import origin_allowed
from tests.support.chat import ChatServer, server_errors, settings_for, sse_events
from tests.support.fake_provider import FakeProvider, FakeResponse
from tests.support.live_server import LiveServer, free_port, serve_on_a_free_port

TIMEOUT = httpx.Timeout(20.0)


def url(chat_server: ChatServer) -> str:
    return f"{chat_server.server.base_url}/chat/completions/stream"


@pytest.mark.parametrize("accept", [None, "text/event-stream"])
def test_plain_text_stream_like_deepwiki(
    chat_server: ChatServer, fake_provider: FakeProvider, accept: str | None
) -> None:
    """deepwiki-open's Next.js proxy sends `Accept: text/event-stream` and pastes the body as text."""
    answer = "HttpClient.send retries up to ZORBLAX_RETRY_CEILING times."
    fake_provider.script(FakeResponse(text=answer, chunks=5, delay=0.02))
    headers = {"Content-Type": "application/json", "Accept": accept} if accept else {}
    body = chat_server.request()
    with httpx.stream("POST", url(chat_server), json=body, headers=headers, timeout=TIMEOUT) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        pieces = list(response.iter_text())
    assert "".join(pieces) == answer
    assert len(pieces) > 1


@pytest.mark.parametrize("how", ["protocol", "header"])
def test_sse_carries_the_typed_events(chat_server: ChatServer, fake_provider: FakeProvider, how: str) -> None:
    """Typed SSE only when asked for explicitly: the body's `protocol` or the `X-RepoLens-Protocol` header."""
    fake_provider.script(FakeResponse(text="Service.run calls send.", chunks=3))
    body = chat_server.request(protocol="events") if how == "protocol" else chat_server.request()
    headers = {"X-RepoLens-Protocol": "events"} if how == "header" else {}
    response = httpx.post(url(chat_server), json=body, headers=headers, timeout=TIMEOUT)
    assert response.status_code == 200
    events = sse_events(response.text)
    kinds = [event["type"] for event in events]
    assert kinds[-1] == "done" and kinds.count("done") == 1
    assert "sources" in kinds and "status" in kinds
    assert "".join(event["text"] for event in events if event["type"] == "token") == "Service.run calls send."


def test_a_type_the_folder_contradicts_is_a_hint_in_plain_text_and_refused_in_sse(
    chat_server: ChatServer, fake_provider: FakeProvider
) -> None:
    """deepwiki-open's `type: github` for a local folder is answered as before; RepoLens' typed SSE
    (asked for by the header as by the body) refuses it with `type_mismatch`."""
    fake_provider.script(FakeResponse(text="Plain answer.", chunks=1))
    body = chat_server.request(type="github")
    plain = httpx.post(url(chat_server), json=body, timeout=TIMEOUT)
    assert (plain.status_code, plain.text) == (200, "Plain answer.")
    events_header = {"X-RepoLens-Protocol": "events"}
    typed = httpx.post(url(chat_server), json=body, headers=events_header, timeout=TIMEOUT)
    events = sse_events(typed.text)
    (error,) = [event for event in events if event["type"] == "error"]
    assert error["code"] == "type_mismatch" and error["message"].endswith("or give --type local")
    assert events[-1]["type"] == "done"


@pytest.mark.parametrize(
    ("change", "status", "detail"),
    [
        ({"messages": []}, 400, "No messages provided"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, 400, "Last message must be from the user"),
        ({"k": 0}, 400, "k: Input should be greater than or equal to 1"),
        ({"language": 7}, 400, "language: Input should be a valid string"),
        ({"repo_url": "ftp://example.invalid/repo"}, 400, "unsupported URL scheme"),
    ],
)
def test_errors_before_streaming_are_http_errors(
    chat_server: ChatServer, change: dict[str, object], status: int, detail: str
) -> None:
    response = httpx.post(url(chat_server), json={**chat_server.request(), **change}, timeout=TIMEOUT)
    assert response.status_code == status
    assert detail in response.json()["detail"]
    assert response.json()["code"] in ("bad_request", "bad_url")


def test_malformed_and_oversized_bodies_are_refused(chat_server: ChatServer) -> None:
    malformed = httpx.post(url(chat_server), content=b"{nope", timeout=TIMEOUT)
    assert malformed.status_code == 400
    assert malformed.json()["detail"].startswith("malformed JSON")
    huge = json.dumps(chat_server.request("x" * 1_100_000)).encode()
    oversized = httpx.post(url(chat_server), content=huge, timeout=TIMEOUT)
    assert oversized.status_code == 400
    assert "over the limit of 1000000 bytes" in oversized.json()["detail"]


def test_unindexed_missing_local_folder_is_not_found(chat_server: ChatServer, tmp_path: object) -> None:
    body = chat_server.request(repo_url=f"{tmp_path}/does-not-exist")
    response = httpx.post(url(chat_server), json=body, timeout=TIMEOUT)
    assert response.status_code in (400, 404)
    assert "does-not-exist" in response.json()["detail"]


def test_provider_error_before_the_first_token_is_an_http_error(
    chat_server: ChatServer, fake_provider: FakeProvider
) -> None:
    fake_provider.script(FakeResponse(status=401))
    response = httpx.post(url(chat_server), json=chat_server.request(), timeout=TIMEOUT)
    assert response.status_code >= 400
    assert response.json()["detail"]
    assert "sk-fake-test-key" not in response.text


def test_provider_error_mid_stream_is_appended_to_the_text(
    chat_server: ChatServer, fake_provider: FakeProvider
) -> None:
    fake_provider.script(FakeResponse(text="alpha beta gamma delta", fail_after=2))
    response = httpx.post(url(chat_server), json=chat_server.request(), timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.text.startswith("alpha beta \nError: ")


@pytest.mark.parametrize("protocol", ["events", None])
def test_client_disconnect_closes_the_provider_stream(
    chat_server: ChatServer,
    fake_provider: FakeProvider,
    protocol: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_provider.script(FakeResponse(text="word " * 200, delay=0.05))
    body = chat_server.request(**({"protocol": protocol} if protocol else {}))
    with httpx.stream("POST", url(chat_server), json=body, timeout=TIMEOUT) as response:
        for chunk in response.iter_text():
            if "word" in chunk:
                break
    assert fake_provider.wait_for_disconnect(timeout=5)
    assert fake_provider.completed == 0
    assert server_errors(caplog) == []


@pytest.mark.slow
def test_repolens_serve_uses_port_from_the_environment(tmp_path: Path) -> None:
    env = {**os.environ, "REPOLENS_HOME": str(tmp_path / "home")}
    port, server = serve_on_a_free_port(
        lambda port: subprocess.Popen(
            [str(Path(sys.executable).parent / "repolens"), "serve", "--log-level", "warning"],
            env={**env, "PORT": str(port)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    )
    try:
        deadline = time.monotonic() + 90  # a cold start under a loaded CI machine's full suite
        health = None
        while health is None and time.monotonic() < deadline and server.poll() is None:
            with contextlib.suppress(httpx.TransportError):
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            time.sleep(0.1)
        if health is None and server.poll() is not None:
            output, _ = server.communicate()
            pytest.fail(f"repolens serve exited: {output.decode(errors='replace')}")
        assert health is not None and health.status_code == 200, "repolens serve did not answer /health"
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert page.status_code == 200 and "RepoLens" in page.text
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=15)
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status reports it.
    assert server.returncode == -signal.SIGTERM
    assert b"Traceback" not in output, output.decode(errors="replace")


def test_live_server_restarts_on_the_same_port(live_server: LiveServer) -> None:
    """The shared fixture's restart (used by reconnect tests) serves a fresh app on the same port."""
    port, first_app = live_server.port, live_server.app
    assert httpx.get(f"{live_server.base_url}/health", timeout=5).status_code == 200
    live_server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{live_server.base_url}/health", timeout=5)
    live_server.start()
    assert live_server.port == port and live_server.app is not first_app
    assert httpx.get(f"{live_server.base_url}/health", timeout=5).status_code == 200


def test_pages_of_other_sites_cannot_post_chat_requests(chat_server: ChatServer) -> None:
    refused = httpx.post(
        url(chat_server),
        json=chat_server.request(),
        headers={"Origin": "https://evil.example"},
        timeout=TIMEOUT,
    )
    assert refused.status_code == 403
    assert "REPOLENS_ALLOWED_ORIGINS" in refused.json()["detail"]
    settings = settings_for(
        chat_server.home, REPOLENS_ALLOWED_ORIGINS="https://wiki.example.com, https://b.example"
    )
    assert origin_allowed("https://wiki.example.com", "127.0.0.1:8000", settings)
    assert not origin_allowed("https://evil.example", "127.0.0.1:8000", settings)
    assert origin_allowed("http://127.0.0.1:8000", "127.0.0.1:8000", settings_for(chat_server.home))
    assert origin_allowed(None, "127.0.0.1:8000", settings_for(chat_server.home))


def test_live_server_starts_on_another_port_when_its_port_was_taken(
    live_server_factory: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pick-then-bind race: another process takes the picked port before uvicorn binds it. The
    fixture picks another port instead of failing the test ("failed to start")."""
    import tests.support.live_server as live_server_module

    with socket.socket() as other_server:
        other_server.bind(("127.0.0.1", 0))
        other_server.listen()
        picks = iter([other_server.getsockname()[1]])
        monkeypatch.setattr(live_server_module, "free_port", lambda: next(picks, free_port()))
        server = live_server_factory()
        assert server.port != other_server.getsockname()[1]
        assert httpx.get(f"{server.base_url}/health", timeout=5).status_code == 200
