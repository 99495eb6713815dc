"""The server's source policy (ingest/policy.py): no folder of the server, no internal host.

Before: `POST /api/repos {"repo_url": "/etc", "type": "local"}` indexed /etc (and the file view
served /etc/shadow), indexing `<REPOLENS_HOME>/clones/<private repo>` as a folder bypassed the
token check, and `http://169.254.169.254/...` or `http://10.0.0.1/a/b.git` were fetched
(issue 9, findings 2 and 5). The CLI keeps local folders.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from ingest import IngestOptions, ingest
from ingest.policy import ForbiddenHostError, ForbiddenSourceError, SourcePolicy, forbidden_address
from ingest.sources import resolve_source
from rag.embedders import Embedder
from rag.settings import Settings
from rag.store import Store
from tests.support.chat import TEST_POLICY_VARIABLES
from tests.support.git_http_server import GitHttpServer
from tests.support.live_server import LiveServer, serve_on_a_free_port
from tests.support.repos import commit_all, git, write_files


class RecordingListener:
    """A loopback socket that counts the connections made to it (proof that none was attempted)."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.socket.setblocking(False)
        self.port = self.socket.getsockname()[1]

    def accepted(self) -> int:
        count = 0
        while True:
            try:
                connection, _ = self.socket.accept()
            except BlockingIOError:
                return count
            connection.close()
            count += 1

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def listener() -> Iterator[RecordingListener]:
    recording = RecordingListener()
    yield recording
    recording.close()


@pytest.fixture
def strict_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server defaults: no test opt-in to local folders or loopback hosts."""
    for name in TEST_POLICY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def strict_server(strict_env: None, live_server_factory: Any) -> LiveServer:
    return live_server_factory()


@pytest.mark.parametrize(
    ("address", "forbidden"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("10.0.0.1", True),
        ("172.16.3.4", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),
        ("100.64.0.1", True),
        ("0.0.0.0", True),
        ("::ffff:127.0.0.1", True),
        ("fd00::1", True),
        ("fe80::1", True),
        ("224.0.0.1", True),
        ("8.8.8.8", False),
        ("140.82.112.3", False),
        ("2606:4700::1111", False),
    ],
)
def test_internal_addresses_are_forbidden(address: str, forbidden: bool) -> None:
    assert forbidden_address(address) is forbidden


def _policy(home: Path, resolved: list[str], **options: Any) -> SourcePolicy:
    return SourcePolicy(home=home, resolver=lambda host, port: resolved, **options)


def test_hosts_are_checked_on_every_resolved_address_and_pinned(tmp_path: Path) -> None:
    source = resolve_source("https://git.example.com/acme/app.git")
    public = _policy(tmp_path, ["140.82.112.3", "2606:4700::1111"])
    assert public.admit(source) == ("git.example.com:443:140.82.112.3,[2606:4700::1111]",)
    with pytest.raises(ForbiddenHostError, match="10.1.2.3") as caught:
        _policy(tmp_path, ["140.82.112.3", "10.1.2.3"]).admit(source)  # one bad address is enough
    assert caught.value.code == "forbidden_host" and caught.value.http_status == 403
    allowed = _policy(tmp_path, ["10.1.2.3"], allow_private_hosts=True)
    assert allowed.admit(source) == ("git.example.com:443:10.1.2.3",)
    ssh = resolve_source("git@git.example.com:acme/app.git")
    assert public.admit(ssh) == ("git.example.com:22:140.82.112.3,[2606:4700::1111]",)
    with pytest.raises(ForbiddenHostError):
        _policy(tmp_path, ["127.0.0.1"]).admit(ssh)
    daemon = resolve_source("git://git.example.com/acme/app.git", platform="git")
    assert public.admit(daemon) == ("git.example.com:9418:140.82.112.3,[2606:4700::1111]",)


def test_local_folders_follow_allow_local_and_local_roots_and_never_the_data_dir(tmp_path: Path) -> None:
    home, repo, other = tmp_path / "home", tmp_path / "roots" / "repo", tmp_path / "other"
    for folder in (home / "clones" / "private", repo, other):
        folder.mkdir(parents=True)
    folder_of = {"repo": repo, "other": other, "clone": home / "clones" / "private", "parent": tmp_path}
    cases = {
        SourcePolicy(home=home): {},
        SourcePolicy(home=home, allow_local=True): {"repo", "other"},
        SourcePolicy(home=home, local_roots=(tmp_path / "roots",)): {"repo"},
        SourcePolicy(home=home, allow_local=True, local_roots=(tmp_path,)): {"repo", "other"},
    }
    for policy, allowed in cases.items():
        for name, folder in folder_of.items():
            source = resolve_source(folder.as_uri() if name == "other" else str(folder))
            if name in allowed:
                assert policy.admit(source) == ()
            else:
                with pytest.raises(ForbiddenSourceError) as caught:
                    policy.admit(source)
                assert caught.value.code == "forbidden_source"


def test_the_cli_keeps_local_folders(tmp_path: Path, strict_env: None, shared_embedder: Embedder) -> None:
    repo = tmp_path / "plain"
    repo.mkdir()
    (repo / "a.py").write_text("x = 1\n")
    report = ingest(str(repo), IngestOptions(), store=Store(tmp_path / "home"), embedder=shared_embedder)
    assert report.record.file_count == 1


def _post_ingest(server: LiveServer, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.base_url}/api/repos", json=body, timeout=30)


@pytest.mark.parametrize(
    "body",
    [
        {"repo_url": "/etc", "type": "local"},
        {"repo_url": "/etc"},
        {"repo_url": "file:///etc"},
        {"repo_url": "file://localhost/etc"},
    ],
)
def test_the_server_refuses_folders_of_its_machine(strict_server: LiveServer, body: dict[str, Any]) -> None:
    response = _post_ingest(strict_server, body)
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "forbidden_source"  # the app's one error body
    assert "start it with REPOLENS_ALLOW_LOCAL=1" in response.json()["detail"]  # says what to do
    assert httpx.get(f"{strict_server.base_url}/api/repos", timeout=10).json()["repos"] == []


def test_the_data_dir_is_never_indexable(
    strict_env: None, live_server_factory: Any, repolens_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPOLENS_ALLOW_LOCAL", "1")
    clone = repolens_home / "clones" / "127.0.0.1%3A9%2Facme%2Fprivate"
    clone.mkdir(parents=True)
    (clone / "secret.py").write_text("TOKEN = 'private code'\n")
    server = live_server_factory()
    for folder in (clone, repolens_home, repolens_home.parent):
        response = _post_ingest(server, {"repo_url": str(folder), "type": "local"})
        assert response.status_code == 403 and "never indexable" in response.json()["detail"], response.text


@pytest.mark.parametrize(
    "template",
    [
        "http://127.0.0.1:{port}/acme/app.git",
        "http://localhost:{port}/acme/app.git",
        "http://127.1.2.3:{port}/acme/app.git",
        "https://127.0.0.1:{port}/acme/app.git",
        "ssh://git@127.0.0.1:{port}/acme/app.git",
        "git://127.0.0.1:{port}/acme/app.git",
    ],
)
def test_internal_hosts_are_refused_before_any_connection(
    strict_server: LiveServer, listener: RecordingListener, template: str
) -> None:
    response = _post_ingest(strict_server, {"repo_url": template.format(port=listener.port), "type": "git"})
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "forbidden_host"
    assert "REPOLENS_ALLOW_PRIVATE_HOSTS" in response.json()["detail"]
    assert listener.accepted() == 0


def test_metadata_and_private_addresses_are_refused(strict_server: LiveServer) -> None:
    for url in ("http://169.254.169.254/latest/meta/data.git", "http://10.0.0.1/a/b.git"):
        response = _post_ingest(strict_server, {"repo_url": url, "type": "git"})
        assert response.status_code == 403 and "resolves to" in response.json()["detail"]


def _ws_error(server: LiveServer, repo_url: str, **fields: Any) -> dict[str, Any]:
    body = {"repo_url": repo_url, "messages": [{"role": "user", "content": "hi"}], "protocol": "events"}
    with connect(f"{server.ws_url}/ws/chat", open_timeout=10) as socket_:
        socket_.send(json.dumps({**body, **fields}))
        while True:
            frame = json.loads(socket_.recv(timeout=30))
            if frame["type"] == "error":
                return frame


def test_ws_chat_applies_the_same_policy(strict_server: LiveServer, listener: RecordingListener) -> None:
    assert _ws_error(strict_server, "/etc", type="local")["code"] == "forbidden_source"
    url = f"http://127.0.0.1:{listener.port}/acme/app.git"
    assert _ws_error(strict_server, url, type="git")["code"] == "forbidden_host"
    assert listener.accepted() == 0


def test_git_is_pinned_to_the_checked_addresses(
    git_http_server: GitHttpServer, tmp_path: Path, shared_embedder: Embedder
) -> None:
    """A host name that resolves nowhere (`.invalid`) is fetched from the address the policy
    checked: git used the pin (`http.curloptResolve`), not its own DNS lookup."""
    git_http_server.require_auth = False
    git_http_server.add_repo("acme/pinned", {"app.py": "print('pinned')\n"})
    port = git_http_server.base_url.rsplit(":", 1)[1]
    policy = SourcePolicy(
        home=tmp_path / "home", allow_private_hosts=True, resolver=lambda host, port: ["127.0.0.1"]
    )
    options = IngestOptions(platform="git", policy=policy)
    url = f"http://repo.invalid:{port}/acme/pinned.git"
    report = ingest(url, options, store=Store(tmp_path / "home"), embedder=shared_embedder)
    assert report.record.file_count == 1
    assert git_http_server.requests and all(request.status == 200 for request in git_http_server.requests)


def _bare_repo(tmp_path: Path, files: dict[str, str]) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    write_files(work, files)
    git(work, "init", "-q", "-b", "main")
    commit_all(work, "initial")
    bare = tmp_path / "served" / "acme" / "app.git"
    bare.parent.mkdir(parents=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    return bare


@pytest.fixture
def git_daemon(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """`git daemon` on loopback serving one repository (git://)."""
    bare = _bare_repo(tmp_path, {"daemon.py": "print('over git://')\n"})
    base = bare.parent.parent

    # git-daemon itself, not `git daemon` (which runs it as a child: the listener would not be its own)
    exec_path = subprocess.run(["git", "--exec-path"], capture_output=True, text=True, check=True).stdout
    daemon_binary = Path(exec_path.strip()) / "git-daemon"

    def start(port: int) -> subprocess.Popen[bytes]:
        command = [str(daemon_binary), "--reuseaddr", "--export-all", "--listen=127.0.0.1", f"--port={port}"]
        return subprocess.Popen([*command, f"--base-path={base}", str(base)], stderr=subprocess.DEVNULL)

    port, daemon = serve_on_a_free_port(start)
    try:
        yield port, bare
    finally:
        daemon.terminate()
        daemon.wait(10)


def test_git_protocol_is_pinned_to_the_checked_address(
    git_daemon: tuple[int, Path], tmp_path: Path, shared_embedder: Embedder
) -> None:
    """Before: git:// was checked, then git resolved the name again itself (DNS rebinding between
    check and connect). `.invalid` resolves nowhere: the clone works only through the pin."""
    port, _ = git_daemon
    policy = SourcePolicy(
        home=tmp_path / "home", allow_private_hosts=True, resolver=lambda host, port: ["127.0.0.1"]
    )
    options = IngestOptions(platform="git", policy=policy)
    url = f"git://repo.invalid:{port}/acme/app.git"
    report = ingest(url, options, store=Store(tmp_path / "home"), embedder=shared_embedder)
    assert report.record.file_count == 1 and report.record.url == url  # the name is what is recorded


def test_ssh_is_pinned_to_the_checked_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_embedder: Embedder
) -> None:
    """ssh connects to the checked address (`HostName`) and checks the host key under the host's
    name (`HostKeyAlias`). The `ssh` here records its arguments and runs git's remote command
    locally, as git's own test suite does."""
    bare = _bare_repo(tmp_path, {"remote.py": "print('over ssh')\n"})
    record = tmp_path / "ssh-args"
    fake = tmp_path / "bin" / "ssh"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\nfor last; do :; done\nexec sh -c "$last"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("GIT_SSH_COMMAND", str(fake))
    policy = SourcePolicy(
        home=tmp_path / "home", allow_private_hosts=True, resolver=lambda host, port: ["127.0.0.7"]
    )
    url = f"ssh://git@repo.invalid{bare}"
    options = IngestOptions(platform="git", policy=policy)
    report = ingest(url, options, store=Store(tmp_path / "home"), embedder=shared_embedder)
    assert report.record.file_count == 1
    arguments = record.read_text().splitlines()
    assert arguments[:4] == ["-o", "HostName=127.0.0.7", "-o", "HostKeyAlias=repo.invalid"]
    assert "git@repo.invalid" in arguments


def test_server_policy_reads_its_settings(tmp_path: Path) -> None:
    settings = Settings.from_env(
        environ={
            "REPOLENS_HOME": str(tmp_path / "h"),
            "REPOLENS_ALLOW_LOCAL": "1",
            "REPOLENS_LOCAL_ROOTS": f"{tmp_path}/a:{tmp_path}/b",
            "REPOLENS_ALLOW_PRIVATE_HOSTS": "yes",
        },
        dotenv=tmp_path / "none.env",
    )
    policy = SourcePolicy.for_server(settings)
    assert policy.allow_local and policy.allow_private_hosts
    assert policy.local_roots == ((tmp_path / "a").resolve(), (tmp_path / "b").resolve())
