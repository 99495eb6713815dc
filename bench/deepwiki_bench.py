"""RepoLens against a deepwiki-style ingest, side by side in one run.

deepwiki-open splits every file into 350-word windows with 100 words of overlap (adalflow's
`TextSplitter(split_by="word")`), leaves `docs/` out, and embeds each window with the model's
own truncation: MiniLM reads 256 tokens, so most of a window's text is never embedded. This
bench re-creates that pipeline on real repositories (`bench/corpus.py`) twice:

- `deepwiki_style`: with RepoLens's own embedder (the default int8 MiniLM on onnxruntime, the same
  threads). This is the comparison issue 16's goal is stated for (`ratio_complete`).
- `deepwiki_style_float32`: with float32 MiniLM, the precision deepwiki-open really runs
  (sentence-transformers on PyTorch, float32). RepoLens's float ONNX model `minilm-l6-v2` stands in
  for it (same weights, same truncation, length-sorted batches of 8 on one thread per core; no
  PyTorch on these machines). Information only (`ratio_complete_vs_float32`): it is not the goal's
  comparison.

Then `repolens ingest` runs on the same checkout in a fresh data dir (no vector cache), and both
deepwiki-style runs again (the faster run of each counts: on a shared machine the noise then
favours deepwiki). Tokens are counted from the texts each embedder was really given (RepoLens: each
distinct chunk text once, header and context lines included), after the timed runs. Reported for
every side: wall time (RepoLens: to the searchable milestone and to complete), chunks, tokens of
text, tokens actually embedded (at most 256 per text) and tokens embedded per second of wall time.
`ratio_complete` < 1: RepoLens finished first. The load average before and after is in the JSON.
Environment: `REPOLENS_BENCH_DEEPWIKI_CORPORA=cobra,requests` (names from bench/corpus.py).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from bench.corpus import CorpusUnavailable, working_copy
from ingest import ingest
from ingest.filters import FileFilter, FilterSpec
from ingest.reader import Limits, SkipStats, iter_source_files
from rag.embedders import CachedEmbedder, Embedder, get_embedder
from rag.embedders.base import EmbedderWrapper, Progress
from rag.embedders.local import FLOAT_MODEL, load_local_embedder
from rag.embedders.minilm import load_tokenizer
from rag.settings import Settings
from rag.store import Store

WINDOW_WORDS = 350
OVERLAP_WORDS = 100
DEFAULT_CORPORA = "cobra,requests"


def word_windows(text: str) -> list[str]:
    """adalflow's word splitter as deepwiki-open configures it: 350 words, 100 overlapping."""
    words = text.split(" ")
    step = WINDOW_WORDS - OVERLAP_WORDS
    windows = []
    for start in range(0, len(words), step):
        windows.append(" ".join(words[start : start + WINDOW_WORDS]))
        if start + WINDOW_WORDS >= len(words):
            break
    return [window for window in windows if window.strip()]


class RecordingEmbedder(EmbedderWrapper):
    """An embedder that keeps every text it is asked to embed, so the tokens really embedded are
    counted after the timed run (counting inside it would slow the run down)."""

    def __init__(self, inner: Embedder) -> None:
        super().__init__(inner)
        self.texts: list[str] = []

    def embed_documents(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        self.texts.extend(texts)
        return self.inner.embed_documents(texts, progress=progress)


def token_counts(texts: Sequence[str], window: int) -> tuple[int, int]:
    """(tokens of the texts, tokens the embedder reads: at most `window` per text)."""
    if not texts:
        return 0, 0
    tokenizer = load_tokenizer(None)
    counts = [len(encoding.ids) for encoding in tokenizer.encode_batch_fast(list(texts))]
    return sum(counts), sum(min(count, window) for count in counts)


def _deepwiki_style(root: Path, embedder: Embedder) -> dict[str, Any]:
    started = time.perf_counter()
    spec = FilterSpec(exclude_dirs=["docs"])
    files = list(iter_source_files(root, FileFilter.from_spec(spec, root), Limits.from_env(), SkipStats()))
    windows = [window for file in files for window in word_windows(file.text)]
    vectors = np.asarray(embedder.embed_documents(windows), dtype=np.float32)
    index = faiss.IndexFlatIP(embedder.dimension)
    index.add(vectors)
    seconds = time.perf_counter() - started
    text_tokens, embedded = token_counts(windows, embedder.max_tokens)
    return {
        "embedder": embedder.name,
        "files": len(files),
        "chunks": len(windows),
        "seconds": round(seconds, 2),
        "text_tokens": text_tokens,
        "embedded_tokens": embedded,
        "embedded_share": round(embedded / text_tokens, 3) if text_tokens else None,
        "embedded_tokens_per_s": round(embedded / seconds),
    }


def _repolens(root: Path, home: Path, embedder: Embedder) -> dict[str, Any]:
    store = Store(home)
    recording = RecordingEmbedder(embedder)
    started = time.perf_counter()
    report = ingest(str(root), store=store, embedder=recording)
    seconds = time.perf_counter() - started
    text_tokens, embedded = token_counts(recording.texts, embedder.max_tokens)
    skipped_share = 1 - report.record.dense_total / max(1, report.record.chunk_count)
    dense_s = report.timings["embed_s"]
    return {
        "embedder": embedder.name,
        "files": report.record.file_count,
        "chunks": report.record.chunk_count,
        # Distinct chunk texts given to the embedder (chunks with equal embedded text share a vector).
        "texts_embedded": len(recording.texts),
        "searchable_s": round(report.timings["searchable_s"], 2),
        "complete_s": round(seconds, 2),
        "text_tokens": text_tokens,
        "embedded_tokens": embedded,
        # Of the chunks that get a vector, the share of their text the model reads (1.0: all of it).
        "embedded_share_of_dense_chunks": round(embedded / text_tokens, 3) if text_tokens else None,
        "chunks_lexical_only": report.record.chunk_count - report.record.dense_total,
        "lexical_only_share": round(skipped_share, 3),
        "embedded_tokens_per_s": round(embedded / seconds),
        "dense_phase_tokens_per_s": round(embedded / dense_s) if dense_s else None,
    }


def _faster(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    faster = dict(min(first, second, key=lambda run: run["seconds"]))
    faster["runs_s"] = [first["seconds"], second["seconds"]]
    return faster


def _load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def run() -> dict[str, Any]:
    names = [n for n in os.environ.get("REPOLENS_BENCH_DEEPWIKI_CORPORA", DEFAULT_CORPORA).split(",") if n]
    results: dict[str, Any] = {}
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="repolens-deepwiki-bench-") as scratch:
        settings = Settings.from_env({**os.environ, "REPOLENS_HOME": str(Path(scratch) / "unused")})
        embedder = get_embedder(settings, cache_vectors=False)
        inner = embedder.inner if isinstance(embedder, CachedEmbedder) else embedder
        float32 = load_local_embedder(settings, FLOAT_MODEL)
        for name in names:
            try:
                root = working_copy(name)
            except CorpusUnavailable as error:
                results[name] = {"skipped": str(error)}
                continue
            # Both deepwiki-style runs before and after RepoLens; the faster of each counts.
            first, first_float = _deepwiki_style(root, inner), _deepwiki_style(root, float32)
            ours = _repolens(root, Path(scratch) / f"home-{name}", inner)
            second, second_float = _deepwiki_style(root, inner), _deepwiki_style(root, float32)
            deepwiki, deepwiki_float = _faster(first, second), _faster(first_float, second_float)
            results[name] = {
                "deepwiki_style": deepwiki,
                "deepwiki_style_float32": deepwiki_float,
                "repolens": ours,
                "ratio_complete": round(ours["complete_s"] / deepwiki["seconds"], 2),
                "ratio_searchable": round(ours["searchable_s"] / deepwiki["seconds"], 3),
                "ratio_embedded_tokens": round(ours["embedded_tokens"] / deepwiki["embedded_tokens"], 2),
                "ratio_embedded_tokens_per_s": round(
                    ours["embedded_tokens_per_s"] / deepwiki["embedded_tokens_per_s"], 2
                ),
                "ratio_complete_vs_float32": round(ours["complete_s"] / deepwiki_float["seconds"], 2),
                "ratio_searchable_vs_float32": round(ours["searchable_s"] / deepwiki_float["seconds"], 3),
            }
    return {
        "window_words": WINDOW_WORDS,
        "overlap_words": OVERLAP_WORDS,
        "note": (
            "deepwiki_style: RepoLens's own embedder and threads (the goal's comparison, ratio_complete). "
            "deepwiki_style_float32: float32 MiniLM, deepwiki-open's runtime precision, with RepoLens's "
            "float ONNX model minilm-l6-v2 standing in for sentence-transformers on PyTorch (information "
            "only, ratio_complete_vs_float32). MiniLM reads 256 tokens per window."
        ),
        "load_average_before": load_before,
        "load_average_after": _load(),
        "corpora": results,
    }
