"""Shared pieces of the chat API tests: an indexed fixture repo and a server for a whole module.

Indexing the fixture repository and loading the embedder take seconds, so the chat tests
share one data dir and one real uvicorn server per test session (`chat_server`), pointed at the
session's fake provider. Tests that need a fresh, unindexed data dir (indexing on first
request) start their own server with `live_server_factory`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rag.settings import Settings
from tests.support.fake_provider import FAKE_API_KEY, _server
from tests.support.live_server import LiveServer

PROVIDER = {"provider": "openai", "model": "gpt-4o-mini"}


@dataclass
class ChatServer:
    server: LiveServer
    repo: Path
    home: Path
    repo_id: str  # the fixture repository's id; other tests add repositories to this server's store

    def request(
        self, question: str = "How does the CLI reach the HTTP client?", **fields: Any
    ) -> dict[str, Any]:
        """A deepwiki-shaped chat request about the indexed fixture repo."""
        body: dict[str, Any] = {
            "repo_url": str(self.repo),
            "type": "local",
            "messages": [{"role": "user", "content": question}],
            **PROVIDER,
        }
        body.update(fields)
        return body


# The test configuration's opt-in to the fixtures' sources (set by tests/conftest.py per test).
TEST_POLICY_VARIABLES = (
    "REPOLENS_LOCAL_ROOTS",
    "REPOLENS_ALLOW_PRIVATE_HOSTS",
    "REPOLENS_RATE_LIMIT_CHAT",
    "REPOLENS_RATE_LIMIT_INGEST",
)


def settings_for(home: Path, **env: str) -> Settings:
    """Settings from an explicit environment only (no developer keys, no `.env`), plus the test
    configuration's source opt-in; pass `REPOLENS_LOCAL_ROOTS=""` etc. to test the defaults."""
    opt_in = {name: os.environ[name] for name in TEST_POLICY_VARIABLES if name in os.environ}
    return Settings.from_env(environ={"REPOLENS_HOME": str(home), **opt_in, **env}, dotenv=home / "no.env")


def provider_env() -> dict[str, str]:
    """OpenAI, Anthropic and Bedrock, all pointed at the session's fake provider."""
    fake = _server()
    return {
        "OPENAI_API_KEY": FAKE_API_KEY,
        "OPENAI_BASE_URL": fake.base_url,
        **fake.anthropic_env(),
        **fake.bedrock_env(),
    }


@pytest.fixture(scope="session")
def chat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatServer]:
    """A real server over a data dir where the fixture repo is already indexed. Tests in other modules
    add repositories (private ones too) to the same store: name the fixture repo by `repo_id`."""
    from api.app import create_app
    from ingest import ingest
    from tests.support.repos import make_fixture_repo

    root = tmp_path_factory.mktemp("chat")
    home = root / "home"
    settings = settings_for(home, **provider_env())
    app = create_app(settings)
    services = app.state.services
    repo = make_fixture_repo(root / "weatherline")
    report = ingest(str(repo), store=services.store, embedder=services.embedder)
    server = LiveServer(lambda: app).start()
    yield ChatServer(server=server, repo=repo, home=home, repo_id=report.repo_id)
    server.stop()


def server_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Error log lines the server wrote (a clean cancel or disconnect writes none)."""
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


def sse_events(text: str) -> list[dict[str, Any]]:
    """Parse an SSE body, checking each frame's `event:` matches its data's `type`."""
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        event = json.loads(lines["data"])
        assert lines["event"] == event["type"]
        events.append(event)
    return events
