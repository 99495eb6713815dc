"""Added latency of the MCP and OpenAI adapters over the direct routes, side by side in one run.

A `repolens serve` subprocess (a temporary data dir with the fixture repository indexed, answers
offline so no model time is measured) is driven from this process, one request at a time, the
variants interleaved (every variant once per round, in a shuffled order) so the machine's drift and
the first-of-a-round penalty hit them all alike:

- search: `POST /api/repos/{id}/search` (direct) vs the MCP tool `search_code` (the SDK's client over
  streamable HTTP, one session reused);
- ask: `POST /chat/completions/stream` in its plain-text mode, read whole (direct) vs MCP
  `ask_question` vs OpenAI `POST /v1/chat/completions` (non-stream, the `openai` SDK) vs the same
  streamed.

`in_process` isolates the MCP adapter itself: the same tools through the SDK's in-memory client
(`Client(server)`: validation, the tool body, result conversion, no transport) against calling the
shared functions they wrap (`api.repo_content.search_repo`, `api.chat_session.chat_events`) directly.

Each figure is the p50/p95 of the request's wall time; `added_p50_ms` is the adapter's p50 minus the
direct route's p50 (target < 10 ms). `REPOLENS_BENCH_ADAPTER_SAMPLES` sets the samples per variant
(default 40, after 5 warm-up rounds).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

TARGET_ADDED_P50_MS = 10.0
WARMUP = 5
SEED = 13
QUESTION = "Where is the retry ceiling defined?"
QUERY = "retry ceiling backoff"


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _summary(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(samples), 2),
        "p95_ms": round(_percentile(samples, 0.95), 2),
    }


def _start_server(home: Path, port: int) -> subprocess.Popen[bytes]:
    repolens = Path(sys.executable).with_name("repolens")
    # Answers offline (no model time in the figures); no chat rate limit (the bench sends hundreds).
    env = {
        **os.environ,
        "REPOLENS_HOME": str(home),
        "REPOLENS_PROVIDER": "offline",
        "REPOLENS_RATE_LIMIT_CHAT": "off",
    }
    for name in ("OPENAI_API_KEY", "GOOGLE_API_KEY", "REPOLENS_API_KEY"):
        env.pop(name, None)
    command = [str(repolens), "serve", "--port", str(port), "--log-level", "warning"]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)


def _wait_healthy(base: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("repolens serve did not become healthy")


async def _measure(base: str, repo_id: str, repo_url: str, samples: int) -> dict[str, list[float]]:
    from mcp import Client
    from openai import AsyncOpenAI

    openai = AsyncOpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
    model = f"repolens/{repo_id}"
    # deepwiki's plain-text mode: the answer's text only, so the client parses as little as OpenAI's.
    chat_body = {"repo_url": repo_url, "type": "local", "messages": [{"role": "user", "content": QUESTION}]}
    async with httpx.AsyncClient(base_url=base, timeout=60) as http, Client(f"{base}/mcp") as mcp:

        async def direct_search() -> None:
            response = await http.post(f"/api/repos/{repo_id}/search", json={"query": QUERY, "k": 5})
            assert response.status_code == 200 and response.json()["results"]

        async def mcp_search() -> None:
            result = await mcp.call_tool("search_code", {"repo": repo_id, "query": QUERY, "k": 5})
            assert not result.is_error and result.structured_content["results"]

        async def direct_ask() -> None:
            response = await http.post("/chat/completions/stream", json=chat_body)
            assert response.status_code == 200 and response.text

        async def mcp_ask() -> None:
            result = await mcp.call_tool("ask_question", {"repo": repo_id, "question": QUESTION})
            assert not result.is_error

        async def openai_ask() -> None:
            completion = await openai.chat.completions.create(
                model=model, messages=[{"role": "user", "content": QUESTION}]
            )
            assert completion.choices[0].message.content

        async def openai_stream() -> None:
            stream = await openai.chat.completions.create(
                model=model, messages=[{"role": "user", "content": QUESTION}], stream=True
            )
            async for _ in stream:
                pass

        variants: dict[str, Callable[[], Awaitable[None]]] = {
            "search_direct": direct_search,
            "search_mcp": mcp_search,
            "ask_direct": direct_ask,
            "ask_mcp": mcp_ask,
            "ask_openai": openai_ask,
            "ask_openai_stream": openai_stream,
        }
        times = await _rounds(variants, samples)
    await openai.close()
    return times


async def _measure_in_process(
    home: Path, repo_id: str, repo_url: str, samples: int
) -> dict[str, list[float]]:
    from mcp import Client

    from api.chat_session import chat_events
    from api.mcp_server import build_mcp_server
    from api.repo_content import search_repo
    from api.schemas import parse_chat_request
    from api.services import Services
    from rag.settings import Settings

    settings = Settings.from_env({**os.environ, "REPOLENS_HOME": str(home), "REPOLENS_PROVIDER": "offline"})
    services = Services.from_settings(settings)
    body = {"repo_url": repo_url, "type": "local", "messages": [{"role": "user", "content": QUESTION}]}
    async with Client(build_mcp_server(services)) as mcp:

        async def direct_search() -> None:
            _, hits = await asyncio.to_thread(search_repo, services, repo_id, QUERY, k=5)
            assert hits

        async def mcp_search() -> None:
            result = await mcp.call_tool("search_code", {"repo": repo_id, "query": QUERY, "k": 5})
            assert not result.is_error

        async def direct_ask() -> None:
            events = [
                event async for event in chat_events(services, parse_chat_request(body), asyncio.Event())
            ]
            assert events[-1]["type"] == "done"

        async def mcp_ask() -> None:
            result = await mcp.call_tool("ask_question", {"repo": repo_id, "question": QUESTION})
            assert not result.is_error

        variants = {
            "search_direct": direct_search,
            "search_mcp": mcp_search,
            "ask_direct": direct_ask,
            "ask_mcp": mcp_ask,
        }
        return await _rounds(variants, samples)


async def _rounds(variants: dict[str, Callable[[], Awaitable[None]]], samples: int) -> dict[str, list[float]]:
    """`samples` timed calls of each variant (after `WARMUP` rounds), interleaved: each round runs every
    variant once, in a shuffled order (the first call of a round is slower, whichever it is)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    shuffler = random.Random(SEED)
    for round_number in range(WARMUP + samples):
        order = list(variants)
        shuffler.shuffle(order)
        for name in order:
            started = time.perf_counter()
            await variants[name]()
            if round_number >= WARMUP:
                times[name].append((time.perf_counter() - started) * 1000)
    return times


def _figures(times: dict[str, list[float]]) -> dict[str, Any]:
    figures: dict[str, Any] = {name: _summary(values) for name, values in times.items()}
    direct = {"search": figures["search_direct"]["p50_ms"], "ask": figures["ask_direct"]["p50_ms"]}
    for name, figure in figures.items():
        kind, _, adapter = name.partition("_")
        if adapter != "direct":
            figure["added_p50_ms"] = round(figure["p50_ms"] - direct[kind], 2)
            figure["ratio_p50"] = round(figure["p50_ms"] / direct[kind], 3)
    return figures


def run() -> dict[str, Any]:
    from ingest import ingest
    from rag.embedders import get_embedder
    from rag.settings import Settings
    from rag.store import Store
    from tests.support.live_server import free_port
    from tests.support.repos import make_fixture_repo

    samples = int(os.environ.get("REPOLENS_BENCH_ADAPTER_SAMPLES", "40"))
    with tempfile.TemporaryDirectory(prefix="repolens-adapters-") as tmp:
        root = Path(tmp)
        home = root / "home"
        repo = make_fixture_repo(root / "weatherline")
        settings = Settings.from_env({**os.environ, "REPOLENS_HOME": str(home)})
        report = ingest(str(repo), store=Store(home), embedder=get_embedder(settings))
        port = free_port()
        server = _start_server(home, port)
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_healthy(base)
            over_http = _figures(asyncio.run(_measure(base, report.repo_id, str(repo), samples)))
        finally:
            server.terminate()
            server.wait(30)
        in_process = _figures(asyncio.run(_measure_in_process(home, report.repo_id, str(repo), samples)))
    added = [
        figure["added_p50_ms"]
        for figures in (over_http, in_process)
        for figure in figures.values()
        if "added_p50_ms" in figure
    ]
    return {
        "samples": samples,
        "over_http": over_http,
        "in_process": in_process,
        "max_added_p50_ms": max(added),
        "target_added_p50_ms": TARGET_ADDED_P50_MS,
        "meets_target": max(added) < TARGET_ADDED_P50_MS,
    }
