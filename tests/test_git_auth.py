"""Cloning with tokens against a real smart-HTTP git server, and proof the token never leaks.

The server (tests/support/git_http_server.py) runs `git http-backend` behind HTTP Basic auth on
127.0.0.1 and demands its token; every clone below is real git over real sockets.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ingest.errors import (
    AuthenticationError,
    CloneTimeoutError,
    HostUnreachableError,
    IngestCancelled,
    InvalidSourceError,
    RepositoryNotFoundError,
    UnknownRefError,
)
from ingest.git import checkout, local_commit, token_for
from ingest.sources import resolve_source
from rag.redact import install_log_redaction
from tests.support.git_wrapper import git_on_path
from tests.support.repos import commit_all, git, write_files
from tests.support.stored import stored_files

if TYPE_CHECKING:
    from tests.support.git_http_server import GitHttpServer, SilentServer


FILES = {"README.md": "# demo\n", "src/app.py": "def main():\n    return 1\n"}


@pytest.fixture
def argv_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `git` first on PATH that records its argv, then runs the real git: argv is what `ps` shows."""
    return git_on_path(tmp_path, monkeypatch, run_real_git=True)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every log record at DEBUG (git's own messages included), as the code under test wrote them."""
    caplog.set_level(logging.DEBUG)
    yield caplog


def _leak_forms(token: str) -> list[bytes]:
    """The token as is, and inside every Basic header a scheme could build."""
    users = ("x-access-token", "oauth2", "x-token-auth", "alice")
    return [token.encode(), *(base64.b64encode(f"{user}:{token}".encode()) for user in users)]


def _assert_no_leak(token: str, roots: list[Path], texts: list[str]) -> None:
    forms = _leak_forms(token)
    scanned = 0
    for root in roots:
        for path, data in stored_files(root):
            scanned += 1
            assert not any(form in data for form in forms), f"token found in {path}"
    assert scanned > 0
    for text in texts:
        assert not any(form.decode() in text for form in forms)


@pytest.mark.parametrize(
    ("platform", "username", "expected_user"),
    [
        ("github", None, "x-access-token"),
        ("gitlab", None, "oauth2"),
        ("bitbucket", None, "x-token-auth"),
        ("bitbucket", "alice", "alice"),
        ("git", None, "x-access-token"),
    ],
)
def test_right_token_clones_with_the_platform_scheme(
    git_http_server: GitHttpServer,
    tmp_path: Path,
    repolens_home: Path,
    argv_log: Path,
    logs: pytest.LogCaptureFixture,
    platform: str,
    username: str | None,
    expected_user: str,
) -> None:
    sha = git_http_server.add_repo("acme/demo", FILES)
    source = resolve_source(git_http_server.url_for("acme/demo"), platform=platform)
    dest = repolens_home / "clones" / "acme/demo"
    progress: list[str] = []

    commit = checkout(source, dest, token=git_http_server.token, username=username, progress=progress.append)

    assert commit == sha
    assert any("Receiving objects" in line for line in progress)
    assert (dest / "src" / "app.py").read_text() == FILES["src/app.py"]
    assert {request.user for request in git_http_server.requests} == {expected_user}
    assert all(request.authorized for request in git_http_server.requests)
    config = (dest / ".git" / "config").read_text()
    assert f"url = {git_http_server.url_for('acme/demo')}" in config
    assert "extraheader" not in config.lower() and "@" not in config
    assert argv_log.read_text().count("clone --depth 1 --single-branch --no-tags") == 1
    _assert_no_leak(git_http_server.token, [tmp_path], [logs.text, *progress])


def test_wrong_token_fails_with_a_clean_message(
    git_http_server: GitHttpServer, tmp_path: Path, argv_log: Path, logs: pytest.LogCaptureFixture
) -> None:
    git_http_server.add_repo("acme/demo", FILES)
    wrong = "rl-wrong-" + "9" * 20
    dest = tmp_path / "clones" / "acme/demo"
    with pytest.raises(AuthenticationError) as caught:
        checkout(resolve_source(git_http_server.url_for("acme/demo")), dest, token=wrong)

    url = git_http_server.url_for("acme/demo").removesuffix(".git")
    assert str(caught.value) == f"authentication failed for {url}: check the token and its scopes"
    assert caught.value.code == "auth_failed"
    assert not dest.exists() and list(dest.parent.iterdir()) == []
    assert git_http_server.requests[0].authorized is False
    _assert_no_leak(wrong, [tmp_path], [logs.text, str(caught.value), repr(caught.value)])


def test_missing_token_names_the_variables_to_set(git_http_server: GitHttpServer, tmp_path: Path) -> None:
    git_http_server.add_repo("acme/demo", FILES)
    source = resolve_source(git_http_server.url_for("acme/demo"), platform="gitlab")
    with pytest.raises(AuthenticationError) as caught:
        checkout(source, tmp_path / "clone", timeout=30)
    assert str(caught.value).startswith(f"authentication failed for {source.url}: ")
    assert "GITLAB_TOKEN" in str(caught.value)
    assert all(request.user is None for request in git_http_server.requests)


def test_token_from_environment_and_precedence(
    git_http_server: GitHttpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    git_http_server.add_repo("acme/demo", FILES)
    monkeypatch.setenv("GITLAB_TOKEN", git_http_server.token)
    source = resolve_source(git_http_server.url_for("acme/demo"), platform="gitlab")
    assert checkout(source, tmp_path / "a")
    assert git_http_server.requests[-1].user == "oauth2"

    monkeypatch.setenv("REPOLENS_TOKEN", "rl-stale-token-value")
    assert token_for("gitlab") == "rl-stale-token-value"
    assert token_for("gitlab", "explicit-value") == "explicit-value"
    assert token_for("github") == "rl-stale-token-value"
    monkeypatch.delenv("REPOLENS_TOKEN")
    assert token_for("github") is None
    assert token_for("git") is None


def test_token_pasted_in_the_url_is_used_but_never_stored(
    git_http_server: GitHttpServer, tmp_path: Path, argv_log: Path, logs: pytest.LogCaptureFixture
) -> None:
    git_http_server.add_repo("acme/demo", FILES)
    pasted = git_http_server.url_for("acme/demo").replace(
        "http://", f"http://x-access-token:{git_http_server.token}@"
    )
    source = resolve_source(pasted)
    dest = tmp_path / "clone"
    checkout(source, dest)

    assert git_http_server.requests[-1].authorized
    assert git_http_server.token not in (dest / ".git" / "config").read_text()
    install_log_redaction()  # what the CLI and the server do at start-up
    logging.getLogger("repolens.test").warning("ingesting %s", pasted)
    _assert_no_leak(git_http_server.token, [tmp_path], [logs.text])


def test_unknown_repository(git_http_server: GitHttpServer, tmp_path: Path) -> None:
    source = resolve_source(git_http_server.url_for("acme/nope"))
    with pytest.raises(RepositoryNotFoundError) as caught:
        checkout(source, tmp_path / "clone", token=git_http_server.token)
    assert str(caught.value) == f"repository not found: {source.url}"
    assert caught.value.code == "not_found"


def test_unknown_ref(git_http_server: GitHttpServer, tmp_path: Path) -> None:
    git_http_server.add_repo("acme/demo", FILES)
    source = resolve_source(git_http_server.url_for("acme/demo"), ref="no-such-branch")
    with pytest.raises(UnknownRefError, match="ref 'no-such-branch' not found in"):
        checkout(source, tmp_path / "clone", token=git_http_server.token)
    missing_sha = resolve_source(git_http_server.url_for("acme/demo"), ref="ab" * 20)
    with pytest.raises(UnknownRefError):
        checkout(missing_sha, tmp_path / "clone", token=git_http_server.token)
    assert not (tmp_path / "clone").exists()


def test_branch_tag_and_commit_refs(git_http_server: GitHttpServer, tmp_path: Path) -> None:
    first = git_http_server.add_repo("acme/demo", FILES)
    second = git_http_server.add_repo("acme/demo", {"src/app.py": "def main():\n    return 2\n"})
    feature = git_http_server.add_repo("acme/demo", {"FEATURE.md": "yes\n"}, branch="feature/x")
    git_http_server.tag("acme/demo", "v1.0", first)
    url, token = git_http_server.url_for("acme/demo"), git_http_server.token

    assert checkout(resolve_source(url), tmp_path / "head", token=token) == second
    assert checkout(resolve_source(url, ref="feature/x"), tmp_path / "feature", token=token) == feature
    assert (tmp_path / "feature" / "FEATURE.md").exists()
    assert checkout(resolve_source(url, ref="v1.0"), tmp_path / "tag", token=token) == first
    assert checkout(resolve_source(url, ref=first), tmp_path / "sha", token=token) == first
    assert "return 1" in (tmp_path / "sha" / "src" / "app.py").read_text()
    assert not list((tmp_path / "sha").glob("FEATURE.md"))


def test_recheckout_fetches_and_resets(git_http_server: GitHttpServer, tmp_path: Path) -> None:
    git_http_server.add_repo("acme/demo", FILES)
    source = resolve_source(git_http_server.url_for("acme/demo"))
    dest = tmp_path / "clone"
    checkout(source, dest, token=git_http_server.token)
    (dest / "stray.txt").write_text("left by someone")
    (dest / "README.md").write_text("edited locally")

    newer = git_http_server.add_repo("acme/demo", {"src/new.py": "x = 1\n", "src/app.py": None})
    assert checkout(source, dest, token=git_http_server.token) == newer
    assert (dest / "src" / "new.py").exists()
    assert not (dest / "src" / "app.py").exists()
    assert not (dest / "stray.txt").exists()
    assert (dest / "README.md").read_text() == FILES["README.md"]
    assert any(r.method == "POST" for r in git_http_server.requests[-2:])


def test_failed_fetch_keeps_the_existing_clone(git_http_server: GitHttpServer, tmp_path: Path) -> None:
    sha = git_http_server.add_repo("acme/demo", FILES)
    source = resolve_source(git_http_server.url_for("acme/demo"))
    dest = tmp_path / "clone"
    checkout(source, dest, token=git_http_server.token)
    with pytest.raises(AuthenticationError):
        checkout(source, dest, token="rl-wrong-token-value")
    assert (dest / "src" / "app.py").exists()
    assert (dest / ".git").is_dir()
    assert checkout(source, dest, token=git_http_server.token) == sha


@pytest.mark.parametrize(
    "remote", ["http://127.0.0.1:{port}/team/app.git", "ssh://git@127.0.0.1:{port}/team/app.git"]
)
def test_unreachable_host(remote: str, refused_port: int, tmp_path: Path) -> None:
    source = resolve_source(remote.format(port=refused_port))
    with pytest.raises(HostUnreachableError) as caught:
        checkout(source, tmp_path / "clone", token="rl-some-token-value", timeout=30)
    assert caught.value.code == "unreachable"
    assert str(caught.value).startswith(f"cannot reach {source.host} for {source.url}: ")
    assert "rl-some-token-value" not in str(caught.value)


def test_host_that_never_answers_times_out(silent_server: SilentServer, tmp_path: Path) -> None:
    source = resolve_source(f"{silent_server.base_url}/team/app.git")
    with pytest.raises(CloneTimeoutError, match=r"did not finish within 1s"):
        checkout(source, tmp_path / "clones" / "app", token="rl-some-token-value", timeout=1.0)
    assert list((tmp_path / "clones").iterdir()) == []


def test_cancel_stops_the_clone(silent_server: SilentServer, tmp_path: Path) -> None:
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    source = resolve_source(f"{silent_server.base_url}/team/app.git")
    with pytest.raises(IngestCancelled):
        checkout(source, tmp_path / "clones" / "app", timeout=30, cancel=cancel)
    assert list((tmp_path / "clones").iterdir()) == []


def test_token_is_never_sent_over_plain_http_to_a_remote_host(tmp_path: Path) -> None:
    source = resolve_source("http://git.example.com/team/app.git")
    with pytest.raises(InvalidSourceError, match="unencrypted http"):
        checkout(source, tmp_path / "clones" / "app", token="rl-some-token-value")
    for pinned in ("git.example.com:80:10.0.0.1", "git.example.com:80:127.0.0.1,10.0.0.1"):
        with pytest.raises(InvalidSourceError, match="unencrypted http"):  # not loopback only
            checkout(source, tmp_path / "clones" / "app", token="rl-some-token-value", resolve=[pinned])
    assert not (tmp_path / "clones").exists()


def test_local_sources_are_not_cloned(tmp_path: Path) -> None:
    with pytest.raises(InvalidSourceError, match="read in place"):
        checkout(resolve_source(str(tmp_path)), tmp_path / "clone")


def test_empty_repository_is_reported(git_http_server: GitHttpServer, tmp_path: Path) -> None:
    git(git_http_server.root, "init", "--quiet", "--bare", str(git_http_server.repos / "acme" / "empty.git"))
    source = resolve_source(git_http_server.url_for("acme/empty"))
    with pytest.raises(RepositoryNotFoundError, match="has no commits yet"):
        checkout(source, tmp_path / "clones" / "empty", token=git_http_server.token)
    assert list((tmp_path / "clones").iterdir()) == []


def test_a_stale_folder_inside_another_repository_is_replaced_not_reset(
    git_http_server: GitHttpServer, tmp_path: Path
) -> None:
    """A data dir inside a git checkout: git must never fetch into or reset the enclosing repository."""
    outer = tmp_path / "outer"
    outer.mkdir()
    git(outer, "init", "--quiet")
    write_files(outer, {"keep.txt": "mine\n"})
    outer_head = commit_all(outer, "outer")
    dest = outer / "clones" / "demo"
    dest.mkdir(parents=True)
    sha = git_http_server.add_repo("acme/demo", FILES)

    assert (
        checkout(resolve_source(git_http_server.url_for("acme/demo")), dest, token=git_http_server.token)
        == sha
    )
    assert local_commit(outer) == outer_head
    assert (outer / "keep.txt").read_text() == "mine\n"
    assert (dest / "README.md").exists()


def test_redirects_are_not_followed_with_a_token(
    git_http_server: GitHttpServer, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """git would send the header to whatever host a redirect names, so with a token it must stop."""
    from tests.support.git_http_server import GitHttpServer

    elsewhere = GitHttpServer(tmp_path_factory.mktemp("elsewhere"))
    elsewhere.require_auth = False  # a public host: a followed redirect would complete the clone
    try:
        sha = elsewhere.add_repo("acme/demo", FILES)
        git_http_server.redirect("acme/moved", elsewhere.url_for("acme/demo"))
        source = resolve_source(git_http_server.url_for("acme/moved"))
        with pytest.raises(RepositoryNotFoundError, match="redirects elsewhere"):
            checkout(source, tmp_path / "clone", token=git_http_server.token)
        assert elsewhere.requests == []
        assert checkout(source, tmp_path / "public") == sha  # without a token, redirects are followed
    finally:
        elsewhere.close()
    assert all(request.user is None for request in elsewhere.requests)


def test_cli_reports_a_wrong_token_in_one_clean_line(
    git_http_server: GitHttpServer, repolens_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a user sees from `repolens ingest`: the exit code and one JSON error, without the token."""
    from typer.testing import CliRunner

    from api.cli import app

    git_http_server.add_repo("acme/demo", FILES)
    wrong = "rl-wrong-" + "7" * 20
    monkeypatch.setenv("GITHUB_TOKEN", wrong)
    url = git_http_server.url_for("acme/demo")
    result = CliRunner().invoke(app, ["ingest", url, "--type", "github", "--json"])
    assert result.exit_code == 4, result.output
    assert json.loads(result.stdout)["error"] == {
        "code": "auth_failed",
        "message": f"authentication failed for {url.removesuffix('.git')}: check the token and its scopes",
    }
    assert git_http_server.requests[0].user == "x-access-token"
    _assert_no_leak(wrong, [repolens_home], [result.output])


def test_leftovers_of_a_killed_clone_are_removed(git_http_server: GitHttpServer, tmp_path: Path) -> None:
    git_http_server.add_repo("acme/demo", FILES)
    clones = tmp_path / "clones"
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = clones / f".demo.partial-{dead.pid}-0000"
    live = clones / f".demo.partial-{os.getpid()}-1111"  # another thread of a running process
    for folder in (stale, live):
        (folder / ".git").mkdir(parents=True)
    checkout(
        resolve_source(git_http_server.url_for("acme/demo")), clones / "demo", token=git_http_server.token
    )
    assert sorted(path.name for path in clones.iterdir()) == sorted(["demo", live.name])
