"""Words of an identifier: `HTTPClient_sendAll2` -> http, client, send, all, 2.

One definition for the lexical index (which indexes the parts), the name weight of ranking and the
chunk header (which spells out camelCase names for the embedder, whose tokenizer splits at `_` and
`.` but not at a capital: `isRedirect` is a word piece soup, `is redirect` two words it knows).
"""

from __future__ import annotations

import functools
import re

_PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+|[^\W\d_A-Za-z]+")
# A lower-case letter then a capital (`isRedirect`), or an acronym then a word (`LRUCache`).
_HUMP = re.compile(r"[a-z][A-Z]|[A-Z]{2}[a-z]")


def split_identifier(word: str) -> list[str]:
    """`HTTPClient_sendAll2` -> `["http", "client", "send", "all", "2"]`."""
    # No part holds `_` (and no lookahead of `_PART` crosses one): the word's parts are its pieces'.
    return [part.lower() for part in _PART.findall(word)]


# A chunk's header is built each time its text is needed (counting candidates, hashing, writing), for
# few distinct symbols: each symbol's words are worked out once.
@functools.lru_cache(maxsize=1 << 14)
def name_words(symbol: str | None) -> str:
    """The words of a symbol's camelCase names, for a chunk header: `Address6.fromUnsignedByteArray`
    -> ` (from unsigned byte array)`; '' when no name has a hump (`Client.send_all`, `Router`)."""
    humped = [name for name in (symbol or "").split(".") if _HUMP.search(name)]
    return f" ({' '.join(word for name in humped for word in split_identifier(name))})" if humped else ""
