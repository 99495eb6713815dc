"""Lexical first, dense in the background: a version answers as soon as the BM25 index is written,
dense versions follow in priority order, and every surface says how far embedding has got."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from ingest import IngestOptions, Progress, ingest, pipeline
from ingest.errors import IngestCancelled
from ingest.lexical_only import minified, no_semantic_value
from ingest.pipeline import embed_priority
from rag.answer import AnswerRequest, AnswerService
from rag.embedders import CachedEmbedder, Embedder
from rag.events import UNFINISHED_INDEX_STEP
from rag.retrieval import index_note
from rag.settings import Settings
from rag.store import Store
from rag.store.layout import RepoLock
from tests.support.graph_repos import make_repo
from tests.support.repos import RARE_IDENTIFIER, make_fixture_repo


class OrderedEmbedder:
    """The real (uncached) embedder, remembering the order texts were embedded in."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner.inner if isinstance(inner, CachedEmbedder) else inner
        self.name, self.dimension, self.max_tokens = (
            self.inner.name,
            self.inner.dimension,
            self.inner.max_tokens,
        )
        self.embedded: list[str] = []

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def embed_documents(self, texts: Sequence[str], progress: Any = None) -> np.ndarray:
        self.embedded.extend(texts)
        return self.inner.embed_documents(texts, progress=progress)

    def embed_query(self, text: str) -> np.ndarray:
        return self.inner.embed_query(text)

    def paths(self) -> list[str]:
        return [text.split("\n", 1)[0][2:].split(":", 1)[0] for text in self.embedded]


@pytest.fixture
def embedder(shared_embedder: Embedder) -> OrderedEmbedder:
    return OrderedEmbedder(shared_embedder)


def test_a_search_during_the_dense_phase_finds_lexical_hits_and_says_the_index_is_partial(
    tmp_path: Path, live_server: Any, embedder: OrderedEmbedder
) -> None:
    store: Store = live_server.app.state.services.store
    repo = make_fixture_repo(tmp_path / "weatherline")
    seen: dict[str, Any] = {}

    def on_progress(event: Progress) -> None:
        if event.stage == "searchable":  # the ingest thread waits here: the dense phase has not run
            repo_id = store.list()[0].id
            response = httpx.post(
                f"{live_server.base_url}/api/repos/{repo_id}/search",
                json={"query": RARE_IDENTIFIER, "k": 3},
                timeout=30,
            )
            seen["event"], seen["search"] = event, response.json()

    report = ingest(str(repo), store=store, embedder=embedder, progress=on_progress)
    searched = seen["search"]
    assert seen["event"].index_state == "lexical" and seen["event"].chunks_total == report.record.dense_total
    assert searched["index_state"] == "lexical" and "keyword (BM25)" in searched["note"]
    assert "results improve as embedding completes" in searched["note"]  # this ingest is embedding it
    assert searched["results"][0]["path"] == "weatherline/client.py"
    assert (
        report.record.index_state == "complete" and report.timings["searchable_s"] < report.timings["total_s"]
    )
    done = httpx.post(
        f"{live_server.base_url}/api/repos/{report.repo_id}/search",
        json={"query": "retry backoff"},
        timeout=30,
    ).json()
    assert done["index_state"] == "complete" and "note" not in done


def test_a_lexical_index_nothing_is_embedding_says_so_and_how_to_finish_it(
    tmp_path: Path, live_server: Any, embedder: OrderedEmbedder
) -> None:
    """An ingest stopped in its dense phase (Ctrl-C during the first `repolens ask`, a killed server)
    leaves a lexical index nobody finishes: search says so and names the fix, not "results improve"."""
    store: Store = live_server.app.state.services.store
    repo = make_fixture_repo(tmp_path / "stopped")
    report = ingest(str(repo), IngestOptions(dense=False), store=store, embedder=embedder)
    assert report.record.index_state == "lexical"

    def note() -> str:
        response = httpx.post(
            f"{live_server.base_url}/api/repos/{report.repo_id}/search", json={"query": "retry"}, timeout=30
        )
        return str(response.json()["note"])

    assert note() == (
        "the index is lexical and nothing is embedding it (its ingest stopped before the end): dense vectors "
        "cover no chunk yet, keyword (BM25) search covers every file; run "
        f"`repolens embed {report.repo_id}` (or update the repository) to finish it"
    )
    with RepoLock(store.paths(report.repo_id), report.repo_id):  # a `repolens embed` at work
        assert "results improve as embedding completes" in note()


def test_a_build_that_completes_after_the_search_is_not_called_unfinished(
    tmp_path: Path, embedder: OrderedEmbedder
) -> None:
    """The record a search read was lexical; by the time the note is made its build has completed and
    released the lock (a chat's first question while the dense phase ends): not "nothing is embedding
    it", and no `repolens embed` advice (the answer once ended with that note)."""
    store = Store(tmp_path / "home")
    report = ingest(
        str(make_fixture_repo(tmp_path / "racing")),
        IngestOptions(dense=False),
        store=store,
        embedder=embedder,
    )
    read_before = report.record
    pipeline.finish_embedding(report.repo_id, store=store, embedder=embedder)
    assert not store.building(report.repo_id)
    note = index_note(store, read_before)
    assert note is not None and not note.unfinished
    assert note.text.startswith("the index is lexical: ") and "repolens embed" not in note.text


def test_dense_versions_land_incrementally_source_before_tests_and_docs(
    tmp_path: Path, embedder: OrderedEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "EMBED_SLICE", 4)
    repo = make_repo(
        tmp_path / "ordered",
        {
            "README.md": "# Ordered\n\nA project whose docs come last.\n",
            "docs/guide.md": "# Guide\n\nHow to use it.\n",
            "tests/test_core.py": "def test_core():\n    assert core() == 1\n",
            **{f"src/mod_{n}.py": f"def core_{n}():\n    return {n}\n" for n in range(6)},
        },
    )
    store = Store(tmp_path / "home")
    states: list[str] = []

    def on_progress(event: Progress) -> None:
        if event.index_state is not None:
            states.append(event.index_state)

    report = ingest(
        str(repo), IngestOptions(dense_commit_s=0), store=store, embedder=embedder, progress=on_progress
    )
    total = report.record.dense_total
    assert states[0] == "lexical" and any(state.startswith("partial ") for state in states)
    assert report.record.index_state == "complete" and store.open(report.repo_id).size == total
    ranks = [embed_priority(path) for path in embedder.paths()]
    assert ranks == sorted(ranks), f"embedding order {embedder.paths()}"
    assert embedder.paths()[0].startswith("src/") and embedder.paths()[-1].endswith(".md")


def test_an_answer_on_a_partial_index_says_so(tmp_path: Path, embedder: OrderedEmbedder) -> None:
    repo = make_fixture_repo(tmp_path / "weatherline")
    store = Store(tmp_path / "home")
    cancel = threading.Event()

    def on_progress(event: Progress) -> None:
        if event.stage == "embedding":
            cancel.set()  # stop in the dense phase: the lexical version stays live

    with pytest.raises(IngestCancelled):
        ingest(str(repo), store=store, embedder=embedder, progress=on_progress, cancel=cancel)
    record = store.list()[0]
    assert record.index_state == "lexical"
    service = AnswerService(store, embedder, Settings.from_env({}))

    async def frames() -> list[dict[str, Any]]:
        request = AnswerRequest(repo_id=record.id, question=f"Where is {RARE_IDENTIFIER} used?")
        return [event async for event in service.answer(request)]

    events = asyncio.run(frames())
    notes = [event for event in events if event["type"] == "status" and event.get("index_state")]
    assert notes and notes[0]["index_state"] == "lexical" and "BM25" in notes[0]["message"]
    sources = next(event for event in events if event["type"] == "sources")["sources"]
    assert sources and sources[0]["path"] == "weatherline/client.py"
    assert events[-1]["type"] == "done"
    # Nothing is embedding it (the ingest was cancelled, as by Ctrl-C during the first `repolens ask`):
    # the status frame and the answer's own text (what MCP and the OpenAI API show) say how to finish it.
    fix = f"run `repolens embed {record.id}` (or update the repository) to finish it"
    assert notes[0]["step"] == UNFINISHED_INDEX_STEP and fix in notes[0]["message"]
    text = "".join(event["text"] for event in events if event["type"] == "token")
    assert text.endswith(f"**Note:** {notes[0]['message']}.\n")
    with RepoLock(store.paths(record.id), record.id):  # `repolens embed` at work: it will be complete
        events = asyncio.run(frames())
    notes = [event for event in events if event["type"] == "status" and event.get("index_state")]
    assert notes[0].get("step") is None and "results improve as embedding completes" in notes[0]["message"]
    assert "**Note:**" not in "".join(event["text"] for event in events if event["type"] == "token")


def test_content_with_no_semantic_value_is_kept_lexical_only(
    tmp_path: Path, embedder: OrderedEmbedder
) -> None:
    bundle = "function a(b){return b+1};" * 200
    blob = "data = '" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=" * 40 + "'\n"
    table = "\n".join(", ".join(str(n * k) for k in range(12)) for n in range(40))
    prose = "* Tweak the ETag of `FileResponse`s: see [FIPS](https://example.org/fips-140-2-and-more). " * 5
    assert minified(bundle) and not minified(prose) and not minified(table)
    assert no_semantic_value(blob) and no_semantic_value(table)
    assert not no_semantic_value("def retry(attempt):\n    return min(2 ** attempt, 30)\n")
    assert not no_semantic_value(prose) and not no_semantic_value("नमस्ते दुनिया, यह एक वाक्य है। " * 20)
    repo = make_repo(
        tmp_path / "mixed",
        {"app/bundle.js": bundle + " ZQXW_MARKER", "app/core.py": "def core():\n    return 1\n"},
    )
    store = Store(tmp_path / "home")
    report = ingest(str(repo), store=store, embedder=embedder)
    index = store.open(report.repo_id)
    assert report.record.index_state == "complete" and report.record.dense_total < report.record.chunk_count
    assert "app/bundle.js" not in set(embedder.paths())
    hits = index.get_chunks([i for i, _ in index.lexical_search("ZQXW_MARKER", 3)])
    assert hits and hits[0].path == "app/bundle.js"


def test_the_dense_commit_interval_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert IngestOptions().dense_commit_s == 10.0
    monkeypatch.setenv("REPOLENS_DENSE_COMMIT_S", "2.5")
    assert IngestOptions().dense_commit_s == 2.5
