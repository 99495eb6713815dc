"""Hybrid retrieval: dense (FAISS) and BM25 (FTS5) rankings fused by reciprocal rank fusion.

Dense search finds paraphrases ("how are redirects followed?" -> `_follow_redirects`),
BM25 finds exact identifiers and strings; RRF needs no score calibration
between the two, only ranks. On top of the fusion, a query that names a file
path or a symbol gets that chunk first, and overlapping or adjacent chunks of
one file are merged so the caller (a person or a prompt budget) never sees the
same lines twice.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rag.embedders import Embedder
from rag.errors import ErrorCode, RepoLensError
from rag.lexical import STOPWORDS, path_matches
from rag.store import RepoIndex, StoredChunk
from rag.types import SearchHit

Mode = Literal["hybrid", "dense", "lexical"]
MODES: tuple[str, ...] = ("hybrid", "dense", "lexical")

RRF_K = 60
MAX_K = 100
# A named path or symbol outranks every fused score (RRF scores are below 1).
EXACT_BOOST = 1.0
# Chunks this many lines apart or closer count as adjacent: chunkers leave the
# blank lines between two functions outside both.
MERGE_GAP = 2

_PATH_LIKE = re.compile(r"[\w\-]+(?:[./][\w\-]+)+")
_SYMBOL_LIKE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
_CAMEL_INSIDE = re.compile(r"[a-z0-9][A-Z]")
# A line that defines `name` in most languages: a keyword (Go methods with their
# receiver) followed by the name, or the name assigned at the start of a line.
_DEFINITION = (
    r"(?:\b(?:def|class|function|func|fn|struct|interface|type|enum|trait|module|const|let|var)\s+"
    r"(?:\([^)]*\)\s*)?{name}\b|^\s*(?:export\s+)?{name}\s*(?::[^=]*)?=[^=])"
)


class SearchError(RepoLensError):
    code = ErrorCode.BAD_REQUEST


@dataclass(frozen=True, slots=True)
class Weights:
    """Relative weight of each ranking in the fusion.

    Tuned with bench/retrieval_bench.py: on both code bases a 1.5 lexical
    weight beat 1.0 (and 2.0 dense) on file Recall@5, MRR@10 and span Recall@5.
    """

    dense: float = 1.0
    lexical: float = 1.5


@functools.lru_cache(maxsize=2048)
def _cached_query_vector(embedder: Embedder, query: str) -> np.ndarray:
    vector = np.asarray(embedder.embed_query(query), dtype=np.float32)
    vector.flags.writeable = False
    return vector


def rrf(rankings: Sequence[tuple[float, Sequence[int]]], k: int = RRF_K) -> dict[int, float]:
    """Reciprocal rank fusion of `(weight, ids best first)` rankings."""
    scores: dict[int, float] = {}
    for weight, ids in rankings:
        for rank, chunk_id in enumerate(ids, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + weight / (k + rank)
    return scores


def named_paths(query: str) -> list[str]:
    """Tokens of the query that may name a file (`rag/prompt.py`, `prompt.py`): they hold `.` or `/`."""
    return [match.group() for match in _PATH_LIKE.finditer(query)]


def named_symbols(query: str) -> list[str]:
    """Tokens of the query that look like code identifiers rather than words.

    `Client.send`, `send_all`, `sendAll` and `send()` count; a plain word counts
    only when it is the whole query, so "get the width" does not pin a `width`.
    """
    words = _SYMBOL_LIKE.findall(query)
    if len(words) == 1 and query.strip().rstrip("()") == words[0] and words[0].lower() not in STOPWORDS:
        return words
    return [
        word
        for word in words
        if "." in word or "_" in word.strip("_") or _CAMEL_INSIDE.search(word) or f"{word}(" in query
    ]


def _file_matches(path: str, named: str) -> bool:
    return path == named or path.endswith("/" + named)


class Retriever:
    """Searches one repository index; cheap to create (the index and the embedder are shared).

    `embedder` may be None for lexical-only use, so `repolens search --mode lexical`
    never loads the model.
    """

    def __init__(
        self,
        index: RepoIndex,
        embedder: Embedder | None,
        *,
        weights: Weights | None = None,
        candidates: int = 50,
    ) -> None:
        self.index = index
        self.embedder = embedder
        self.weights = weights or Weights()
        self.candidates = candidates

    def query_vector(self, query: str) -> np.ndarray:
        """The query embedding, cached: repeated questions and evaluation runs skip the model."""
        assert self.embedder is not None, "search() checks the embedder first"
        return _cached_query_vector(self.embedder, query)

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        path_glob: str | None = None,
        language: str | None = None,
        mode: Mode = "hybrid",
    ) -> list[SearchHit]:
        """The `k` best spans for `query`, best first, merged per file and filtered."""
        query = query.strip()
        if not query:
            raise SearchError("the query is empty")
        if mode not in MODES:
            raise SearchError(f"unknown search mode {mode!r}: use one of {', '.join(MODES)}")
        if not 1 <= k <= MAX_K:
            raise SearchError(f"k must be between 1 and {MAX_K}, got {k}")
        if mode != "lexical":
            if self.embedder is None:
                raise SearchError(f"{mode} search needs an embedder; use mode 'lexical' without one")
            self.index.check_embedder(self.embedder)

        pool = max(self.candidates, 3 * k)
        filters = {"path_glob": path_glob or None, "language": language or None}
        rankings: list[tuple[float, list[int]]] = []
        seen: dict[str, list[int]] = {}  # unfiltered BM25 results of this search, by query text
        native: dict[int, float] = {}
        if mode != "lexical":
            dense = self.index.dense_search(self.query_vector(query), pool, **filters)
            rankings.append((self.weights.dense, [chunk_id for chunk_id, _ in dense]))
            native.update(dense)
        if mode != "dense":
            lexical = self.index.lexical_search(query, pool, **filters)
            if not path_glob and not language:
                seen[query] = [chunk_id for chunk_id, _ in lexical]
            rankings.append((self.weights.lexical, [chunk_id for chunk_id, _ in lexical]))
            native.update(lexical)
        scores = rrf(rankings) if mode == "hybrid" else native

        chunks = {chunk.id: chunk for chunk in self.index.get_chunks(list(scores))}
        if mode != "dense":
            for chunk in self._exact_matches(query, scores, pool, seen):
                chunks.setdefault(chunk.id, chunk)
                scores[chunk.id] = scores.get(chunk.id, 0.0) + EXACT_BOOST
        ranked = sorted(
            (chunk for chunk in chunks.values() if self._accepts(chunk, path_glob, language)),
            key=lambda chunk: (-scores[chunk.id], chunk.path, chunk.start_line),
        )
        return merge_chunks([(chunk, scores[chunk.id]) for chunk in ranked], k, self.index.file_text)

    @staticmethod
    def _accepts(chunk: StoredChunk, path_glob: str | None, language: str | None) -> bool:
        return (not path_glob or path_matches(chunk.path, path_glob)) and (
            not language or chunk.language == language
        )

    def _lexical_ids(self, text: str, pool: int, seen: dict[str, list[int]]) -> list[int]:
        if text not in seen:
            seen[text] = [chunk_id for chunk_id, _ in self.index.lexical_search(text, pool)]
        return seen[text]

    def _exact_matches(
        self, query: str, scores: dict[int, float], pool: int, seen: dict[str, list[int]]
    ) -> list[StoredChunk]:
        """Chunks of files the query names (the best-ranked chunk of each) and of symbols it names.

        Candidates come from the query text and are confirmed against the index,
        so a dotted name that is not a file, or a path that is not a symbol, costs nothing.
        """
        found: list[StoredChunk] = []
        for named in named_paths(query):
            ids = self._lexical_ids(named, pool, seen)
            paths = sorted({c.path for c in self.index.get_chunks(ids) if _file_matches(c.path, named)})
            for path in paths:
                file_chunks = self.index.chunks_for_file(path)
                ranked = [chunk for chunk in file_chunks if chunk.id in scores]
                found.append(max(ranked, key=lambda c: scores[c.id]) if ranked else file_chunks[0])
        for name in named_symbols(query):
            found.extend(self._symbol_chunks(name, self._lexical_ids(name, pool, seen)))
        return found

    def _symbol_chunks(self, name: str, ids: list[int]) -> list[StoredChunk]:
        """Chunks named `name` (or `Owner.name`), else chunks whose text defines it.

        Candidates come from BM25, where the symbol column weighs most, rather
        than from a scan of every symbol: that keeps large indexes fast. A
        chunker may pack a small class with its methods, or a constant with the
        next function, into one chunk named after its first symbol; the
        definition is then found in the text (`def send`, `func (c *C) Get`, `X = 7`).
        """
        candidates = self.index.get_chunks(ids)
        named = [c for c in candidates if c.symbol and (c.symbol == name or c.symbol.endswith("." + name))]
        if named:
            return named
        container, _, last = name.rpartition(".")
        definition = re.compile(_DEFINITION.format(name=re.escape(last)), re.MULTILINE)
        owner = container.rpartition(".")[2]
        return [c for c in candidates if definition.search(c.text) and owner in c.text]


def merge_chunks(
    ranked: Iterable[tuple[StoredChunk, float]], k: int, file_text: Callable[[str], str | None]
) -> list[SearchHit]:
    """Fold each chunk into a better-ranked hit of the same file it overlaps or touches.

    Stops at `k` hits: a chunk ranked below them would only widen a hit with
    less relevant lines. `file_text(path)` supplies the lines of a merged span.
    """
    hits: list[SearchHit] = []
    for chunk, score in ranked:
        if len(hits) == k:
            break
        merged = chunk.to_hit(score)
        touching = [i for i, hit in enumerate(hits) if hit.path == merged.path and _touching(hit, merged)]
        if not touching:
            hits.append(merged)
            continue
        for i in touching:
            merged = _union(hits[i], merged, file_text)
        hits[touching[0]] = merged
        for i in reversed(touching[1:]):
            del hits[i]
    return hits


def _union(a: SearchHit, b: SearchHit, file_text: Callable[[str], str | None]) -> SearchHit:
    """One hit covering both spans, named and scored after the better of the two."""
    best = a if a.score >= b.score else b
    start = min(a.start_line, b.start_line)
    end = max(a.end_line, b.end_line)
    return SearchHit(
        path=a.path,
        language=a.language,
        start_line=start,
        end_line=end,
        symbol=best.symbol,
        text=_span_text(a, b, start, end, file_text(a.path)),
        score=best.score,
    )


def _span_text(a: SearchHit, b: SearchHit, start: int, end: int, file_text: str | None) -> str:
    """Lines `start..end` of the stored file or, without it, of the two spans (no line twice)."""
    if file_text is not None:
        return "\n".join(file_text.splitlines()[start - 1 : end])
    lines: dict[int, str] = {}
    for hit in (b, a):
        for offset, line in enumerate(hit.text.splitlines()):
            lines[hit.start_line + offset] = line
    return "\n".join(lines[number] for number in sorted(lines) if start <= number <= end)


def _touching(a: SearchHit, b: SearchHit) -> bool:
    return a.start_line <= b.end_line + 1 + MERGE_GAP and b.start_line <= a.end_line + 1 + MERGE_GAP


def search_payload(
    repo_id: str, query: str, hits: Sequence[SearchHit], index_state: str = "complete"
) -> dict[str, object]:
    """The JSON answer of `repolens search --json` and `POST /api/repos/{id}/search`; `index_state`
    (and a `note`) tells a client when dense vectors cover only part of the index."""
    payload: dict[str, object] = {"repo": repo_id, "query": query, "index_state": index_state}
    if index_state != "complete":
        payload["note"] = partial_index_note(index_state)
    payload["results"] = [hit.to_json() for hit in hits]
    return payload


def partial_index_note(index_state: str) -> str:
    """What a lexical-first index being embedded means for results (`lexical` or `partial n/m`)."""
    covered = "no chunk yet" if index_state == "lexical" else f"{index_state.split()[-1]} chunks"
    return (
        f"the index is {index_state}: dense vectors cover {covered}, keyword (BM25) search covers every "
        "file; results improve as embedding completes"
    )
