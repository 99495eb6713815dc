"""pgvector HNSW (the PostgreSQL store) against FAISS flat (the local store): query p95 and recall@10.

Vectors are real: the chunks of real repositories (`bench.corpus`: starlette and requests),
ingested by the real pipeline and embedded by the default MiniLM embedder. To reach the asked
scale they are replicated, each copy perturbed by Gaussian noise and normalised again (every
copy a near-duplicate of a real chunk, like the many similar files of a large organisation),
so the neighbourhoods HNSW must find are as crowded as real code makes them. Queries are
real questions about the corpora's symbols, embedded by the same model.

- FAISS: `IndexFlatIP`, one thread (as `rag.store.index` runs it): exact by construction.
- pgvector: the vectors bulk-loaded into one repository's `vectors` table, the HNSW index built
  (`m` 16, `ef_construction` 64, pgvector's defaults), then queried through the store's own
  `PgRepoIndex.dense_search` (pool, transaction, `hnsw.ef_search`), the path every request takes.
  Recall@10 is measured against exact search (numpy) for `hnsw.ef_search` 40 (pgvector's default),
  100 (the store's `EF_SEARCH`), 200 and 400, with `recall_within_tie` beside it (hits as similar as
  the exact 10th neighbour, within 0.01: copies of one chunk are near-ties). Also timed: how fast
  vectors go into an existing HNSW index (what an incremental ingest pays per new chunk).

PostgreSQL is a `pgserver` (PostgreSQL 16, pgvector 0.6) started for the run with its defaults
(128 MB shared buffers), on a unix socket. `REPOLENS_BENCH_VECTORS` sets the scale (default
100000; the issue's 1M does not fit the time of two shared cores), `REPOLENS_BENCH_QUERIES` the
timed queries (default 200), `REPOLENS_BENCH_NOISE` the copies' noise (default 0.35).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from bench.corpus import CORPORA_DIR, CorpusUnavailable, working_copy
from ingest import ingest
from rag.embedders import Embedder, get_embedder
from rag.settings import Settings
from rag.store import Store
from rag.types import RepoRecord

CORPORA = ("starlette", "requests")
# The noise vector's norm relative to the (unit) real vector: 0.35 makes each copy a near-duplicate
# (cosine 0.94 to its original, 0.89 between copies), 1.0 a looser variant (0.71 and 0.5).
NOISE = float(os.environ.get("REPOLENS_BENCH_NOISE", "0.35"))
EF_SEARCHES = (40, 100, 200, 400)
TIE = 0.01  # a hit within this cosine of the exact 10th neighbour counts for `recall_within_tie`
INSERT_SAMPLE = 2_000
SEED = 17
CORPUS_HOME = CORPORA_DIR.parent / "pgvector-home"


def _real_vectors(embedder: Embedder, home: Path) -> tuple[np.ndarray, list[str]]:
    """Every chunk vector of the corpora (ingested for real) and the chunks' symbols."""
    store = Store(home)
    vectors, symbols = [], []
    for name in CORPORA:
        try:
            repo = working_copy(name)
        except CorpusUnavailable:
            continue
        index = store.open(ingest(str(repo), store=store, embedder=embedder).repo_id)
        vectorless = index.vectorless_ids()
        stored = [
            c for f in index.list_files() for c in index.chunks_for_file(f.path) if c.id not in vectorless
        ]
        vectors.append(index.faiss.reconstruct_batch(np.asarray([c.id for c in stored], dtype=np.int64)))
        symbols += [c.symbol or c.path for c in stored]
    if not vectors:
        raise CorpusUnavailable("none of the corpora is available")
    return np.concatenate(vectors).astype(np.float32), symbols


def _replicate(real: np.ndarray, total: int) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    copies = [real]
    while sum(len(c) for c in copies) < total:
        noise = rng.standard_normal(real.shape, dtype=np.float32)
        noise *= NOISE / np.linalg.norm(noise, axis=1, keepdims=True)
        copy = real + noise
        copies.append(copy / np.linalg.norm(copy, axis=1, keepdims=True))
    return np.ascontiguousarray(np.concatenate(copies)[:total])


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
    }


def _recall(found: list[list[int]], exact: np.ndarray) -> float:
    hits = sum(len(set(f) & set(e.tolist())) for f, e in zip(found, exact, strict=True))
    return round(hits / exact.size, 4)


def _recall_within_tie(
    found: list[list[int]], tenth: np.ndarray, queries: np.ndarray, vectors: np.ndarray
) -> float:
    """Share of the 10 hits at least as similar as the exact 10th neighbour, less `TIE`: among
    near-duplicates, which of two equally close copies comes back says nothing about quality."""
    good = 0
    for ids, floor, query in zip(found, tenth, queries, strict=True):
        similarities = vectors[np.asarray(ids, dtype=np.int64) - 1] @ query if ids else np.zeros(0)
        good += int(np.sum(similarities >= floor - TIE))
    return round(good / (10 * len(found)), 4)


def _start_postgres(folder: Path) -> Any:
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="repolens-xdg-"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        return pgserver.get_server(folder / "data", cleanup_mode="delete")


def _load(url: str, vectors: np.ndarray) -> tuple[str, dict[str, float]]:
    """Bulk-load `vectors` into a repository schema and build its HNSW index; returns the schema."""
    import psycopg
    from pgvector.psycopg import register_vector

    from rag.store.pg.schema import migrate, repo_ddl

    schema = "repo_bench_v1"
    timings: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        register_vector(conn)
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute("SELECT set_config('search_path', %s, false)", (f"{schema}, public",))
        conn.execute(repo_ddl(vectors.shape[1]))  # type: ignore[arg-type]
        conn.execute("DROP INDEX vectors_hnsw")
        started = time.perf_counter()
        with (
            conn.cursor() as cursor,
            cursor.copy("COPY vectors (id, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy,
        ):
            copy.set_types(["int8", "vector"])
            for row, vector in enumerate(vectors, start=1):
                copy.write_row((row, vector))
        timings["copy_s"] = round(time.perf_counter() - started, 1)
        conn.execute("SET maintenance_work_mem = '2GB'")
        conn.execute("SET max_parallel_maintenance_workers = 1")
        started = time.perf_counter()
        conn.execute("CREATE INDEX vectors_hnsw ON vectors USING hnsw (embedding vector_cosine_ops)")
        timings["hnsw_build_s"] = round(time.perf_counter() - started, 1)
        (size,) = conn.execute("SELECT pg_relation_size('vectors_hnsw')").fetchone() or (0,)
        timings["hnsw_index_mb"] = round(int(size) / 1e6, 1)
    return schema, timings


def _insert_rate(url: str, schema: str, vectors: np.ndarray) -> float:
    """Vectors per second going into the existing HNSW index (rolled back afterwards)."""
    import psycopg
    from pgvector.psycopg import register_vector

    with psycopg.connect(url) as conn:
        register_vector(conn)
        conn.execute("SELECT set_config('search_path', %s, true)", (f"{schema}, public",))
        started = time.perf_counter()
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO vectors (id, embedding) VALUES (%s, %s)",
                [(10_000_000 + row, vector) for row, vector in enumerate(vectors)],
            )
        elapsed = time.perf_counter() - started
        conn.rollback()
    return round(len(vectors) / elapsed, 1)


def run() -> dict[str, Any]:
    total = int(os.environ.get("REPOLENS_BENCH_VECTORS", "100000"))
    queries_total = int(os.environ.get("REPOLENS_BENCH_QUERIES", "200"))
    workdir = Path(tempfile.mkdtemp(prefix="repolens-pgvector-bench-"))
    server = None
    try:
        # The corpora's index (and its embedding cache) is kept between runs under build/: only the
        # first run pays for embedding them.
        settings = Settings.from_env(environ={"REPOLENS_HOME": str(CORPUS_HOME)})
        embedder = get_embedder(settings)
        try:
            real, symbols = _real_vectors(embedder, CORPUS_HOME)
        except CorpusUnavailable as error:
            return {"skipped": str(error)}
        vectors = _replicate(real, total)
        rng = np.random.default_rng(SEED)
        picks = rng.choice(len(symbols), size=queries_total, replace=False)
        queries = np.stack(
            [embedder.embed_query(f"how does {symbols[i].rsplit('.', 1)[-1]} work") for i in picks]
        ).astype(np.float32)
        similarities = queries @ vectors.T
        exact = np.argsort(-similarities, axis=1)[:, :10]
        tenth = similarities[np.arange(len(queries)), exact[:, -1]]
        exact += 1  # ids start at 1
        del similarities

        flat = faiss.IndexFlatIP(vectors.shape[1])
        flat.add(vectors)
        faiss_ms = []
        for query in queries:
            started = time.perf_counter()
            flat.search(query.reshape(1, -1), 10)
            faiss_ms.append((time.perf_counter() - started) * 1000)

        server = _start_postgres(workdir)
        url = server.get_uri()
        schema, build = _load(url, vectors)

        from rag.store.pg import index as pg_index
        from rag.store.pg.store import PgStore

        store = PgStore(workdir / "home", url)
        default_ef = pg_index.EF_SEARCH
        try:
            record = RepoRecord("bench/pgvector", "bench://pgvector", "local", None, None, embedder.name, 384)
            index = pg_index.PgRepoIndex(store.pool, schema, record)
            results: dict[str, Any] = {}
            for ef_search in sorted({*EF_SEARCHES, default_ef}):
                pg_index.EF_SEARCH = ef_search
                index.dense_search(queries[0], 10)  # warm the pool and the index pages
                found, took = [], []
                for query in queries:
                    started = time.perf_counter()
                    hits = index.dense_search(query, 10)
                    took.append((time.perf_counter() - started) * 1000)
                    found.append([chunk_id for chunk_id, _ in hits])
                results[f"ef_search_{ef_search}"] = {
                    **_percentiles(took),
                    "recall_at_10": _recall(found, exact),
                    "recall_within_tie": _recall_within_tie(found, tenth, queries, vectors),
                }
        finally:
            pg_index.EF_SEARCH = default_ef
            store.close()
        sample = vectors[rng.choice(len(vectors), size=min(INSERT_SAMPLE, len(vectors)), replace=False)]
        return {
            "vectors": total,
            "real_vectors": int(len(real)),
            "corpora": list(CORPORA),
            "dimension": int(vectors.shape[1]),
            "noise": NOISE,
            "queries": queries_total,
            "faiss_flat": _percentiles(faiss_ms),
            "pgvector_hnsw": {**results, **build, "insert_per_s": _insert_rate(url, schema, sample)},
            "p95_ratio_hnsw_over_flat": round(
                results[f"ef_search_{default_ef}"]["p95_ms"] / _percentiles(faiss_ms)["p95_ms"], 2
            ),
        }
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
