"""BM25 over a postings table: the PostgreSQL store's lexical side, ranked as the local store's FTS5.

PostgreSQL's own full-text search ranks with `ts_rank` (no document-frequency term), so retrieval
would rank differently on the two backends. Instead each chunk's `rag.lexical.tokenize` tokens are
stored as postings `(term, chunk_id, frequency)`, the frequency already weighted by column as
`rag.lexical.COLUMN_WEIGHTS` weights FTS5's `bm25()` (path, symbol, body), and a query computes
FTS5's formula in SQL:

    idf(t)  = max(ln((N - n(t) + 0.5) / (n(t) + 0.5)), 1e-6)
    score   = sum over t of idf(t) * f(t) * (k1 + 1) / (f(t) + k1 * (1 - b + b * |D| / avgdl))

with k1 = 1.2, b = 0.75, N chunks, n(t) chunks holding t, f(t) the weighted frequency and |D| the
chunk's token count over all columns. The same terms are dropped over `POSTINGS_BUDGET`
(`rag.lexical.within_budget`), so both backends return the same chunks in the same order (ties
aside).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import psycopg
from psycopg.rows import TupleRow

from rag import lexical

K1 = 1.2
B = 0.75


def postings_of_terms(
    chunk_id: int, columns: Sequence[Sequence[str]]
) -> tuple[list[tuple[str, int, float]], int]:
    """The `(term, chunk_id, weighted frequency)` rows of one chunk and its length in tokens, from its
    tokenised `(path, symbol, body)` terms (`rag.lexical.chunk_terms`, or a local store's FTS5 columns)."""
    weighted: dict[str, float] = {}
    for terms, weight in zip(columns, lexical.COLUMN_WEIGHTS, strict=True):
        for term in terms:
            weighted[term] = weighted.get(term, 0.0) + weight
    return [(term, chunk_id, frequency) for term, frequency in weighted.items()], sum(map(len, columns))


def search(
    conn: psycopg.Connection[TupleRow],
    query: str,
    k: int,
    *,
    paths: Sequence[str] | None = None,
    language: str | None = None,
) -> list[tuple[int, float]]:
    """The `k` best chunks for `query`, as `(chunk_id, score)`, best first (`paths`: only these files)."""
    terms = lexical.query_terms(query) if k > 0 else []
    if not terms or (paths is not None and not paths):
        return []
    hits: dict[str, int] = dict(
        conn.execute(
            "SELECT term, COUNT(*) FROM postings WHERE term = ANY(%s) GROUP BY term", (terms,)
        ).fetchall()
    )
    kept = lexical.within_budget((int(count), term) for term, count in hits.items())
    if not kept:
        return []
    total, avgdl = conn.execute("SELECT COUNT(*), AVG(lexical_length) FROM chunks").fetchone() or (0, 0)
    avgdl = max(float(avgdl or 0.0), 1e-9)
    idf = [max(math.log((int(total) - int(hits[t]) + 0.5) / (int(hits[t]) + 0.5)), 1e-6) for t in kept]
    params: dict[str, object] = {"terms": kept, "idf": idf, "avgdl": avgdl, "k": k, "k1": K1, "b": B}
    where = ""
    if language:
        where += " AND c.language = %(language)s"
        params["language"] = language
    if paths is not None:
        where += " AND c.path = ANY(%(paths)s)"
        params["paths"] = list(paths)
    rows = conn.execute(
        "SELECT p.chunk_id, SUM(q.idf * p.frequency * (%(k1)s + 1) / (p.frequency + %(k1)s "
        "* (1 - %(b)s + %(b)s * c.lexical_length / %(avgdl)s))) AS score "
        "FROM unnest(%(terms)s::text[], %(idf)s::float8[]) AS q(term, idf) "
        "JOIN postings p ON p.term = q.term JOIN chunks c ON c.id = p.chunk_id "
        f"WHERE TRUE{where} GROUP BY p.chunk_id ORDER BY score DESC, p.chunk_id LIMIT %(k)s",
        params,
    ).fetchall()
    return [(int(chunk_id), float(score)) for chunk_id, score in rows]
