"""Streaming answers while a large ingest runs (`python -m bench ingest_load`).

Same three processes as `bench/chat_bench.py` (fake provider, `repolens serve`, this process as
the clients). First 100 conversations on an idle server (baseline); then a 2,000-file synthetic
repository (`bench/synthetic_repo.py`) is ingested through `POST /api/repos` and, once the
ingest reports progress, the same 100 conversations run again. Figures: the added first-token
p50/p95 of each run (request -> first `token` frame, minus the provider's own 200 ms), their
difference (`ingest_added_p95_ms`: what the ingest costs a streaming user), errors, and how far
the ingest got meanwhile. Run it on an idle machine: other load shows up in every figure.
Environment: `REPOLENS_BENCH_INGEST_LOAD_FILES` (default 2000), `_STREAMS` (default 100).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench import chat_bench

ROOT = Path(__file__).resolve().parent.parent


def _ingest_in_background(base_url: str, repo: Path, state: dict[str, Any]) -> threading.Thread:
    def work() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the server stops before a 2,000-file ingest ends
            stream()

    def stream() -> None:
        started = time.perf_counter()
        with (
            httpx.Client(timeout=None) as client,
            client.stream(
                "POST", f"{base_url}/api/repos", json={"repo_url": str(repo), "type": "local"}
            ) as response,
        ):
            for line in response.iter_lines():
                if line.startswith("data: "):
                    frame = json.loads(line.removeprefix("data: "))
                    state["last"] = {
                        key: frame.get(key) for key in ("type", "step", "files_done", "chunks_done")
                    }
                    state["progress"] = True
        state["ingest_s"] = round(time.perf_counter() - started, 1)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def run() -> dict[str, Any]:
    from bench.synthetic_repo import generate
    from ingest import ingest
    from rag.embedders import get_embedder
    from rag.settings import Settings
    from rag.store import Store
    from tests.support.repos import make_fixture_repo

    files = int(os.environ.get("REPOLENS_BENCH_INGEST_LOAD_FILES", "2000"))
    streams = int(os.environ.get("REPOLENS_BENCH_INGEST_LOAD_STREAMS", "100"))
    with tempfile.TemporaryDirectory(prefix="repolens-ingest-load-") as scratch:
        home = Path(scratch) / "home"
        env = {**os.environ, "REPOLENS_HOME": str(home), "PYTHONPATH": str(ROOT)}
        settings = Settings.from_env(environ=env, dotenv=Path(scratch) / "no.env")
        repo = make_fixture_repo(Path(scratch) / "weatherline")
        ingest(str(repo), store=Store(settings.home), embedder=get_embedder(settings))
        big = Path(scratch) / "big"
        generate(big, files)
        with chat_bench.bench_server(
            env, warmup=0, streams=4 * streams, REPOLENS_LOCAL_ROOTS=scratch
        ) as served:
            ws_url, processes = served.ws_url, served.processes
            baseline = asyncio.run(chat_bench._level(ws_url, served.provider_url, repo, streams, processes))
            state: dict[str, Any] = {"progress": False}
            ingest_thread = _ingest_in_background(served.base_url, big, state)
            deadline = time.monotonic() + 120
            while not state["progress"] and time.monotonic() < deadline:
                time.sleep(0.1)
            during = asyncio.run(chat_bench._level(ws_url, served.provider_url, repo, streams, processes))
            progress_at_end = dict(state.get("last") or {})
            ingest_thread.join(timeout=1)

    def added(level: dict[str, Any], name: str) -> float | None:
        return level.get(f"added_{name}_ms")

    base_p95, during_p95 = added(baseline, "p95"), added(during, "p95")
    return {
        "files": files,
        "streams": streams,
        "baseline": {
            key: baseline.get(key) for key in ("completed", "errors", "added_p50_ms", "added_p95_ms")
        },
        "during_ingest": {
            key: during.get(key) for key in ("completed", "errors", "added_p50_ms", "added_p95_ms")
        },
        "ingest_added_p95_ms": None
        if base_p95 is None or during_p95 is None
        else round(during_p95 - base_p95, 1),
        "ingest_progress_when_streams_ended": progress_at_end,
        "target_added_p95_ms": 100.0,
    }
