"""What a plain update costs after an upgrade that changed chunking: every file is chunked again.

On cobra (`bench/corpus.py`) with the configured embedder (MiniLM by default) in a fresh data dir:
one full ingest, then plain updates of the unchanged checkout, timed in the same process:
- `same_version`: the index was built by the running `CHUNKER_VERSION`: nothing to do, no new version;
- `after_bump`: the live record says the previous version (as an index built before an upgrade does),
  so the update chunks every file again and commits a new version. This chunker makes the texts it
  made before, so every vector is the previous version's and nothing is embedded: the floor of a
  version bump, reached when the change touches few chunk texts (the rest cost embedding, as in any
  update).
Each figure is the median of `REPOLENS_BENCH_UPGRADE_RUNS` runs (default 3), alternating the two.
`REPOLENS_BENCH_UPGRADE_HOME` keeps the data dir (and its first ingest) between runs.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import corpus
from bench.deepwiki_bench import RecordingEmbedder
from ingest import IngestReport, ingest, update
from ingest.chunking import CHUNKER_VERSION
from rag.embedders import CachedEmbedder, get_embedder
from rag.settings import Settings
from rag.store import Store
from rag.store.schema import RECORD_FILE

CORPUS = "cobra"


def _record_older_chunker(store: Store, repo_id: str) -> None:
    """Make the live version say it was chunked by the previous `CHUNKER_VERSION`."""
    path = store.paths(repo_id).current / RECORD_FILE
    data = json.loads(path.read_text())
    data["chunker_version"] = CHUNKER_VERSION - 1
    path.write_text(json.dumps(data, indent=2))


def _figures(report: IngestReport, seconds: float, embedded: int) -> dict[str, Any]:
    return {
        "seconds": round(seconds, 3),
        "version": report.record.version,
        "rechunked_files": report.files["rechunked"],
        "chunks_reused": report.chunks["reused"],
        "chunks_new": report.chunks["added"],
        "texts_embedded": embedded,
        "chunk_s": round(report.timings.get("chunk_s", 0.0), 3),
        "write_s": round(report.timings.get("write_s", 0.0), 3),
        "graph_s": round(report.timings.get("graph_s", 0.0), 3),
    }


def _measure(home: Path, runs: int) -> dict[str, Any]:
    settings = Settings.from_env({"REPOLENS_HOME": str(home)}, dotenv=home / "no.env")
    inner = get_embedder(settings, cache_vectors=False)
    recording = RecordingEmbedder(inner)  # under the cache: counts only what is really embedded
    embedder = CachedEmbedder(recording, home / "cache" / "embeddings")
    root = corpus.working_copy(CORPUS)
    started = time.perf_counter()
    first = ingest(str(root), store=Store(home), embedder=embedder)
    first_s = time.perf_counter() - started
    first_embedded = len(recording.texts)
    repo_id = first.repo_id
    samples: dict[str, list[dict[str, Any]]] = {"same_version": [], "after_bump": []}
    for _ in range(runs):
        for name in samples:
            store = Store(home)  # a fresh store: no index loaded before the run
            if name == "after_bump":
                _record_older_chunker(store, repo_id)
            recording.texts.clear()
            started = time.perf_counter()
            report = update(repo_id, store=store, embedder=embedder)
            seconds = time.perf_counter() - started
            samples[name].append(_figures(report, seconds, len(recording.texts)))
    result: dict[str, Any] = {
        "corpus": CORPUS,
        "embedder": embedder.name,
        "chunker_version": CHUNKER_VERSION,
        "files": first.record.file_count,
        "chunks": first.record.chunk_count,
        "first_ingest_s": round(first_s, 1),
        "first_ingest_texts_embedded": first_embedded,
        "runs": runs,
    }
    for name, figures in samples.items():
        median = statistics.median(sample["seconds"] for sample in figures)
        result[name] = {**figures[-1], "seconds": round(median, 3), "all_s": [s["seconds"] for s in figures]}
    same_s = max(result["same_version"]["seconds"], 1e-6)
    result["bump_over_same"] = round(result["after_bump"]["seconds"] / same_s, 1)
    return result


def run() -> dict[str, Any]:
    runs = int(os.environ.get("REPOLENS_BENCH_UPGRADE_RUNS", "3"))
    try:
        corpus.working_copy(CORPUS)
    except corpus.CorpusUnavailable as error:
        return {"skipped": str(error)}
    kept = os.environ.get("REPOLENS_BENCH_UPGRADE_HOME")
    if kept:
        return _measure(Path(kept), runs)
    with tempfile.TemporaryDirectory(prefix="repolens-upgrade-bench-") as home:
        return _measure(Path(home), runs)


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
