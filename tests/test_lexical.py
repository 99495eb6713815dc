"""The code-aware tokeniser and BM25 over FTS5, on the store's real `meta.sqlite` schema."""

from __future__ import annotations

import concurrent.futures
import sqlite3
from collections.abc import Iterator

import pytest

from rag import lexical
from rag.store.schema import create_schema
from rag.types import Chunk

CHUNKS = [
    # id, path, language, symbol, text
    (
        1,
        "net/client.py",
        "python",
        "HttpClient.send",
        "def send(self, request):\n    return self.pool.send(request)",
    ),
    (
        2,
        "net/redirects.py",
        "python",
        "follow_redirects",
        "def follow_redirects(response):\n    location = 1",
    ),
    (
        3,
        "web/app.js",
        "javascript",
        "parseJSONValue",
        "function parseJSONValue(raw) { return JSON.parse(raw) }",
    ),
    (4, "docs/guide.md", "markdown", None, "The client follows redirects and parses JSON values."),
    (5, "store/cache.go", "go", "Cache.Get", 'func (c *Cache) Get(key string) { panic("E4471 quota") }'),
]


@pytest.fixture
def conn() -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(":memory:")
    create_schema(connection)
    connection.executemany(
        "INSERT INTO chunks(id, path, language, start_line, end_line, symbol, text, content_hash) "
        "VALUES (?, ?, ?, 1, 2, ?, ?, '')",
        [(cid, path, language, symbol, text) for cid, path, language, symbol, text in CHUNKS],
    )
    lexical.index_chunks(connection, [(cid, path, symbol, text) for cid, path, _, symbol, text in CHUNKS])
    yield connection
    connection.close()


def ids(results: list[tuple[int, float]]) -> list[int]:
    return [chunk_id for chunk_id, _ in results]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("snake_case_name", ["snake_case_name", "snake", "case", "name"]),
        ("camelCaseName", ["camelcasename", "camel", "case", "name"]),
        ("HTTPClient", ["httpclient", "http", "client"]),
        ("parseJSONValue2", ["parsejsonvalue2", "parse", "json", "value", "2"]),
        ("__init__", ["init"]),
        ("Client.send", ["client.send", "client", "send"]),
        ("rag/prompt.py", ["prompt.py", "rag", "prompt", "py"]),
        ("How is the Value parsed", ["value", "parsed"]),
    ],
)
def test_words_split_identifiers_and_keep_them_whole(text: str, expected: list[str]) -> None:
    assert lexical.words(text) == expected


def test_tokenize_stems_plain_words_but_not_compound_names() -> None:
    assert lexical.tokenize("followed redirects follow_redirects Client.sends") == [
        "client.sends",
        "follow",
        "redirect",
        "follow_redirects",
        "follow",
        "redirect",
        "client",
        "send",
    ]


# Texts the index's columns are made of: dotted names, stopwords, a word past the remembered length,
# non-ASCII words, underscores, digits, and words seen before (remembered) and not.
COLUMN_TEXTS = [
    "def follow_redirects(self, response):\n    return self.session.send(response.next)",
    "the of and if is",
    "x" * 70 + " " + "getY" * 20 + " plain",
    "ΣΑΣ_Σx naïve 名前_nameΩmega café.latte",
    "__init__ _private __x__ HTTPClient_sendAll2 queue12 queue13 getQueue",
    "a.b.c a. .b rag/prompt.py Client.send_all()",
    "",
]


def test_index_columns_are_the_space_joined_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    """`chunk_terms` builds each column from words' terms remembered per word: the same string as
    joining `tokenize`'s terms, for words first seen, remembered, or forgotten when the memory fills."""
    for limit in (lexical._MAX_REMEMBERED, 3):
        monkeypatch.setattr(lexical, "_MAX_REMEMBERED", limit)
        for _ in range(2):
            for text in COLUMN_TEXTS:
                chunk = Chunk("src/net/http_client.py", "python", 1, 2, "HttpClient.send", text, text or None)
                body = f"{text}\n{text}" if text else text
                assert lexical.chunk_terms(chunk) == (
                    " ".join(lexical.tokenize("src/net/http_client.py")),
                    " ".join(lexical.tokenize("HttpClient.send")),
                    " ".join(lexical.tokenize(body)),
                )
    stemmed = ["queue12", "queue", "12", "queue", "getqueu", "get", "queue"]
    assert lexical.tokenize("queue12 queues getQueue") == stemmed


def test_threads_sharing_the_word_cache_get_every_word_while_it_fills_and_clears(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Search threads tokenize at once through the one per-word cache: one clearing it (it is full)
    between another's lookups used to lose that one's words (a `KeyError`)."""
    monkeypatch.setattr(lexical, "_MAX_REMEMBERED", 16)
    texts = [" ".join(f"word{n}_{i} Part{i}Name" for i in range(40)) for n in range(8)]
    expected = {text: [*lexical.tokenize(text)] for text in texts}
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lexical.tokenize, texts * 50))
    assert results == [expected[text] for text in texts * 50]


def test_very_common_terms_are_left_out_of_big_indexes(
    conn: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "json" is in chunks 3 and 4, "parse" in 3 and 4, "value" in 3 and 4, "e4471" only in 5.
    assert lexical.affordable_terms(conn, ["json", "e4471", "missing"]) == ["e4471", "json"]
    monkeypatch.setattr(lexical, "POSTINGS_BUDGET", 2)
    assert lexical.affordable_terms(conn, ["json", "e4471"]) == ["e4471"]
    assert ids(lexical.lexical_search(conn, "parseJSONValue E4471", 5)) == [5]
    monkeypatch.setattr(lexical, "POSTINGS_BUDGET", 0)
    assert lexical.lexical_search(conn, "E4471", 5) == []


def test_exact_identifier_ranks_its_chunk_first(conn: sqlite3.Connection) -> None:
    assert ids(lexical.lexical_search(conn, "parseJSONValue", 5))[0] == 3
    assert ids(lexical.lexical_search(conn, "E4471", 5)) == [5]


def test_words_find_split_identifiers_and_stems(conn: sqlite3.Connection) -> None:
    # "redirect" (singular) reaches `follow_redirects` through its parts and Porter stemming.
    found = ids(lexical.lexical_search(conn, "redirect following", 5))
    assert found[0] == 2
    assert 4 in found


def test_path_and_symbol_columns_are_searched(conn: sqlite3.Connection) -> None:
    assert ids(lexical.lexical_search(conn, "client.py", 5))[0] == 1
    assert ids(lexical.lexical_search(conn, "HttpClient.send", 5))[0] == 1


def test_scores_are_positive_and_descending(conn: sqlite3.Connection) -> None:
    results = lexical.lexical_search(conn, "client redirects json", 5)
    scores = [score for _, score in results]
    assert len(results) >= 3
    assert all(score > 0 for score in scores)
    assert scores == sorted(scores, reverse=True)


def test_filters_by_language_and_path(conn: sqlite3.Connection) -> None:
    assert ids(lexical.lexical_search(conn, "json", 5, language="markdown")) == [4]
    assert ids(lexical.lexical_search(conn, "json", 5, path_glob="*.js")) == [3]
    assert set(ids(lexical.lexical_search(conn, "client redirects", 5, path_glob="net"))) == {1, 2}
    assert lexical.lexical_search(conn, "json", 5, path_glob="nowhere/") == []


def test_delete_removes_chunks_from_results(conn: sqlite3.Connection) -> None:
    lexical.delete_chunks(conn, [3])
    assert 3 not in ids(lexical.lexical_search(conn, "parseJSONValue", 5))
    assert ids(lexical.lexical_search(conn, "parseJSONValue", 5)) == [4]


def test_reindexing_a_chunk_replaces_its_text(conn: sqlite3.Connection) -> None:
    lexical.index_chunks(conn, [(5, "store/cache.go", "Cache.Get", "func Get() { return nil }")])
    assert lexical.lexical_search(conn, "E4471", 5) == []


@pytest.mark.parametrize("query", ["", "   ", "the of and", '"', "NEAR(", "a OR b AND", "*", "col:x"])
def test_queries_without_terms_or_with_fts_syntax_are_safe(conn: sqlite3.Connection, query: str) -> None:
    assert isinstance(lexical.lexical_search(conn, query, 5), list)


@pytest.mark.parametrize(
    ("path", "pattern", "expected"),
    [
        ("rag/prompt.py", "rag", True),
        ("rag/prompt.py", "rag/", True),
        ("rag/prompt.py", "rag/prompt.py", True),
        ("rag_utils/x.py", "rag", False),
        ("rag/prompt.py", "*.py", True),
        ("rag/sub/prompt.py", "rag/**/*.py", True),
        ("rag/prompt.py", "rag/**/*.py", True),
        ("lib/rag/prompt.py", "**/prompt.py", True),
        ("rag/prompt.py", "*.js", False),
        ("rag/prompt.py", "", True),
    ],
)
def test_path_matches_prefix_or_glob(path: str, pattern: str, expected: bool) -> None:
    assert lexical.path_matches(path, pattern) is expected
