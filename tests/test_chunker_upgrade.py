"""An index remembers the chunker that built it: after an upgrade that changed chunking, a plain
update chunks every file again (no `--reindex`), re-embeds only the texts that changed, and a
crash on the way leaves the old version serving."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from ingest import Progress, chunk_pool, update
from ingest import pipeline as ingest_pipeline
from ingest.chunking import CHUNKER_VERSION, Chunker
from ingest.reader import SourceFile
from rag.embedders import Embedder
from rag.lexical import chunk_terms
from rag.store import Store
from rag.store.layout import BUILD_PREFIX
from rag.store.schema import RECORD_FILE
from tests.support.repos import FILES, INDEXED_PATHS, commit_all, make_fixture_repo, write_files
from tests.test_pipeline import RecordingEmbedder

OLD_VERSION = CHUNKER_VERSION
NEW_VERSION = CHUNKER_VERSION + 1  # the upgrade's (the tests bump the constant)
real_chunk_file = chunk_pool.chunk_file


def old_chunk_file(chunker: Chunker, file: SourceFile) -> chunk_pool.ChunkedFile:
    """An older chunker: Python chunks had no labels (symbol) and no context lines; the chunks of
    every other language came out as they do now."""
    result = real_chunk_file(chunker, file)
    if file.language != "python":
        return result
    chunks = [dataclasses.replace(chunk, symbol=None, context=None) for chunk in result.chunks]
    terms = [chunk_terms(chunk) for chunk in chunks]
    return dataclasses.replace(result, chunks=chunks, terms=terms, hashes=[c.content_hash for c in chunks])


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_fixture_repo(tmp_path / "weatherline")


@pytest.fixture
def store(repolens_home: Path) -> Store:
    return Store(repolens_home)


@pytest.fixture
def spy(shared_embedder: Embedder) -> RecordingEmbedder:
    return RecordingEmbedder(shared_embedder)


@pytest.fixture
def old_index(repo: Path, store: Store, spy: RecordingEmbedder, monkeypatch: pytest.MonkeyPatch) -> str:
    """The fixture repository indexed by the older chunker (its version recorded), then RepoLens
    upgraded: the real chunker is back, and `CHUNKER_VERSION` was bumped."""
    with monkeypatch.context() as old:
        old.setattr(chunk_pool, "chunk_file", old_chunk_file)
        repo_id = ingest_pipeline.ingest(str(repo), store=store, embedder=spy).repo_id
    assert store.get(repo_id).chunker_version == OLD_VERSION  # type: ignore[union-attr]
    monkeypatch.setattr(ingest_pipeline, "CHUNKER_VERSION", NEW_VERSION)
    spy.embedded.clear()
    return repo_id


def chunk_spans(store: Store, repo_id: str) -> list[tuple[str, int, int, str | None, str]]:
    """Every chunk of the live version: where it is, its label, and the hash of its embedded text."""
    index = store.open(repo_id)
    return sorted(
        (c.path, c.start_line, c.end_line, c.symbol, c.content_hash)
        for info in index.list_files()
        for c in index.chunks_for_file(info.path)
    )


def test_a_plain_update_after_a_chunker_upgrade_rechunks_every_file(
    repo: Path, store: Store, spy: RecordingEmbedder, old_index: str, tmp_path: Path
) -> None:
    old_texts = Counter(span[-1] for span in chunk_spans(store, old_index))
    old_hashes = set(old_texts)
    old_version = store.get(old_index).version  # type: ignore[union-attr]
    events: list[Progress] = []
    serving: list[tuple[int, str]] = []

    def on_progress(event: Progress) -> None:
        events.append(event)
        if event.stage == "embedding":  # the old version serves, whole, until the new one is complete
            live = store.get(old_index)
            assert live is not None
            serving.append((live.version, live.index_state))

    report = update(old_index, store=store, embedder=spy, progress=on_progress)

    # Every file chunked again although none changed, and the run says why.
    reason = f"chunker version {OLD_VERSION} -> {NEW_VERSION}"
    assert report.files["unchanged"] == report.files["rechunked"] == len(INDEXED_PATHS)
    assert report.rechunk_reason == reason
    (said,) = [e for e in events if e.message.startswith("re-chunking")]
    assert (said.message, said.files_total) == (
        f"re-chunking {len(INDEXED_PATHS)} files: {reason}",
        len(INDEXED_PATHS),
    )
    assert report.to_json()["chunker_version"] == NEW_VERSION
    record = store.get(old_index)
    assert record is not None and record.chunker_version == NEW_VERSION
    assert record.version == old_version + 1 and record.index_state == "complete"  # one commit
    assert serving and set(serving) == {(old_version, "complete")}

    # The index holds what a fresh build with this chunker holds, and its labels are searchable.
    fresh = Store(tmp_path / "fresh-home")
    fresh_id = ingest_pipeline.ingest(str(repo), store=fresh, embedder=spy.inner).repo_id
    new_spans = chunk_spans(store, old_index)
    assert new_spans == chunk_spans(fresh, fresh_id)
    index = store.open(old_index)
    hits = index.get_chunks([i for i, _ in index.lexical_search("backoff_delay", 10)])
    assert any(hit.symbol == "backoff_delay" for hit in hits)

    # Only the texts that changed were embedded; the rest kept the old version's vectors.
    new_hashes = {span[-1] for span in new_spans}
    embedded = [hashlib.sha256(text.encode()).hexdigest() for text in spy.embedded]
    assert set(embedded) == new_hashes - old_hashes
    assert len(embedded) == len(set(embedded))  # each text once
    kept = new_hashes & old_hashes
    assert kept and report.chunks["reused"] == sum(1 for span in new_spans if span[-1] in kept)
    assert not any(text.startswith("# README.md") for text in spy.embedded)
    # Re-chunked copies that came out the same are "replaced", not counted as removed (and added).
    new_texts = Counter(span[-1] for span in new_spans)
    assert report.chunks == {
        "added": (new_texts - old_texts).total(),
        "replaced": (old_texts & new_texts).total(),
        "removed": (old_texts - new_texts).total(),
        "reused": report.chunks["reused"],
        "total": len(new_spans),
    }
    assert report.chunks["replaced"] >= 1  # README.md and the other unchanged texts

    # The next plain update is a no-op again.
    spy.embedded.clear()
    again = update(old_index, store=store, embedder=spy)
    assert again.record.version == record.version and again.files["rechunked"] == 0
    assert again.rechunk_reason is None and spy.embedded == []


def test_an_index_from_before_chunker_versions_is_rechunked(
    repo: Path, store: Store, spy: RecordingEmbedder, old_index: str
) -> None:
    """A record with no `chunker_version` (written before it existed) reads as 0: outdated."""
    live = store.paths(old_index).current / RECORD_FILE
    data = json.loads(live.read_text())
    del data["chunker_version"]
    live.write_text(json.dumps(data))
    assert store.get(old_index).chunker_version == 0  # type: ignore[union-attr]

    report = update(old_index, store=store, embedder=spy)

    assert report.rechunk_reason == f"chunker version 0 (not recorded) -> {NEW_VERSION}"
    assert report.files["rechunked"] == len(INDEXED_PATHS)
    assert store.get(old_index).chunker_version == NEW_VERSION  # type: ignore[union-attr]


def test_a_crash_while_embedding_the_rechunked_texts_leaves_the_old_version_serving(
    store: Store, spy: RecordingEmbedder, old_index: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = store.get(old_index)
    spans = chunk_spans(store, old_index)

    def crash(*_: object, **__: object) -> None:
        raise RuntimeError("injected crash while embedding")

    with monkeypatch.context() as crashing:
        crashing.setattr(spy, "embed_documents", crash)
        with pytest.raises(RuntimeError, match="injected crash"):
            update(old_index, store=store, embedder=spy)

    assert store.get(old_index) == before and chunk_spans(store, old_index) == spans
    report = update(old_index, store=store, embedder=spy)
    assert report.record.chunker_version == NEW_VERSION and report.record.index_state == "complete"


def test_a_crash_while_rechunking_leaves_the_old_version_serving(
    store: Store, spy: RecordingEmbedder, old_index: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = store.get(old_index)
    spans = chunk_spans(store, old_index)
    calls = 0

    def crashing_chunk_file(chunker: Chunker, file: SourceFile) -> chunk_pool.ChunkedFile:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise RuntimeError("injected crash while re-chunking")
        return real_chunk_file(chunker, file)

    with monkeypatch.context() as crashing:
        crashing.setattr(chunk_pool, "chunk_file", crashing_chunk_file)
        with pytest.raises(RuntimeError, match="injected crash"):
            update(old_index, store=store, embedder=spy)

    assert calls == 4
    assert store.get(old_index) == before  # same version, same chunker version
    assert chunk_spans(store, old_index) == spans
    index = store.open(old_index)
    assert index.lexical_search("backoff_delay", 10)  # still answers
    assert not list(store.paths(old_index).root.glob(f"{BUILD_PREFIX}*"))  # the build left no trace

    report = update(old_index, store=store, embedder=spy)  # the next run finishes the job
    assert report.files["rechunked"] == len(INDEXED_PATHS)
    assert store.get(old_index).chunker_version == NEW_VERSION  # type: ignore[union-attr]


EDITED_WORD = "zqxwarbleflux"


def edit_the_repo(repo: Path) -> None:
    """What a user does before the upgrade's first update: edits a file and adds one."""
    client = FILES["weatherline/client.py"] + f"\n{EDITED_WORD} = 42\n"
    write_files(repo, {"weatherline/client.py": client, "weatherline/units.py": '"""Unit conversions."""\n'})
    commit_all(repo, "edit the client, add units")


def test_files_changed_with_a_rechunk_are_searchable_at_the_milestone_while_the_rest_is_held(
    repo: Path, store: Store, spy: RecordingEmbedder, old_index: str, tmp_path: Path
) -> None:
    """The held re-chunk used to hold back the user's edit too, until every re-chunked text was
    embedded. Now the edit is live at the searchable milestone, and the unchanged files keep their
    old chunks (and the record its old chunker version) until their re-chunk is complete."""
    old_unchanged = [span for span in chunk_spans(store, old_index) if span[0] == "weatherline/service.py"]
    edit_the_repo(repo)
    seen: dict[str, list[tuple[bool, int, list[object]]]] = {"searchable": [], "held": []}
    rechunking = False

    def on_progress(event: Progress) -> None:
        nonlocal rechunking
        rechunking = rechunking or event.message.startswith("re-chunking")
        if event.stage == "searchable" or (rechunking and event.stage == "embedding"):
            index = store.open(old_index)
            found = bool(index.lexical_search(EDITED_WORD, 5))
            service = [span for span in chunk_spans(store, old_index) if span[0] == "weatherline/service.py"]
            key = "searchable" if event.stage == "searchable" else "held"
            seen[key].append((found, index.record.chunker_version, service))

    report = update(old_index, store=store, embedder=spy, progress=on_progress)

    # At the milestone: the edit answers, the rest is the old chunker's, and the record says so.
    assert seen["searchable"] == [(True, OLD_VERSION, old_unchanged)]
    assert seen["held"] and all(state == (True, OLD_VERSION, old_unchanged) for state in seen["held"])
    assert (report.files["changed"], report.files["added"]) == (1, 1)
    assert report.files["rechunked"] == len(INDEXED_PATHS) - 1
    # At the end: one chunker, the same chunks as a fresh build of the edited repository.
    assert report.record.chunker_version == NEW_VERSION and report.record.index_state == "complete"
    fresh = Store(tmp_path / "fresh-home")
    fresh_id = ingest_pipeline.ingest(str(repo), store=fresh, embedder=spy.inner).repo_id
    assert chunk_spans(store, old_index) == chunk_spans(fresh, fresh_id)


def test_a_crash_in_the_held_rechunk_keeps_the_edit_and_the_old_chunker_version(
    repo: Path, store: Store, spy: RecordingEmbedder, old_index: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    edit_the_repo(repo)
    real_embed = spy.embed_documents

    def crash_on_rechunked(texts: list[str], progress: object = None) -> object:
        if any(text.startswith("# weatherline/service.py") for text in texts):
            raise RuntimeError("injected crash in the re-chunk")
        return real_embed(texts, progress=progress)  # type: ignore[arg-type]

    with monkeypatch.context() as crashing:
        crashing.setattr(spy, "embed_documents", crash_on_rechunked)
        with pytest.raises(RuntimeError, match="injected crash"):
            update(old_index, store=store, embedder=spy)

    live = store.get(old_index)
    assert live is not None and live.chunker_version == OLD_VERSION and live.index_state == "complete"
    assert store.open(old_index).lexical_search(EDITED_WORD, 5)
    assert not list(store.paths(old_index).root.glob(f"{BUILD_PREFIX}*"))
    report = update(old_index, store=store, embedder=spy)  # the next run re-chunks what is left
    assert report.files["changed"] == 0 and report.files["rechunked"] == len(INDEXED_PATHS) + 1
    assert report.record.chunker_version == NEW_VERSION and report.record.index_state == "complete"
