"""Offline embedder throughput: 256-token chunks of real code, per model and batch size.

Figures: chunks/s for every local MiniLM model (float and the two int8 ones) as configured in production (a
worker thread per CPU) and in a batch-size sweep, chunks per CPU-second on one
thread (a figure other processes on a shared machine disturb less), int8-vs-float
cosine, model build and load time, query latency (p50/p95), token-counting
speed and peak RSS. Wall-clock rates are the best of a few runs. About a minute on 2 cores.
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rag.embedders.local import (
    BATCH_SIZES,
    FLOAT_MODEL,
    INT8_MODEL,
    LOCAL_MODELS,
    OnnxForward,
    available_cpus,
    ensure_model,
)
from rag.embedders.minilm import WINDOW, MiniLMEmbedder, load_tokenizer
from rag.settings import Settings

CHUNKS = 96
RUNS = 3
SWEEP_CHUNKS = 32
SWEEP_SIZES = (1, 4, 8, 16, 32)
QUERIES = 60
SOURCE_PACKAGES = ("httpx", "rich", "typer", "pydantic", "fastapi")


def code_chunks(count: int) -> list[str]:
    """Windows of exactly WINDOW tokens (with [CLS]/[SEP]) cut from installed packages' source."""
    tokenizer = load_tokenizer(None)
    site = Path(np.__file__).resolve().parent.parent
    chunks: list[str] = []
    for package in SOURCE_PACKAGES:
        for path in sorted((site / package).rglob("*.py")):
            text = path.read_text(encoding="utf-8", errors="replace")
            offsets = tokenizer.encode(text, add_special_tokens=False).offsets
            step = WINDOW - 2
            for start in range(0, len(offsets) - step, step):
                chunks.append(text[offsets[start][0] : offsets[start + step - 1][1]])
                if len(chunks) == count:
                    return chunks
    return chunks


def best_rate(embedder: MiniLMEmbedder, chunks: list[str], clock: Callable[[], float], runs: int) -> float:
    embedder.embed_documents(chunks[:2])  # warm-up
    best = float("inf")
    for _ in range(runs):
        started = clock()
        embedder.embed_documents(chunks)
        best = min(best, clock() - started)
    return len(chunks) / best


def measure_model(model: str, path: Path, chunks: list[str]) -> tuple[dict[str, object], np.ndarray]:
    started = time.perf_counter()
    forward = OnnxForward(path)
    embedder = MiniLMEmbedder(forward, model, batch_size=BATCH_SIZES[model], workers=available_cpus())
    load_s = time.perf_counter() - started
    rate = best_rate(embedder, chunks, time.perf_counter, RUNS)
    sweep = {
        str(size): round(
            best_rate(
                MiniLMEmbedder(forward, model, size, available_cpus()),
                chunks[:SWEEP_CHUNKS],
                time.perf_counter,
                2,
            ),
            1,
        )
        for size in SWEEP_SIZES
    }
    single = MiniLMEmbedder(forward, model, batch_size=BATCH_SIZES[model], workers=1)
    per_cpu_second = best_rate(single, chunks[:SWEEP_CHUNKS], time.process_time, 2)
    latencies = []
    for index in range(QUERIES):
        started = time.perf_counter()
        embedder.embed_query(f"where does the client retry request number {index}?")
        latencies.append((time.perf_counter() - started) * 1000)
    figures = {
        "batch_size": BATCH_SIZES[model],
        "chunks_per_s": round(rate, 1),
        "chunks_per_cpu_s": round(per_cpu_second, 1),
        "batch_sweep_chunks_per_s": sweep,
        "load_s": round(load_s, 3),
        "query_ms_p50": round(statistics.median(latencies), 2),
        "query_ms_p95": round(statistics.quantiles(latencies, n=20)[18], 2),
        "model_mb": round(path.stat().st_size / 1e6, 1),
    }
    return figures, embedder.embed_documents(chunks)


def run() -> dict[str, object]:
    settings = Settings.from_env()
    chunks = code_chunks(CHUNKS)
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        ensure_model(Settings.from_env({"REPOLENS_HOME": scratch, "REPOLENS_MODEL_DIR": scratch}), INT8_MODEL)
        build_s = time.perf_counter() - started

    results: dict[str, object] = {
        "cpus": available_cpus(),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        "chunk_tokens": WINDOW,
        "chunks": len(chunks),
        "build_both_models_s": round(build_s, 2),
    }
    vectors: dict[str, np.ndarray] = {}
    for model in LOCAL_MODELS:
        results[model], vectors[model] = measure_model(model, ensure_model(settings, model), chunks)
    for model in LOCAL_MODELS:
        if model != FLOAT_MODEL:
            cosine = (vectors[FLOAT_MODEL] * vectors[model]).sum(axis=1)
            figures = {"min": round(float(cosine.min()), 4), "mean": round(float(cosine.mean()), 4)}
            results[f"{model}_vs_float_cosine"] = figures

    counter = load_tokenizer(None)
    started = time.perf_counter()
    for chunk in chunks:
        counter.encode(chunk)
    results["count_tokens_per_s"] = round(len(chunks) / (time.perf_counter() - started))
    results["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return results


if __name__ == "__main__":
    import json

    json.dump(run(), sys.stdout, indent=2)
