"""Which chunks are never embedded: content a sentence embedder cannot use stays lexical-only.

Minified or one-line generated files, encoded blobs and number tables are still found by exact
words (BM25) but cost no embedding time; `dense_total` counts the chunks that get vectors. Pure
per-file work, so the chunk pool's processes decide it beside the chunks (`ingest.chunk_pool`).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from ingest.reader import SourceFile
from rag.types import Chunk

_BLOB_RUN = re.compile(r"[A-Za-z0-9+/=_-]{200,}")
_SPACE = re.compile(r"\s")  # what str.isspace calls space
_ASCII_NON_LETTER = re.compile(r"[\x00-\x08\x0e-\x1b!-@\[-`{-\x7f]")  # neither space nor a letter
# The same classes of ASCII as bytes: `_SPACE`, and it with the letters (the rest: `_ASCII_NON_LETTER`).
_ASCII_SPACE = bytes(byte for byte in range(128) if chr(byte).isspace())
_ASCII_SPACE_OR_LETTER = _ASCII_SPACE + string.ascii_letters.encode("ascii")


def no_semantic_value(text: str) -> bool:
    """A chunk a sentence embedder cannot make sense of (encoded blobs, number tables): kept
    lexical-only, so it is still found by exact words but costs no embedding time."""
    if not text.strip():
        return True
    if _BLOB_RUN.search(text) and sum(len(run) for run in _BLOB_RUN.findall(text)) > len(text) / 2:
        return True  # base64, hashes, inline data
    visible, non_letters = _visible_and_non_letters(text)
    if visible < 200:
        return False
    return (visible - non_letters) / visible < 0.3  # hex dumps, number tables


def _visible_and_non_letters(text: str) -> tuple[int, int]:
    """Characters that are not space (indentation is not content), and those of them that are ASCII
    but no letter (any other script counts as letters). An ASCII text is counted by bytes in C."""
    if text.isascii():
        data = text.encode("ascii")
        visible = len(data.translate(None, _ASCII_SPACE))
        return visible, len(data.translate(None, _ASCII_SPACE_OR_LETTER))
    return _visible_and_non_letters_by_pattern(text)


def _visible_and_non_letters_by_pattern(text: str) -> tuple[int, int]:
    return len(text) - _SPACE.subn("", text)[1], _ASCII_NON_LETTER.subn("", text)[1]


def lexical_only(file: SourceFile, chunks: Sequence[Chunk]) -> frozenset[int]:
    """Indexes of the chunks of `file` that are never embedded (see `minified`, `no_semantic_value`)."""
    if minified(file.text):
        return frozenset(range(len(chunks)))
    return frozenset(row for row, chunk in enumerate(chunks) if no_semantic_value(chunk.text))


def minified(text: str) -> bool:
    """A whole file of minified or one-line generated code: lines of hundreds of characters on
    average with few spaces (prose and formatted code have a space every few characters)."""
    lines = text.splitlines() or [text]
    return len(text) >= 1000 and len(text) / len(lines) > 300 and text.count(" ") < len(text) / 10
