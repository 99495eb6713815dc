"""Provider layer and prompt building: what RepoLens adds between a question and the model.

Against the fake provider on loopback (`tests.support.fake_provider`, in a thread of this process):
- `first_token_ms`: p50/p95 from `stream()` to the first `TextDelta`, for our OpenAI-style provider
  (official SDK) and our Gemini provider (httpx), next to a bare httpx request to the same endpoint
  (`raw_httpx`), so the difference is the cost of our layer.
- `concurrent`: CONCURRENT streams started at the same instant through the OpenAI-style provider
  (each CHUNKS pieces, CHUNK_DELAY_S apart): wall time, first-token p50/p95, errors, and CPU per
  stream (client and fake server share this process, so the CPU, not the network, is what a burst
  queues on: first-token times grow with the burst size).
And offline, with no network at all:
- `build_prompt_ms`: fitting 20 retrieved spans of 60 lines and a 40-turn history into an 8k window.
- `offline_answer_ms`: the offline answerer over 10 spans.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from rag.prompt import build_prompt
from rag.providers.base import ChatRequest, Message, TextDelta
from rag.providers.catalog import get_provider
from rag.providers.offline import offline_answer
from rag.settings import Settings
from rag.types import SearchHit
from tests.support.fake_provider import FakeProvider, FakeResponse

SAMPLES = 60
CONCURRENT = 100
CHUNKS = 20
CHUNK_DELAY_S = 0.01
QUESTION = [Message("system", "Answer briefly."), Message("user", "How does the client retry?")]


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 2),
        "p95": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 2),
    }


async def _first_token_ms(make_stream: Callable[[], Any]) -> float:
    started = time.perf_counter()
    stream = make_stream()
    try:
        async for event in stream:
            if isinstance(event, TextDelta):
                return (time.perf_counter() - started) * 1000
    finally:
        await stream.aclose()
    raise RuntimeError("no token")


async def _raw_first_token_ms(client: httpx.AsyncClient, url: str) -> float:
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    started = time.perf_counter()
    async with client.stream("POST", url, json=body) as response:
        async for line in response.aiter_lines():
            if '"content": "' in line and '"content": ""' not in line:
                return (time.perf_counter() - started) * 1000
    raise RuntimeError("no token")


async def _sample(fake: FakeProvider, measure: Callable[[], Awaitable[float]]) -> dict[str, float]:
    fake.script(*[FakeResponse(text="retry " * CHUNKS)] * (SAMPLES + 5))
    for _ in range(5):
        await measure()
    figures = [await measure() for _ in range(SAMPLES)]
    fake.reset()
    return _percentiles(figures)


async def _streams(fake: FakeProvider) -> dict[str, Any]:
    env = {**fake.openai_env(), **fake.gemini_env()}
    settings = Settings.from_env(env, dotenv=None)
    openai_provider = get_provider("openai", settings)
    gemini_provider = get_provider("google", settings)
    results: dict[str, Any] = {"first_token_ms": {}}
    request = ChatRequest(QUESTION, model=openai_provider.model)
    results["first_token_ms"]["openai_sdk"] = await _sample(
        fake, lambda: _first_token_ms(lambda: openai_provider.stream(request))
    )
    gemini_request = ChatRequest(QUESTION, model=gemini_provider.model)
    results["first_token_ms"]["gemini_httpx"] = await _sample(
        fake, lambda: _first_token_ms(lambda: gemini_provider.stream(gemini_request))
    )
    async with httpx.AsyncClient() as client:
        url = f"{fake.base_url}/chat/completions"
        results["first_token_ms"]["raw_httpx"] = await _sample(fake, lambda: _raw_first_token_ms(client, url))

    fake.script(*[FakeResponse(text="word " * CHUNKS, delay=CHUNK_DELAY_S)] * CONCURRENT)
    first_tokens: list[float] = []
    errors = 0

    async def one() -> None:
        nonlocal errors
        started = time.perf_counter()
        try:
            async for event in openai_provider.stream(request):
                if isinstance(event, TextDelta) and len(first_tokens) < CONCURRENT and started:
                    first_tokens.append((time.perf_counter() - started) * 1000)
                    started = 0.0
        except Exception:
            errors += 1

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one() for _ in range(CONCURRENT)))
    cpu_ms = (time.process_time() - cpu) * 1000
    results["concurrent"] = {
        "streams": CONCURRENT,
        "chunks_each": CHUNKS,
        "chunk_delay_ms": CHUNK_DELAY_S * 1000,
        "wall_s": round(time.perf_counter() - wall, 2),
        "cpu_ms_per_stream": round(cpu_ms / CONCURRENT, 2),
        "first_token_ms": _percentiles(first_tokens) if first_tokens else None,
        "errors": errors,
    }
    fake.reset()
    return results


def _hits(count: int, lines: int) -> list[SearchHit]:
    return [
        SearchHit(
            f"pkg/module_{n}.py",
            "python",
            1,
            lines,
            f"Handler{n}.run",
            "\n".join(f"    value_{i} = compute_{n}(value_{i - 1}, retries={i})" for i in range(lines)),
            1.0 - n / 100,
        )
        for n in range(count)
    ]


def _timed_ms(work: Callable[[], object], repeats: int = 10) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        timings.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(timings), 2)


def run() -> dict[str, Any]:
    fake = FakeProvider()
    fake.start()
    try:
        results = asyncio.run(_streams(fake))
    finally:
        fake.stop()
    hits = _hits(20, 60)
    history = [
        Message("user" if n % 2 == 0 else "assistant", f"turn {n} " + "words " * 120) for n in range(40)
    ]
    results["build_prompt_ms"] = _timed_ms(
        lambda: build_prompt("How does retry work?", history, hits, model_context=8192, reserve_output=2048)
    )
    results["offline_answer_ms"] = _timed_ms(lambda: offline_answer("How does retry work?", hits[:10]))
    return results
