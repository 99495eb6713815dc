"""A damaged index is a clear `index_corrupt` error naming `--reindex`, everywhere.

Before (issue 9): a truncated `index.faiss` / `meta.sqlite` was a raw FAISS or SQLite error,
a 500 on the server, nothing on stdout with `--json`, and no hint to re-index.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner
from websockets.sync.client import connect

from api.cli import app as cli_app
from ingest import IngestOptions, ingest
from rag.embedders import Embedder
from rag.errors import IndexCorruptError, exit_code
from rag.lexical import query_terms, tokenize
from rag.store import Store
from rag.store.integrity import CHECKSUM_FILE
from tests.support.complexity import assert_linear
from tests.support.live_server import LiveServer
from tests.support.repos import commit_all, git, write_files


@pytest.fixture
def indexed(tmp_path: Path, repolens_home: Path, shared_embedder: Embedder) -> tuple[Path, str]:
    repo = tmp_path / "small"
    repo.mkdir()
    write_files(repo, {"a.py": "def alpha():\n    return 1\n", "b.py": "def beta():\n    return 2\n"})
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "initial")
    return repo, ingest(str(repo), store=Store(repolens_home), embedder=shared_embedder).repo_id


def _version_dir(home: Path, repo_id: str) -> Path:
    paths = Store(home).paths(repo_id)
    return paths.root / str(paths.current_target())


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("name", ["index.faiss", "meta.sqlite"])
def test_a_truncated_index_file_is_index_corrupt_naming_reindex(
    indexed: tuple[Path, str], repolens_home: Path, name: str
) -> None:
    _, repo_id = indexed
    version = _version_dir(repolens_home, repo_id)
    assert json.loads((version / CHECKSUM_FILE).read_text()).keys() == {"index.faiss", "meta.sqlite"}
    _truncate(version / name)
    with pytest.raises(IndexCorruptError, match="--reindex") as caught:
        Store(repolens_home).open(repo_id)
    assert caught.value.code == "index_corrupt" and caught.value.http_status == 409
    assert name in caught.value.message


def test_an_old_version_without_checksums_is_still_checked_by_loading(
    indexed: tuple[Path, str], repolens_home: Path
) -> None:
    _, repo_id = indexed
    version = _version_dir(repolens_home, repo_id)
    (version / CHECKSUM_FILE).unlink()
    Store(repolens_home).open(repo_id)  # an intact old version opens
    _truncate(version / "index.faiss")
    with pytest.raises(IndexCorruptError, match="--reindex"):
        Store(repolens_home).open(repo_id)


def test_cli_server_and_socket_report_index_corrupt_and_reindex_repairs(
    indexed: tuple[Path, str], repolens_home: Path, live_server: LiveServer, shared_embedder: Embedder
) -> None:
    repo, repo_id = indexed
    _truncate(_version_dir(repolens_home, repo_id) / "index.faiss")

    result = CliRunner().invoke(cli_app, ["search", repo_id, "alpha", "--json"])
    assert result.exit_code == exit_code("index_corrupt") != 1
    assert json.loads(result.stdout)["error"]["code"] == "index_corrupt"

    response = httpx.get(f"{live_server.base_url}/api/repos/{repo_id}", timeout=30)
    assert response.status_code == 409 and "--reindex" in response.text
    body = {"repo_url": str(repo), "messages": [{"role": "user", "content": "alpha?"}], "protocol": "events"}
    with connect(f"{live_server.ws_url}/ws/chat", open_timeout=10) as socket_:
        socket_.send(json.dumps(body))
        frames = [json.loads(socket_.recv(timeout=30))]
        while frames[-1]["type"] != "done":
            frames.append(json.loads(socket_.recv(timeout=30)))
    errors = [frame for frame in frames if frame["type"] == "error"]
    assert errors and errors[0]["code"] == "index_corrupt"

    report = ingest(
        str(repo), IngestOptions(reindex=True), store=Store(repolens_home), embedder=shared_embedder
    )
    assert Store(repolens_home).open(report.repo_id).size > 0


@pytest.mark.parametrize("unit", ["a", "aB", "a_", "1a"])
def test_a_long_one_word_query_is_tokenised_in_linear_time(unit: str) -> None:
    """A complexity guard: the dotted-name pattern rescanned the word at every position (4-5 s
    for 10,000 characters); 2,000 against 16,000 characters tells linear from quadratic."""

    def tokenise(n: int) -> None:
        word = unit * (n // len(unit))
        tokenize(word)
        query_terms(word)

    assert_linear(tokenise, 2_000)


def test_query_terms_are_bounded() -> None:
    assert len(query_terms(" ".join(f"w{i}x" for i in range(1_000)))) == 64


def _doctor(*args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(cli_app, ["doctor", "--json", *args])
    return result.exit_code, json.loads(result.stdout)


def test_doctor_finds_and_repairs_what_kills_and_crashes_leave(
    indexed: tuple[Path, str], repolens_home: Path, shared_embedder: Embedder
) -> None:
    repo, repo_id = indexed
    assert _doctor() == (0, {"home": str(repolens_home), "findings": [], "healthy": True, "outdated": []})
    store = Store(repolens_home)
    paths = store.paths(repo_id)
    live = paths.root / str(paths.current_target())
    write_files(repo, {"c.py": "def gamma():\n    return 3\n"})
    commit_all(repo, "second")
    ingest(str(repo), store=store, embedder=shared_embedder)  # version 2 live, version 1 removed
    second = paths.root / str(paths.current_target())
    import shutil

    shutil.copytree(second, live)  # an intact older version a crash kept
    (paths.root / "build-99999-dead").mkdir()  # a killed build
    paths.lock_file.write_text("999999")  # its process is gone
    _truncate(second / "index.faiss")  # the live version is damaged
    (repolens_home / "repos" / "github.com%2Fa%2Fnever").mkdir()  # a failed first ingest
    (repolens_home / "clones" / "github.com%2Fa%2Forphan").mkdir(parents=True)

    code, report = _doctor()
    problems = {(finding["repo"], finding["problem"]) for finding in report["findings"]}
    assert code == 1 and not report["healthy"]
    assert {
        (repo_id, "leftover_build"),
        (repo_id, "stale_lock"),
        (repo_id, "corrupt_version"),
        ("github.com/a/never", "unindexed_folder"),
        ("github.com/a/orphan", "orphan_clone"),
    } <= problems
    code, repaired = _doctor("--repair")
    assert code == 0 and all(finding["repaired"] for finding in repaired["findings"]), repaired
    assert _doctor() == (0, {"home": str(repolens_home), "findings": [], "healthy": True, "outdated": []})
    assert Store(repolens_home).open(repo_id).version_dir.name == live.name  # the intact version serves
    assert not (repolens_home / "repos" / "github.com%2Fa%2Fnever").exists()


def test_doctor_finds_nothing_after_other_processes_finished_normally(
    indexed: tuple[Path, str], repolens_home: Path
) -> None:
    """A lock a finished process released is not `stale_lock`, so a healthy data dir stays healthy
    after `repolens ask`, `wiki` or `doctor` itself ran in another process."""
    import subprocess
    import sys

    _, repo_id = indexed
    take_and_release = (
        "import sys; from rag.store import Store; from rag.store.layout import RepoLock\n"
        "store = Store(sys.argv[1])\n"
        "with RepoLock(store.paths(sys.argv[2]), sys.argv[2]): pass"
    )
    subprocess.run([sys.executable, "-c", take_and_release, str(repolens_home), repo_id], check=True)
    assert _doctor() == (0, {"home": str(repolens_home), "findings": [], "healthy": True, "outdated": []})


def test_doctor_reports_a_corrupt_index_it_cannot_repair(
    indexed: tuple[Path, str], repolens_home: Path
) -> None:
    _, repo_id = indexed
    _truncate(_version_dir(repolens_home, repo_id) / "meta.sqlite")
    code, report = _doctor("--repair")
    assert code == 1 and report["findings"][0]["problem"] == "corrupt_version"
    assert "--reindex" in report["findings"][0]["detail"] and not report["findings"][0]["repaired"]
