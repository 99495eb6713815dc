"""Private repositories: every request for their content must bring a token the host accepts.

Over a real smart-HTTP git server demanding a token, a real uvicorn server and the fake
provider: a repository ingested with a token through the API is private, and chat (WebSocket
and HTTP, deep research too), search and the file view refuse requests without the token or
with a wrong one, answer with the right one, and ask the host only once per token (cached).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from ingest.access import clear_cache, verify_access
from ingest.errors import AuthenticationError, HostUnreachableError, InvalidSourceError
from ingest.policy import ForbiddenHostError, SourcePolicy
from rag.types import RepoRecord
from tests.support.chat import (
    PROVIDER,
    TEST_POLICY_VARIABLES,
    ChatServer,
    provider_env,
    settings_for,
    sse_events,
)
from tests.support.fake_provider import FakeProvider, FakeResponse
from tests.support.live_server import LiveServer
from tests.support.stored import files_holding
from tests.test_source_policy import RecordingListener

if TYPE_CHECKING:
    from tests.support.git_http_server import GitHttpServer

TIMEOUT = 20.0
SOURCE = 'def open_vault(code):\n    """Open the vault with a code."""\n    return code * 2\n'


@dataclass
class PrivateRepo:
    git: GitHttpServer
    server: LiveServer
    home: Path
    record: dict[str, Any]

    @property
    def token(self) -> str:
        return self.git.token

    def api(self, suffix: str) -> str:
        return f"{self.server.base_url}/api/repos/{self.record['id']}{suffix}"

    def chat(self, **fields: Any) -> dict[str, Any]:
        return {
            "repo_url": self.record["url"],
            "type": "git",
            "messages": [{"role": "user", "content": "What does open_vault return?"}],
            "protocol": "events",
            **PROVIDER,
            **fields,
        }

    def ls_remotes(self) -> int:
        """Requests that reached the git host (a check is one `info/refs` advertisement)."""
        return sum(1 for request in self.git.requests if "info/refs" in request.path)


@pytest.fixture(scope="module")
def private_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRepo]:
    from tests.support.git_http_server import GitHttpServer

    root = tmp_path_factory.mktemp("access")
    git = GitHttpServer(root / "git")
    git.add_repo("acme/vault", {"vault/lock.py": SOURCE})
    home = root / "home"
    server = LiveServer(lambda: _app(home)).start()
    try:
        body = {"repo_url": git.url_for("acme/vault"), "type": "git", "token": git.token}
        response = httpx.post(f"{server.base_url}/api/repos", json=body, timeout=60)
        done = sse_events(response.text)[-1]
        assert done["type"] == "done", done
        yield PrivateRepo(git=git, server=server, home=home, record=done["repo"])
    finally:
        server.stop()
        git.close()


def _app(home: Path) -> Any:
    from api.app import create_app

    return create_app(settings_for(home, **provider_env()))


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    clear_cache()
    yield
    clear_cache()


async def chat_frames(repo: PrivateRepo, request: dict[str, Any]) -> list[dict[str, Any]]:
    async with connect(f"{repo.server.ws_url}/ws/chat") as ws:
        await ws.send(json.dumps(request))
        return await until_done(ws)


async def until_done(ws: ClientConnection) -> list[dict[str, Any]]:
    frames = [json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))]
    while frames[-1]["type"] != "done":
        frames.append(json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)))
    return frames


def error_of(frames: list[dict[str, Any]]) -> dict[str, Any]:
    return next(frame for frame in frames if frame["type"] == "error")


def test_a_repository_ingested_with_a_token_is_private(private_repo: PrivateRepo) -> None:
    assert private_repo.record["private"] is True
    shown = httpx.get(private_repo.api(""))
    assert shown.status_code == 200 and shown.json()["private"] is True


def test_records_written_before_access_control_load_as_public() -> None:
    old = {
        "id": "a",
        "url": "/a",
        "platform": "local",
        "ref": None,
        "commit": None,
        "embedder": "e",
        "dimension": 3,
    }
    assert RepoRecord.from_json(old).private is False
    private = RepoRecord.from_json({**old, "private": True})
    assert RepoRecord.from_json(private.to_json()).private is True


def test_search_needs_the_token(private_repo: PrivateRepo) -> None:
    url = private_repo.api("/search")
    missing = httpx.post(url, json={"query": "open vault"})
    assert missing.status_code == 401
    assert missing.json()["detail"] == (
        f"127.0.0.1:{private_repo.git.port}/acme/vault is private: send its access token "
        "(the `token` field, or the `X-Repo-Token` header)"
    )
    wrong = httpx.post(url, json={"query": "open vault"}, headers={"X-Repo-Token": "wrong-token-123456"})
    assert wrong.status_code == 401 and "did not accept the token" in wrong.json()["detail"]
    assert "wrong-token" not in wrong.text
    by_header = httpx.post(url, json={"query": "open vault"}, headers={"X-Repo-Token": private_repo.token})
    by_body = httpx.post(url, json={"query": "open vault", "token": private_repo.token})
    for answered in (by_header, by_body):
        assert answered.status_code == 200
        assert [hit["path"] for hit in answered.json()["results"]] == ["vault/lock.py"]


def test_file_view_needs_the_token(private_repo: PrivateRepo) -> None:
    url = private_repo.api("/file")
    params = {"path": "vault/lock.py"}
    assert httpx.get(url, params=params).status_code == 401
    assert httpx.get(url, params=params, headers={"X-Repo-Token": "nope-nope-nope"}).status_code == 401
    shown = httpx.get(url, params=params, headers={"X-Repo-Token": private_repo.token})
    assert shown.status_code == 200 and shown.json()["text"] == SOURCE.rstrip("\n")


async def test_chat_over_websocket_needs_the_token(
    private_repo: PrivateRepo, fake_provider: FakeProvider
) -> None:
    fake_provider.script(FakeResponse(text="It returns the code doubled."))
    missing = await chat_frames(private_repo, private_repo.chat())
    wrong = await chat_frames(private_repo, private_repo.chat(token="wrong-token-123456"))
    research = await chat_frames(private_repo, private_repo.chat(deep_research=True))
    for refused in (missing, wrong, research):
        assert error_of(refused)["code"] == "auth_failed"
        assert [frame["type"] for frame in refused] == ["error", "done"]
    assert "is private" in error_of(missing)["message"]
    assert fake_provider.requests == []
    answered = await chat_frames(private_repo, private_repo.chat(token=private_repo.token))
    assert (
        "".join(frame["text"] for frame in answered if frame["type"] == "token")
        == "It returns the code doubled."
    )
    sources = next(frame for frame in answered if frame["type"] == "sources")["sources"]
    assert [source["path"] for source in sources] == ["vault/lock.py"]


def test_chat_over_http_needs_the_token(private_repo: PrivateRepo, fake_provider: FakeProvider) -> None:
    url = f"{private_repo.server.base_url}/chat/completions/stream"
    body = {key: value for key, value in private_repo.chat().items() if key != "protocol"}
    refused = httpx.post(url, json=body, timeout=TIMEOUT)
    assert refused.status_code == 401 and refused.json()["code"] == "auth_failed"
    fake_provider.script(FakeResponse(text="Doubled."))
    answered = httpx.post(url, json={**body, "token": private_repo.token}, timeout=TIMEOUT)
    assert answered.status_code == 200 and answered.text == "Doubled."


def test_the_host_is_asked_once_per_token(private_repo: PrivateRepo) -> None:
    url = private_repo.api("/search")
    headers = {"X-Repo-Token": private_repo.token}
    before = private_repo.ls_remotes()
    assert httpx.post(url, json={"query": "vault"}, headers=headers).status_code == 200
    after_first = private_repo.ls_remotes()
    assert after_first == before + 1
    assert httpx.post(url, json={"query": "code"}, headers=headers).status_code == 200
    assert (
        httpx.get(private_repo.api("/file"), params={"path": "vault/lock.py"}, headers=headers).status_code
        == 200
    )
    assert private_repo.ls_remotes() == after_first
    httpx.post(url, json={"query": "vault"}, headers={"X-Repo-Token": "another-wrong-token"})
    httpx.post(url, json={"query": "vault"}, headers={"X-Repo-Token": "another-wrong-token"})
    assert private_repo.ls_remotes() == after_first + 2, "refusals are not cached"


async def test_the_token_reaches_no_file_and_no_log(
    private_repo: PrivateRepo, fake_provider: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake_provider.script(FakeResponse(text="Fine."))
    headers = {"X-Repo-Token": private_repo.token}
    assert (
        httpx.post(private_repo.api("/search"), json={"query": "vault"}, headers=headers).status_code == 200
    )
    frames = await chat_frames(private_repo, private_repo.chat(token=private_repo.token))
    assert frames[-1]["type"] == "done" and not [frame for frame in frames if frame["type"] == "error"]
    secret = private_repo.token
    assert secret not in caplog.text and secret not in json.dumps(frames)
    assert files_holding(private_repo.home, secret.encode()) == []


def test_a_public_local_repository_needs_no_token(chat_server: ChatServer) -> None:
    repos = httpx.get(f"{chat_server.server.base_url}/api/repos").json()["repos"]
    listed = {repo["id"]: repo for repo in repos}[chat_server.repo_id]
    assert listed["platform"] == "local" and not listed["private"]
    found = httpx.post(
        f"{chat_server.server.base_url}/api/repos/{chat_server.repo_id}/search", json={"query": "HttpClient"}
    )
    assert found.status_code == 200 and found.json()["results"]


def test_a_check_against_an_unreachable_host_says_so(private_repo: PrivateRepo) -> None:
    from tests.support.git_http_server import closed_port

    moved = RepoRecord.from_json(
        {**private_repo.record, "url": f"http://127.0.0.1:{closed_port()}/acme/vault.git"}
    )
    with pytest.raises(HostUnreachableError, match="cannot reach 127.0.0.1"):
        verify_access(moved, "some-token-value-1234")
    with pytest.raises(AuthenticationError, match="is private"):
        verify_access(moved, "  ")
    verify_access(RepoRecord.from_json({**private_repo.record, "private": False}), None)
    over_ssh = RepoRecord.from_json({**private_repo.record, "url": "ssh://git@127.0.0.1:1/acme/vault.git"})
    with pytest.raises(InvalidSourceError, match="token cannot be checked"):
        verify_access(over_ssh, "any-token-value-123")


def test_the_host_check_is_refused_by_the_server_policy_before_any_connection(
    private_repo: PrivateRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that does not fetch from internal hosts does not check tokens against them either:
    the record's host (loopback here; its DNS may have changed since the ingest) is refused with
    `forbidden_host` before git runs, through every route that reads a private repository."""
    for name in TEST_POLICY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    strict = LiveServer(lambda: _app(private_repo.home)).start()
    try:
        before = private_repo.ls_remotes()
        headers = {"X-Repo-Token": private_repo.token}
        base = f"{strict.base_url}/api/repos/{private_repo.record['id']}"
        shown = httpx.get(f"{base}/file", params={"path": "vault/lock.py"}, headers=headers)
        found = httpx.post(f"{base}/search", json={"query": "vault"}, headers=headers)
        for refused in (shown, found):
            assert refused.status_code == 403 and refused.json()["code"] == "forbidden_host", refused.text
        assert private_repo.ls_remotes() == before, "no request reached the git host"
    finally:
        strict.stop()
    listener = RecordingListener()
    try:
        record = RepoRecord.from_json(
            {**private_repo.record, "url": f"http://127.0.0.1:{listener.port}/acme/vault.git"}
        )
        with pytest.raises(ForbiddenHostError):
            verify_access(record, private_repo.token, policy=SourcePolicy(home=private_repo.home))
        assert listener.accepted() == 0
    finally:
        listener.close()


def test_the_host_check_is_pinned_to_the_checked_address(private_repo: PrivateRepo) -> None:
    """`repo.invalid` resolves nowhere (RFC 6761): the check reaches the git server only through
    the pin. Pinned to loopback only, the token may go over plain http, as to a loopback name."""
    port = private_repo.git.base_url.rsplit(":", 1)[1]
    record = RepoRecord.from_json(
        {**private_repo.record, "url": f"http://repo.invalid:{port}/acme/vault.git"}
    )
    policy = SourcePolicy(
        home=private_repo.home, allow_private_hosts=True, resolver=lambda host, port: ["127.0.0.1"]
    )
    before = private_repo.ls_remotes()
    verify_access(record, private_repo.token, policy=policy)
    assert private_repo.ls_remotes() == before + 1  # `.invalid` never resolves: only the pin leads here


def test_a_private_repository_stays_private_when_updated_without_a_token(private_repo: PrivateRepo) -> None:
    """Even if the host stops asking (made public, or another spelling of the same repo id)."""
    git = private_repo.git
    git.add_repo("acme/annex", {"annex/notes.py": "NOTES = 1\n"})
    url = f"{private_repo.server.base_url}/api/repos"
    body = {"repo_url": git.url_for("acme/annex"), "type": "git"}
    first = sse_events(httpx.post(url, json={**body, "token": git.token}, timeout=60).text)[-1]
    git.require_auth = False
    try:
        git.add_repo("acme/annex", {"annex/extra.py": "X = 1\n"})
        updated = sse_events(httpx.post(url, json=body, timeout=60).text)[-1]
    finally:
        git.require_auth = True
    assert first["repo"]["private"] is True
    assert updated["type"] == "done" and updated["report"]["files"]["added"] == 1
    assert updated["repo"]["private"] is True
    search = f"{private_repo.server.base_url}/api/repos/{updated['repo']['id']}/search"
    assert httpx.post(search, json={"query": "notes"}).status_code == 401


def test_repolens_ask_uses_the_environment_token(
    private_repo: PrivateRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`repolens ask` on a private repository sends the user's REPOLENS_TOKEN (no `--token`)."""
    from typer.testing import CliRunner

    from api.cli import app

    monkeypatch.setenv("REPOLENS_HOME", str(private_repo.home))
    command = ["ask", private_repo.record["id"], "What does open_vault return?", "--plain"]
    refused = CliRunner().invoke(app, command)
    assert refused.exit_code != 0 and "is private" in refused.stderr
    monkeypatch.setenv("REPOLENS_TOKEN", private_repo.token)
    answered = CliRunner().invoke(app, command)
    assert answered.exit_code == 0, answered.output
    assert "vault/lock.py" in answered.stdout and private_repo.token not in answered.output


def test_deleting_a_private_index_needs_the_token(private_repo: PrivateRepo) -> None:
    """Last in the module: it deletes the index the module's other tests share."""
    url = private_repo.api("")
    assert httpx.delete(url).status_code == 401
    assert httpx.delete(url, headers={"X-Repo-Token": "nope-nope-nope"}).status_code == 401
    assert httpx.get(url).status_code == 200
    assert httpx.delete(url, headers={"X-Repo-Token": private_repo.token}).status_code == 200
    assert httpx.get(url).status_code == 404
