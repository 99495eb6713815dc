"""`plural(3, "file")` -> `3 files`: counts in words, one spelling for every message that says them."""

from __future__ import annotations


def plural(count: int, noun: str) -> str:
    """`1 file`, `2 files`: nouns whose plural adds an `s` (the ones RepoLens counts)."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
