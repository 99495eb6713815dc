"""Identifier words: the parts the lexical index and the name weight use, and the header's spelling."""

from __future__ import annotations

import pytest

from rag.identifiers import name_words, split_identifier


def test_split_identifier_splits_snake_camel_acronyms_and_digits() -> None:
    assert split_identifier("HTTPClient_sendAll2") == ["http", "client", "send", "all", "2"]


@pytest.mark.parametrize(
    ("word", "parts"),
    [
        # One pass over the whole word: the same parts as splitting at `_` first, even where an
        # acronym or a capital meets an underscore.
        ("ABC_Def", ["abc", "def"]),
        ("XML_HTTPRequest", ["xml", "http", "request"]),
        ("getURL_Path", ["get", "url", "path"]),
        ("A_Bc", ["a", "bc"]),
        ("__x__", ["x"]),
        ("URL_", ["url"]),
        ("ab1_2cd", ["ab", "1", "2", "cd"]),
        ("ÉtéValue_Été", ["é", "t", "é", "value", "é", "t", "é"]),
        ("ΣΑΣ_Σx", ["σας", "σ", "x"]),
        ("名前_nameΩmega", ["名前", "name", "ω", "mega"]),
    ],
)
def test_split_identifier_parts_never_cross_an_underscore(word: str, parts: list[str]) -> None:
    assert split_identifier(word) == parts


@pytest.mark.parametrize(
    ("symbol", "words"),
    [
        ("Address6.fromUnsignedByteArray", " (from unsigned byte array)"),
        ("LRUCache.size", " (lru cache)"),
        ("SignedCookieJar", " (signed cookie jar)"),
        ("Client.send_all", ""),
        ("Router", ""),
        ("parse", ""),
        (None, ""),
    ],
)
def test_name_words_spell_out_only_camel_case_names(symbol: str | None, words: str) -> None:
    assert name_words(symbol) == words
