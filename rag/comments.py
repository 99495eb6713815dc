"""Which chunks of code hold only comments: a file's licence or overview, a long doc comment.

A source file's chunk that is all comment (a Rust `//!` crate overview, the `///` examples of a
documented type cut into window-sized pieces, a module docstring alone, a Python exception class
with nothing but its docstring) is documentation in a code file: it repeats a question's words the
way a docs page does, and names the code the way a docs page does. The retriever gives it the docs
role (`Retriever._role`, unless it lies inside a function's body), so a "how does X work?" question
ranks the code above it and follows the names it mentions to their definitions.

Decided from the chunk's text and its language's comment syntax, line by line: every non-blank line
is a line comment, or inside a block comment (`/* ... */`, a Python docstring) that opens at a
line's start, or (Python) the one-line header of a class whose body is only its docstring. A
language not listed here has no comment-only chunks.
"""

from __future__ import annotations

import re

# (line-comment marks, (opening, closing) block marks). `*` opens a line of a `/** ... */` block
# whose opening line is in an earlier chunk.
_C_LIKE: tuple[tuple[str, ...], tuple[tuple[str, str], ...]] = (("//", "*"), (("/*", "*/"),))
_HASH: tuple[tuple[str, ...], tuple[tuple[str, str], ...]] = (("#",), ())
_PYTHON: tuple[tuple[str, ...], tuple[tuple[str, str], ...]] = (
    ("#",),
    (('"""', '"""'), ("'''", "'''"), ('r"""', '"""')),
)
_C_LIKE_LANGUAGES = ("javascript", "typescript", "tsx", "go", "java", "rust", "c", "cpp", "csharp",
                     "kotlin", "swift", "scala", "php", "dart", "groovy", "zig")  # fmt: skip
_HASH_LANGUAGES = ("ruby", "shell", "perl", "r", "elixir", "julia", "nim")
COMMENT_SYNTAX: dict[str, tuple[tuple[str, ...], tuple[tuple[str, str], ...]]] = {
    "python": _PYTHON,
    **dict.fromkeys(_C_LIKE_LANGUAGES, _C_LIKE),
    **dict.fromkeys(_HASH_LANGUAGES, _HASH),
    "lua": (("--",), (("--[[", "]]"),)),
}


# Lines of a Python class that holds nothing but its docstring (an exception or a marker type): its
# one-line header and a `pass` or `...` body (`class ConnectTimeout(ConnectionError, Timeout):`).
_BODYLESS = {"python": re.compile(r"class\s+\w+.*:|pass|\.\.\.")}


def comment_only(text: str, language: str) -> bool:
    """Whether every non-blank line of `text` (code in `language`, a chunker language name) is a
    comment; False for a text with no comment at all, and for a language without known syntax."""
    syntax = COMMENT_SYNTAX.get(language)
    if syntax is None:
        return False
    line_marks, blocks = syntax
    closing: str | None = None
    commented = False
    for raw in text.splitlines():
        line = raw.strip()
        if closing is not None:
            _, closed, after = line.partition(closing)
            if closed:
                closing = None
                if after.strip():
                    return False
            continue
        if not line:
            continue
        block = next(((opening, close) for opening, close in blocks if line.startswith(opening)), None)
        if block is not None:
            commented = True
            _, closed, after = line[len(block[0]) :].partition(block[1])
            if not closed:
                closing = block[1]
            elif after.strip():
                return False
        elif line.startswith(line_marks):
            commented = True
        elif not ((header := _BODYLESS.get(language)) and header.fullmatch(line)):
            return False
    return commented
