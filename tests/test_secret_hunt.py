"""End-to-end secret hunt: a private repository through the token-guarded git server, chat through
the fake provider on a server with an API key; then every file under the data dir, every log
line and every frame is searched for the git token, the API key and the provider key.
"""

from __future__ import annotations

import base64
import json
import logging
import traceback
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.support.chat import PROVIDER, provider_env, settings_for, sse_events
from tests.support.fake_provider import FAKE_API_KEY, FakeProvider, FakeResponse
from tests.support.git_http_server import GitHttpServer
from tests.support.live_server import LiveServer
from tests.support.stored import stored_files

API_KEY = "rl-hunt-api-key-0123456789abcdef"


def _spellings(secret: str) -> list[str]:
    """The secret and the forms it could leak in: URL-encoded, and inside Basic auth."""
    from urllib.parse import quote

    basic = base64.b64encode(f"x-access-token:{secret}".encode()).decode()
    return [secret, quote(secret, safe=""), basic]


def test_no_token_or_key_reaches_disk_logs_or_frames(
    git_http_server: GitHttpServer,
    fake_provider: FakeProvider,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from api.app import create_app

    caplog.set_level(logging.DEBUG)
    git_http_server.add_repo("acme/vault", {"vault/lock.py": "def open_vault(code):\n    return code * 2\n"})
    home = tmp_path / "home"
    settings = settings_for(home, REPOLENS_API_KEY=API_KEY, **provider_env())
    server = LiveServer(lambda: create_app(settings)).start()
    frames: list[str] = []
    try:
        auth = {"Authorization": f"Bearer {API_KEY}"}
        url = git_http_server.url_for("acme/vault")
        body = {"repo_url": url, "type": "git", "token": git_http_server.token}
        ingested = httpx.post(f"{server.base_url}/api/repos", json=body, headers=auth, timeout=120)
        frames.append(ingested.text)
        assert sse_events(ingested.text)[-1]["type"] == "done", ingested.text
        # a wrong token, so error paths are searched too
        refused = httpx.post(
            f"{server.base_url}/api/repos", json={**body, "token": "wrong-token-123456"}, headers=auth
        )
        frames.append(refused.text)

        fake_provider.script(FakeResponse(text="It doubles the code (vault/lock.py:1-2)."))
        chat = {
            "repo_url": url,
            "type": "git",
            "token": git_http_server.token,
            "messages": [{"role": "user", "content": "What does open_vault do?"}],
            "protocol": "events",
            **PROVIDER,
        }
        with connect(f"{server.ws_url}/ws/chat?api_key={API_KEY}", open_timeout=10) as socket_:
            socket_.send(json.dumps(chat))
            while True:
                frame = socket_.recv(timeout=60)
                frames.append(str(frame))
                if json.loads(frame)["type"] == "done":
                    break
            socket_.send(json.dumps({**chat, "token": "not-the-token-000"}))  # refused: an error frame
            while True:
                frame = socket_.recv(timeout=60)
                frames.append(str(frame))
                if json.loads(frame)["type"] == "done":
                    break
        fake_provider.script(FakeResponse(text="It doubles it."))
        http_chat = httpx.post(
            f"{server.base_url}/chat/completions/stream", json=chat, headers=auth, timeout=60
        )
        frames.append(http_chat.text)
        frames.append(httpx.get(f"{server.base_url}/api/repos", headers=auth).text)
        frames.append(httpx.get(f"{server.base_url}/api/repos").text)  # the 401
    finally:
        server.stop()

    assert any("doubles" in frame for frame in frames), "the chat did not answer"
    secrets = [*_spellings(git_http_server.token), *_spellings(API_KEY), FAKE_API_KEY]
    lines = [record.getMessage() for record in caplog.records]
    lines += [
        "".join(traceback.format_exception(*record.exc_info)) for record in caplog.records if record.exc_info
    ]
    files = list(stored_files(home))
    assert files, "nothing was written to the data dir"
    for secret in secrets:
        for path, data in files:
            assert secret.encode() not in data, f"a secret is in {path.relative_to(home)}"
        assert not [line for line in lines if secret in line], "a secret is in the log"
        assert not [frame for frame in frames if secret in frame], "a secret is in a frame"
