"""The store on its own, with hand-made unit vectors instead of an embedder.

One suite for both backends (`store` is parametrised): the local store (real FAISS and SQLite) and
the PostgreSQL store (a real PostgreSQL + pgvector started by `tests.support.postgres`). Tests of
what only one backend has (version folders, lock files) use `local_store`.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import rag.store.index
from rag.errors import EmbedderMismatchError, IndexCorruptError, NotFoundError
from rag.store import IndexBusyError, RepoIndex, Store, repo_folder
from rag.types import Chunk, RepoRecord

DIM = 8


@dataclasses.dataclass
class File:
    path: str
    language: str
    text: str
    sha256: str
    size: int


@dataclasses.dataclass
class FakeEmbedderIdentity:
    name: str
    dimension: int


def unit(axis: int) -> np.ndarray:
    vector = np.zeros(DIM, dtype=np.float32)
    vector[axis] = 1.0
    return vector


def record(repo_id: str = "github.com/acme/widgets") -> RepoRecord:
    return RepoRecord(
        id=repo_id,
        url=f"https://{repo_id}",
        platform="github",
        ref=None,
        commit="a" * 40,
        embedder="test-embedder",
        dimension=DIM,
    )


def add(builder, path: str, language: str, symbols_and_axes: list[tuple[str, int]]) -> None:
    """A file with one chunk per (symbol, axis); each chunk's vector points along its axis."""
    chunks = [
        Chunk(
            path, language, n * 10 + 1, n * 10 + 9, symbol, f"def {symbol.split('.')[-1]}(): pass  # {path}"
        )
        for n, (symbol, _) in enumerate(symbols_and_axes)
    ]
    text = "\n".join(chunk.text for chunk in chunks)
    vectors = np.stack([unit(axis) for _, axis in symbols_and_axes])
    builder.add_file(File(path, language, text, f"sha-{path}-{text}", len(text)), chunks, vectors)


@pytest.fixture
def store(make_store: Callable[[Path], Store], repolens_home: Path) -> Store:
    return make_store(repolens_home)


@pytest.fixture
def local_store(repolens_home: Path) -> Store:
    return Store(repolens_home)


def build(store: Store) -> RepoIndex:
    with store.builder(record()) as builder:
        add(builder, "src/client.py", "python", [("HttpClient.send", 0), ("HttpClient.close", 1)])
        add(builder, "src/service.py", "python", [("Service.run", 2)])
        add(builder, "web/app.js", "javascript", [("renderChart", 3)])
        builder.commit()
    return store.open("github.com/acme/widgets")


@pytest.fixture
def built(store: Store) -> RepoIndex:
    return build(store)


@pytest.fixture
def local_built(local_store: Store) -> RepoIndex:
    return build(local_store)


def test_a_built_version_is_listed_and_searchable(store: Store, built: RepoIndex) -> None:
    assert [r.id for r in store.list()] == ["github.com/acme/widgets"]
    saved = store.get("github.com/acme/widgets")
    assert saved is not None and (saved.version, saved.file_count, saved.chunk_count) == (1, 3, 4)
    assert saved.created_at and saved.updated_at

    best_id, best_score = built.dense_search(unit(2), 2)[0]
    (best,) = built.get_chunks([best_id])
    assert (best.path, best.symbol, best.start_line) == ("src/service.py", "Service.run", 1)
    assert best_score == pytest.approx(1.0)

    lexical_ids = [chunk_id for chunk_id, _ in built.lexical_search("renderChart", 5)]
    assert [c.path for c in built.get_chunks(lexical_ids)][0] == "web/app.js"


def test_dense_filters_still_return_k_hits_from_the_allowed_set(built: RepoIndex) -> None:
    by_language = built.get_chunks([i for i, _ in built.dense_search(unit(0), 10, language="javascript")])
    assert [c.path for c in by_language] == ["web/app.js"]
    by_prefix = built.get_chunks([i for i, _ in built.dense_search(unit(3), 2, path_glob="src")])
    assert len(by_prefix) == 2 and all(c.path.startswith("src/") for c in by_prefix)
    by_glob = built.get_chunks([i for i, _ in built.dense_search(unit(0), 10, path_glob="*/client.py")])
    assert {c.symbol for c in by_glob} == {"HttpClient.send", "HttpClient.close"}
    assert built.dense_search(unit(0), 5, language="rust") == []


def test_lookups_by_id_file_and_symbol(built: RepoIndex) -> None:
    ids = [i for i, _ in built.dense_search(unit(1), 4)]
    assert [c.id for c in built.get_chunks(list(reversed(ids)))] == list(reversed(ids))
    assert [c.symbol for c in built.chunks_for_file("src/client.py")] == [
        "HttpClient.send",
        "HttpClient.close",
    ]
    assert [c.path for c in built.find_symbol("send")] == ["src/client.py"]
    assert "def run()" in (built.file_text("src/service.py") or "")
    assert built.file_text("missing.py") is None
    files = {info.path: info for info in built.list_files()}
    assert files["src/client.py"].chunk_count == 2 and files["web/app.js"].language == "javascript"
    assert built.languages() == {"python": 2, "javascript": 1}


def test_repeated_span_lookups_are_remembered_per_version(
    local_built: RepoIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search repeats these lookups; a version's database never changes, so a repeat asks SQLite
    nothing (each SQLite call gives the GIL up and waits for it behind the event loop)."""
    first = (
        local_built.symbol_spans("src/client.py", "HttpClient.send"),
        local_built.chunk_ids_at("src/client.py", 12),
    )
    statements: list[str] = []
    local_built._conn.set_trace_callback(statements.append)
    assert (
        local_built.symbol_spans("src/client.py", "HttpClient.send"),
        local_built.chunk_ids_at("src/client.py", 12),
    ) == first
    assert first == ([(1, 9)], [2]) and statements == []
    gc.collect()
    gc.collect()  # the outer tuple is untracked once its rows are
    assert not any(gc.is_tracked(rows) for rows in local_built._lookups.values())
    monkeypatch.setattr(rag.store.index, "LOOKUP_MEMO_ROWS", 2)
    local_built.chunk_ids_at("src/client.py", 1)  # a third lookup drops the oldest
    assert len(local_built._lookups) == 2
    assert local_built.symbol_spans("src/client.py", "HttpClient.send") == [(1, 9)] and len(statements) == 2


def test_version_dir_holds_no_pickles(local_built: RepoIndex) -> None:
    assert sorted(p.name for p in local_built.version_dir.iterdir()) == [
        "checksums.json",
        "index.faiss",
        "meta.sqlite",
        "record.json",
    ]
    assert json.loads((local_built.version_dir / "record.json").read_text())["embedder"] == "test-embedder"


def test_update_from_a_base_removes_files_everywhere_and_reuses_vectors(
    store: Store, built: RepoIndex
) -> None:
    send_hash = built.find_symbol("HttpClient.send")[0].content_hash
    with store.builder(dataclasses.replace(built.record), built) as builder:
        assert builder.file_hashes().keys() == {"src/client.py", "src/service.py", "web/app.js"}
        reused = builder.reusable_vectors([send_hash, "unknown-hash"])
        assert list(reused) == [send_hash]
        np.testing.assert_array_equal(reused[send_hash], unit(0))
        assert builder.remove_file("web/app.js") == 1
        add(builder, "src/service.py", "python", [("Service.run", 4), ("Service.stop", 5)])
        builder.commit()

    index = store.open("github.com/acme/widgets")
    assert index is not built and index.record.version == 2
    assert {f.path for f in index.list_files()} == {"src/client.py", "src/service.py"}
    assert index.lexical_search("renderChart", 5) == []
    assert all(
        c.path != "web/app.js" for c in index.get_chunks([i for i, _ in index.dense_search(unit(3), 10)])
    )
    (top_id, _), *_ = index.dense_search(unit(5), 1)
    assert index.get_chunks([top_id])[0].symbol == "Service.stop"
    assert index.size == 4 == index.record.chunk_count
    assert store.get("github.com/acme/widgets") == index.record


def test_an_update_keeps_only_the_new_local_version(local_store: Store, local_built: RepoIndex) -> None:
    with local_store.builder(dataclasses.replace(local_built.record), local_built) as builder:
        builder.remove_file("web/app.js")
        builder.commit()
    versions = local_store.paths("github.com/acme/widgets").versions
    assert sorted(p.name for p in versions.iterdir()) == ["000002"]


def test_open_is_cached_until_the_version_changes(store: Store, built: RepoIndex) -> None:
    assert store.open("github.com/acme/widgets") is built
    with pytest.raises(NotFoundError, match="not indexed"):
        store.open("github.com/acme/other")


def test_leaving_without_commit_keeps_the_live_version(store: Store, built: RepoIndex) -> None:
    with (
        pytest.raises(RuntimeError, match="boom"),
        store.builder(dataclasses.replace(built.record), built) as b,
    ):
        b.remove_file("src/client.py")
        raise RuntimeError("boom")
    assert not list(store.paths("github.com/acme/widgets").root.glob("build-*"))
    assert store.open("github.com/acme/widgets") is built
    assert store.get("github.com/acme/widgets").version == 1
    assert {f.path for f in built.list_files()} == {"src/client.py", "src/service.py", "web/app.js"}


def test_leftover_build_dirs_of_killed_runs_are_removed(local_store: Store, local_built: RepoIndex) -> None:
    leftover = local_store.paths("github.com/acme/widgets").root / "build-99999-dead"
    leftover.mkdir()
    (leftover / "meta.sqlite").write_text("half written")
    with local_store.builder(dataclasses.replace(local_built.record), local_built) as builder:
        assert not leftover.exists()
        builder.commit()


def test_a_second_builder_is_refused_while_the_first_holds_the_lock(store: Store, built: RepoIndex) -> None:
    holder = f"pid {os.getpid()}" if type(store) is Store else "another process"
    with store.builder(dataclasses.replace(built.record), built):
        with pytest.raises(IndexBusyError, match=holder) as caught:
            store.builder(dataclasses.replace(built.record), built).__enter__()
        assert caught.value.code == "busy"
        with pytest.raises(IndexBusyError):
            store.delete("github.com/acme/widgets")
    with store.builder(dataclasses.replace(built.record), built) as builder:  # released again
        builder.commit()


def test_embedder_mismatch_is_a_clear_error(store: Store, built: RepoIndex) -> None:
    built.check_embedder(FakeEmbedderIdentity("test-embedder", DIM))
    with pytest.raises(EmbedderMismatchError, match="--reindex") as caught:
        built.check_embedder(FakeEmbedderIdentity("other-model", 384))
    assert "repolens ingest https://github.com/acme/widgets --reindex" in str(caught.value)
    other = dataclasses.replace(built.record, embedder="other-model", dimension=384)
    with pytest.raises(EmbedderMismatchError):
        store.builder(other, built)


def test_delete_removes_index_and_clone(store: Store, built: RepoIndex) -> None:
    clone = store.clone_dir("github.com/acme/widgets")
    clone.mkdir(parents=True)
    assert store.delete("github.com/acme/widgets") is True
    assert not clone.exists() and store.list() == [] and store.get("github.com/acme/widgets") is None
    assert store.delete("github.com/acme/widgets") is False
    with pytest.raises(NotFoundError):
        store.open("github.com/acme/widgets")


def test_repo_folders_are_flat_and_distinct() -> None:
    assert repo_folder("gitlab.com/group/sub/repo") == "gitlab.com%2Fgroup%2Fsub%2Frepo"
    assert repo_folder("github.com/a/b@v1.0") != repo_folder("github.com/a/b")
    deep_a, deep_b = repo_folder("local/" + "x/" * 150 + "a"), repo_folder("local/" + "x/" * 150 + "b")
    assert deep_a != deep_b and len(deep_a) <= 200 and "/" not in deep_a


def test_a_builder_with_a_stale_base_builds_on_the_newest_version(store: Store, built: RepoIndex) -> None:
    with store.builder(dataclasses.replace(built.record), built) as first:
        add(first, "src/new.py", "python", [("fresh", 6)])
        first.commit()
    with store.builder(dataclasses.replace(built.record), built) as stale:  # `built` is version 1
        assert "src/new.py" in stale.file_hashes()
        stale.commit()
    assert {f.path for f in store.open("github.com/acme/widgets").list_files()} >= {"src/new.py"}


def test_a_version_garbage_collected_while_it_loads_is_not_called_damaged(
    local_store: Store, local_built: RepoIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader that read the `current` link just before an update swapped it and removed the old
    version finds that version's files gone half-way through loading (after its checksums, before
    SQLite opens): it loads the new version, not an `index_corrupt` error."""
    repo_id = local_built.record.id
    with local_store.builder(dataclasses.replace(local_built.record), local_built) as builder:
        builder.remove_file("web/app.js")
        builder.commit()
    paths = local_store.paths(repo_id)
    old = paths.root / "versions" / "000001"
    shutil.copytree(paths.root / os.readlink(paths.current), old)  # the version the reader read the link of
    os.symlink("versions/000001", paths.root / "current.tmp")
    os.replace(paths.root / "current.tmp", paths.current)
    local_store._loaded.clear()
    verify = rag.store.index.verify_checksums

    def collected_meanwhile(version_dir: Path) -> None:
        verify(version_dir)
        if version_dir == old:  # the update swaps the link and removes the version being loaded
            os.symlink("versions/000002", paths.root / "current.tmp")
            os.replace(paths.root / "current.tmp", paths.current)
            paths.remove_old_versions()

    monkeypatch.setattr(rag.store.index, "verify_checksums", collected_meanwhile)
    index = local_store.open(repo_id)
    assert index.version_dir.name == "000002" and index.file_text("web/app.js") is None


def test_a_live_version_that_fails_to_load_is_damaged(local_store: Store, local_built: RepoIndex) -> None:
    paths = local_store.paths(local_built.record.id)
    (paths.current / "meta.sqlite").write_bytes(b"not a database")
    (paths.current / "checksums.json").unlink()
    local_store._loaded.clear()
    with pytest.raises(IndexCorruptError, match="damaged"):
        local_store.open(local_built.record.id)
