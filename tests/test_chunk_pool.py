"""Chunking on a process pool gives exactly the chunks and code graphs of chunking in one process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from ingest import chunk_pool, pipeline
from ingest.chunk_pool import chunk_files, pool_size
from ingest.languages import language_for
from ingest.pipeline import IngestOptions, ingest
from ingest.reader import SourceFile
from rag.embedders.base import run_token_counter
from rag.embedders.minilm import MiniLMEmbedder
from rag.store import Store
from rag.types import RepoRecord

ROOT = Path(__file__).resolve().parent.parent


def _no_forward(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.zeros((len(ids), 384), dtype=np.float32)


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder(_no_forward, "count-only")


def _files() -> list[SourceFile]:
    paths = [*sorted((ROOT / "ingest").glob("*.py")), *sorted((ROOT / "docs").glob("*.md"))]
    return [
        SourceFile(str(p.relative_to(ROOT)), language_for(p.name), p.read_text(), "0" * 64, p.stat().st_size)
        for p in paths
    ]


def test_pooled_chunks_and_graphs_equal_one_process(embedder: MiniLMEmbedder) -> None:
    files = _files()
    counter = run_token_counter(embedder)
    serial = list(chunk_files(files, embedder.max_tokens, counter, processes=1))
    pooled = list(chunk_pool._pooled(files, embedder.max_tokens, counter, processes=2))
    assert [r.chunks for r in pooled] == [r.chunks for r in serial]
    assert [r.graph for r in pooled] == [r.graph for r in serial]
    assert sum(len(r.chunks) for r in serial) > 100
    assert any(r.graph is not None for r in serial)


def test_the_pool_is_for_large_runs_only_and_one_process_means_none() -> None:
    assert pool_size(chunk_pool.POOL_MIN_FILES - 1, 0) == 1
    assert pool_size(chunk_pool.POOL_MIN_FILES, 1) == 1
    assert pool_size(chunk_pool.POOL_MIN_FILES, 3) == 3
    assert pool_size(chunk_pool.POOL_MIN_FILES, 0) >= 1


def test_a_counter_that_cannot_travel_chunks_in_this_process(embedder: MiniLMEmbedder) -> None:
    files = _files()[:3]
    local = embedder.count_tokens  # a bound method of an embedder holding a model: not picklable here
    assert not chunk_pool._picklable(lambda text: local(text))
    results = list(chunk_files(files, embedder.max_tokens, lambda text: local(text), processes=2))
    assert [r.chunks for r in results] == [
        r.chunks for r in chunk_files(files, embedder.max_tokens, embedder.count_tokens)
    ]


def test_an_ingest_on_the_pool_indexes_the_same_chunks(
    tmp_path: Path, embedder: MiniLMEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "ingest", repo / "ingest", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    monkeypatch.setattr(chunk_pool, "POOL_MIN_FILES", 1)
    indexed = []
    for processes in (1, 2):
        store = Store(tmp_path / f"home-{processes}")
        report = ingest(
            str(repo), IngestOptions(dense=False, chunk_processes=processes), store=store, embedder=embedder
        )
        index = store.open(report.repo_id)
        indexed.append(
            [
                (c.path, c.start_line, c.end_line, c.symbol, c.text)
                for info in index.list_files()
                for c in index.chunks_for_file(info.path)
            ]
        )
    assert indexed[0] == indexed[1]
    assert len(indexed[0]) > 50


_PREPARED = """
import json, multiprocessing
from multiprocessing import forkserver
from ingest import chunk_pool
from ingest.reader import SourceFile

if __name__ == "__main__":
    chunk_pool.prepare(2)
    prepared = forkserver._forkserver._forkserver_pid
    text = "def f(x):\\n    return x\\n"
    files = [SourceFile(f"m{n}.py", "python", text, "0" * 64, len(text)) for n in range(40)]
    results = chunk_pool._pooled(files, 256, len, 2)
    next(results)
    workers = [child.pid for child in multiprocessing.active_children()]
    running = forkserver._forkserver._forkserver_pid
    print(json.dumps({"prepared": prepared, "forkserver": running, "workers": workers}))
    results.close()
"""


def test_a_prepared_pool_forks_its_workers_from_the_forkserver_started_early(tmp_path: Path) -> None:
    """`prepare` (called while the scan runs) starts the forkserver the pool's workers then come from."""
    script = tmp_path / "prepared.py"
    script.write_text(_PREPARED)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, check=True)
    started = json.loads(done.stdout)
    assert started["prepared"] is not None and started["prepared"] == started["forkserver"]
    assert len(started["workers"]) == 2


def test_the_scan_starts_the_pool_once_enough_files_are_to_be_chunked(
    tmp_path: Path, embedder: MiniLMEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the `POOL_MIN_FILES`th file to chunk, while the scan goes on; an update chunking fewer does not."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for n in range(6):
        (repo / f"m{n}.py").write_text(f"def f{n}(x):\n    return x + {n}\n")
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    monkeypatch.setattr(chunk_pool, "POOL_MIN_FILES", 4)
    scanned: list[str] = []
    prepared: list[tuple[int, int]] = []  # (files scanned then, processes requested)
    real_scan, real_prepare = pipeline.iter_source_files, chunk_pool.prepare

    def scan(*args: Any) -> Iterator[SourceFile]:
        for file in real_scan(*args):
            scanned.append(file.path)
            yield file

    def prepare(requested: int) -> None:
        prepared.append((len(scanned), requested))
        real_prepare(requested)

    monkeypatch.setattr(pipeline, "iter_source_files", scan)
    monkeypatch.setattr(chunk_pool, "prepare", prepare)
    store = Store(tmp_path / "home")
    options = IngestOptions(dense=False, chunk_processes=2)
    ingest(str(repo), options, store=store, embedder=embedder)
    assert prepared == [(4, 2)] and len(scanned) == 6
    (repo / "m0.py").write_text("def changed():\n    return 0\n")
    report = ingest(str(repo), options, store=store, embedder=embedder)
    assert report.files["changed"] == 1 and prepared == [(4, 2)]


_POOL_OWNER = """
import json, multiprocessing, sys, time
from multiprocessing import forkserver
from ingest import chunk_pool
from ingest.reader import SourceFile

if __name__ == "__main__":
    text = "".join(f"def f{n}(x):\\n    return x + {n}\\n\\n" for n in range(50))
    files = [SourceFile(f"m{n}.py", "python", text, "0" * 64, len(text)) for n in range(400)]
    results = chunk_pool._pooled(files, 256, len, 2)
    next(results)  # the pool is up and chunking
    pids = [child.pid for child in multiprocessing.active_children()]
    print(json.dumps({"workers": pids, "forkserver": forkserver._forkserver._forkserver_pid}), flush=True)
    time.sleep(600)
"""


def _ended(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # ended, not yet reaped
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_the_pool_and_its_forkserver_end_with_the_process_that_started_them(
    tmp_path: Path, signal_name: str
) -> None:
    """A server stopped (or killed) mid-ingest leaves no chunking worker, forkserver or resource tracker."""
    script = tmp_path / "owner.py"
    script.write_text(_POOL_OWNER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdout=subprocess.PIPE, env=env) as owner:
        try:
            assert owner.stdout is not None
            started = json.loads(owner.stdout.readline())
            helpers = psutil.Process(started["forkserver"]).parent().children()  # tracker, forkserver
            pids = [*started["workers"], *(helper.pid for helper in helpers)]
            assert len(started["workers"]) == 2 and started["forkserver"] in pids
            assert not any(_ended(pid) for pid in pids)
        finally:
            owner.send_signal(getattr(signal, signal_name))
    deadline = time.monotonic() + 60  # a bound for a loaded machine; they go within a second or so
    while not all(_ended(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in pids if not _ended(pid)]
    for pid in left:  # a failure leaves nothing running behind it
        psutil.Process(pid).kill()
    assert left == []


def test_the_terms_and_hashes_chunked_beside_the_chunks_are_what_the_index_writer_computes(
    tmp_path: Path, embedder: MiniLMEmbedder
) -> None:
    """The pool's workers tokenize and hash the chunks: the index holds the same lexical and chunk rows
    as when the writer tokenizes and hashes them itself (and context lines are part of a chunk's body)."""
    files = _files()
    results = list(chunk_pool._pooled(files, embedder.max_tokens, run_token_counter(embedder), processes=2))
    assert any(chunk.context for result in results for chunk in result.chunks)
    rows = []
    for given in (True, False):
        store = Store(tmp_path / f"home-{given}")
        record = RepoRecord(f"local/terms-{given}", "/terms", "local", None, None, embedder.name, 384)
        with store.builder(record, None) as builder:
            for file, result in zip(files, results, strict=True):
                vectors = [None] * len(result.chunks)
                builder.add_file(
                    file,
                    result.chunks,
                    vectors,
                    terms=result.terms if given else None,
                    hashes=result.hashes if given else None,
                )
            builder.commit()
        index = store.open(record.id)
        rows.append(
            index._query("SELECT rowid, path, symbol, body FROM lexical ORDER BY rowid")
            + index._query("SELECT id, path, start_line, content_hash FROM chunks ORDER BY id")
        )
    assert rows[0] == rows[1] and len(rows[0]) > 200
