"""App-wide guards (api/middleware.py, api/hosts.py): Host, Origin, API key, rate limits, sizes.

Before (issue 9): `Host: evil.example:8000` + `Origin: http://evil.example:8000` (DNS rebinding)
got the WebSocket (101) and the HTTP chat (200); a 50 MB body never returned and `/search`
echoed it in its 422; JSON nested 100k deep or a 5,000-digit number killed the WebSocket
without a close frame and was a 500 on `/chat/completions/stream`.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from websockets.sync.client import connect

import rag.redact
from api.cli.serve_cmd import is_loopback
from rag.errors import ERROR_TABLE, ErrorCode
from rag.redact import redact
from tests.support.chat import settings_for
from tests.support.live_server import LiveServer
from tests.support.redis_server import RedisServer

API_KEY = "rl-test-api-key-0123456789"
CHAT = {"repo_url": "/nonexistent/never", "type": "local", "messages": [{"role": "user", "content": "hi"}]}


def _upgrade_status(server: LiveServer, host: str, origin: str | None = None, query: str = "") -> int:
    """The HTTP status of a raw WebSocket handshake with exactly these headers."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET /ws/chat{query} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if origin:
        lines.append(f"Origin: {origin}")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status_line = connection.recv(4096).split(b"\r\n", 1)[0].decode()
    return int(status_line.split()[1])


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server with an API key and tight rate limits, like a team deployment."""
    from api.app import create_app

    home = tmp_path_factory.mktemp("guarded") / "home"
    settings = settings_for(
        home,
        REPOLENS_API_KEY=API_KEY,
        REPOLENS_RATE_LIMIT_CHAT="3/minute",
        REPOLENS_RATE_LIMIT_INGEST="2/minute",
        REPOLENS_ALLOWED_HOSTS="repolens.internal,*.corp.example",
    )
    server = LiveServer(lambda: create_app(settings)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    from api.app import create_app

    settings = settings_for(tmp_path_factory.mktemp("open") / "home")
    server = LiveServer(lambda: create_app(settings)).start()
    yield server
    server.stop()


def test_dns_rebinding_fails_on_http_and_websocket(open_server: LiveServer) -> None:
    evil = {"Host": f"evil.example:{open_server.port}", "Origin": f"http://evil.example:{open_server.port}"}
    refused = httpx.get(f"{open_server.base_url}/health", headers=evil)
    assert refused.status_code == 400 and refused.json()["code"] == "untrusted_host"
    chat = httpx.post(f"{open_server.base_url}/chat/completions/stream", json=CHAT, headers=evil)
    assert chat.status_code == 400
    assert _upgrade_status(open_server, evil["Host"], evil["Origin"]) != 101
    # the page's own origin, and other loopback pages, still work
    own = f"127.0.0.1:{open_server.port}"
    assert _upgrade_status(open_server, own, f"http://{own}") == 101
    assert _upgrade_status(open_server, f"localhost:{open_server.port}", "http://localhost:3000") == 101


def test_allowed_hosts_extend_the_loopback_names(guarded: LiveServer) -> None:
    key = {"X-API-Key": API_KEY}
    for host in ("repolens.internal", "team.corp.example:8443", "localhost", "[::1]:80"):
        response = httpx.get(f"{guarded.base_url}/api/repos", headers={"Host": host, **key})
        assert response.status_code == 200, host
    assert (
        httpx.get(f"{guarded.base_url}/api/repos", headers={"Host": "corp.example.evil", **key}).status_code
        == 400
    )


def test_origin_equal_to_a_non_allowed_host_is_refused(open_server: LiveServer) -> None:
    """Even past the Host check (an allowed Host), an Origin must name an allowed host."""
    own = f"127.0.0.1:{open_server.port}"
    assert _upgrade_status(open_server, own, "http://evil.example") != 101
    response = httpx.post(
        f"{open_server.base_url}/chat/completions/stream",
        json=CHAT,
        headers={"Origin": "http://evil.example"},
    )
    assert response.status_code == 403 and response.json()["code"] == "forbidden_origin"


def test_the_api_key_guards_every_route_but_health_and_the_page_shell(guarded: LiveServer) -> None:
    base = guarded.base_url
    assert httpx.get(f"{base}/health").status_code == 200
    assert httpx.get(f"{base}/").status_code == 200
    for method, path in [
        ("GET", "/api/repos"),
        ("GET", "/api/models"),
        ("DELETE", "/api/repos/github.com/a/b"),
        ("POST", "/api/repos"),
        ("POST", "/chat/completions/stream"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/v1/models"),  # routes added later are covered too
        ("POST", "/mcp"),
    ]:
        response = httpx.request(method, f"{base}{path}", json={})
        assert response.status_code == 401, (method, path)
        assert response.json()["code"] == "unauthorized"
        assert API_KEY not in response.text
    assert httpx.get(f"{base}/api/repos", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
    assert httpx.get(f"{base}/api/repos", headers={"X-API-Key": API_KEY}).status_code == 200
    assert httpx.get(f"{base}/api/repos", headers={"X-API-Key": API_KEY + "x"}).status_code == 401
    assert httpx.get(f"{base}/api/repos?api_key={API_KEY}").status_code == 401  # HTTP: headers only


def test_the_websocket_needs_the_key_as_a_query_parameter(guarded: LiveServer) -> None:
    own = f"127.0.0.1:{guarded.port}"
    assert _upgrade_status(guarded, own) != 101
    assert _upgrade_status(guarded, own, query="?api_key=wrong") != 101
    assert _upgrade_status(guarded, own, query=f"?api_key={API_KEY}") == 101


def test_chat_and_ingest_are_rate_limited_per_client(tmp_path: Path, live_server_factory: Any) -> None:
    settings = settings_for(
        tmp_path / "home", REPOLENS_RATE_LIMIT_CHAT="2/minute", REPOLENS_RATE_LIMIT_INGEST="1/minute"
    )
    server = live_server_factory(settings)
    base = server.base_url
    statuses = [httpx.post(f"{base}/chat/completions/stream", json=CHAT).status_code for _ in range(3)]
    assert statuses[:2] != [429, 429] and statuses[2] == 429
    limited = httpx.post(f"{base}/chat/completions/stream", json=CHAT)
    assert limited.json()["code"] == "rate_limited"
    ingest = [httpx.post(f"{base}/api/repos", json={"repo_url": "/nope/x"}).status_code for _ in range(2)]
    assert ingest[0] != 429 and ingest[1] == 429
    assert httpx.get(f"{base}/health").status_code == 200  # other routes are not counted
    with connect(f"{server.ws_url}/ws/chat?protocol=events", open_timeout=10) as ws:
        ws.send(json.dumps({**CHAT, "protocol": "events"}))
        frames = [json.loads(ws.recv(timeout=10))]
        assert frames[-1] == {"type": "error", "code": "rate_limited", "message": frames[-1]["message"]}
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "pong"  # the socket stays usable


def test_servers_on_one_data_dir_share_one_rate_limit_budget_without_redis(
    tmp_path: Path, live_server_factory: Any
) -> None:
    """Without Redis the budgets live in the data dir (`api.rate_limit_store`): two servers on one
    REPOLENS_HOME (each its own app, limiter and database connection, as each `--workers` process
    has) draw on one budget per client, HTTP and WebSocket alike; a server on another data dir has
    its own. (The real multi-process server: tests/test_rate_limit_store.py.)"""
    env = {"REPOLENS_RATE_LIMIT_INGEST": "2/minute", "REPOLENS_RATE_LIMIT_CHAT": "2/minute"}
    a = live_server_factory(settings_for(tmp_path / "home", **env))
    b = live_server_factory(settings_for(tmp_path / "home", **env))
    elsewhere = live_server_factory(settings_for(tmp_path / "other", **env))
    assert not a.app.state.rate_limits.shared and a.app.state.rate_limits.store == "data dir"
    refused = {"repo_url": "/nope/x", "type": "local"}  # refused at once (a missing folder): counted, cheap
    ingest = [httpx.post(f"{server.base_url}/api/repos", json=refused).status_code for server in (a, b, a)]
    assert 429 not in ingest[:2] and 500 not in ingest[:2] and ingest[2] == 429, ingest
    limited = httpx.post(f"{b.base_url}/api/repos", json=refused)
    assert limited.status_code == 429 and limited.json()["code"] == "rate_limited", limited.text
    assert httpx.post(f"{elsewhere.base_url}/api/repos", json=refused).status_code != 429
    assert httpx.post(f"{a.base_url}/chat/completions/stream", json=CHAT).status_code != 429
    with connect(f"{b.ws_url}/ws/chat?protocol=events", open_timeout=10) as ws:
        ws.send(json.dumps({**CHAT, "protocol": "events"}))
        first = json.loads(ws.recv(timeout=10))
        assert first.get("code") != "rate_limited", first
        frame = first
        while frame["type"] != "done":  # an error frame is followed by `done`
            frame = json.loads(ws.recv(timeout=30))
        ws.send(json.dumps({**CHAT, "protocol": "events"}))  # the third chat request of this client
        third = json.loads(ws.recv(timeout=10))
        assert third.get("code") == "rate_limited", (first, third)
    assert (tmp_path / "home" / "limits" / "rate_limits.sqlite3").is_file()


def test_rate_limits_fall_back_to_the_process_when_the_data_dir_store_fails(
    tmp_path: Path, live_server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A data dir whose rate-limit database cannot be made (here `limits` is a file) is not a 500
    (nor an unlimited API): the process counts its own budget and says so in the log, once."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "limits").write_text("not a folder")
    server = live_server_factory(settings_for(home, REPOLENS_RATE_LIMIT_INGEST="1/minute"))
    refused = {"repo_url": "/nope/x", "type": "local"}
    statuses = [httpx.post(f"{server.base_url}/api/repos", json=refused).status_code for _ in range(3)]
    assert statuses[0] not in (429, 500) and statuses[1:] == [429, 429], statuses
    warnings = [
        record for record in caplog.records if "rate limits are counted per process" in record.message
    ]
    assert len(warnings) == 1 and "data dir" in warnings[0].message, warnings


def test_replicas_with_a_redis_url_share_one_rate_limit_budget(
    tmp_path: Path, live_server_factory: Any, redis_server: RedisServer
) -> None:
    """With REPOLENS_REDIS_URL (the queue's Redis) the budgets live in Redis: two replicas (each
    its own app and limiter) draw on one budget per client, HTTP and WebSocket alike."""
    redis_url = f"{redis_server.url.rsplit('/', 1)[0]}/7"  # a database of this test's own
    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()
    env = {"REPOLENS_REDIS_URL": redis_url, "REPOLENS_RATE_LIMIT_INGEST": "2/minute"}
    a = live_server_factory(settings_for(tmp_path / "a", **env, REPOLENS_RATE_LIMIT_CHAT="2/minute"))
    b = live_server_factory(settings_for(tmp_path / "b", **env, REPOLENS_RATE_LIMIT_CHAT="2/minute"))
    assert a.app.state.rate_limits.shared and b.app.state.rate_limits.shared
    refused = {"repo_url": "/nope/x", "type": "local"}  # refused at once (a missing folder): counted, cheap
    ingest = [httpx.post(f"{server.base_url}/api/repos", json=refused).status_code for server in (a, b, a)]
    assert 429 not in ingest[:2] and 500 not in ingest[:2] and ingest[2] == 429, ingest
    assert httpx.post(f"{b.base_url}/api/repos", json=refused).json()["code"] == "rate_limited"
    assert httpx.post(f"{a.base_url}/chat/completions/stream", json=CHAT).status_code != 429
    with connect(f"{b.ws_url}/ws/chat?protocol=events", open_timeout=10) as ws:
        ws.send(json.dumps({**CHAT, "protocol": "events"}))
        first = json.loads(ws.recv(timeout=10))
        assert first.get("code") != "rate_limited", first
        frame = first
        while frame["type"] != "done":  # an error frame is followed by `done`
            frame = json.loads(ws.recv(timeout=30))
        ws.send(json.dumps({**CHAT, "protocol": "events"}))  # the third chat request of this client
        third = json.loads(ws.recv(timeout=10))
        assert third.get("code") == "rate_limited", (first, third)
    with redis.Redis.from_url(redis_url) as client:
        keys = client.keys("repolens:rate-limit*")
    assert keys and not any(b"127.0.0.1" not in key for key in keys), keys


def test_rate_limits_fall_back_to_the_process_when_redis_is_down(
    tmp_path: Path, live_server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis that does not answer is not a 500 (nor an unlimited API): each process counts its own
    budget, as without Redis, and says so in the log (once a minute)."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        down = f"redis://127.0.0.1:{probe.getsockname()[1]}/0"
    server = live_server_factory(
        settings_for(tmp_path / "home", REPOLENS_REDIS_URL=down, REPOLENS_RATE_LIMIT_INGEST="1/minute")
    )
    refused = {"repo_url": "/nope/x", "type": "local"}
    statuses = [httpx.post(f"{server.base_url}/api/repos", json=refused).status_code for _ in range(3)]
    assert statuses[0] not in (429, 500) and statuses[1:] == [429, 429], statuses
    warnings = [
        record for record in caplog.records if "rate limits are counted per process" in record.message
    ]
    assert len(warnings) == 1, warnings


def test_bodies_are_capped_before_parsing(open_server: LiveServer) -> None:
    base = open_server.base_url
    big = b'{"query": "' + b"a" * 9_000_000 + b'"}'
    response = httpx.post(f"{base}/api/repos/github.com/a/b/search", content=big)
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it arrives
        for _ in range(10):
            yield b"a" * 1_000_000

    chunked = httpx.post(f"{base}/chat/completions/stream", content=chunks())
    assert chunked.status_code == 413
    assert httpx.get(f"{base}/health").status_code == 200


def test_validation_errors_never_echo_the_input(open_server: LiveServer) -> None:
    secretish = "x" * 20_000 + "tok-secret-value"
    response = httpx.post(
        f"{open_server.base_url}/api/repos/github.com/a/b/search", json={"query": secretish, "k": 1}
    )
    assert response.status_code == 422
    assert len(response.content) < 2_000 and "tok-secret-value" not in response.text


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000 + b"]" * 100_000, b'{"repo_url": ' + b"9" * 5_000 + b"}", b'{"a": NaN}', b'{"a": [' * 70],
)
def test_hostile_json_is_a_400_on_every_http_entry_point(open_server: LiveServer, body: bytes) -> None:
    headers = {"Content-Type": "application/json"}
    for path in (
        "/chat/completions/stream",
        "/api/repos",
        "/api/repos/github.com/a/b/search",
        "/api/chat/stream",
    ):
        response = httpx.post(f"{open_server.base_url}{path}", content=body, headers=headers)
        assert response.status_code == 400, (path, response.status_code)
        assert response.json()["code"] == "bad_request"


def test_hostile_json_frames_get_an_error_frame_and_the_socket_stays_usable(open_server: LiveServer) -> None:
    with connect(f"{open_server.ws_url}/ws/chat?protocol=events", open_timeout=10, max_size=None) as ws:
        for frame in ("[" * 100_000 + "]" * 100_000, '{"k": ' + "9" * 5_000 + "}", '{"a": [' * 70):
            ws.send(frame)
            error = json.loads(ws.recv(timeout=10))
            assert error["type"] == "error" and error["code"] == "bad_request"
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.recv(timeout=10)) == {"type": "pong"}
    with connect(f"{open_server.ws_url}/ws/chat", open_timeout=10) as ws:  # deepwiki's compatible mode
        ws.send("[" * 100_000 + "]" * 100_000)
        assert ws.recv(timeout=10).startswith("Error: ")


def test_urls_are_capped(open_server: LiveServer) -> None:
    response = httpx.get(f"{open_server.base_url}/api/repos/github.com/a/b/file?path=" + "a" * 10_000)
    assert response.status_code == 414 and response.json()["code"] == "url_too_long"


def test_serving_beyond_loopback_without_a_key_warns_loudly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from api.cli import serve_cmd

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")
    monkeypatch.setattr("api.server.serve", lambda *args, **kwargs: None)
    monkeypatch.delenv("REPOLENS_API_KEY", raising=False)
    serve_cmd.serve(host="0.0.0.0", port=8123, log_level="warning", workers=1)
    assert "WARNING: serving on 0.0.0.0 without REPOLENS_API_KEY" in capsys.readouterr().err.replace(
        "\n", " "
    )
    monkeypatch.setenv("REPOLENS_API_KEY", API_KEY)
    serve_cmd.serve(host="0.0.0.0", port=8123, log_level="warning", workers=1)
    assert "WARNING" not in capsys.readouterr().err


def _assert_error_body(response: httpx.Response, code: str, status: int | None = None) -> None:
    """The app's one error body: `{"detail", "code"}`, the code's status from ERROR_TABLE."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"detail", "code"} and body["detail"], body
    assert body["code"] == code, body
    assert response.status_code == (status or ERROR_TABLE[ErrorCode(code)].http_status), body


def test_every_refusal_has_the_one_error_body(open_server: LiveServer, guarded: LiveServer) -> None:
    """Before: a bad Host was Starlette's plain-text 400, route refusals (403 forbidden_source, 404
    unknown job, 400 bad id or language) and Starlette's 404/405 carried `detail` but no `code`."""
    base, port = open_server.base_url, open_server.port
    key = {"X-API-Key": API_KEY}
    cases: list[tuple[httpx.Response, str, int | None]] = [
        (httpx.get(f"{base}/health", headers={"Host": "evil.example"}), "untrusted_host", None),
        (httpx.get(f"{base}/health", headers={"Host": "a/b@evil"}), "untrusted_host", None),
        (
            httpx.post(
                f"{base}/chat/completions/stream", json=CHAT, headers={"Origin": "http://evil.example"}
            ),
            "forbidden_origin",
            None,
        ),
        (httpx.get(f"{guarded.base_url}/api/repos"), "unauthorized", None),
        (httpx.get(f"{base}/api/repos/github.com/a/b/file?path=" + "a" * 9_000), "url_too_long", None),
        (httpx.post(f"{base}/api/repos", content=b"x" * 9_000_000), "payload_too_large", None),
        (
            httpx.post(f"{base}/api/repos", content=b"[" * 100, headers={"Content-Type": "application/json"}),
            "bad_request",
            None,
        ),
        (httpx.post(f"{base}/api/repos/github.com/a/b/search", json={"k": "x"}), "bad_request", 422),
        (httpx.get(f"{base}/api/repos/github.com//b"), "bad_request", None),
        (httpx.get(f"{base}/api/repos/github.com/never/indexed"), "not_found", None),
        (httpx.get(f"{base}/api/jobs/0123456789abcdef"), "not_found", None),
        (httpx.post(f"{base}/api/jobs/0123456789abcdef/cancel"), "not_found", None),
        (httpx.get(f"{base}/api/no-such-route"), "not_found", None),
        (httpx.put(f"{base}/api/repos", json={}), "method_not_allowed", None),
        (httpx.get(f"{base}/api/repos/github.com/a/b/wiki?language=xx"), "not_found", None),
    ]
    for response, code, status in cases:
        _assert_error_body(response, code, status)
    for _ in range(3):
        limited = httpx.get(f"{guarded.base_url}/health")  # not limited: health is never counted
    assert limited.status_code == 200
    statuses = []
    for _ in range(4):
        response = httpx.post(f"{guarded.base_url}/api/repos", json={"repo_url": "/nope/x"}, headers=key)
        statuses.append(response.status_code)
    _assert_error_body(response, "rate_limited")
    assert f"127.0.0.1:{port}" not in response.text


def test_request_tokens_are_forgotten_when_the_request_ends(open_server: LiveServer) -> None:
    """Before: a token a client sent (in a URL, `X-Repo-Token`, a job's options) was registered for
    the life of the process: the registry grew with every request and each entry costs one scan
    of every redacted string. Now each request (and the job it starts) has its own scope."""
    before = dict(rag.redact._unscoped), set(rag.redact._configured)
    tokens = [f"rq{number:04d}abcdefghijklmnop" for number in range(6)]
    for token in tokens:
        url = f"https://{token}@127.0.0.1:9/acme/app.git"  # refused connection: the job fails fast
        with httpx.stream(  # the first job starts the ingest worker process: a generous timeout
            "POST", f"{open_server.base_url}/api/repos", json={"repo_url": url, "type": "git"}, timeout=120
        ) as r:
            text = "".join(r.iter_text())
        assert token not in text and '"error"' in text
        response = httpx.get(
            f"{open_server.base_url}/api/repos/github.com/a/b/file?path=x",
            headers={"X-Repo-Token": token},
            timeout=30,
        )
        assert response.status_code == 404
    assert (dict(rag.redact._unscoped), set(rag.redact._configured)) == before
    assert all(redact(token) == token for token in tokens)
