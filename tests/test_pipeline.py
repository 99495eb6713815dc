"""The ingest pipeline end to end: real git, the real default embedder, real FAISS and SQLite."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from ingest import IngestOptions, Progress, ingest, update
from ingest.errors import IngestCancelled
from ingest.filters import FilterSpec
from ingest.pipeline import EmptyRepositoryError
from rag.embedders import CachedEmbedder, Embedder
from rag.embedders.base import EmbedderWrapper
from rag.embedders.base import Progress as EmbedProgress
from rag.errors import EmbedderMismatchError
from rag.store import Store
from tests.support.repos import (
    FILES,
    INDEXED_PATHS,
    RARE_IDENTIFIER,
    commit_all,
    git,
    make_fixture_repo,
    write_files,
)
from tests.support.stored import files_holding

if TYPE_CHECKING:
    from tests.support.git_http_server import GitHttpServer


class RecordingEmbedder(EmbedderWrapper):
    """The real embedder, remembering every text the pipeline asked it to embed."""

    def __init__(self, inner: Embedder, name: str | None = None) -> None:
        super().__init__(inner)
        self.name = name or inner.name
        self.embedded: list[str] = []

    def embed_documents(self, texts: Sequence[str], progress: EmbedProgress | None = None) -> np.ndarray:
        self.embedded.extend(texts)
        return self.inner.embed_documents(texts, progress=progress)

    def embedded_paths(self) -> set[str]:
        """The file each embedded text came from (its header is `# path:start-end ...`)."""
        return {text.split("\n", 1)[0][2:].split(":", 1)[0] for text in self.embedded}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_fixture_repo(tmp_path / "weatherline")


@pytest.fixture
def store(repolens_home: Path) -> Store:
    return Store(repolens_home)


@pytest.fixture
def spy(shared_embedder: Embedder) -> RecordingEmbedder:
    return RecordingEmbedder(shared_embedder)


def paths_found(store: Store, repo_id: str, query: str, embedder: Embedder) -> list[str]:
    index = store.open(repo_id)
    ids = [chunk_id for chunk_id, _ in index.dense_search(embedder.embed_query(query), 50)]
    return [chunk.path for chunk in index.get_chunks(ids)]


def lexical_paths(store: Store, repo_id: str, query: str) -> list[str]:
    index = store.open(repo_id)
    return [chunk.path for chunk in index.get_chunks([i for i, _ in index.lexical_search(query, 50)])]


def test_full_ingest_indexes_every_wanted_file(repo: Path, store: Store, spy: RecordingEmbedder) -> None:
    report = ingest(str(repo), store=store, embedder=spy)

    index = store.open(report.repo_id)
    assert [info.path for info in index.list_files()] == INDEXED_PATHS
    assert report.files == {
        "added": len(INDEXED_PATHS),
        "changed": 0,
        "removed": 0,
        "unchanged": 0,
        "rechunked": 0,
        "regraphed": 0,
        "skipped": report.files["skipped"],
    }
    assert report.files["skipped"] >= 1  # debug.log, ignored by .gitignore
    record = index.record
    assert (record.url, record.platform, record.commit) == (
        repo.resolve().as_uri(),
        "local",
        git(repo, "rev-parse", "HEAD"),
    )
    assert record.embedder == spy.name and record.chunk_count == index.size == report.chunks["total"]
    assert len(spy.embedded) == record.chunk_count == report.chunks["added"]
    assert spy.embedded_paths() == set(INDEXED_PATHS)
    assert index.file_text("weatherline/client.py") == FILES["weatherline/client.py"]

    assert lexical_paths(store, report.repo_id, RARE_IDENTIFIER)[0] == "weatherline/client.py"
    found = paths_found(store, report.repo_id, "retry failed HTTP requests with exponential backoff", spy)
    assert found[0] == "weatherline/client.py"
    assert set(report.timings) == {
        "clone_s",
        "scan_s",
        "chunk_s",
        "write_s",
        "searchable_s",
        "embed_s",
        "graph_s",
        "total_s",
    }


def test_reingesting_an_unchanged_repo_embeds_and_writes_nothing(
    repo: Path, store: Store, spy: RecordingEmbedder
) -> None:
    first = ingest(str(repo), store=store, embedder=spy)
    spy.embedded.clear()
    again = ingest(str(repo), store=store, embedder=spy)
    assert spy.embedded == []
    assert again.record.version == first.record.version
    assert again.chunks == {
        "added": 0,
        "replaced": 0,
        "removed": 0,
        "reused": 0,
        "total": first.chunks["total"],
    }
    assert again.files["unchanged"] == len(INDEXED_PATHS)


def test_update_reembeds_only_what_changed_and_drops_deleted_files(
    repo: Path, store: Store, spy: RecordingEmbedder
) -> None:
    first = ingest(str(repo), store=store, embedder=spy)
    before = store.open(first.repo_id)
    service_chunk = before.chunks_for_file("weatherline/service.py")[0]
    service_vector = before.faiss.reconstruct(service_chunk.id)
    lexical_query, dense_query = "history.jsonl CACHE_FILE", "append forecasts to a history file"
    assert "weatherline/storage.py" in lexical_paths(store, first.repo_id, lexical_query)
    assert "weatherline/storage.py" in paths_found(store, first.repo_id, dense_query, spy)[:3]

    client = FILES["weatherline/client.py"].replace("A tiny HTTP client", "A small HTTP client")
    write_files(repo, {"weatherline/client.py": client, "weatherline/units.py": '"""Unit conversions."""\n'})
    (repo / "weatherline/storage.py").unlink()
    sha = commit_all(repo, "edit client, add units, drop storage")
    spy.embedded.clear()

    report = update(first.repo_id, store=store, embedder=spy)

    assert spy.embedded_paths() == {"weatherline/client.py", "weatherline/units.py"}
    assert report.files["added"] == 1 and report.files["changed"] == 1 and report.files["removed"] == 1
    assert report.chunks["added"] == len(spy.embedded)
    after = store.open(first.repo_id)
    # The counts compare texts: the old copies taken out (storage.py, client.py) and the chunks
    # written (client.py, units.py). client.py's untouched parts are replaced by the same text, not
    # counted as removed and added again; the totals add up.
    old_texts = Counter(
        c.content_hash
        for path in ("weatherline/client.py", "weatherline/storage.py")
        for c in before.chunks_for_file(path)
    )
    new_texts = Counter(
        c.content_hash
        for path in ("weatherline/client.py", "weatherline/units.py")
        for c in after.chunks_for_file(path)
    )
    same = (old_texts & new_texts).total()
    assert same >= 1 and report.chunks["replaced"] == same
    assert report.chunks["removed"] == old_texts.total() - same >= 2
    assert report.chunks["added"] == new_texts.total() - same >= 2
    assert report.chunks["total"] == first.chunks["total"] + report.chunks["added"] - report.chunks["removed"]
    assert after.record.commit == sha and after.record.version > first.record.version
    assert "weatherline/storage.py" not in {info.path for info in after.list_files()}
    lexical_hits = after.get_chunks([i for i, _ in after.lexical_search("history.jsonl CACHE_FILE", 50)])
    assert "weatherline/storage.py" not in {chunk.path for chunk in lexical_hits}
    assert "weatherline/storage.py" not in paths_found(
        store, first.repo_id, "append forecasts to a history file", spy
    )
    kept = after.chunks_for_file("weatherline/service.py")[0]
    assert kept.id == service_chunk.id
    np.testing.assert_array_equal(after.faiss.reconstruct(kept.id), service_vector)


def test_update_reuses_the_stored_filters(repo: Path, store: Store, spy: RecordingEmbedder) -> None:
    options = IngestOptions(filters=FilterSpec(exclude_dirs=["web"], exclude_files=["*.md"]))
    first = ingest(str(repo), options, store=store, embedder=spy)
    write_files(repo, {"web/extra.js": "export const x = 1;\n", "weatherline/extra.py": "X = 1\n"})
    commit_all(repo, "more files")
    report = update(first.repo_id, store=store, embedder=spy)
    paths = {info.path for info in store.open(first.repo_id).list_files()}
    assert "weatherline/extra.py" in paths
    assert not any(path.startswith("web/") or path.endswith(".md") for path in paths)
    assert report.record.filters["exclude_dirs"] == ["web"]


def test_a_different_embedder_needs_reindex(repo: Path, store: Store, spy: RecordingEmbedder) -> None:
    first = ingest(str(repo), store=store, embedder=spy)
    other = RecordingEmbedder(spy.inner, name="another-embedder")
    with pytest.raises(EmbedderMismatchError, match="--reindex"):
        ingest(str(repo), store=store, embedder=other)
    assert store.open(first.repo_id).record.embedder == spy.name

    rebuilt = ingest(str(repo), IngestOptions(reindex=True), store=store, embedder=other)
    assert (
        rebuilt.record.embedder == "another-embedder" and rebuilt.chunks["added"] == rebuilt.chunks["total"]
    )
    with pytest.raises(EmbedderMismatchError):
        store.open(first.repo_id).check_embedder(spy)


def test_nothing_left_after_filters_is_a_clear_error(
    repo: Path, store: Store, spy: RecordingEmbedder
) -> None:
    first = ingest(str(repo), store=store, embedder=spy)
    options = IngestOptions(filters=FilterSpec(include_files=["*.rs"]))
    with pytest.raises(EmptyRepositoryError, match="no files to index") as caught:
        ingest(str(repo), options, store=store, embedder=spy)
    assert caught.value.code == "empty"
    assert store.open(first.repo_id).record.version == first.record.version
    assert len(store.open(first.repo_id).list_files()) == len(INDEXED_PATHS)


def test_cancel_while_embedding_leaves_the_searchable_version_and_a_rerun_completes_it(
    repo: Path, store: Store, spy: RecordingEmbedder
) -> None:
    first = ingest(str(repo), store=store, embedder=spy)
    write_files(
        repo, {f"weatherline/gen_{n}.py": f"def generated_{n}():\n    return {n}\n" for n in range(5)}
    )
    commit_all(repo, "generated")
    cancel = threading.Event()

    def on_progress(event: Progress) -> None:
        if event.stage == "embedding":
            cancel.set()

    with pytest.raises(IngestCancelled):
        ingest(str(repo), store=store, embedder=spy, progress=on_progress, cancel=cancel)
    live = store.open(first.repo_id)
    assert live.record.version > first.record.version
    assert live.record.index_state == f"partial {first.record.dense_chunks}/{live.record.dense_total}"
    assert "weatherline/gen_3.py" in lexical_paths(store, first.repo_id, "generated_3")
    assert not list(store.paths(first.repo_id).root.glob("build-*"))
    spy.embedded.clear()
    rerun = ingest(str(repo), store=store, embedder=spy)  # the lock was released
    assert rerun.files["added"] == 0 and rerun.record.index_state == "complete"
    assert spy.embedded_paths() == {f"weatherline/gen_{n}.py" for n in range(5)}
    assert store.open(first.repo_id).size == rerun.record.chunk_count


def test_progress_covers_every_stage(repo: Path, store: Store, spy: RecordingEmbedder) -> None:
    events: list[Progress] = []
    ingest(str(repo), store=store, embedder=spy, progress=events.append)
    stages = list(dict.fromkeys(event.stage for event in events))
    assert stages == [
        "cloning",
        "scanning",
        "chunking",
        "writing",
        "searchable",
        "graph",
        "embedding",
        "done",
    ]
    last_embedding = [e for e in events if e.stage == "embedding"][-1]
    assert last_embedding.chunks_done == last_embedding.chunks_total > 0
    assert last_embedding.eta_s == 0 and last_embedding.rate > 0
    # A count is shown only where it advances: a stage that says "of N files" ends at N (before:
    # `writing` said 0/N once, so the CLI and the page showed "0/N files" for the whole step).
    for stage in stages:
        last = [event for event in events if event.stage == stage][-1]
        assert last.files_done == last.files_total or not last.files_total, last


def test_clone_with_a_token_and_update_after_a_push(
    git_http_server: GitHttpServer,
    store: Store,
    spy: RecordingEmbedder,
    repolens_home: Path,
) -> None:
    first_sha = git_http_server.add_repo(
        "acme/weather", {"app.py": "def hello():\n    return 1\n", "README.md": "# hi\n"}
    )
    url = git_http_server.url_for("acme/weather")
    report = ingest(url, IngestOptions(token=git_http_server.token), store=store, embedder=spy)
    assert report.record.commit == first_sha and git_http_server.token not in report.record.url

    second_sha = git_http_server.add_repo("acme/weather", {"app.py": "def hello():\n    return 2\n"})
    updated = update(report.repo_id, IngestOptions(token=git_http_server.token), store=store, embedder=spy)
    assert updated.record.commit == second_sha
    assert (updated.files["changed"], updated.files["unchanged"]) == (1, 1)
    assert "return 2" in (store.open(report.repo_id).file_text("app.py") or "")
    assert files_holding(repolens_home, git_http_server.token.encode()) == []


def test_a_fresh_data_dir_takes_the_vectors_the_cache_has_for_its_chunks(
    repo: Path, tmp_path: Path, spy: RecordingEmbedder
) -> None:
    """The vector cache outlives a data dir: a new index of the same files finds every chunk's vector
    there by the hash its chunk worker computed, and is complete at its searchable milestone."""
    cached = CachedEmbedder(spy, tmp_path / "cache")
    ingest(str(repo), store=Store(tmp_path / "first"), embedder=cached)
    assert spy.embedded
    spy.embedded.clear()
    report = ingest(str(repo), IngestOptions(dense=False), store=Store(tmp_path / "second"), embedder=cached)
    assert spy.embedded == [] and report.record.index_state == "complete"
    assert report.record.dense_chunks == report.record.dense_total > 0
