"""Repository ids cannot escape their folder: `DELETE /api/repos/..` and friends delete nothing.

Before: `DELETE /api/repos/..` removed everything under REPOLENS_HOME, and `/api/repos/` and
`/api/repos/.` removed every repository and clone (issue 9, finding 1).
"""

from __future__ import annotations

import http.client
import os
from pathlib import Path
from typing import Any

import pytest

from ingest import ingest
from rag.embedders import Embedder
from rag.store import Store
from rag.store.layout import InvalidRepoIdError, validate_repo_id
from tests.support.live_server import LiveServer
from tests.support.repos import commit_all, git, write_files

BAD_IDS = [
    "",
    ".",
    "..",
    "a/../b",
    "github.com/a/..",
    "./x",
    "a//b",
    "a/",
    "/a",
    "a\x00b",
    "a\nb",
    "x" * 1025,
]


@pytest.mark.parametrize("repo_id", BAD_IDS)
def test_invalid_ids_are_refused_in_one_place(repo_id: str, repolens_home: Path) -> None:
    with pytest.raises(InvalidRepoIdError):
        validate_repo_id(repo_id)
    store = Store(repolens_home)
    for operation in (store.get, store.open, store.delete, store.paths, store.clone_dir):
        with pytest.raises(InvalidRepoIdError) as caught:
            operation(repo_id)
        assert caught.value.code == "bad_request"


@pytest.mark.parametrize(
    "repo_id", ["github.com/a/b", "gitlab.com/g/sub/r@feature/x", "local/tmp/some dir/repo", "h:8080/a/b"]
)
def test_ordinary_ids_are_accepted(repo_id: str) -> None:
    assert validate_repo_id(repo_id) == repo_id


def _snapshot(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


@pytest.fixture
def populated_home(tmp_path: Path, repolens_home: Path, shared_embedder: Embedder) -> tuple[Path, str]:
    """A data dir with one indexed repository, its clone folder and unrelated files."""
    repo = tmp_path / "small"
    repo.mkdir()
    write_files(repo, {"a.py": "def a():\n    return 1\n"})
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "initial")
    repo_id = ingest(str(repo), store=Store(repolens_home), embedder=shared_embedder).repo_id
    (repolens_home / "unrelated.txt").write_text("keep me")
    (repolens_home / "clones" / "github.com%2Fa%2Fb").mkdir(parents=True)
    (repolens_home / "clones" / "github.com%2Fa%2Fb" / "file").write_text("clone")
    return repolens_home, repo_id


def _raw_delete(server: LiveServer, path: str) -> int:
    """Send the path exactly as given (like `curl --path-as-is`): no client-side dot-segment cleanup."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("DELETE", path)
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.mark.parametrize(
    "path",
    [
        "/api/repos/..",
        "/api/repos/",
        "/api/repos/.",
        "/api/repos/%2e%2e",
        "/api/repos/github.com/..%2f..",
        "/api/repos/local/../..",
        "/api/repos/local%00",
        "/api/repos/github.com/never/indexed",
    ],
)
def test_delete_of_anything_but_an_indexed_repository_deletes_nothing(
    live_server: LiveServer, populated_home: tuple[Path, str], path: str
) -> None:
    home, repo_id = populated_home
    before = _snapshot(home)
    status = _raw_delete(live_server, path)
    assert status in (400, 404), status
    assert _snapshot(home) == before
    assert Store(home).get(repo_id) is not None


def test_a_failed_first_ingest_leaves_no_repository_folder(
    tmp_path: Path, repolens_home: Path, shared_embedder: Embedder
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    store = Store(repolens_home)
    with pytest.raises(Exception, match="no files to index"):
        ingest(str(empty), store=store, embedder=shared_embedder)
    assert not (repolens_home / "repos").exists() or list((repolens_home / "repos").iterdir()) == []


def test_a_repository_folder_that_links_outside_repos_is_refused_even_after_a_first_check(
    tmp_path: Path, repolens_home: Path
) -> None:
    """The folder is checked on every use: one swapped for a symlink to elsewhere after the store has
    already used it is refused, while a link to another folder inside `repos/` still resolves."""
    store = Store(repolens_home)
    repo_id = "github.com/a/b"
    folder = store.paths(repo_id).root
    folder.mkdir(parents=True)
    assert store.paths(repo_id).root == folder
    folder.rmdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    folder.symlink_to(outside)
    for operation in (store.paths, store.get, store.open, store.delete):
        with pytest.raises(InvalidRepoIdError):
            operation(repo_id)
    inside = folder.parent / "github.com%2Fother%2Frepo"
    inside.mkdir()
    folder.unlink()
    folder.symlink_to(inside)
    assert store.paths(repo_id).root == inside.resolve()


def test_checking_a_repository_folder_is_one_stat_call(
    repolens_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a resolve of every path component per check: a question checks its folder five times, and
    each system call there hands the GIL to the event loop streaming other answers."""
    store = Store(repolens_home)
    store.paths("github.com/a/b")  # `repos/` is resolved once per store
    calls: list[object] = []
    for name in ("stat", "lstat"):
        real = getattr(os, name)

        def counted(*args: Any, real: Any = real, **kwargs: Any) -> Any:
            calls.append(args[0])
            return real(*args, **kwargs)

        monkeypatch.setattr(os, name, counted)
    store.paths("github.com/a/b")
    store.paths("github.com/c/d")
    assert len(calls) == 2
