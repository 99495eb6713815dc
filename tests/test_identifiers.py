"""Identifier words: the parts the lexical index and the name weight use, and the header's spelling."""

from __future__ import annotations

import pytest

from rag.identifiers import name_words, split_identifier


def test_split_identifier_splits_snake_camel_acronyms_and_digits() -> None:
    assert split_identifier("HTTPClient_sendAll2") == ["http", "client", "send", "all", "2"]


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
