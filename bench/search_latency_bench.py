"""Search latency on a large index: p50/p95 of a hybrid query, query embedding included.

A synthetic repository of 100,000 code-like chunks (5,000 files of 20 chunks;
identifiers drawn from a Zipf-distributed vocabulary, so some words are in most
chunks and most words in few, as in real code) is written through the real
store builder (FAISS flat index + SQLite + FTS5). Its vectors are random unit
vectors: the dense search costs the same whatever the vectors say. The queries
are embedded by the real default embedder, each one new, so the query cache never helps.

`REPOLENS_BENCH_CHUNKS` sets the index size (default 100000) and
`REPOLENS_BENCH_SEARCHES` the number of timed queries (default 200).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.embedders import Embedder, get_embedder
from rag.ranking import Ranking
from rag.retrieval import Retriever
from rag.settings import Settings
from rag.store import RepoIndex, Store
from rag.types import Chunk, RepoRecord

CHUNKS_PER_FILE = 20
VOCABULARY = 4000
TARGET_P95_MS = 100.0
SEED = 11
_SYLLABLES = [consonant + vowel for consonant in "bdklmnrstvz" for vowel in "aeiou"]
_LANGUAGES = (("python", ".py"), ("javascript", ".js"), ("go", ".go"))


@dataclass(frozen=True)
class SyntheticFile:
    path: str
    language: str
    text: str
    sha256: str
    size: int


class Generator:
    """Deterministic code-like text over a Zipf vocabulary."""

    def __init__(self, seed: int = SEED) -> None:
        self.random = random.Random(seed)
        words: set[str] = set()
        while len(words) < VOCABULARY:
            words.add("".join(self.random.choices(_SYLLABLES, k=self.random.randint(2, 4))))
        self.words = sorted(words)
        self.random.shuffle(self.words)
        self.cumulative = list(itertools.accumulate(1 / (rank + 1) ** 1.05 for rank in range(VOCABULARY)))

    def word(self) -> str:
        return self.random.choices(self.words, cum_weights=self.cumulative)[0]

    def identifier(self) -> str:
        parts = [self.word() for _ in range(self.random.randint(1, 3))]
        if self.random.random() < 0.5:
            return "_".join(parts)
        return parts[0] + "".join(part.title() for part in parts[1:])

    def chunk_text(self, name: str) -> str:
        args = ", ".join(self.identifier() for _ in range(self.random.randint(1, 3)))
        lines = [f"def {name}({args}):"]
        for _ in range(self.random.randint(4, 10)):
            lines.append(
                f"    {self.identifier()} = {self.identifier()}.{self.identifier()}({self.identifier()})"
            )
        lines.append(f'    raise {self.identifier().title()}Error("{self.word()} {self.word()} failed")')
        return "\n".join(lines)

    def file(self, number: int) -> tuple[SyntheticFile, list[Chunk]]:
        language, extension = _LANGUAGES[number % len(_LANGUAGES)]
        path = f"pkg{number % 50}/{self.word()}_{number}{extension}"
        owner = self.identifier().title().replace("_", "")
        chunks: list[Chunk] = []
        texts: list[str] = []
        line = 1
        for _ in range(CHUNKS_PER_FILE):
            name = self.identifier()
            text = self.chunk_text(name)
            end = line + text.count("\n")
            chunks.append(Chunk(path, language, line, end, f"{owner}.{name}", text))
            texts.append(text)
            line = end + 2
        body = "\n\n".join(texts) + "\n"
        digest = hashlib.sha256(body.encode()).hexdigest()
        return SyntheticFile(path, language, body, digest, len(body)), chunks

    def question(self) -> str:
        words = " ".join(self.word() for _ in range(self.random.randint(2, 5)))
        return self.random.choice(["how does {} work", "where is {} handled", "{}", "what calls {}"]).format(
            words
        )


def build_index(store: Store, embedder: Embedder, chunks_total: int, generator: Generator) -> list[Chunk]:
    """Write the synthetic repository through the real builder; returns a sample of its chunks."""
    record = RepoRecord(
        "bench/synthetic", "bench://synthetic", "local", None, None, embedder.name, embedder.dimension
    )
    rng = np.random.default_rng(SEED)
    sample: list[Chunk] = []
    with store.builder(record, None) as builder:
        for number in range(max(1, chunks_total // CHUNKS_PER_FILE)):
            file, chunks = generator.file(number)
            vectors = rng.standard_normal((len(chunks), embedder.dimension), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            builder.add_file(file, chunks, vectors)
            if number % 97 == 0:
                sample.append(generator.random.choice(chunks))
        builder.commit()
    return sample


def queries(generator: Generator, sample: list[Chunk], count: int) -> list[tuple[str, str]]:
    """`(kind, query)`: mostly questions in words, some identifiers, paths and error strings."""
    made: list[tuple[str, str]] = []
    for number in range(count):
        chunk = sample[number % len(sample)]
        kind = ("words", "words", "words", "words", "words", "words", "symbol", "symbol", "path", "text")[
            number % 10
        ]
        if kind == "symbol":
            made.append((kind, chunk.symbol or chunk.path))
        elif kind == "path":
            made.append((kind, f"what is in {chunk.path.rsplit('/', 1)[-1]}"))
        elif kind == "text":
            made.append((kind, chunk.text.splitlines()[-1].split('"')[1]))
        else:
            made.append((kind, f"{generator.question()} {number}"))
    return made


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 0.5), 2),
        "p95_ms": round(percentile(values, 0.95), 2),
        "mean_ms": round(statistics.fmean(values), 2),
    }


def ranking_steps_cost(index: RepoIndex, embedder: Embedder, workload: list[str]) -> dict[str, object]:
    """The same searches (query vectors cached) with the plain fusion, with the default ranking
    steps (roles, links, whole definitions) and with those steps over a fusion that reads each ranking
    only as deep as its candidates (`shallow_fusion`, the fusion before `RANK_DEPTH`), interleaved so all
    see the same machine load."""
    plain = Retriever(index, embedder, ranking=Ranking(roles=False, links=False, whole_definitions=False))
    ranked = Retriever(index, embedder)
    shallow = Retriever(index, embedder, rank_depth=0)
    variants = (("fusion_only", plain), ("default_ranking", ranked), ("shallow_fusion", shallow))
    timings: dict[str, list[float]] = {name: [] for name, _ in variants}
    for query in workload:
        for name, retriever in variants:
            started = time.perf_counter()
            retriever.search(query, 10)
            timings[name].append(1000 * (time.perf_counter() - started))
    figures: dict[str, object] = {name: summary(values) for name, values in timings.items()}
    figures["p95_ratio"] = round(
        percentile(timings["default_ranking"], 0.95) / percentile(timings["fusion_only"], 0.95), 2
    )
    figures["deep_fusion_p95_ratio"] = round(
        percentile(timings["default_ranking"], 0.95) / percentile(timings["shallow_fusion"], 0.95), 2
    )
    return figures


def run() -> dict:
    chunks_total = int(os.environ.get("REPOLENS_BENCH_CHUNKS", "100000"))
    searches = int(os.environ.get("REPOLENS_BENCH_SEARCHES", "200"))
    workdir = Path(tempfile.mkdtemp(prefix="repolens-latency-bench-"))
    try:
        embedder = get_embedder(
            Settings.from_env({**os.environ, "REPOLENS_HOME": str(workdir)}), cache_vectors=False
        )
        store = Store(workdir)
        generator = Generator()
        started = time.perf_counter()
        sample = build_index(store, embedder, chunks_total, generator)
        build_s = time.perf_counter() - started

        started = time.perf_counter()
        index = store.open("bench/synthetic")
        load_s = time.perf_counter() - started
        retriever = Retriever(index, embedder)
        workload = queries(generator, sample, searches)
        for _, query in workload[:5]:
            retriever.search(f"warm up {query}", 10)

        timings: dict[str, list[float]] = {"all": [], "embed": []}
        for kind, query in workload:
            started = time.perf_counter()
            retriever.search(query, 10)
            elapsed = 1000 * (time.perf_counter() - started)
            timings["all"].append(elapsed)
            timings.setdefault(kind, []).append(elapsed)
        for _, query in workload:
            started = time.perf_counter()
            embedder.embed_query(f"{query} once more")
            timings["embed"].append(1000 * (time.perf_counter() - started))
        steps = ranking_steps_cost(index, embedder, [query for _, query in workload])
        figures = {name: summary(values) for name, values in timings.items()}
        return {
            "chunks": index.size,
            "searches": len(workload),
            "build_s": round(build_s, 1),
            "load_s": round(load_s, 2),
            "meta_sqlite_mb": round((index.version_dir / "meta.sqlite").stat().st_size / 1e6, 1),
            "hybrid_search_including_embedding": figures.pop("all"),
            "query_embedding_alone": figures.pop("embed"),
            "by_query_kind": figures,
            "ranking_steps": steps,
            "target_p95_ms": TARGET_P95_MS,
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
