"""Fuzzing: schemathesis against the app's own OpenAPI document, hypothesis against `/ws/chat`.

Bounded and deterministic (`derandomize=True`, fixed example counts) so `make test` stays fast
and CI sees the same cases every run. Every case must end without a 500 (HTTP) and without a
dead socket (WebSocket: after each hostile frame a `ping` still gets its `pong`). The sources
the app could be asked to fetch resolve to a TEST-NET address the server policy refuses, so no
case reaches the network or the disk of the machine.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from ingest.policy import SourcePolicy
from tests.support.chat import settings_for
from tests.support.live_server import LiveServer

_TEST_NET = "192.0.2.1"  # documentation-only address: not global, refused before any connection


def _fuzz_app(home: Path) -> Any:
    from api.app import create_app

    app = create_app(
        settings_for(
            home,
            REPOLENS_ALLOWED_HOSTS="testserver",
            REPOLENS_LOCAL_ROOTS="",
            REPOLENS_ALLOW_PRIVATE_HOSTS="",
        )
    )
    services = app.state.services
    services.source_policy = SourcePolicy(home=home, resolver=lambda host, port: [_TEST_NET])
    return app


schema = schemathesis.openapi.from_asgi(
    "/openapi.json", _fuzz_app(Path(tempfile.mkdtemp(prefix="repolens-fuzz-")))
)


@schema.parametrize()
@settings(
    max_examples=4,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_http_input_is_a_server_error(case: Any) -> None:
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])


CHAT_FIELDS = {
    "repo_url": st.one_of(st.text(max_size=40), st.just("https://example.com/a/b"), st.just("/etc")),
    "messages": st.one_of(
        st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.sampled_from(["user", "assistant", "system", "x"]),
                    "content": st.text(max_size=30),
                }
            ),
            max_size=3,
        ),
        st.text(max_size=5),
        st.integers(),
    ),
    "type": st.one_of(st.sampled_from(["github", "git", "local", "bogus"]), st.integers()),
    "protocol": st.sampled_from(["events", "other"]),
    "k": st.one_of(st.integers(-10, 100), st.text(max_size=3)),
    "deep_research": st.one_of(st.booleans(), st.text(max_size=3)),
    "max_iterations": st.integers(-5, 50),
    "filePath": st.text(max_size=20),
    "token": st.text(max_size=20),
}
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
FRAMES = st.one_of(
    st.fixed_dictionaries({}, optional=CHAT_FIELDS).map(json.dumps),
    st.fixed_dictionaries({"type": st.sampled_from(["ping", "cancel", "bogus", ""])}).map(json.dumps),
    _json_values.map(json.dumps),
    st.text(max_size=200),
    st.binary(max_size=200),
    st.integers(1, 3000).map(lambda depth: "[" * depth + "]" * depth),
    st.integers(1, 3000).map(lambda digits: '{"k": ' + "7" * digits + "}"),
)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("fuzz") / "home"
    server = LiveServer(lambda: _fuzz_app(home)).start()
    yield server
    server.stop()


def _until_pong(socket_: ClientConnection) -> None:
    socket_.send(json.dumps({"type": "ping"}))
    while True:
        frame = json.loads(socket_.recv(timeout=20))
        assert isinstance(frame, dict) and "type" in frame
        if frame["type"] == "pong":
            return


@settings(
    max_examples=60, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
@given(frames=st.lists(FRAMES, min_size=1, max_size=4))
def test_no_websocket_frame_breaks_the_socket(fuzz_server: LiveServer, frames: list[str | bytes]) -> None:
    with connect(f"{fuzz_server.ws_url}/ws/chat?protocol=events", open_timeout=10, max_size=None) as socket_:
        for frame in frames:
            socket_.send(frame)
            _until_pong(socket_)
