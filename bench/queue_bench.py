"""Ingest throughput on the Redis queue with 1 vs 2 `repolens worker` processes (`python -m bench queue`).

Side by side in one run: for each worker count (alternating, `REPOLENS_BENCH_QUEUE_ROUNDS` rounds),
a fresh REPOLENS_HOME, one `repolens serve` API and the workers are started against a redis-server
on loopback; `REPOLENS_BENCH_QUEUE_REPOS` synthetic repositories (`bench/synthetic_repo.py`,
`REPOLENS_BENCH_QUEUE_FILES` files each) are submitted through `POST /api/repos` at once, and the
clock runs from the first submit to the last job's `done` (`GET /api/jobs`, polled). Figures per
worker count: the median wall time, files/s and chunks/s, and the 2-vs-1 ratios. Workers start (and
load their embedder) before the clock starts. On the 2-core shared machine two workers compete for
the same cores (each embedder uses every core by default), so the ratio shows what a second worker
on the *same* machine buys; on separate machines it would be ~2x.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.synthetic_repo import generate
from tests.support.cluster import REPOLENS, healthy, serve_on_a_free_port
from tests.support.redis_server import start_redis, stop_redis

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 900.0


def _env(home: Path, redis_url: str, roots: Path) -> dict[str, str]:
    return {
        **os.environ,
        "REPOLENS_HOME": str(home),
        "REPOLENS_REDIS_URL": redis_url,
        "REPOLENS_LOCAL_ROOTS": str(roots),
        "REPOLENS_RATE_LIMIT_INGEST": "100000/minute",
        "TIKTOKEN_CACHE_DIR": str(ROOT / "build" / "test-cache" / "tiktoken"),
        "HF_HUB_OFFLINE": "1",
    }


def _wait(what: str, probe: Any, deadline_s: float = 60.0) -> Any:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if value := probe():
            return value
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def _scenario(workers: int, repos: list[Path], redis_url: str, scratch: Path) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix=f"home-{workers}-", dir=scratch))
    env = _env(home, redis_url, scratch)
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    logs = open(scratch / f"w{workers}.log", "ab")  # noqa: SIM115
    processes = [
        subprocess.Popen(
            [REPOLENS, "worker", "--jobs", "1"], env=env, stdout=logs, stderr=logs, start_new_session=True
        )
        for _ in range(workers)
    ]
    port, api = serve_on_a_free_port(
        lambda port: subprocess.Popen(
            [REPOLENS, "serve", "--port", str(port), "--log-level", "warning"],
            env=env,
            stdout=logs,
            stderr=logs,
            start_new_session=True,
        )
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait("the API", lambda: healthy(base))
        _wait("the workers", lambda: len(client.keys("repolens:worker:*:health")) >= 1)
        _warm_up(base, scratch, workers)
        started = time.perf_counter()
        ids = []
        for repo in repos:
            with httpx.stream(
                "POST", f"{base}/api/repos", json={"repo_url": str(repo)}, timeout=30
            ) as response:
                ids.append(response.headers["x-repolens-job"])
        jobs = _wait("every job", lambda: _all_done(base, ids), DEADLINE_S)
        elapsed = time.perf_counter() - started
    finally:
        for process in [*processes, api]:
            os.killpg(process.pid, signal.SIGTERM)
        for process in [*processes, api]:
            process.wait(30)
        logs.close()
        client.close()
    failed = [job for job in jobs if job["state"] != "done"]
    files = sum(job["repo"]["file_count"] for job in jobs if job["repo"])
    chunks = sum(job["repo"]["chunk_count"] for job in jobs if job["repo"])
    workers_seen = {job.get("worker") for job in jobs}
    return {
        "seconds": elapsed,
        "files": files,
        "chunks": chunks,
        "failed": len(failed),
        "workers_used": len(workers_seen),
    }


def _warm_up(base: str, scratch: Path, workers: int) -> None:
    """One tiny ingest per worker, so every worker has loaded its embedder before the clock starts."""
    ids = []
    for n in range(workers):
        tiny = scratch / f"warm-{workers}-{n}"
        if not tiny.exists():
            generate(tiny, 3, seed=100 + n)
        with httpx.stream("POST", f"{base}/api/repos", json={"repo_url": str(tiny)}, timeout=30) as response:
            ids.append(response.headers["x-repolens-job"])
    _wait("the warm-up jobs", lambda: _all_done(base, ids), 300)


def _all_done(base: str, ids: list[str]) -> list[dict[str, Any]] | None:
    jobs = [httpx.get(f"{base}/api/jobs/{job_id}", timeout=10).json() for job_id in ids]
    if all(job["state"] in ("done", "failed", "cancelled") for job in jobs):
        return jobs
    return None


def run() -> dict[str, Any]:
    repo_count = int(os.environ.get("REPOLENS_BENCH_QUEUE_REPOS", "6"))
    files = int(os.environ.get("REPOLENS_BENCH_QUEUE_FILES", "120"))
    rounds = int(os.environ.get("REPOLENS_BENCH_QUEUE_ROUNDS", "2"))
    with tempfile.TemporaryDirectory(prefix="repolens-queue-bench-") as folder:
        scratch = Path(folder).resolve()
        repos = []
        for n in range(repo_count):
            repo = scratch / f"repo-{n}"
            generate(repo, files, seed=n + 1)
            repos.append(repo)
        server = start_redis(scratch)
        results: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
        try:
            for _ in range(rounds):
                for workers in (1, 2):
                    results[workers].append(_scenario(workers, repos, server.url, scratch))
        finally:
            stop_redis(server)
    summary: dict[str, Any] = {
        "repos": repo_count,
        "files_per_repo": files,
        "rounds": rounds,
        "cpu_count": os.cpu_count(),
    }
    for workers, runs in results.items():
        seconds = statistics.median(run["seconds"] for run in runs)
        summary[f"workers_{workers}"] = {
            "median_s": round(seconds, 2),
            "runs_s": [round(run["seconds"], 2) for run in runs],
            "files_per_s": round(runs[0]["files"] / seconds, 1),
            "chunks_per_s": round(runs[0]["chunks"] / seconds, 1),
            "failed_jobs": sum(run["failed"] for run in runs),
            "workers_used": max(run["workers_used"] for run in runs),
        }
    summary["speedup_2_vs_1"] = round(summary["workers_1"]["median_s"] / summary["workers_2"]["median_s"], 2)
    return summary
