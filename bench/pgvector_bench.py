"""pgvector HNSW (the PostgreSQL store) against FAISS flat (the local store): query p95 and recall@10.

The vector set (`REPOLENS_BENCH_VECTORS`, default 1,000,000):

- **real**: every chunk of the six benchmark corpora (`bench.corpus`: starlette, requests, rich,
  cobra, express, axum), ingested by the real pipeline and embedded by the default MiniLM embedder
  (the index and its embedding cache are kept under `build/bench/pgvector-home`, so only the first
  run pays for embedding them). That is all the real code there is to embed: the run also times
  the embedder (without the vector cache) on 512 of these chunks (`embed_chunks_per_s`), to say
  how long 1M real chunks would take on this machine.
- **synthetic** (the rest): drawn from a Gaussian mixture fitted to the real vectors. The real
  vectors are clustered (k-means, one cluster per ~64 vectors, at most 256); each synthetic vector
  is its cluster's mean plus a random Gaussian combination of the cluster members' deviations (so
  it has the cluster's mean and covariance, not a copy of any one chunk), L2-normalised. This keeps
  the topical structure of code embeddings (crowded neighbourhoods per topic) without the exact
  near-duplicates of the previous "real + noise" replication, which made ties, not search quality,
  decide recall.

Queries are real: "how does <symbol> work" for random symbols of the corpora, embedded by the same
model. Ground truth is exact search (numpy) over the whole set. Reported per `hnsw.ef_search`
(`REPOLENS_BENCH_EF_SEARCH`, default 40,100,200,400, plus the store's `REPOLENS_PG_EF_SEARCH`):
p50/p95 through the store's own `PgRepoIndex.dense_search` (pool, transaction, settings: the path
every request takes) and recall@10; beside them `exact_top10_real_share` (how many of the true
neighbours are real chunks) says how much the synthetic part is in the way.

- FAISS: `IndexFlatIP`, one thread (as `rag.store.index` runs it): exact by construction.
- pgvector: vectors bulk-loaded into one repository's `vectors` table, the HNSW index built with the
  store's `REPOLENS_PG_HNSW_M` / `REPOLENS_PG_EF_CONSTRUCTION` (or `REPOLENS_BENCH_HNSW_M` /
  `REPOLENS_BENCH_EF_CONSTRUCTION` for a sweep).

Building the 1M index takes tens of minutes on two shared cores, so the loaded database can be kept:
with `REPOLENS_BENCH_PG_DIR` set, the vectors, the ground-truth inputs and the PostgreSQL data live
there and a later run with the same parameters only queries (`REPOLENS_BENCH_PREPARE_ONLY=1` builds
and stops). PostgreSQL is a `pgserver` (PostgreSQL 16, pgvector 0.6) on a unix socket, with
`shared_buffers` 3 GB so the 1M index fits in memory as pgvector's docs advise.
`REPOLENS_BENCH_QUERIES` sets the number of timed queries (default 200).
"""

from __future__ import annotations

import hashlib
import json
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

CORPORA = ("starlette", "requests", "rich", "cobra", "express", "axum")
EF_SEARCHES = (40, 100, 200, 400)
SEED = 17
CLUSTER_SIZE = 64  # real vectors per k-means cluster of the synthetic mixture
MAX_CLUSTERS = 256
EMBED_SAMPLE = 512  # chunks embedded to time the embedder
SCHEMA = "repo_bench_v1"
SHARED_BUFFERS = "3GB"
CORPUS_HOME = CORPORA_DIR.parent / "pgvector-home"


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def _real_chunks(embedder: Embedder, home: Path) -> tuple[np.ndarray, list[str], list[str]]:
    """Every chunk vector of the corpora (ingested for real), the chunks' symbols and embed texts.

    A corpus indexed by an earlier run is used as it is (not updated: a kept data set stays valid
    when the chunker changes meanwhile; delete `build/bench/pgvector-home` to start again)."""
    store = Store(home)
    vectors, symbols, texts = [], [], []
    for name in CORPORA:
        try:
            repo = working_copy(name)
        except CorpusUnavailable:
            continue
        repo_id = f"local/{str(repo.resolve()).lstrip('/')}"
        if store.get(repo_id) is None:
            repo_id = ingest(str(repo), store=store, embedder=embedder).repo_id
        index = store.open(repo_id)
        vectorless = index.vectorless_ids()
        stored = [
            c for f in index.list_files() for c in index.chunks_for_file(f.path) if c.id not in vectorless
        ]
        vectors.append(index.faiss.reconstruct_batch(np.asarray([c.id for c in stored], dtype=np.int64)))
        symbols += [c.symbol or c.path for c in stored]
        texts += [f"# {c.path}:{c.start_line}-{c.end_line} {c.symbol or ''}\n{c.text}" for c in stored]
        index.close()
    if not vectors:
        raise CorpusUnavailable("none of the corpora is available")
    return np.concatenate(vectors).astype(np.float32), symbols, texts


def _synthetic(real: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` vectors from a Gaussian mixture fitted to `real` (see the module docstring)."""
    dimension = real.shape[1]
    clusters = max(1, min(MAX_CLUSTERS, len(real) // CLUSTER_SIZE))
    kmeans = faiss.Kmeans(dimension, clusters, niter=20, seed=SEED, spherical=True)
    kmeans.train(real)
    _, assignment = kmeans.index.search(real, 1)
    members = [real[assignment[:, 0] == c] for c in range(clusters)]
    members = [m for m in members if len(m) >= 2]
    weights = np.asarray([len(m) for m in members], dtype=np.float64)
    picks = rng.choice(len(members), size=count, p=weights / weights.sum())
    out = np.empty((count, dimension), dtype=np.float32)
    for c, group in enumerate(members):
        rows = np.flatnonzero(picks == c)
        if not rows.size:
            continue
        mean = group.mean(axis=0)
        deviations = (group - mean) / np.sqrt(len(group) - 1)
        # mean + deviations^T z, z ~ N(0, I): exactly the cluster's mean and sample covariance.
        z = rng.standard_normal((rows.size, len(group)), dtype=np.float32)
        out[rows] = mean + z @ deviations
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def _likeness(real: np.ndarray, synthetic: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    """How crowded the synthetic vectors' neighbourhoods are next to the real ones': the mean cosine of
    the nearest and the 10th nearest real vector, for 1,000 real (themselves excluded) and 1,000
    synthetic vectors, and the mean cosine between random pairs of each."""
    figures: dict[str, float] = {}
    for name, group in (("real", real), ("synthetic", synthetic)):
        sample = group[rng.choice(len(group), size=min(1000, len(group)), replace=False)]
        scores = sample @ real.T
        if name == "real":
            scores[scores > 0.99999] = -1.0  # the vector itself
        top = -np.sort(-scores, axis=1)[:, :10]
        figures[f"{name}_nearest_real_cos"] = round(float(top[:, 0].mean()), 3)
        figures[f"{name}_10th_real_cos"] = round(float(top[:, 9].mean()), 3)
        figures[f"{name}_pair_cos"] = round(float((sample @ sample.T).mean()), 3)
    return figures


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
    }


def _recall(found: list[list[int]], exact: np.ndarray) -> float:
    hits = sum(len(set(f) & set(e.tolist())) for f, e in zip(found, exact, strict=True))
    return round(hits / exact.size, 4)


def _exact_top10(queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Ids (from 1) of each query's 10 nearest vectors by inner product, exactly, in blocks."""
    best_scores = np.full((len(queries), 10), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), 10), dtype=np.int64)
    block = 100_000
    for start in range(0, len(vectors), block):
        scores = queries @ vectors[start : start + block].T
        top = np.argpartition(-scores, 10, axis=1)[:, :10] if scores.shape[1] > 10 else np.argsort(-scores)
        candidates = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
        ids = np.concatenate([best_ids, top + start + 1], axis=1)
        order = np.argsort(-candidates, axis=1)[:, :10]
        best_scores = np.take_along_axis(candidates, order, axis=1)
        best_ids = np.take_along_axis(ids, order, axis=1)
    return best_ids


def _start_postgres(data: Path, *, cleanup_mode: str) -> Any:
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="repolens-xdg-"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        return pgserver.get_server(data, cleanup_mode=cleanup_mode)  # type: ignore[attr-defined]


def _configure(server: Any) -> Any:
    """Give the server `SHARED_BUFFERS` (a restart) so the index is served from shared memory."""
    import psycopg

    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        (current,) = conn.execute("SHOW shared_buffers").fetchone() or ("",)
        if current == SHARED_BUFFERS:
            return server
        conn.execute(f"ALTER SYSTEM SET shared_buffers = '{SHARED_BUFFERS}'")
    data = server.pgdata
    mode = server.cleanup_mode
    server.cleanup_mode = "stop"
    server.cleanup()
    return _start_postgres(data, cleanup_mode=mode)


def _load(url: str, vectors: np.ndarray, m: int, ef_construction: int) -> dict[str, float]:
    """Bulk-load `vectors` into the bench repository's schema and build its HNSW index."""
    import psycopg
    from pgvector.psycopg import register_vector

    from rag.store.pg.schema import migrate, repo_ddl

    timings: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        register_vector(conn)
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
        conn.execute("SELECT set_config('search_path', %s, false)", (f"{SCHEMA}, public",))
        conn.execute(repo_ddl(vectors.shape[1], m=m, ef_construction=ef_construction))
        (index_sql,) = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND indexname = 'vectors_hnsw'", (SCHEMA,)
        ).fetchone() or ("",)
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
        conn.execute("SET maintenance_work_mem = '5GB'")
        conn.execute("SET max_parallel_maintenance_workers = 1")
        started = time.perf_counter()
        conn.execute(str(index_sql))  # the store's own index definition
        timings["hnsw_build_s"] = round(time.perf_counter() - started, 1)
        (size,) = conn.execute("SELECT pg_relation_size('vectors_hnsw')").fetchone() or (0,)
        timings["hnsw_index_mb"] = round(int(size) / 1e6, 1)
        conn.execute("VACUUM ANALYZE vectors")
    return timings


def _embed_rate(embedder: Embedder, texts: list[str], rng: np.random.Generator) -> float:
    sample = [texts[i] for i in rng.choice(len(texts), size=min(EMBED_SAMPLE, len(texts)), replace=False)]
    embedder.embed_documents(sample[:8])  # warm up
    started = time.perf_counter()
    embedder.embed_documents(sample)
    return round(len(sample) / (time.perf_counter() - started), 1)


class _Dataset:
    """The vector set and the queries, built once and kept in `folder` (the fingerprint decides)."""

    def __init__(self, folder: Path, fingerprint: dict[str, Any]) -> None:
        self.folder = folder
        self.fingerprint = fingerprint

    @property
    def ready(self) -> bool:
        path = self.folder / "dataset.json"
        return path.is_file() and json.loads(path.read_text()) == self.fingerprint

    def save(self, vectors: np.ndarray, queries: np.ndarray, build: dict[str, Any]) -> None:
        np.save(self.folder / "vectors.npy", vectors)
        np.save(self.folder / "queries.npy", queries)
        (self.folder / "build.json").write_text(json.dumps(build))
        (self.folder / "dataset.json").write_text(json.dumps(self.fingerprint))

    def load(self) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        return (
            np.load(self.folder / "vectors.npy", mmap_mode="r"),
            np.load(self.folder / "queries.npy"),
            json.loads((self.folder / "build.json").read_text()),
        )


def run() -> dict[str, Any]:
    total = _env_int("REPOLENS_BENCH_VECTORS", 1_000_000)
    queries_total = _env_int("REPOLENS_BENCH_QUERIES", 200)
    defaults = Settings.from_env()
    m = _env_int("REPOLENS_BENCH_HNSW_M", defaults.pg_hnsw_m)
    ef_construction = _env_int("REPOLENS_BENCH_EF_CONSTRUCTION", defaults.pg_ef_construction)
    ef_searches = sorted(
        {int(v) for v in (os.environ.get("REPOLENS_BENCH_EF_SEARCH") or "").split(",") if v.strip()}
        or set(EF_SEARCHES)
    )
    ef_searches = sorted({*ef_searches, defaults.pg_ef_search})
    kept = os.environ.get("REPOLENS_BENCH_PG_DIR")
    folder = Path(kept) if kept else Path(tempfile.mkdtemp(prefix="repolens-pgvector-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    server = None
    try:
        settings = Settings.from_env(environ={"REPOLENS_HOME": str(CORPUS_HOME)})
        embedder = get_embedder(settings)
        try:
            real, symbols, texts = _real_chunks(embedder, CORPUS_HOME)
        except CorpusUnavailable as error:
            return {"skipped": str(error)}
        real = real[:total]
        rng = np.random.default_rng(SEED)
        fingerprint = {
            "vectors": total,
            "queries": queries_total,
            "real_sha256": hashlib.sha256(real.tobytes()).hexdigest(),
            "seed": SEED,
            "synthetic": f"gaussian-mixture/{CLUSTER_SIZE}/{MAX_CLUSTERS}",
            "m": m,
            "ef_construction": ef_construction,
        }
        dataset = _Dataset(folder, fingerprint)
        server = _configure(_start_postgres(folder / "pgdata", cleanup_mode="stop" if kept else "delete"))
        url = server.get_uri()
        build: dict[str, Any]
        if dataset.ready:
            vectors, queries, build = dataset.load()
        else:
            picks = rng.choice(len(symbols), size=queries_total, replace=False)
            queries = np.stack(
                [embedder.embed_query(f"how does {symbols[i].rsplit('.', 1)[-1]} work") for i in picks]
            ).astype(np.float32)
            started = time.perf_counter()
            synthetic = _synthetic(real, total - len(real), rng) if total > len(real) else real[:0]
            build = {"synthetic_s": round(time.perf_counter() - started, 1)}
            if len(synthetic):
                build["likeness"] = _likeness(real, synthetic, rng)
            vectors = np.ascontiguousarray(np.concatenate([real, synthetic]))
            del synthetic
            load_before = round(os.getloadavg()[0], 1)
            build.update(_load(url, vectors, m, ef_construction))
            build["load_average_before_after_build"] = [load_before, round(os.getloadavg()[0], 1)]
            dataset.save(vectors, queries, build)
        if os.environ.get("REPOLENS_BENCH_PREPARE_ONLY"):
            return {"prepared": str(folder), "vectors": total, "real_vectors": int(len(real)), **build}

        exact = _exact_top10(queries, np.asarray(vectors))
        real_share = round(float(np.mean(exact <= len(real))), 4)

        flat = faiss.IndexFlatIP(vectors.shape[1])
        flat.add(np.ascontiguousarray(vectors))
        faiss.omp_set_num_threads(1)
        flat.search(queries[:1], 10)
        faiss_ms = []
        for query in queries:
            started = time.perf_counter()
            flat.search(query.reshape(1, -1), 10)
            faiss_ms.append((time.perf_counter() - started) * 1000)
        del flat

        from rag.store.pg import index as pg_index
        from rag.store.pg.store import PgStore, PgTuning

        store = PgStore(folder / "home", url, PgTuning.from_settings(defaults))
        results: dict[str, Any] = {}
        try:
            record = RepoRecord("bench/pgvector", "bench://pgvector", "local", None, None, embedder.name, 384)
            index = pg_index.PgRepoIndex(store.pool, SCHEMA, record, ef_search=defaults.pg_ef_search)
            for query in queries:  # warm the pool and the index pages
                index.dense_search(query, 10)
            for ef_search in ef_searches:
                index.ef_search = ef_search
                found, took = [], []
                for query in queries:
                    started = time.perf_counter()
                    hits = index.dense_search(query, 10)
                    took.append((time.perf_counter() - started) * 1000)
                    found.append([chunk_id for chunk_id, _ in hits])
                results[f"ef_search_{ef_search}"] = {
                    **_percentiles(took),
                    "recall_at_10": _recall(found, exact),
                }
        finally:
            store.close()
        flat_p95 = _percentiles(faiss_ms)["p95_ms"]
        return {
            "vectors": total,
            "real_vectors": int(len(real)),
            "synthetic_vectors": int(total - len(real)),
            "corpora": list(CORPORA),
            "embedder": embedder.name,
            "embed_chunks_per_s": _embed_rate(get_embedder(settings, cache_vectors=False), texts, rng),
            "dimension": int(vectors.shape[1]),
            "queries": queries_total,
            "exact_top10_real_share": real_share,
            "load_average": [round(v, 2) for v in os.getloadavg()],
            "faiss_flat": _percentiles(faiss_ms),
            "pgvector_hnsw": {"m": m, "ef_construction": ef_construction, **results, **build},
            "p95_ratio_hnsw_over_flat": {
                name: round(figures["p95_ms"] / flat_p95, 3) for name, figures in results.items()
            },
        }
    finally:
        if server is not None:
            server.cleanup()
        if not kept:
            shutil.rmtree(folder, ignore_errors=True)
