"""One ingest of a prepared repository up to its searchable milestone (`dense=False`, what
`repolens ingest --no-wait` waits for), on a fresh data dir and vector cache: `ingest_bench`'s
`searchable_full_scale`, in its process or, for a side-by-side run, as a script
(`python bench/searchable_run.py <repo> <home>`, JSON on stdout) with `PYTHONPATH` naming the
RepoLens source tree to measure. It uses only `ingest`'s public surface, which every tree compared has.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import psutil


def run_to_searchable(repo: Path, home: Path) -> dict[str, Any]:
    """Ingest `repo` into the empty data dir `home` up to its searchable milestone; its figures."""
    from ingest import IngestOptions, ingest
    from ingest.chunk_pool import pool_size
    from rag.embedders import get_embedder
    from rag.settings import Settings
    from rag.store import Store

    settings = Settings.from_env({**os.environ, "REPOLENS_HOME": str(home)})
    store, embedder = Store(settings.home), get_embedder(settings)
    options = IngestOptions(dense=False)
    helpers_before = _helpers_cpu_s()
    cpu, started = time.process_time(), time.perf_counter()
    report = ingest(str(repo), options, store=store, embedder=embedder)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    helpers = _helpers_cpu_s()
    return {
        "files": report.record.file_count,
        "chunks": report.record.chunk_count,
        "index_state": report.record.index_state,
        "chunk_processes": pool_size(report.record.file_count, options.chunk_processes),
        "searchable_s": round(report.timings["searchable_s"], 2),
        "run_s": round(seconds, 2),
        # This process's CPU (scanning, writing, the pool's bookkeeping), not its chunk workers'.
        "writer_cpu_s": round(cpu, 2),
        # And with every process it started (the forkserver with the chunk workers it reaped): the CPU
        # the run needs, which a loaded machine stretches less than its wall time.
        "cpu_s": round(cpu + helpers - helpers_before, 2),
        "timings": {name: round(value, 2) for name, value in report.timings.items()},
    }


def _helpers_cpu_s() -> float:
    """CPU seconds of this process's descendants, with the children each of them has reaped."""
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


if __name__ == "__main__":  # also what lets the ingest start its chunk workers
    print(json.dumps(run_to_searchable(Path(sys.argv[1]), Path(sys.argv[2]))))
