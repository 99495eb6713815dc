"""Deep research: loop overhead against the scripted fake provider, and tool latencies on 2,000 files.

- `loop`: a scripted run (plan, three investigation turns with parallel tool calls, conclusion)
  over the weatherline fixture, indexed with the real embedder, against the fake OpenAI-style
  provider on loopback with no provider delay, so the wall time is RepoLens' own cost (HTTP,
  SSE parsing, tools, prompt building). Reports wall time p50/p95, turns, tool calls, tokens.
- `offline`: offline research (code-graph walk) on the fixture.
- `multihop`: the multi-hop benchmark of `bench/multihop.py` (4 real corpora, 32 questions with gold
  chains; tuning and frozen parts apart), with the figures before the code graph beside it.
- `tools_2000_files`: grep, read_file and find_symbol p50/p95 on the generated 2,000-file
  repository (`bench/synthetic_repo.py`) ingested through the real chunker, store, FAISS and FTS5.
  Its vectors come from a cheap hashing embedder: these tools never use vectors, and embedding
  2,000 files with MiniLM would take minutes without changing a tool latency.

`REPOLENS_BENCH_SCALE` (default 1.0 here) scales the generated repository.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import multihop, synthetic_repo
from rag.embedders import get_embedder
from rag.research import ResearchOptions, run_research
from rag.research.loop import open_tools
from rag.settings import Settings
from rag.store import Store
from rag.tokens import count_tokens

FULL_SCALE_FILES = 2_000
LOOP_RUNS = 8
TOOL_CALLS = 60


class HashingEmbedder:
    """Deterministic pseudo-vectors from a text hash: a real-shaped embedder that costs nothing."""

    name = "bench-hashing"
    dimension = 64
    max_tokens = 256

    def count_tokens(self, text: str) -> int:
        return count_tokens(text)

    def _vector(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        vector = np.random.default_rng(seed).standard_normal(self.dimension).astype(np.float32)
        return vector / np.linalg.norm(vector)

    def embed_documents(self, texts: Sequence[str], progress: Any = None) -> np.ndarray:
        if progress:
            progress(len(texts), len(texts))
        return (
            np.stack([self._vector(t) for t in texts]) if texts else np.zeros((0, self.dimension), np.float32)
        )

    def embed_query(self, text: str) -> np.ndarray:
        return self._vector(text)


class Services:
    def __init__(self, store: Store, embedder: Any, settings: Settings) -> None:
        self.store, self.embedder, self.settings = store, embedder, settings


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 2),
        "p95": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 2),
    }


def _git_init(repo: Path) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "b@example.invalid",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "b@example.invalid",
    }
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "bench"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


def _script(provider: Any) -> None:
    from tests.support.fake_provider import FakeResponse

    def call(tool_name: str, **arguments: Any) -> dict[str, Any]:
        return {"name": tool_name, "arguments": arguments}

    provider.script(
        FakeResponse(text="1. Where does the CLI start? 2. How is the HTTP request sent?"),
        FakeResponse(
            text="Entry point and sender first.",
            tool_calls=[
                call("find_symbol", name="main"),
                call("grep", pattern="def send"),
                call("search", query="retry", k=2),
            ],
        ),
        FakeResponse(
            tool_calls=[call("read_file", path="weatherline/service.py"), call("find_symbol", name="run")]
        ),
        FakeResponse(tool_calls=[call("read_file", path="web/format.js")]),
        FakeResponse(text="enough"),
        FakeResponse(
            text="main (weatherline/cli.py:19-25) calls ForecastService.run (weatherline/service.py:16-21)."
        ),
    )


async def _research(services: Services, repo_id: str, provider: str | None) -> dict[str, Any]:
    done: dict[str, Any] = {}
    started = time.perf_counter()
    async for event in run_research(
        services,
        repo_id=repo_id,
        question="Trace the CLI command to the HTTP request",
        provider=provider,
        options=ResearchOptions(),
    ):
        if event["type"] == "done":
            done = event
        elif event["type"] == "error":
            raise RuntimeError(event["message"])
    return {"wall_s": time.perf_counter() - started, **done["research"]}


def _fixture(workdir: Path) -> dict[str, Any]:
    from ingest import ingest
    from tests.support.fake_provider import FakeProvider
    from tests.support.repos import make_fixture_repo

    home = workdir / "home-fixture"
    repo = make_fixture_repo(workdir / "weatherline")
    provider = FakeProvider()
    provider.start()
    try:
        settings = Settings.from_env(
            {"REPOLENS_HOME": str(home), **provider.openai_env()}, dotenv=home / "no.env"
        )
        store = Store(home)
        services = Services(store, get_embedder(settings), settings)
        repo_id = ingest(str(repo), store=store, embedder=services.embedder).repo_id
        runs = []
        for _ in range(LOOP_RUNS + 1):
            provider.reset()
            _script(provider)
            runs.append(asyncio.run(_research(services, repo_id, "openai")))
        warm_up = runs.pop(0)
        offline = [asyncio.run(_research(services, repo_id, "offline")) for _ in range(4)][1:]
    finally:
        provider.stop()
    last = runs[-1]
    return {
        "loop": {
            "runs": LOOP_RUNS,
            "wall_ms": _percentiles([1000 * r["wall_s"] for r in runs]),
            "first_run_ms": round(1000 * warm_up["wall_s"], 1),
            "turns": last["turns"],
            "tool_calls": last["tool_calls"],
            "tokens": last["tokens"],
            "stopped_because": last["stopped_because"],
            "model_calls": len(provider.requests),
        },
        "offline": {
            "wall_ms": _percentiles([1000 * r["wall_s"] for r in offline]),
            "hops": offline[-1]["turns"],
            "lookups": offline[-1]["tool_calls"],
        },
    }


def _timed(work: Callable[[], Any], count: int) -> dict[str, float]:
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        result = work()
        timings.append(1000 * (time.perf_counter() - started))
        if result.is_error:
            raise RuntimeError(result.output)
    return _percentiles(timings)


def _tools(workdir: Path, scale: float) -> dict[str, Any]:
    from ingest import ingest

    repo = workdir / "generated"
    files = max(20, int(FULL_SCALE_FILES * scale))
    size = synthetic_repo.generate(repo, files)
    _git_init(repo)
    home = workdir / "home-generated"
    settings = Settings.from_env({"REPOLENS_HOME": str(home)}, dotenv=home / "no.env")
    store = Store(home)
    services = Services(store, HashingEmbedder(), settings)
    started = time.perf_counter()
    repo_id = ingest(str(repo), store=store, embedder=services.embedder).repo_id
    ingest_s = time.perf_counter() - started
    tools = open_tools(services, repo_id, ResearchOptions())
    paths = tools.paths
    rng = random.Random(5)
    warm_started = time.perf_counter()
    tools.run("grep", {"pattern": "warm-up-no-match"})
    first_grep_ms = 1000 * (time.perf_counter() - warm_started)
    words = ["client", "cache", "handler", "ledger", "invoice", "token"]
    return {
        "files": len(paths),
        "source_mb": round(size / 2**20, 2),
        "index_build_s": round(ingest_s, 1),
        "grep_first_call_ms": round(first_grep_ms, 1),
        "grep_ms": _timed(
            lambda: tools.run("grep", {"pattern": rf"def \w*{rng.choice(words)}\w*\("}), TOOL_CALLS
        ),
        "grep_with_glob_ms": _timed(
            lambda: tools.run("grep", {"pattern": "return", "path_glob": "*.go"}), TOOL_CALLS
        ),
        "read_file_ms": _timed(
            lambda: tools.run("read_file", {"path": rng.choice(paths), "start_line": 1, "end_line": 80}),
            TOOL_CALLS,
        ),
        "find_symbol_ms": _timed(lambda: tools.run("find_symbol", {"name": rng.choice(words)}), 20),
    }


def run() -> dict[str, Any]:
    scale = float(os.environ.get("REPOLENS_BENCH_SCALE", "1.0"))
    workdir = Path(tempfile.mkdtemp(prefix="repolens-research-bench-"))
    try:
        results = {**_fixture(workdir), "tools_2000_files": _tools(workdir, scale)}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    multi = multihop.run()
    multi.pop("rows")
    return {**results, "multihop": {**multi, "before": multihop.BEFORE}}
