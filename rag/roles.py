"""What a file is for: source, test, docs, example, changelog, config, generated or vendored.

Retrieval weighs a chunk by its file's role and the question's intent (`rag.ranking`): a
question about how something works wants the implementation, one about usage may want the docs.
The role is decided once per file at build time, from its path, name and first lines, and
stored in the index (`files.role`); the rules are ordered, the first that applies wins:

1. vendored: a path folder such as `vendor/`, `third_party/`, `_vendor/`, `node_modules/`;
2. generated: a generated-code marker in the first lines ("Code generated ... DO NOT EDIT",
   "@generated", "auto-generated") or a generated name (`*_pb2.py`, `*.pb.go`, `*.min.js`);
3. changelog: `CHANGELOG`, `CHANGES`, `HISTORY`, `NEWS`, `RELEASES`, release-notes pages;
4. test: a test file name (`test_x.py`, `x_test.go`, `x.test.ts`, `x.spec.js`, `conftest.py`);
5. test or example: the outermost `test`/`tests`/`spec`/`__tests__`/`testdata`/`test_helpers` or
   `example(s)`/`demo(s)`/`sample(s)` folder (`examples/testing/` is an example), else an
   `example`/`examples` file name;
6. docs: prose (`.md`, `.rst`, `.txt`, `.adoc`, ...), README/LICENSE/CONTRIBUTING-like names,
   or any file under a `docs`/`documentation` folder (a `doc/` folder of code is not docs);
7. config: build and settings files (`pyproject.toml`, `package.json`, `go.mod`, `Makefile`,
   `*.yml`, `*.toml`, `*.ini`, dotfiles, `setup.py`, ...);
8. source: everything else.

Within a source file, the lines of an inline test module (Rust's `#[cfg(test)] mod tests { ... }`,
`inline_test_modules`) are test code: retrieval gives the chunks mostly made of them the test role
(`rag.retrieval`), and the code graph's walk leaves them out of implementations (`rag.graph_walk`).
"""

from __future__ import annotations

import re
from typing import Literal

Role = Literal["source", "test", "docs", "example", "changelog", "config", "generated", "vendored"]
ROLES: tuple[Role, ...] = (
    "source",
    "test",
    "docs",
    "example",
    "changelog",
    "config",
    "generated",
    "vendored",
)
DEFAULT_ROLE: Role = "source"

_VENDORED_DIRS = frozenset(
    {"vendor", "vendored", "_vendor", "third_party", "thirdparty", "node_modules", "external"}
)
_TEST_DIRS = frozenset(
    {"test", "tests", "testing", "__tests__", "spec", "specs", "testdata", "test_helpers", "e2e"}
)
_EXAMPLE_DIRS = frozenset({"example", "examples", "_examples", "demo", "demos", "sample", "samples"})
_DOCS_DIRS = frozenset({"docs", "documentation", "_docs"})
_CHANGELOG_STEMS = frozenset(
    {"changelog", "changes", "history", "news", "releases", "release-notes", "release_notes", "releasenotes"}
)
_DOC_STEMS = frozenset(
    {
        "readme",
        "license",
        "licence",
        "copying",
        "contributing",
        "authors",
        "contributors",
        "code_of_conduct",
        "conduct",
        "security",
        "maintainers",
        "notice",
        "faq",
        "support",
        "governance",
    }
)
_DOC_EXTENSIONS = frozenset(
    {".md", ".markdown", ".mdx", ".rst", ".txt", ".adoc", ".asciidoc", ".org", ".textile"}
)
_CONFIG_EXTENSIONS = frozenset(
    {
        ".toml",
        ".ini",
        ".cfg",
        ".yml",
        ".yaml",
        ".json",
        ".lock",
        ".conf",
        ".properties",
        ".mod",
        ".sum",
        ".editorconfig",
    }
)
_CONFIG_NAMES = frozenset(
    {
        "makefile",
        "dockerfile",
        "setup.py",
        "noxfile.py",
        "manifest.in",
        "cmakelists.txt",
        "gemfile",
        "rakefile",
        "justfile",
        "procfile",
        "build.gradle",
        "pom.xml",
        "tsconfig.json",
        "vite.config.js",
        "webpack.config.js",
    }
)
_TEST_NAME = re.compile(
    r"^(?:test_.+|.+_test|.+_tests|.+[._-](?:test|spec)|conftest|test)\.[a-z0-9]+$|^tests?\.[a-z0-9]+$",
    re.IGNORECASE,
)
_GENERATED_NAME = re.compile(
    r"(?:_pb2(?:_grpc)?\.pyi?|\.pb\.(?:go|cc|h)|\.min\.(?:js|css)|\.generated\.\w+)$"
)
_GENERATED_MARK = re.compile(
    r"code generated .* do not edit|@generated\b|^[^\w\n]*+(?:this file (?:is|was|has been) )?"
    r"(?:auto[- ]?|automatically )generated\b",
    re.IGNORECASE | re.MULTILINE,
)
# Generated-code markers sit at the top of a file.
_HEAD_CHARS = 600


def file_role(path: str, text: str = "") -> Role:
    """The role of the file at `path` (POSIX, relative to the repository root) with content `text`."""
    parts = path.lower().split("/")
    folders, name = parts[:-1], parts[-1]
    stem, dot, extension = name.rpartition(".")
    if not dot:
        stem, extension = name, ""
    extension = "." + extension if extension else ""
    if _VENDORED_DIRS.intersection(folders):
        return "vendored"
    plain = extension in _CONFIG_EXTENSIONS or extension in _DOC_EXTENSIONS or name.startswith(".")
    if _GENERATED_NAME.search(name) or (not plain and _GENERATED_MARK.search(text[:_HEAD_CHARS])):
        return "generated"
    prose = extension in _DOC_EXTENSIONS or not extension
    if (prose and stem in _CHANGELOG_STEMS) or "release-notes" in folders or "changelog" in folders:
        return "changelog"
    if _TEST_NAME.match(name):
        return "test"
    # The outermost folder decides: `examples/testing/` holds an example, `tests/examples/` tests.
    for folder in folders:
        if folder in _TEST_DIRS:
            return "test"
        if folder in _EXAMPLE_DIRS:
            return "example"
    if stem in {"example", "examples"}:
        return "example"
    if name in _CONFIG_NAMES or stem.startswith("requirements") and extension in {".txt", ".in"}:
        return "config"
    if extension in _DOC_EXTENSIONS or (prose and stem in _DOC_STEMS) or _DOCS_DIRS.intersection(folders):
        return "docs"
    if extension in _CONFIG_EXTENSIONS or (name.startswith(".") and not folders):
        return "config"
    return "source"


# A Rust `#[cfg(test)] mod tests { ... }` (not `mod tests;`, a file of its own).
_TEST_MODULE = re.compile(
    r"^[ \t]*#\[cfg\(test\)\][ \t]*\n[ \t]*(?:pub(?:\([^)]*\))?[ \t]+)?mod[ \t]+\w+[ \t]*\{", re.M
)


def may_hold_inline_tests(path: str) -> bool:
    """Whether the file at `path` can hold inline test modules (Rust's): the others need not be read."""
    return path.endswith(".rs")


def inline_test_modules(path: str, text: str) -> list[tuple[int, int]]:
    """(first, last) lines of each inline test module of the file at `path` (Rust only), by matching
    its braces (braces in strings and comments are rare enough in test modules to be counted too)."""
    if not may_hold_inline_tests(path):
        return []
    ranges = []
    for match in _TEST_MODULE.finditer(text):
        depth, end = 0, len(text)
        for position in range(match.end() - 1, len(text)):
            depth += {"{": 1, "}": -1}.get(text[position], 0)
            if depth == 0:
                end = position
                break
        ranges.append((text.count("\n", 0, match.start()) + 1, text.count("\n", 0, end) + 1))
    return ranges


def mostly_within(start_line: int, end_line: int, ranges: list[tuple[int, int]]) -> bool:
    """Whether more than half the lines `start_line..end_line` lie in `ranges` (a chunk that merged
    the end of the code above with the start of a test module is the code's, not the tests')."""
    inside = sum(max(0, min(end_line, last) - max(start_line, first) + 1) for first, last in ranges)
    return 2 * inside > end_line - start_line + 1
