"""Natural developer questions on real repositories: does the answer's code come first?

Each `bench/questions/<corpus>.jsonl` line is a hand-written question in a developer's words
(mostly without identifiers), the 1-3 files an answer must cite, its intent as the author meant
it (`code`: how/where something works, `usage`: how do I / example, `test`: about tests) and
whether it is `frozen`. Frozen questions (about a third) were never looked at while tuning the
ranking; they are reported apart, so the tuned figures can be checked against them.

The corpora are the pinned working copies of `bench/corpus.py` (exported from the fetched
mirrors, never committed). Each is ingested with the real pipeline and default filters (docs,
tests, examples and changelogs stay in the index) into a store under `build/bench/questions/`,
keyed by a hash of the code that shapes an index (chunker, store schema, roles), so reruns reuse
it and a change to chunking or the schema builds a fresh one; vectors come from the shared cache
of `build/bench/embeddings`, so only new chunk texts are embedded.

A question counts as found at rank r when the r-th hit is in one of its files. Reported per
corpus and macro-averaged: Recall@1/5/10 and MRR@10, for each mode and ranking variant, plus the
share of top-1 hits that are source files. `REPOLENS_BENCH_SPLIT=tuning` (or `frozen`) evaluates
one part only: whoever tunes runs `tuning`, so no frozen figure is ever printed while tuning.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import corpus as corpora
from ingest import IngestOptions, ingest
from rag.embedders import Embedder
from rag.retrieval import Retriever
from rag.store import Store
from rag.types import SearchHit

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS_DIR = Path(__file__).resolve().parent / "questions"
STORES_DIR = ROOT / "build" / "bench" / "questions"
# The code whose change makes an old benchmark index stale.
INDEX_SHAPING = (
    "ingest/chunking.py",
    "rag/store/schema.py",
    "rag/store/builder.py",
    "rag/types.py",
    "rag/roles.py",
)
K = 10
CUTOFFS = (1, 5, 10)
PARTS = ("tuning", "frozen")
# `REPOLENS_BENCH_SPLIT` values: the parts, and `dev` (describing-to-code dev sets, no question part).
SPLITS = ("tuning", "dev", "frozen")


@dataclass(frozen=True)
class Question:
    question: str
    files: tuple[str, ...]
    intent: str
    frozen: bool


def load_questions(name: str) -> list[Question]:
    path = QUESTIONS_DIR / f"{name}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [Question(r["question"], tuple(r["files"]), r["intent"], bool(r.get("frozen"))) for r in rows]


def question_sets() -> list[str]:
    return sorted(path.stem for path in QUESTIONS_DIR.glob("*.jsonl"))


def index_key() -> str:
    digest = hashlib.sha256()
    for relative in INDEX_SHAPING:
        path = ROOT / relative
        digest.update(relative.encode() + b"\0" + (path.read_bytes() if path.exists() else b""))
    return digest.hexdigest()[:12]


def first_relevant(hits: Sequence[SearchHit], files: Sequence[str]) -> int | None:
    return next((rank for rank, hit in enumerate(hits, start=1) if hit.path in files), None)


def metrics(ranks: Sequence[int | None]) -> dict[str, float]:
    total = max(len(ranks), 1)
    figures = {f"recall@{c}": sum(1 for r in ranks if r is not None and r <= c) / total for c in CUTOFFS}
    figures["mrr@10"] = sum(1 / r for r in ranks if r is not None and r <= K) / total
    return {name: round(value, 4) for name, value in figures.items()}


def macro(per_corpus: Sequence[dict[str, float]]) -> dict[str, float]:
    if not per_corpus:
        return {}
    return {key: round(sum(m[key] for m in per_corpus) / len(per_corpus), 4) for key in per_corpus[0]}


Search = Callable[[Retriever, str], list[SearchHit]]


def evaluate(retriever: Retriever, questions: Sequence[Question], search: Search) -> dict[str, object]:
    ranks: list[int | None] = []
    source_top1 = 0
    for item in questions:
        hits = search(retriever, item.question)
        ranks.append(first_relevant(hits, item.files))
        role_of = getattr(retriever.index, "file_role", None)
        if hits and role_of is not None and role_of(hits[0].path) == "source":
            source_top1 += 1
    figures: dict[str, object] = dict(metrics(ranks))
    figures["source_top1"] = round(source_top1 / max(len(questions), 1), 4)
    return figures


def ingest_corpus(name: str, store: Store, embedder: Embedder) -> tuple[Store, str, float]:
    """The corpus's index in `store` (built once per index key), its repo id and the ingest seconds."""
    started = time.perf_counter()
    root = corpora.working_copy(name)
    report = ingest(str(root), IngestOptions(), store=store, embedder=embedder)
    return store, report.repo_id, round(time.perf_counter() - started, 1)


def run(embedder: Embedder, variants: dict[str, Search]) -> dict[str, object]:
    """Figures for every question set whose corpus is available, per variant: tuning and frozen apart."""
    # Per embedder too: an index built with another model cannot be updated (embedder_mismatch).
    home = Path(
        os.environ.get("REPOLENS_BENCH_QUESTIONS_HOME") or STORES_DIR / f"{index_key()}-{embedder.name}"
    )
    store = Store(home)
    results: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    chosen = selected_sets()
    for name in question_sets():
        if chosen is not None and name not in chosen:
            continue
        try:
            _, repo_id, seconds = ingest_corpus(name, store, embedder)
        except corpora.CorpusUnavailable as error:
            skipped[name] = str(error)
            continue
        index = store.open(repo_id)
        retriever = Retriever(index, embedder)
        questions = load_questions(name)
        parts = {
            part: [q for q in questions if q.frozen == (part == "frozen")]
            for part in selected_parts()
            if part in PARTS
        }
        results[name] = {
            "files": index.record.file_count,
            "chunks": index.record.chunk_count,
            "questions": {part: len(items) for part, items in parts.items()},
            "ingest_s": seconds,
            "variants": {
                variant: {part: evaluate(retriever, items, search) for part, items in parts.items()}
                for variant, search in variants.items()
            },
        }
    summary = {
        variant: {
            part: macro([r["variants"][variant][part] for r in results.values()])
            for part in selected_parts()
            if part in PARTS
        }
        for variant in variants
    }
    table = markdown_table(results, summary)
    print(table, file=sys.stderr)
    return {"k": K, "index": str(home), "macro": summary, "corpora": results, "skipped": skipped,
            "table": table}  # fmt: skip


def _cells(figures: dict[str, float]) -> list[str]:
    keys = ("recall@1", "recall@5", "recall@10", "mrr@10", "source_top1")
    return [f"{100 * figures[key]:.1f}" if key in figures else "" for key in keys]


def markdown_table(results: dict[str, dict], summary: dict[str, dict]) -> str:
    """Per-corpus rows for the tuning questions, then macro rows for tuning and frozen."""
    lines = [
        "| corpus | variant | R@1 | R@5 | R@10 | MRR@10 | top-1 is source |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        shown = "tuning" if "tuning" in result["questions"] else "frozen"
        for variant, parts in result["variants"].items():
            label = f"{name} ({result['questions'][shown]} q{'' if shown == 'tuning' else ', frozen'})"
            lines.append("| " + " | ".join([label, variant, *_cells(parts[shown])]) + " |")
    for part in (part for part in selected_parts() if part in PARTS):
        count = sum(r["questions"][part] for r in results.values())
        for variant, parts in summary.items():
            label = f"**macro, {part}** ({count} q)"
            lines.append("| " + " | ".join([label, variant, *_cells(parts[part])]) + " |")
    return "\n".join(lines)


def selected_parts() -> tuple[str, ...]:
    """`REPOLENS_BENCH_SPLIT=tuning`, `dev` or `frozen` evaluates that part only (all by default); the
    describing-to-code part's held-out queries count as `frozen`, and only it has `dev` sets."""
    raw = os.environ.get("REPOLENS_BENCH_SPLIT", "").strip()
    if raw and raw not in SPLITS:
        raise ValueError(f"REPOLENS_BENCH_SPLIT must be one of {', '.join(SPLITS)}, not {raw!r}")
    return (raw,) if raw else SPLITS


def selected_sets() -> list[str] | None:
    """`REPOLENS_BENCH_CORPORA=starlette,cobra` limits the run (all sets by default)."""
    raw = os.environ.get("REPOLENS_BENCH_CORPORA", "").strip()
    return [name.strip() for name in raw.split(",") if name.strip()] or None
