"""Code-aware keyword search: BM25 over pre-tokenised chunks in SQLite FTS5.

Dense embeddings blur exact identifiers, file names and error strings; BM25
over tokens that know about `snake_case`, `camelCase` and dotted names finds
them. The index lives in the version's `meta.sqlite` beside the `chunks`
table, so it is versioned, copied and swapped together with the FAISS index
and updated incrementally by the store's builder.

Functions the store calls (all take an open `sqlite3.Connection`; the caller
owns the transaction):

- `create_lexical_schema(conn)` once when a version database is created;
- `index_chunks(conn, rows)` with `(chunk_id, path, symbol, text)` rows for new chunks;
- `delete_chunks(conn, ids)` for chunks of removed or changed files;
- `lexical_search(conn, query, k, *, path_glob=None, language=None)` ->
  `[(chunk_id, score)]`, best first, score higher is better. Filters join the
  `chunks(id, path, language, ...)` table of the same database.

Words are stemmed (Snowball English, via PyStemmer) before they reach SQLite,
so `redirects` finds `redirect`; stemming in Python rather than in FTS5 lets a
query look up each term's document frequency in the FTS5 vocabulary and leave
out terms so common that scoring them would cost more than they tell.

`path_matches(path, pattern)` is the one definition of the path filter
(a plain prefix such as `rag` or `rag/prompt.py`, or a glob such as `*.py`
or `rag/**/test_*.py`); dense search must use the same rule.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import sqlite3
from collections import ChainMap
from collections.abc import Iterable, Sequence

import Stemmer

from rag.identifiers import split_identifier
from rag.types import Chunk

TABLE = "lexical"
VOCABULARY = "lexical_vocab"
# A query scores at most this many postings (the sum of its terms' document
# frequencies): past it BM25 costs tens of milliseconds per term. Terms are
# kept rarest first, so only terms found in a large share of a big index are
# dropped; in an index smaller than this nothing is ever dropped.
POSTINGS_BUDGET = 20_000

# Columns are weighted in `bm25()`: a token in the symbol name or the path says
# more about a chunk than the same token somewhere in its body.
COLUMN_WEIGHTS = (2.0, 4.0, 1.0)  # path, symbol, body

# Starts only at a word's start: from inside a word `\w+` would rescan the rest of it at every
# position (quadratic: a 10,000-character one-word query took 4-5 s and blocked the event loop).
# Possessive (`\w++`): a word not followed by `.` fails at once instead of giving back one character at
# a time, and a shorter word could never be followed by `.` anyway (same matches, a quarter faster).
_DOTTED = re.compile(r"(?<!\w)\w++(?:\.\w++)+")
_WORD = re.compile(r"\w+")
_GLOB_CHARS = frozenset("*?[")

# Words that carry no meaning in a question about code; leaving them out keeps
# queries fast (they match nearly every chunk) and the index small.
_STOPWORD_TEXT = """a an and are as at be by can do does for from has have how i if in into is it its of on or
that the their then there these this to was what when where which who why will with you your"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@functools.cache
def _stemmer() -> Stemmer.Stemmer:
    return Stemmer.Stemmer("english")


def words(text: str) -> list[str]:
    """Lower-cased words before stemming: dotted names whole, identifiers whole and split into parts.

    `Client.send_all` gives `client.send_all`, `client`, `send_all`, `send`,
    `all`; a path `rag/prompt.py` gives `prompt.py`, `rag`, `prompt`, `py`. So
    a query for the exact identifier and a query in plain words both match.
    """
    tokens: list[str] = [match.group().lower() for match in _DOTTED.finditer(text)]
    for word in _WORD.findall(text):
        tokens.extend(_word_terms(word))
    return tokens


def tokenize(text: str) -> list[str]:
    """The index terms of `text`: its `words`, plain words stemmed (`redirects` -> `redirect`).

    Compound names (`follow_redirects`, `client.send`) stay exact.
    """
    terms: list[str] = [match.group().lower() for match in _DOTTED.finditer(text)]
    joined = _joined_words(_WORD.findall(text))
    if joined:
        terms.extend(joined.split(" "))
    return terms


def _joined(text: str | None) -> str:
    """`" ".join(tokenize(text))`, exactly: the strings the index's columns hold."""
    if not text:
        return ""
    dotted = " ".join(match.lower() for match in _DOTTED.findall(text))
    joined = _joined_words(_WORD.findall(text))
    return f"{dotted} {joined}" if dotted and joined else dotted or joined


def _word_terms(word: str) -> tuple[str, ...]:
    """The `words` of one `\\w+` word: the whole identifier (if it splits) and its parts, no stopwords."""
    whole = word.strip("_").lower()
    parts = split_identifier(word)
    terms = [whole] if whole and (len(parts) != 1 or parts[0] != whole) else []
    terms.extend(parts)
    return tuple(term for term in terms if term not in STOPWORDS)


def _index_terms(word: str) -> tuple[str, ...]:
    """The index terms of one `\\w+` word (`()` for a stopword): its `words`, plain ones stemmed."""
    return tuple(term if "_" in term else _stem(term) for term in _word_terms(word))  # no `.` in a word


def _stem(term: str) -> str:
    """`term` stemmed, each distinct part once per process (`_STEMS`)."""
    stem = _STEMS.get(term)
    if stem is None:
        if len(_STEMS) >= _MAX_REMEMBERED:
            _STEMS.clear()
        stem = _STEMS[term] = _stemmer().stemWord(term)
    return stem


def _joined_words(found: list[str]) -> str:
    """The index terms of the `\\w+` words `found`, space-joined, from `_WORD_TERMS`: the words new to
    it are found as a set and worked out once, then every word is a dictionary lookup, and no Python
    loop runs per word (the indexing of a repository and every query's ranking come through here).

    Search threads share `_WORD_TERMS` without a lock: it is never cleared in place but replaced by an
    empty dict when full, so a thread still reading the old one finds every word it put there, and a
    word too long to keep is looked up in this call's own terms. (A lock here made the searches of 200
    concurrent questions queue behind whichever thread the GIL had paused while holding it: retrieval
    p95 3.96x, added first-token p95 2.23x in one side-by-side run.)"""
    global _WORD_TERMS
    known = _WORD_TERMS
    new = set(found).difference(known)
    if new:
        if len(known) + len(new) > _MAX_REMEMBERED:
            known = _WORD_TERMS = {}
            new = set(found)
        terms = {word: " ".join(_index_terms(word)) for word in new}
        kept = {word: joined for word, joined in terms.items() if len(word) <= _CACHED_WORD_CHARS}
        known.update(kept)  # long words are not kept: they are rarely seen twice
        if len(kept) < len(terms):
            return " ".join(filter(None, map(ChainMap(terms, known).__getitem__, found)))
    return " ".join(filter(None, map(known.__getitem__, found)))  # a stopword's terms are ''


# Code repeats its identifiers, so a word's terms are worked out once per process, not at every use
# (splitting and stemming were a quarter of an ingest's CPU before). Two computations, one cache each:
# - `_WORD_TERMS`, a `\w+` word -> its index terms space-joined, the form the index columns hold
#   (`tokenize` splits them again: cheaper than joining each word's terms at every use);
# - `_STEMS`, one part -> its stem: words new to `_WORD_TERMS` share their parts (`queue12`, `queue13`,
#   `getQueue`), and a dictionary lookup is 30 times cheaper than the stemmer.
# `words` (unstemmed, for tests and readers of the definition) is not cached. Both caches are
# bounded by `_MAX_REMEMBERED` (emptied when full); words longer than `_CACHED_WORD_CHARS` are not kept.
_CACHED_WORD_CHARS = 64
_MAX_REMEMBERED = 1 << 18
_WORD_TERMS: dict[str, str] = {}
_STEMS: dict[str, str] = {}


def create_lexical_schema(conn: sqlite3.Connection) -> None:
    """Create the FTS5 table; its rowid is the chunk id.

    The text is tokenised by `tokenize` before it reaches SQLite, so FTS5 only
    splits on whitespace (`.` and `_` are token characters).
    """
    conn.execute(
        f"CREATE VIRTUAL TABLE IF NOT EXISTS {TABLE} USING fts5("
        "path, symbol, body, tokenize = \"unicode61 tokenchars '._' remove_diacritics 0\")"
    )


ChunkTerms = tuple[str, str, str]


def chunk_terms(chunk: Chunk) -> ChunkTerms:
    """A chunk's index terms, space-joined, per column (path, symbol, body = context lines + text):
    what every store indexes. Pure, so the chunk pool's processes compute it beside the chunks."""
    body = f"{chunk.context}\n{chunk.text}" if chunk.context else chunk.text
    return _joined(chunk.path), _joined(chunk.symbol), _joined(body)


def index_chunks(conn: sqlite3.Connection, rows: Iterable[tuple[int, str, str | None, str]]) -> None:
    """Add `(chunk_id, path, symbol, text)` rows (a chunk id already present is replaced)."""
    index_terms(
        conn,
        ((chunk_id, _joined(path), _joined(symbol), _joined(text)) for chunk_id, path, symbol, text in rows),
    )


def index_terms(conn: sqlite3.Connection, rows: Iterable[tuple[int, str, str, str]]) -> None:
    """Add `(chunk_id, *chunk_terms(chunk))` rows (a chunk id already present is replaced)."""
    conn.executemany(f"INSERT OR REPLACE INTO {TABLE}(rowid, path, symbol, body) VALUES (?, ?, ?, ?)", rows)


def delete_chunks(conn: sqlite3.Connection, ids: Iterable[int]) -> None:
    conn.executemany(f"DELETE FROM {TABLE} WHERE rowid = ?", ((int(chunk_id),) for chunk_id in ids))


def is_glob(pattern: str) -> bool:
    return any(char in _GLOB_CHARS for char in pattern)


def path_matches(path: str, pattern: str) -> bool:
    """A plain pattern is a prefix of whole path segments; otherwise a glob.

    In a glob `*` also crosses `/`, and `**/` may match no folder at all, as in `.gitignore`.
    """
    if is_glob(pattern):
        return fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, pattern.replace("**/", ""))
    prefix = pattern.strip("/")
    return not prefix or path == prefix or path.startswith(prefix + "/")


MAX_QUERY_TERMS = 64


# "get" before a past participle is the passive's auxiliary ("how does the help command get added?",
# "when do routes get matched?"), unless a person or a modal does the getting ("how do I get cached
# values?", "how to get parsed headers").
_PASSIVE_GET = re.compile(r"\b(\w+)\s+(?:get|gets|got|getting|gotten)\s+(?=\w+ed\b)", re.IGNORECASE)
_ACTIVE_GETTERS = frozenset(
    {"i", "we", "you", "they", "to", "can", "could", "should", "would", "will", "must", "may", "might",
     "and", "or", "how", "please"}
)  # fmt: skip


def _without_passive_get(query: str) -> str:
    def keep_subject(match: re.Match[str]) -> str:
        subject = match.group(1)
        return match.group(0) if subject.lower() in _ACTIVE_GETTERS else subject + " "

    return _PASSIVE_GET.sub(keep_subject, query)


def query_terms(query: str) -> list[str]:
    """The distinct tokens of a query, in order of first appearance; at most `MAX_QUERY_TERMS`
    (each costs an index lookup, and a question never needs more). A passive's "get" is left out:
    it says nothing of the code, and as a term it finds every getter (`GetActiveHelpConfig`)."""
    return list(dict.fromkeys(tokenize(_without_passive_get(query))))[:MAX_QUERY_TERMS]


def affordable_terms(conn: sqlite3.Connection, terms: Sequence[str]) -> list[str]:
    """The terms present in the index, rarest first, within `POSTINGS_BUDGET` (see there)."""
    conn.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.{VOCABULARY} USING fts5vocab(main, {TABLE}, row)")
    frequencies: list[tuple[int, str]] = []
    for term in terms:
        row = conn.execute(f"SELECT doc FROM temp.{VOCABULARY} WHERE term = ?", (term,)).fetchone()
        if row:
            frequencies.append((int(row[0]), term))
    return within_budget(frequencies)


def within_budget(frequencies: Iterable[tuple[int, str]]) -> list[str]:
    """Of `(document frequency, term)` pairs, the terms rarest first while their postings add up to at
    most `POSTINGS_BUDGET` (every store backend drops the same terms)."""
    kept: list[str] = []
    postings = 0
    for frequency, term in sorted(frequencies):
        postings += frequency
        if postings > POSTINGS_BUDGET:
            break
        kept.append(term)
    return kept


def match_expression(terms: Sequence[str]) -> str:
    """An FTS5 query matching any of the terms (each quoted, so no FTS5 syntax leaks in)."""
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)


def lexical_search(
    conn: sqlite3.Connection,
    query: str,
    k: int,
    *,
    path_glob: str | None = None,
    language: str | None = None,
) -> list[tuple[int, float]]:
    """The `k` best chunks for `query` by BM25, as `(chunk_id, score)` with higher = better."""
    terms = affordable_terms(conn, query_terms(query)) if k > 0 else []
    if not terms:
        return []
    weights = ", ".join(str(weight) for weight in COLUMN_WEIGHTS)
    sql = f"SELECT {TABLE}.rowid, bm25({TABLE}, {weights}) AS rank FROM {TABLE}"
    where = [f"{TABLE} MATCH ?"]
    params: list[object] = [match_expression(terms)]
    if path_glob or language:
        sql += f" JOIN chunks ON chunks.id = {TABLE}.rowid"
        if language:
            where.append("chunks.language = ?")
            params.append(language)
        if path_glob:
            conn.create_function("repolens_path_matches", 2, path_matches, deterministic=True)
            where.append("repolens_path_matches(chunks.path, ?)")
            params.append(path_glob)
    sql += " WHERE " + " AND ".join(where) + " ORDER BY rank LIMIT ?"
    params.append(k)
    return [(int(chunk_id), -float(rank)) for chunk_id, rank in conn.execute(sql, params)]
