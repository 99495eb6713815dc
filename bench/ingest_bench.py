"""Ingest throughput: a generated multi-language repository, this project's own tree, and an update.

`REPOLENS_BENCH_SCALE` scales the generated repository: 1.0 is 2,000 files
(~10 MB), the size the targets are stated for. The default, 0.25, keeps
`make bench` to a few minutes; the full-scale time is then projected linearly
(embedding dominates and is linear in chunks). Each run uses a fresh data dir
and vector cache, so every chunk is really embedded.

Targets (2-core machine): embedding >= 25 chunks/s; the 2,000-file repository
in under 8 minutes; an update after 10 changed files in under 5 s; peak RSS
under 1.5 GB.

`searchable_full_scale` measures (never projects) time to first answer: the full
2,000-file repository ingested up to its searchable milestone (`dense=False`, what
`repolens ingest --no-wait` waits for), target <= 10 s. `REPOLENS_BENCH_INGEST_PART=searchable`
runs only that. `REPOLENS_BENCH_INGEST_COMPARE=tree:<dir>` runs only that too, for this tree and
another source tree's code (e.g. `git archive <commit> | tar -x -C <dir>`; same venv, same repository),
each run in a process of its own, alternating which goes first, `REPOLENS_BENCH_INGEST_ROUNDS` (3) times:
`searchable_side_by_side` has each figure's values, medians and the ratio of the medians (this tree /
baseline) and the load average at the start and the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from bench import synthetic_repo
from bench.compare import over_repeats, source_tree
from bench.searchable_run import run_to_searchable
from ingest import IngestReport, ingest, update
from rag.embedders import Embedder, get_embedder
from rag.settings import Settings
from rag.store import Store

FULL_SCALE_FILES = 2_000
DEFAULT_SCALE = "0.25"
CHANGED_FILES = 10
PROJECT_ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"chunks_per_s": 25.0, "full_ingest_s": 480.0, "update_s": 5.0, "peak_rss_mb": 1536.0}
SEARCHABLE_TARGET_S = 10.0


class PeakRss:
    """Samples this process's resident memory in a thread; `peak_mb` is the highest seen."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self._process = psutil.Process()
        self._interval = interval_s
        self._stop = threading.Event()
        self.peak_mb = 0.0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._process.memory_info().rss / 2**20)
            self._stop.wait(self._interval)

    @contextmanager
    def watching(self) -> Iterator[PeakRss]:
        thread = threading.Thread(target=self._sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


def _git(repo: Path, *args: str) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@example.invalid",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    }
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


def _commit(repo: Path, message: str) -> None:
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)


def _throughput(report: IngestReport, seconds: float) -> dict[str, Any]:
    files = report.files["added"] + report.files["changed"]
    embedded = report.chunks["added"]
    return {
        "files": report.record.file_count,
        "chunks": report.record.chunk_count,
        "seconds": round(seconds, 2),
        "files_per_s": round(files / seconds, 1) if seconds else None,
        "chunks_per_s": round(embedded / seconds, 1) if seconds else None,
        "embed_chunks_per_s": round(embedded / report.timings["embed_s"], 1)
        if report.timings["embed_s"]
        else None,
        # Lexical first: seconds until the index answers (BM25 + vectors already known), then complete.
        "searchable_s": round(report.timings["searchable_s"], 2),
        "complete_s": round(seconds, 2),
        "lexical_only_chunks": report.record.chunk_count - report.record.dense_total,
        "timings": {name: round(value, 2) for name, value in report.timings.items()},
        # The code graph's share of the run (extraction + resolution): the target is < 15%.
        "graph_share": round(report.timings["graph_s"] / report.timings["total_s"], 4),
    }


def _timed(job: Callable[[], IngestReport]) -> tuple[IngestReport, float]:
    started = time.perf_counter()
    report = job()
    return report, time.perf_counter() - started


def _chunks_over_window(store: Store, repo_id: str, embedder: Embedder) -> int:
    """Chunks whose embedded text would be truncated by the embedder (should be 0)."""
    index = store.open(repo_id)
    over = 0
    for info in index.list_files():
        for chunk in index.chunks_for_file(info.path):
            if embedder.count_tokens(chunk.to_chunk().embed_text) > embedder.max_tokens:
                over += 1
    return over


def _embedded_tokens_per_s(store: Store, report: IngestReport, embedder: Embedder) -> float | None:
    """Tokens the embedder read per second of the dense phase (chunks with a vector, window-capped)."""
    index = store.open(report.repo_id)
    lexical_only = index.vectorless_ids()
    tokens = sum(
        min(embedder.count_tokens(chunk.to_chunk().embed_text), embedder.max_tokens)
        for info in index.list_files()
        for chunk in index.chunks_for_file(info.path)
        if chunk.id not in lexical_only
    )
    seconds = report.timings["embed_s"]
    return round(tokens / seconds) if seconds else None


def _generated(workdir: Path, scale: float) -> dict[str, Any]:
    repo = workdir / "generated"
    files = max(20, int(FULL_SCALE_FILES * scale))
    size = synthetic_repo.generate(repo, files)
    _git(repo, "init", "-q", "-b", "main")
    _commit(repo, "generated")

    settings = Settings.from_env({**os.environ, "REPOLENS_HOME": str(workdir / "home-generated")})
    store, embedder = Store(settings.home), get_embedder(settings)
    with PeakRss().watching() as rss:
        full, full_s = _timed(lambda: ingest(str(repo), store=store, embedder=embedder))
        unchanged, unchanged_s = _timed(lambda: ingest(str(repo), store=store, embedder=embedder))
        synthetic_repo.touch(repo, list(range(0, files, files // CHANGED_FILES))[:CHANGED_FILES], revision=1)
        _commit(repo, "edit 10 files")
        updated, update_s = _timed(lambda: update(full.repo_id, store=store, embedder=embedder))
    return {
        "source_files": files,
        "source_mb": round(size / 2**20, 2),
        "full": {
            **_throughput(full, full_s),
            "embedded_tokens_per_s": _embedded_tokens_per_s(store, full, embedder),
        },
        "chunks_over_window": _chunks_over_window(store, full.repo_id, embedder),
        "reingest_unchanged_s": round(unchanged_s, 2),
        "unchanged_embedded": unchanged.chunks["added"],
        "update_10_files": {
            "seconds": round(update_s, 2),
            "files_changed": updated.files["changed"],
            "chunks_embedded": updated.chunks["added"],
            "chunks_reused": updated.chunks["reused"],
            "timings": {name: round(value, 2) for name, value in updated.timings.items()},
        },
        "peak_rss_mb": round(rss.peak_mb, 1),
    }


def full_scale_repo(workdir: Path) -> tuple[Path, int]:
    """The 2,000-file generated repository, committed; and its size in bytes."""
    repo = workdir / "generated-full"
    size = synthetic_repo.generate(repo, FULL_SCALE_FILES)
    _git(repo, "init", "-q", "-b", "main")
    _commit(repo, "generated")
    return repo, size


def _searchable_full_scale(workdir: Path) -> dict[str, Any]:
    """The 2,000-file repository, fresh data dir and vector cache, ingested up to its searchable
    milestone: the time-to-first-answer goal, measured."""
    repo, size = full_scale_repo(workdir)
    figures = run_to_searchable(repo, workdir / "home-full")
    return {
        "source_mb": round(size / 2**20, 2),
        **figures,
        "target_s": SEARCHABLE_TARGET_S,
        "meets": figures["searchable_s"] <= SEARCHABLE_TARGET_S,
    }


# Figures of each round that `searchable_side_by_side` compares.
_COMPARED = ("searchable_s", "cpu_s", "writer_cpu_s", "scan_s", "chunk_s", "write_s")


def _searchable_side_by_side(workdir: Path, baseline: Path, rounds: int) -> dict[str, Any]:
    """`searchable_full_scale` of this tree and of `baseline`, each run in a process of its own on
    the same repository (a fresh data dir each run), alternating which goes first, `rounds` times."""
    repo, size = full_scale_repo(workdir)
    load_start = [round(load, 2) for load in os.getloadavg()]
    trees = [("this_tree", PROJECT_ROOT), ("baseline_tree", baseline)]
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in trees}
    for number in range(rounds):
        for label, tree in trees if number % 2 == 0 else reversed(trees):
            home = workdir / f"home-{label}-{number}"
            done = subprocess.run(
                [sys.executable, str(PROJECT_ROOT / "bench" / "searchable_run.py"), str(repo), str(home)],
                cwd=workdir,
                env={**os.environ, "PYTHONPATH": str(tree)},
                capture_output=True,
                text=True,
                check=True,
            )
            runs[label].append(json.loads(done.stdout.splitlines()[-1]))
            shutil.rmtree(home, ignore_errors=True)

    def figure(run: dict[str, Any], key: str) -> float:
        return float(run[key] if key in run else run["timings"][key])

    return {
        "baseline": str(baseline),
        "rounds": rounds,
        "files": FULL_SCALE_FILES,
        "source_mb": round(size / 2**20, 2),
        # Both trees must index the same chunks for the times to compare.
        "chunks": {label: sorted({run["chunks"] for run in done}) for label, done in runs.items()},
        "load_average": {"start": load_start, "end": [round(load, 2) for load in os.getloadavg()]},
        **{
            key: over_repeats({label: [figure(run, key) for run in done] for label, done in runs.items()}, 2)
            for key in _COMPARED
        },
    }


def _own_repo(workdir: Path) -> dict[str, Any]:
    settings = Settings.from_env({**os.environ, "REPOLENS_HOME": str(workdir / "home-self")})
    store, embedder = Store(settings.home), get_embedder(settings)
    with PeakRss().watching() as rss:
        report, seconds = _timed(lambda: ingest(str(PROJECT_ROOT), store=store, embedder=embedder))
    return {
        **_throughput(report, seconds),
        "embedded_tokens_per_s": _embedded_tokens_per_s(store, report, embedder),
        "peak_rss_mb": round(rss.peak_mb, 1),
    }


def run() -> dict[str, Any]:
    scale = float(os.environ.get("REPOLENS_BENCH_SCALE", DEFAULT_SCALE))
    with tempfile.TemporaryDirectory(prefix="repolens-ingest-bench-") as tmp:
        workdir = Path(tmp)
        compare = os.environ.get("REPOLENS_BENCH_INGEST_COMPARE", "")
        if compare:
            if not compare.startswith("tree:"):
                raise SystemExit(f"REPOLENS_BENCH_INGEST_COMPARE={compare!r}: use tree:<dir>")
            baseline = source_tree(compare, "REPOLENS_BENCH_INGEST_COMPARE")
            rounds = int(os.environ.get("REPOLENS_BENCH_INGEST_ROUNDS", "3"))
            return {"searchable_side_by_side": _searchable_side_by_side(workdir, baseline, rounds)}
        searchable = _searchable_full_scale(workdir)
        if os.environ.get("REPOLENS_BENCH_INGEST_PART") == "searchable":
            return {"searchable_full_scale": searchable}
        generated = _generated(workdir, scale)
        own = _own_repo(workdir)
    projected_full_s = generated["full"]["seconds"] / scale
    return {
        "searchable_full_scale": searchable,
        "scale": scale,
        "projected_full_scale_ingest_s": round(projected_full_s, 1),
        # Scanning and chunking are linear in files too, so time to searchable projects the same way.
        "projected_full_scale_searchable_s": round(generated["full"]["searchable_s"] / scale, 1),
        "generated_repo": generated,
        "this_repo": own,
        "targets": TARGETS,
        "meets": {
            "chunks_per_s": (generated["full"]["embed_chunks_per_s"] or 0) >= TARGETS["chunks_per_s"],
            "full_ingest_s": projected_full_s <= TARGETS["full_ingest_s"],
            "update_s": generated["update_10_files"]["seconds"] <= TARGETS["update_s"],
            "peak_rss_mb": max(generated["peak_rss_mb"], own["peak_rss_mb"]) <= TARGETS["peak_rss_mb"],
            "every_chunk_fully_embedded": generated["chunks_over_window"] == 0,
            "searchable_full_scale_s": searchable["meets"],
        },
    }
