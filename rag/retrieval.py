"""Hybrid retrieval: dense (FAISS) and BM25 (FTS5) rankings fused by reciprocal rank fusion.

Dense search finds paraphrases ("how are redirects followed?" -> `_follow_redirects`),
BM25 finds exact identifiers and strings; RRF needs no score calibration
between the two, only ranks. On top of the fusion, a query that names a file
path or a symbol gets that chunk first, and overlapping or adjacent chunks of
one file are merged so the caller (a person or a prompt budget) never sees the
same lines twice.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rag.comments import comment_only
from rag.embedders import Embedder, embedder_for
from rag.errors import ErrorCode, RepoLensError
from rag.lexical import STOPWORDS, path_matches, query_terms
from rag.ranking import (
    DEFAULT_RANKING,
    LINKING_CHUNKS,
    LINKING_ROLES,
    MAX_DEFINITIONS,
    TWIN_DEPTH,
    Intent,
    Ranking,
    mentioned_identifiers,
    module_names,
    named_share,
    names_the_file,
    public_twin,
    query_intent,
    question_words,
    role_weight,
    shares_a_word,
)
from rag.roles import inline_test_modules, may_hold_inline_tests, mostly_within
from rag.store import RepoIndex, Store, StoredChunk
from rag.store.schema import CodeDefinition
from rag.types import RepoRecord, SearchHit

Mode = Literal["hybrid", "dense", "lexical"]
MODES: tuple[str, ...] = ("hybrid", "dense", "lexical")

RRF_K = 60
# The candidates are each ranking's top `Retriever.candidates`; for the fusion each ranking is read
# this deep, so a candidate that one ranking puts first and the other only past its top 50 gets that
# rank rather than none (a chunk at dense #1 and BM25 #120 used to fall below chunks both put ~#30).
RANK_DEPTH = 500
MAX_K = 100
# A named path or symbol outranks every fused score (RRF scores are below 1).
EXACT_BOOST = 1.0
# Chunks this many lines apart or closer count as adjacent: chunkers leave the
# blank lines between two functions outside both.
MERGE_GAP = 2
# A hit on a piece of a definition grows to the whole definition up to this many lines.
MAX_DEFINITION_LINES = 150
# The code graph's definitions a hit grows to (not classes, nor the attributes a constructor stores).
FUNCTION_KINDS = frozenset({"function", "method"})
# The definitions whose body's comments are that code's own, not documentation (`Retriever._role`).
BODY_KINDS = FUNCTION_KINDS | {"class"}
# Docs and tests lead to code only from among the search's best chunks.
LINK_WINDOW = 30

# Starts only at a word's start and never backtracks into a word: a question of 32,000 letters took
# 29 s of CPU with `[\w\-]+(?:[./][\w\-]+)+` (every start position rescanned the rest of the word).
_PATH_LIKE = re.compile(r"(?<![\w\-])[\w\-]++(?:[./][\w\-]++)+")
_SYMBOL_LIKE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
_CAMEL_INSIDE = re.compile(r"[a-z0-9][A-Z]")
# Dotted words of prose, not code: "e.g" would otherwise look for a definition of `g` in `e`.
_ABBREVIATIONS = frozenset({"e.g", "i.e", "a.k.a", "n.b", "cf", "etc", "vs"})
# A line that defines `name` in most languages: a keyword (Go methods with their
# receiver) followed by the name, or the name assigned at the start of a line. A name bound to
# a module (`var express = require('express')`) defines nothing: every example and test of a
# JavaScript package has that line, and `express()` must find the package's own code.
_NOT_A_MODULE = r"(?![ \t]*=?[ \t]*(?:require|import)[ \t]*\()"
_DEFINITION = (
    r"(?:\b(?:def|class|function|func|fn|struct|interface|type|enum|trait|module|const|let|var)\s+"
    r"(?:\([^)]*\)\s*)?{name}\b"
    + _NOT_A_MODULE
    + r"|^[ \t]*(?:export\s+)?{name}\s*(?::[^=\n]*)?="
    + _NOT_A_MODULE
    + r"[^=])"
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


# Each index's `module_names`, computed once: an index is one version, whose files never change, and
# the names cost ~15 ms on 5,000 files, too much for every search. Weak keys: a closed index goes.
_MODULES: weakref.WeakKeyDictionary[RepoIndex, frozenset[str]] = weakref.WeakKeyDictionary()


def _modules_of(index: RepoIndex) -> frozenset[str]:
    names = _MODULES.get(index)
    if names is None:
        names = _MODULES[index] = module_names(index.roles())
    return names


# Each index's inline test modules (`rag.roles.inline_test_modules`) per source file, found once per
# file: the role of every candidate chunk of a Rust source file is asked at every search.
_TEST_MODULES: weakref.WeakKeyDictionary[RepoIndex, dict[str, list[tuple[int, int]]]] = (
    weakref.WeakKeyDictionary()
)


def _test_modules_of(index: RepoIndex, path: str) -> list[tuple[int, int]]:
    files = _TEST_MODULES.get(index)
    if files is None:
        files = _TEST_MODULES[index] = {}
    modules = files.get(path)
    if modules is None:  # only a file that can hold them is read (a SQLite read of the whole text)
        text = index.file_text(path) if may_hold_inline_tests(path) else None
        modules = files[path] = inline_test_modules(path, text or "")
    return modules


def rrf(rankings: Sequence[tuple[float, Sequence[int]]], k: int = RRF_K) -> dict[int, float]:
    """Reciprocal rank fusion of `(weight, ids best first)` rankings."""
    scores: dict[int, float] = {}
    for weight, ids in rankings:
        for rank, chunk_id in enumerate(ids, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + weight / (k + rank)
    return scores


def fuse(rankings: Sequence[tuple[float, Sequence[int]]], top: int) -> dict[int, float]:
    """RRF scores of the candidates, the ids in the first `top` of some ranking, with each ranking's
    rank read from its whole list (`RANK_DEPTH` long), not only from its first `top`."""
    candidates = {chunk_id for _, ids in rankings for chunk_id in ids[:top]}
    return {chunk_id: score for chunk_id, score in rrf(rankings).items() if chunk_id in candidates}


def named_paths(query: str) -> list[str]:
    """Tokens of the query that may name a file (`rag/prompt.py`, `prompt.py`): they hold `.` or `/`."""
    return [match.group() for match in _PATH_LIKE.finditer(query)]


def named_symbols(query: str) -> list[str]:
    """Tokens of the query that look like code identifiers rather than words.

    `Client.send`, `send_all`, `sendAll` and `send()` count; a plain word counts
    only when it is the whole query, so "get the width" does not pin a `width`.
    """
    words = [word for word in _SYMBOL_LIKE.findall(query) if word.lower() not in _ABBREVIATIONS]
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
        ranking: Ranking = DEFAULT_RANKING,
        rank_depth: int = RANK_DEPTH,
    ) -> None:
        self.index = index
        # The model the index was built with, when the embedder serves it (a local index after the
        # default local model changed); any other embedder is refused at the first dense search.
        self.embedder = None if embedder is None else embedder_for(embedder, index.record.embedder)
        self.weights = weights or Weights()
        self.ranking = ranking
        self.candidates = candidates
        self.rank_depth = rank_depth

    def query_vector(self, query: str) -> np.ndarray:
        """The query embedding, cached: repeated questions and evaluation runs skip the model."""
        assert self.embedder is not None, "search() checks the embedder first"
        return _cached_query_vector(self.embedder, query)  # type: ignore[arg-type]  # embedders hash by id

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        path_glob: str | None = None,
        language: str | None = None,
        mode: Mode = "hybrid",
        explain: bool = False,
    ) -> list[SearchHit]:
        """The `k` best spans for `query`, best first, merged per file and filtered.

        With `explain`, each hit carries why it ranked (`SearchHit.explain`: role, intent, dense and
        lexical ranks, role weight and boosts).
        """
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
        depth = max(pool, self.rank_depth) if mode == "hybrid" else pool
        filters = {"path_glob": path_glob or None, "language": language or None}
        rankings: list[tuple[float, list[int]]] = []
        seen: dict[str, list[int]] = {}  # unfiltered BM25 results of this search, by query text
        native: dict[int, float] = {}
        if mode != "lexical":
            dense = self.index.dense_search(self.query_vector(query), depth, **filters)
            rankings.append((self.weights.dense, [chunk_id for chunk_id, _ in dense]))
            native.update(dense[:pool])
        if mode != "dense":
            lexical = self.index.lexical_search(query, depth, **filters)
            if not path_glob and not language:
                seen[query] = [chunk_id for chunk_id, _ in lexical[:pool]]
            rankings.append((self.weights.lexical, [chunk_id for chunk_id, _ in lexical]))
            native.update(lexical[:pool])
        scores = fuse(rankings, pool) if mode == "hybrid" else native

        chunks = {chunk.id: chunk for chunk in self.index.get_chunks(list(scores))}
        notes: dict[int, dict[str, object]] = {}
        intent = query_intent(query)
        fused = dict(scores)
        if self.ranking.roles:
            for chunk in chunks.values():
                weight = role_weight(intent, self._role(chunk))
                scores[chunk.id] *= weight
                notes.setdefault(chunk.id, {})["role_weight"] = weight
        terms, said = frozenset(query_terms(query)), question_words(query)
        if self.ranking.paths:
            self._weigh_named_files(chunks, scores, notes, terms)
        if self.ranking.names and intent == "code":
            for chunk in chunks.values():
                factor = 1.0 + self.ranking.name_boost * named_share(chunk.symbol, terms, said)
                if factor > 1.0:
                    scores[chunk.id] *= factor
                    notes.setdefault(chunk.id, {})["name_weight"] = round(factor, 4)
            self._lift_public_twins(chunks, scores, notes)
        if self.ranking.links and intent == "code":
            self._follow_links(query, intent, chunks, scores, fused, notes)
        if mode != "dense":
            for chunk in self._exact_matches(query, scores, pool, seen):
                chunks.setdefault(chunk.id, chunk)
                scores[chunk.id] = scores.get(chunk.id, 0.0) + EXACT_BOOST
                notes.setdefault(chunk.id, {})["exact_boost"] = EXACT_BOOST
        ranked = sorted(
            (chunk for chunk in chunks.values() if self._accepts(chunk, path_glob, language)),
            key=lambda chunk: (-scores[chunk.id], chunk.path, chunk.start_line),
        )
        scored = [(chunk, scores[chunk.id]) for chunk in ranked]
        explanations = None
        if explain:
            ranks = {
                name: {chunk_id: rank for rank, chunk_id in enumerate(ids, start=1)}
                for name, (_, ids) in zip(self._ranking_names(mode), rankings, strict=True)
            }
            explanations = {
                chunk.id: self._explanation(chunk, intent, ranks, notes.get(chunk.id, {})) for chunk in ranked
            }
        if not self.ranking.whole_definitions:
            return merge_chunks(scored, k, self.index.file_text, explanations)
        return self._whole_hits(scored, ranked, k, explanations)

    def _weigh_named_files(
        self,
        chunks: dict[int, StoredChunk],
        scores: dict[int, float],
        notes: dict[int, dict[str, object]],
        terms: frozenset[str],
    ) -> None:
        """Weigh the best chunk of each file the question names (`names_the_file`) by `1 + path_boost`:
        the file rises, and its other chunks stay where they were, so they are not pulled into its
        hit as neighbours (which widened spans when every chunk rose)."""
        best: dict[str, StoredChunk] = {}
        for chunk in chunks.values():
            if chunk.path not in best or scores[chunk.id] > scores[best[chunk.path].id]:
                best[chunk.path] = chunk
        factor = 1.0 + self.ranking.path_boost
        for path, chunk in best.items():
            if names_the_file(path, terms):
                scores[chunk.id] *= factor
                notes.setdefault(chunk.id, {})["path_weight"] = round(factor, 4)

    def _lift_public_twins(
        self, chunks: dict[int, StoredChunk], scores: dict[int, float], notes: dict[int, dict[str, object]]
    ) -> None:
        """Give the public twin of each private definition among the `TWIN_DEPTH` best candidates
        (`LRUCache.has` for `LRUCache.#has`, same file) the private one's score, if that is higher:
        its first chunk joins the candidates, and grows to the whole definition like any hit."""
        for chunk in sorted(chunks.values(), key=lambda c: -scores[c.id])[:TWIN_DEPTH]:
            public = public_twin(chunk.symbol)
            spans = self.index.symbol_spans(chunk.path, public) if public else []
            if not spans:
                continue
            for twin in self.index.get_chunks(self.index.chunk_ids_at(chunk.path, spans[0][0])):
                if twin.symbol == public and scores.get(twin.id, 0.0) < scores[chunk.id]:
                    chunks.setdefault(twin.id, twin)
                    scores[twin.id] = scores[chunk.id]
                    notes.setdefault(twin.id, {})["public_twin_of"] = chunk.symbol

    def _whole_hits(
        self,
        scored: list[tuple[StoredChunk, float]],
        ranked: list[StoredChunk],
        k: int,
        explanations: dict[int, dict[str, object]] | None,
    ) -> list[SearchHit]:
        """The `k` best hits grown to whole definitions (`complete_definitions`). A hit that grows
        over another frees its slot, which the next-ranked chunks fill: `k` hits whenever the
        candidates hold that many."""
        wanted = k
        while True:
            merged = merge_chunks(scored, wanted, self.index.file_text, explanations)
            hits = complete_definitions(merged, self.index, lambda hit: _symbols_within(hit, ranked))
            if len(hits) >= k or len(merged) < wanted:
                return hits[:k]
            wanted += k - len(hits)

    def _role(self, chunk: StoredChunk) -> str:
        """The role the chunk plays in the ranking: its file's, but `test` for a source chunk mostly in
        an inline test module (`rag.roles.inline_test_modules`: Rust's `#[cfg(test)] mod tests`, weighed
        as the implementation before), and `docs` for a source chunk that holds
        only comments outside a definition's body (`rag.comments`: a crate's `//!` overview, a piece of
        a long `///` doc comment, a module docstring alone, an exception class and its docstring). Weighed as
        code, such a chunk outranked the code it describes for "how does X work?" questions, since it
        says X in words; as docs it ranks below it and leads to it (links). Comments inside a function's
        or a class's body (`# END for each base`, a block of notes cut into a chunk of its own, an
        attribute's docstring) are that code's own: as docs they cost the dev sets two queries."""
        role = self.index.file_role(chunk.path)
        if role != "source":
            return role
        if mostly_within(chunk.start_line, chunk.end_line, _test_modules_of(self.index, chunk.path)):
            return "test"
        if not comment_only(chunk.text, chunk.language):
            return role
        inside = any(
            d.kind in BODY_KINDS and d.start_line < chunk.start_line and chunk.end_line <= d.end_line
            for d in self.index.definitions_in(chunk.path)
        )
        return role if inside else "docs"

    @staticmethod
    def _ranking_names(mode: Mode) -> list[str]:
        return {"hybrid": ["dense", "lexical"], "dense": ["dense"], "lexical": ["lexical"]}[mode]

    def _definitions_of(self, name: str) -> list[int]:
        """Chunks holding the first line of each definition of `name` in the code graph
        (`RepoIndex.definition`: qualified names first, then the short name); none when the name
        has more than `MAX_DEFINITIONS` definitions, as it then names nothing in particular, and
        none when it is a module's dotted name (`rich.markup`: `module_names`)."""
        if name.replace("::", ".") in _modules_of(self.index):
            return []
        found = self.index.definition(name)
        if len(found) > MAX_DEFINITIONS:
            return []
        return [chunk_id for d in found for chunk_id in self.index.chunk_ids_at(d.path, d.start_line)]

    def _explanation(
        self, chunk: StoredChunk, intent: str, ranks: dict[str, dict[int, int]], note: dict[str, object]
    ) -> dict[str, object]:
        """Why a chunk ranked: its file's role, the question's intent, its rank per ranking, its boosts."""
        explanation: dict[str, object] = {
            "role": self._role(chunk),
            "intent": intent,
            "dense_rank": ranks.get("dense", {}).get(chunk.id),
            "lexical_rank": ranks.get("lexical", {}).get(chunk.id),
        }
        explanation.update(note)
        return explanation

    def _follow_links(
        self,
        query: str,
        intent: Intent,
        chunks: dict[int, StoredChunk],
        scores: dict[int, float],
        fused: dict[int, float],
        notes: dict[int, dict[str, object]],
    ) -> None:
        """Boost the definitions that the best docs, test, example and changelog chunks name (rag.ranking).

        The linking chunks are the best of the fused ranking (before role weights), and each
        definition gains a share of its linking chunk's fused score.
        """
        best = sorted(fused, key=lambda chunk_id: -fused[chunk_id])[:LINK_WINDOW]
        linking = [chunks[i] for i in best if i in chunks and self._role(chunks[i]) in LINKING_ROLES]
        if not linking:
            return
        terms = frozenset(query_terms(query))
        source_weight = role_weight(intent, "source") if self.ranking.roles else 1.0
        boosts: dict[int, tuple[float, str, str]] = {}
        for chunk in linking[:LINKING_CHUNKS]:
            named = [
                (name, ids)
                for name in mentioned_identifiers(chunk.text)
                if (ids := self._definitions_of(name))
            ]
            spread = len(named) ** self.ranking.link_spread if named else 1.0
            for name, ids in named:
                related = 1.0 if shares_a_word(name, terms) else self.ranking.unrelated_factor
                share = self.ranking.link_share * fused[chunk.id] * related * source_weight / spread
                for chunk_id in ids:
                    if chunk_id not in boosts or boosts[chunk_id][0] < share:
                        boosts[chunk_id] = (share, chunk.path, name)
        missing = [chunk_id for chunk_id in boosts if chunk_id not in chunks]
        chunks.update((found.id, found) for found in self.index.get_chunks(missing))
        for chunk_id, (boost, linked_from, name) in boosts.items():
            if chunk_id not in chunks:
                continue
            if self._role(chunks[chunk_id]) != "source":
                if chunk_id in missing:
                    del chunks[chunk_id]
                continue
            scores[chunk_id] = scores.get(chunk_id, 0.0) + boost
            notes.setdefault(chunk_id, {}).update(
                link_boost=round(boost, 6), linked_from=linked_from, linked_name=name
            )

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
    ranked: Iterable[tuple[StoredChunk, float]],
    k: int,
    file_text: Callable[[str], str | None],
    explanations: dict[int, dict[str, object]] | None = None,
) -> list[SearchHit]:
    """Fold each chunk into a better-ranked hit of the same file it overlaps or touches.

    Stops at `k` hits: a chunk ranked below them would only widen a hit with
    less relevant lines. `file_text(path)` supplies the lines of a merged span;
    `explanations` (by chunk id) are attached to the hits, a merged hit keeping its best chunk's.
    """
    hits: list[SearchHit] = []
    for chunk, score in ranked:
        if len(hits) == k:
            break
        merged = chunk.to_hit(score)
        if explanations is not None:
            merged = dataclasses.replace(merged, explain=explanations.get(chunk.id))
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


def complete_definitions(
    hits: list[SearchHit],
    index: RepoIndex,
    symbols: Callable[[SearchHit], Sequence[str | None]] = lambda hit: (hit.symbol,),
) -> list[SearchHit]:
    """Widen each hit that holds only a piece of a definition to the whole definition.

    The chunker cuts a long function into consecutive chunks of the same symbol; a hit on one of
    them would cite a neighbour of the lines that answer. `symbols(hit)` names the chunk symbols a
    hit holds pieces of (a hit merged from a class's first lines and the start of its constructor
    holds both), best first; each one's pieces are joined. Then the code graph's definitions
    (`RepoIndex.definitions_in`) grow it to the function or method it is part of, whatever the
    chunks were named. A span never grows past `MAX_DEFINITION_LINES`; a widened hit that now
    overlaps another of its file is folded into the better-ranked one.
    """
    widened: list[SearchHit] = []
    definitions: dict[str, list[CodeDefinition]] = {}
    for hit in hits:
        for symbol in dict.fromkeys(symbols(hit)):
            if symbol and "," not in symbol:
                hit = _whole_definition(hit, symbol, index)
        if hit.path not in definitions:
            functions = [d for d in index.definitions_in(hit.path) if d.kind in FUNCTION_KINDS]
            definitions[hit.path] = functions
        hit = _whole_function(hit, definitions[hit.path], index)
        same_file = [i for i, other in enumerate(widened) if other.path == hit.path and _touching(other, hit)]
        if same_file:
            widened[same_file[0]] = _union(widened[same_file[0]], hit, index.file_text)
            continue
        widened.append(hit)
    return widened


def _whole_function(hit: SearchHit, functions: Sequence[CodeDefinition], index: RepoIndex) -> SearchHit:
    """The hit grown to the functions and methods of the code graph it holds part of: the innermost
    one around it or, when it holds one's first lines (a class's first lines and the start of its
    constructor), down to that one's end. Classes are not grown to: a method's hit stays the method."""
    start, end = hit.start_line, hit.end_line
    around = [d for d in functions if d.start_line <= start and end <= d.end_line + MERGE_GAP]
    if around:
        innermost = min(around, key=lambda d: d.end_line - d.start_line)
        return _respan(hit, innermost.start_line, max(end, innermost.end_line), index)
    for definition in sorted(functions, key=lambda d: d.start_line):
        if start <= definition.start_line <= end < definition.end_line:
            end = definition.end_line
    return _respan(hit, start, end, index)


def _symbols_within(hit: SearchHit, ranked: Sequence[StoredChunk]) -> list[str | None]:
    """The hit's symbol, then those of the other ranked chunks its span holds (in rank order)."""
    inside = (
        chunk.symbol
        for chunk in ranked
        if chunk.path == hit.path and hit.start_line <= chunk.start_line and chunk.end_line <= hit.end_line
    )
    return [hit.symbol, *inside]


def _whole_definition(hit: SearchHit, symbol: str, index: RepoIndex) -> SearchHit:
    pieces = index.symbol_spans(hit.path, symbol)
    start, end = hit.start_line, hit.end_line
    for first, last in pieces:  # in line order: grow downwards through touching pieces
        if start <= first <= end + 1 + MERGE_GAP and last > end:
            end = last
    for first, last in reversed(pieces):
        if start - 1 - MERGE_GAP <= last <= end and first < start:
            start = first
    return _respan(hit, start, end, index)


def _respan(hit: SearchHit, start: int, end: int, index: RepoIndex) -> SearchHit:
    """The hit over lines start..end of its file, unless that changes nothing or exceeds
    `MAX_DEFINITION_LINES` (then a whole definition is too long to be worth citing whole)."""
    if (start, end) == (hit.start_line, hit.end_line) or end - start + 1 > MAX_DEFINITION_LINES:
        return hit
    text = index.file_text(hit.path)
    if text is None:
        return hit
    return dataclasses.replace(
        hit, start_line=start, end_line=end, text="\n".join(text.splitlines()[start - 1 : end])
    )


def _union(a: SearchHit, b: SearchHit, file_text: Callable[[str], str | None]) -> SearchHit:
    """One hit covering both spans, named and scored after the better of the two; the names of
    both, in line order, are its `names` (its `label`)."""
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
        explain=best.explain,
        names=_joined_names(a, b),
    )


def _joined_names(a: SearchHit, b: SearchHit) -> tuple[str, ...]:
    """The names of the definitions two hits span, in line order, each once. A scope of another name
    (`Client`, a class's first lines, beside `Client.send`) adds nothing and is left out."""
    first, second = sorted((a, b), key=lambda hit: hit.start_line)
    names = dict.fromkeys(name for hit in (first, second) for name in hit.names or (hit.symbol,) if name)
    return tuple(name for name in names if not any(o.startswith((f"{name}.", f"{name} > ")) for o in names))


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
    store: Store, record: RepoRecord, query: str, hits: Sequence[SearchHit]
) -> dict[str, object]:
    """The JSON answer of `repolens search --json`, `POST /api/repos/{id}/search` and MCP's search;
    `index_state` (and a `note`, `index_note`'s) tells a client when dense vectors cover only part of
    the index, and whether anything is finishing it."""
    payload: dict[str, object] = {"repo": record.id, "query": query, "index_state": record.index_state}
    if (note := index_note(store, record)) is not None:
        payload["note"] = note.text
    payload["results"] = [hit.to_json() for hit in hits]
    return payload


@dataclass(frozen=True)
class IndexNote:
    """What results from an index that is not `complete` mean (`text`); `unfinished`: nothing is
    embedding it, so it stays so until `repolens embed` (the answer says so in its text too)."""

    text: str
    unfinished: bool


def index_note(store: Store, record: RepoRecord) -> IndexNote | None:
    """The note for `record`'s index when it is not `complete` (None when it is): embedding goes on,
    or nothing finishes it (no process holds its build: an ingest stopped by Ctrl-C or a kill in its
    dense phase) and how to finish it. Search, chat status frames and answers all use this one.

    `record` was read before the search; its build may have completed since and released the lock.
    So the lock is looked at first and the live record after: a build that completed in between is
    seen complete, not called unfinished."""
    if record.index_state == "complete":
        return None
    unfinished = not store.building(record.id) and _still_partial(store, record.id)
    return IndexNote(partial_index_note(record.index_state, record.id if unfinished else None), unfinished)


def _still_partial(store: Store, repo_id: str) -> bool:
    live = store.get(repo_id)
    return live is not None and live.index_state != "complete"


def partial_index_note(index_state: str, unfinished: str | None = None) -> str:
    """What a lexical-first index being embedded means for results (`lexical` or `partial n/m`);
    `unfinished`: the id of an index nothing is embedding, told how to finish it."""
    covered = "no chunk yet" if index_state == "lexical" else f"{index_state.split()[-1]} chunks"
    if unfinished is not None:
        return (
            f"the index is {index_state} and nothing is embedding it (its ingest stopped before the end): "
            f"dense vectors cover {covered}, keyword (BM25) search covers every file; run "
            f"`repolens embed {unfinished}` (or update the repository) to finish it"
        )
    return (
        f"the index is {index_state}: dense vectors cover {covered}, keyword (BM25) search covers every "
        "file; results improve as embedding completes"
    )
