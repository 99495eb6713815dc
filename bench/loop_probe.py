"""Event-loop lag and garbage-collector pauses of one process, for reading a latency tail.

`bench/chat_bench.py` installs a probe in the server it measures (`serve_probed`) and one in its
own client process. A probe samples its event loop's lag (a timer due every `interval_s` fires
late by the time the loop spent elsewhere) and times every collection through `gc.callbacks`.
Each sample also records the CPU time the loop's thread and the whole process used meanwhile, so a
stall splits into time on the loop thread (a callback that ran long, a collection there), other
threads' CPU (the retrieval pool holding the GIL), and the rest: the process waiting for a core,
which is the machine's load, not the code. Samples carry `time.monotonic()` stamps, which on Linux
share one clock across processes, so the bench cuts each level's window out of the server's
samples afterwards.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

PROBE_INTERVAL_S = 0.005
# Lags at least this long count as stalls (a token frame held this long is a visible hitch).
STALL_MS = 20.0


class LoopProbe:
    """Lag samples `(stamp, lag_ms, loop_thread_cpu_ms, process_cpu_ms)` of the running loop, and
    collections `(start, ms, generation, on_loop_thread, cpu_ms)`: `cpu_ms` is the collecting thread's CPU
    time, which the machine's load does not stretch as it does the wall-clock `ms`."""

    def __init__(self, interval_s: float = PROBE_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.lags: list[tuple[float, float, float, float]] = []
        self.collections: list[tuple[float, float, int, bool, float]] = []
        self._loop_thread = threading.get_ident()
        self._gc_started: tuple[float, float] | None = None  # monotonic, thread CPU time
        self._task: asyncio.Task[None] | None = None
        # Objects the collector tracks (what a full collection walks) when the probe starts and stops.
        self.tracked: dict[str, int] = {}

    def start(self) -> None:
        """Start sampling the running loop and timing collections."""
        self.tracked["start"] = len(gc.get_objects())
        self._loop_thread = threading.get_ident()
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.get_running_loop().create_task(self._sample())

    def stop(self) -> None:
        self.tracked["stop"] = len(gc.get_objects())
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()

    async def _sample(self) -> None:
        while True:
            before, thread_before, process_before = time.monotonic(), time.thread_time(), time.process_time()
            await asyncio.sleep(self.interval_s)
            after = time.monotonic()
            lag = max(0.0, (after - before - self.interval_s) * 1000)
            thread_ms = (time.thread_time() - thread_before) * 1000
            process_ms = (time.process_time() - process_before) * 1000
            self.lags.append((after, lag, thread_ms, process_ms))

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        now = time.monotonic()
        if phase == "start":
            self._gc_started = (now, time.thread_time())
        elif self._gc_started is not None:
            started, cpu = self._gc_started
            on_loop = threading.get_ident() == self._loop_thread
            cpu_ms = (time.thread_time() - cpu) * 1000
            self.collections.append((started, (now - started) * 1000, info["generation"], on_loop, cpu_ms))
            self._gc_started = None

    def dump(self) -> dict[str, Any]:
        return {
            "interval_ms": self.interval_s * 1000,
            "lags": self.lags,
            "collections": self.collections,
            "tracked_objects": self.tracked,
        }


def summary(samples: dict[str, Any], start: float, end: float) -> dict[str, Any]:
    """Lag percentiles, stalls and collections between the monotonic stamps `start` and `end`."""
    window = [sample for sample in samples["lags"] if start <= sample[0] <= end]
    lags = sorted(sample[1] for sample in window)
    collections = [item for item in samples["collections"] if start <= item[0] <= end]

    def pick(fraction: float) -> float | None:
        return round(lags[min(len(lags) - 1, int(fraction * len(lags)))], 1) if lags else None

    by_generation: dict[str, dict[str, float]] = {}
    for _, ms, generation, on_loop, cpu_ms in collections:
        entry = by_generation.setdefault(
            str(generation),
            {"count": 0, "total_ms": 0.0, "max_ms": 0.0, "max_cpu_ms": 0.0, "off_loop_thread": 0},
        )
        entry["count"] += 1
        entry["total_ms"] = round(entry["total_ms"] + ms, 1)
        entry["max_ms"] = round(max(entry["max_ms"], ms), 1)
        entry["max_cpu_ms"] = round(max(entry["max_cpu_ms"], cpu_ms), 1)
        entry["off_loop_thread"] += 0 if on_loop else 1
    stalls = [lag for lag in lags if lag >= STALL_MS]
    # Where each stalled sample's time went (approximately: two cores let other threads run alongside).
    loop_cpu = other_cpu = off_cpu = 0.0
    for _, lag, thread_ms, process_ms in window:
        if lag < STALL_MS:
            continue
        elapsed = lag + samples.get("interval_ms", PROBE_INTERVAL_S * 1000)
        on_loop = min(thread_ms, elapsed)
        others = min(max(0.0, process_ms - thread_ms), elapsed - on_loop)
        loop_cpu, other_cpu, off_cpu = (
            loop_cpu + on_loop,
            other_cpu + others,
            off_cpu + elapsed - on_loop - others,
        )
    return {
        "loop_lag_ms": {
            "samples": len(lags),
            "p50": pick(0.5),
            "p95": pick(0.95),
            "p99": pick(0.99),
            "max": round(lags[-1], 1) if lags else None,
        },
        f"stalls_over_{int(STALL_MS)}ms": {
            "count": len(stalls),
            "total_ms": round(sum(stalls), 1),
            "loop_thread_cpu_ms": round(loop_cpu, 1),
            "other_threads_cpu_ms": round(other_cpu, 1),
            "waiting_for_a_core_ms": round(off_cpu, 1),
        },
        "gc": by_generation,
    }


def serve_probed(target: str) -> None:
    """`repolens serve` (its arguments from `sys.argv`) with a probe on the server's loop; the samples
    are written to `target` as JSON when the server stops (uvicorn then raises the stopping signal
    again, so an exit hook would not run)."""
    import uvicorn

    from api.cli import main

    probe = LoopProbe()
    # `_serve`, inside `serve`'s signal capture: `serve` raises a stopping signal again as it returns.
    serve = uvicorn.Server._serve

    async def probed(self: uvicorn.Server, sockets: Any = None) -> None:
        probe.start()
        try:
            await serve(self, sockets)
        finally:
            probe.stop()
            Path(target).write_text(json.dumps(probe.dump()))

    uvicorn.Server._serve = probed  # type: ignore[method-assign]  # the bench's instrumented server
    main()


if __name__ == "__main__":  # `python bench/loop_probe.py <samples file> serve --port ...`: the bench's entry
    serve_probed(sys.argv.pop(1))
