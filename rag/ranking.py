"""Intent × role ranking and doc-to-code links: what `Retriever` adds on top of the fused ranking.

A developer asking "how does the router pick a route?" wants `routing.py`, not the docs page that
describes routing nor the test that calls it; one asking "how do I add middleware?" may well
want the docs page. So each question gets an **intent** from its wording and each chunk's fused
score is multiplied by `ROLE_WEIGHTS[intent][role of its file]`:

- `usage`: "how do I", "how can I", "how to", "example", "tutorial", "guide", "usage", ...;
- `test`: the question mentions tests, specs or fixtures;
- `docs`: documentation, README, changelog, release notes, "what changed", migration;
- `code` (everything else): how does X work, where is Y, why does Z.

Docs, tests and examples also **lead to code**: identifiers that a well-ranked non-source chunk
names (`Session(max_redirects=3)`, `Router.add_route`, `resolve_redirects()`) are looked up among
the index's definitions, and each source chunk defining one gains a share of the linking chunk's
score (more when the identifier shares a word with the question). And for `code` questions a
chunk whose own definition name the question says ("pause the stream" -> `Minipass.pause`) gains up to
`NAME_BOOST` of its score. The figures are tuned and measured with `python -m bench retrieval`
(docs/retrieval.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from rag.identifiers import split_identifier
from rag.lexical import STOPWORDS, tokenize

Intent = Literal["code", "usage", "test", "docs"]
INTENTS: tuple[Intent, ...] = ("code", "usage", "test", "docs")

# Rows: the question's intent; columns: the role of a chunk's file (rag.roles).
ROLE_WEIGHTS: dict[Intent, dict[str, float]] = {
    "code": {"source": 1.0, "test": 0.5, "docs": 0.5, "example": 0.55, "changelog": 0.3, "config": 0.5,
             "generated": 0.4, "vendored": 0.4},
    "usage": {"source": 0.85, "test": 0.5, "docs": 1.0, "example": 1.0, "changelog": 0.4, "config": 0.6,
              "generated": 0.4, "vendored": 0.4},
    "test": {"source": 0.6, "test": 1.0, "docs": 0.4, "example": 0.5, "changelog": 0.3, "config": 0.5,
             "generated": 0.4, "vendored": 0.4},
    "docs": {"source": 0.7, "test": 0.4, "docs": 1.0, "example": 0.8, "changelog": 1.0, "config": 0.6,
             "generated": 0.4, "vendored": 0.4},
}  # fmt: skip

# "for example" and "e.g." introduce an illustration, not a request for one.
_ASIDE = re.compile(r"\b(?:for example|for instance|e\.g\.)", re.IGNORECASE)
_USAGE = re.compile(
    r"\b(?:how (?:do|can|should|would) (?:i|we|you)|how to|examples?|tutorial|guide|usage of|how to use|"
    r"(?:what is|what's) the (?:best|right|recommended) way|can i|show me|snippet)\b",
    re.IGNORECASE,
)
# About tests: "tests", "unit test", "which test ..."; a "test client" or "test server" is a component.
_TEST = re.compile(
    r"\b(?:tests|tested|unit[- ]?tests?|test (?:cases?|suite|coverage)|fixtures?|specs)\b|"
    r"\b(?:which|what|a|the|any|some) test\b(?! (?:client|server|helper|harness|runner|utilit|double))",
    re.IGNORECASE,
)
# About the documentation itself, not about code that generates documentation.
_DOCS = re.compile(
    r"\b(?:(?:documentation|docs) (?:for|of|on|about|say)|where is .* documented|documented|readme|"
    r"changelog|change ?log|release notes?|what changed|changed in|migration guide|upgrade guide)\b",
    re.IGNORECASE,
)


def query_intent(query: str) -> Intent:
    """The intent of a question from its wording: tests, then docs, then usage, else code."""
    query = _ASIDE.sub(" ", query)
    if _TEST.search(query):
        return "test"
    if _DOCS.search(query):
        return "docs"
    if _USAGE.search(query):
        return "usage"
    return "code"


def role_weight(intent: Intent, role: str) -> float:
    return ROLE_WEIGHTS[intent].get(role, 1.0)


# Links --------------------------------------------------------------------------------------------

# Roles whose chunks lead to code, and how many of a search's best such chunks are followed.
LINKING_ROLES = frozenset({"docs", "test", "example", "changelog"})
LINKING_CHUNKS = 8
# An identifier defined in more places than this names nothing in particular (`get`, `new`, `run`).
MAX_DEFINITIONS = 3
# A linking chunk hands this share of its fused score to the definitions it names, split evenly
# among the names it mentions (`spread` 1.0: a chunk naming one identifier gives it the whole share) ...
LINK_SHARE = 0.5
LINK_SPREAD = 1.0
# ... and this much less when the identifier shares no word with the question.
UNRELATED_FACTOR = 0.3

# `Foo.bar(`, `foo_bar(`, `Foo(`, `Foo.bar`, inline code spans, and CamelCase / snake_case words.
_CALL_OR_DOTTED = re.compile(
    r"\b([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*)\s*(?=\()|\b([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)\b"
)
_CODE_SPAN = re.compile(r"`([^`\n]{2,80})`")
_COMPOUND = re.compile(r"\b(?:[A-Za-z]+_\w+|[a-z]+[A-Z]\w*|[A-Z][a-z0-9]+[A-Z]\w*)\b")
_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
# Words that read like identifiers in prose or tests but name nothing worth following.
_NOISE = frozenset(
    {"self", "cls", "this", "super", "print", "len", "str", "int", "dict", "list", "assert", "expect",
     "require", "console.log", "t.Fatal", "t.Errorf", "t.Error", "fmt.Println", "fmt.Printf", "fmt.Sprintf",
     "assert_eq", "assert_ne", "unwrap", "isinstance", "pytest.raises", "pytest.mark.parametrize",
     "describe", "it", "done"}
)  # fmt: skip
MIN_NAME_CHARS = 4


def mentioned_identifiers(text: str) -> list[str]:
    """Identifiers a doc, test or example chunk names: calls, dotted names, code spans, compounds."""
    found: list[str] = []
    for match in _CALL_OR_DOTTED.finditer(text):
        found.append(match.group(1) or match.group(2))
    for span in _CODE_SPAN.finditer(text):
        found.extend(_NAME.findall(span.group(1)))
    found.extend(_COMPOUND.findall(text))
    names: list[str] = []
    for name in dict.fromkeys(found):
        last = name.rpartition(".")[2]
        if name in _NOISE or last in _NOISE or len(last) < MIN_NAME_CHARS or last.lower() in STOPWORDS:
            continue
        names.append(name)
    return names


def shares_a_word(name: str, query_terms: frozenset[str]) -> bool:
    """Whether the identifier's parts (`resolve_redirects` -> resolve, redirect) meet the question's terms."""
    parts = [part for segment in name.split(".") for part in split_identifier(segment)]
    return any(term in query_terms for term in tokenize(" ".join(parts)))


# Names -------------------------------------------------------------------------------------------

# A chunk whose definition's own name the question says ("pause the stream" -> `Minipass.pause`,
# "is the address a loopback address" -> `Address6.isLoopback`) gains up to this share of its score:
# the share of the name's words that the question holds.
NAME_BOOST = 0.3
_WORDS = re.compile(r"\w+")
# Short forms names use for a word a question spells out: `InitDefaultHelpCmd` is half said by
# "how does the help command get added?" (help, command), not a quarter (+0.3 / +0.5 file MRR@10 on
# the dev sets; docs/retrieval.md).
ABBREVIATIONS: dict[str, str] = {
    "addr": "address", "arg": "argument", "args": "arguments", "attr": "attribute", "auth": "authentication",
    "buf": "buffer", "cfg": "config", "cmd": "command", "conf": "config", "conn": "connection",
    "ctx": "context", "db": "database", "dir": "directory", "doc": "documentation", "env": "environment",
    "err": "error", "fn": "function", "func": "function", "idx": "index", "impl": "implementation",
    "init": "initialize", "len": "length", "msg": "message", "num": "number", "param": "parameter",
    "params": "parameters", "pkg": "package", "prev": "previous", "req": "request", "res": "response",
    "resp": "response", "repo": "repository", "src": "source", "str": "string", "tmp": "temporary",
    "val": "value", "var": "variable",
}  # fmt: skip


def question_words(query: str) -> frozenset[str]:
    """The question's lower-cased words, stop words included (for `named_share`)."""
    return frozenset(word.lower() for word in _WORDS.findall(query))


def named_share(
    symbol: str | None, query_terms: frozenset[str], query_words: frozenset[str] = frozenset()
) -> float:
    """The share of the words of a chunk's innermost name (`LRUCache.#getRemainingTTL` -> get,
    remaining, ttl) that the question holds; 0 for a chunk of several definitions (`a, b`).

    A word is held when its stem is one of the question's `query_terms`; a stop word of the name
    (`is`, `has`, `to`), which has no term, when it is one of the question's `query_words`. Stop
    words count: `Response.is_redirect` is half said by "how are redirects followed?", like
    `resolve_redirects`, not wholly, or every `is_x` / `has_x` / `to_x` property would outrank
    the method that does x (+1.3 R@1 on the natural tuning questions; docs/retrieval.md)."""
    if not symbol or "," in symbol:
        return 0.0
    name = symbol.rpartition(".")[2]
    parts = [part for part in split_identifier(name) if len(part) > 1]
    if not parts:
        return 0.0
    held = sum(1 for part in parts if _held(part, query_terms, query_words))
    return held / len(parts)


def _held(part: str, query_terms: frozenset[str], query_words: frozenset[str]) -> bool:
    return part in query_words if part in STOPWORDS else _said(part, query_terms)


def _said(part: str, query_terms: frozenset[str]) -> bool:
    """Whether the question holds a name's word (lower case), as itself or as the word its short
    form stands for (`cmd` -> command, `ctx` -> context: `ABBREVIATIONS`)."""
    return any(term in query_terms for term in tokenize(f"{part} {ABBREVIATIONS.get(part, '')}"))


# Files -------------------------------------------------------------------------------------------

# The best chunk of a file the question names (`rich/markup.py` for "how is console markup parsed?",
# `examples/session/index.js` for "an example of keeping user sessions") gains this share of its
# score (`names_the_file`).
PATH_BOOST = 0.05
# File names that say nothing about their content: their folder names it (`routing/mod.rs`).
_GENERIC_STEMS = frozenset({"index", "mod", "lib", "main", "__init__", "__main__", "init"})
# Words of a file name that qualify nothing (`_concurrency_utils.py` is about concurrency).
_GENERIC_FILE_WORDS = frozenset({"util", "utils", "helper", "helpers", "common", "misc", "base", "core",
                                 "internal", "impl"})  # fmt: skip


def file_topic(path: str) -> str:
    """What a file's name says it is about: its name before the first dot (`path_router.rs` ->
    `path_router`, `x.test.ts` -> `x`), or its folder's name for a generic one (`session/index.js`)."""
    folders, _, name = path.rpartition("/")
    stem = name.lstrip(".").split(".")[0]
    return folders.rpartition("/")[2] if stem.lower() in _GENERIC_STEMS else stem


def names_the_file(path: str, query_terms: frozenset[str]) -> bool:
    """Whether the question says what the file is about: every word of its `file_topic` but the stop
    words and generic ones (`to_process.py` -> process, `has-magic.js` -> magic). One word of a
    compound name is not enough: "how does the help command get added?" does not name
    `active_help.go`, which is about active help (before, each word said counted for its share, and
    that file outranked `InitDefaultHelpCmd`)."""
    words = [
        part
        for part in split_identifier(file_topic(path))
        if len(part) > 1 and part not in STOPWORDS and part not in _GENERIC_FILE_WORDS
    ]
    return bool(words) and all(_said(part, query_terms) for part in words)


def module_names(paths: Iterable[str]) -> frozenset[str]:
    """The dotted names, two parts or more, of the modules the files are: `src/rich/markup.py` ->
    `rich.markup`, `axum/src/routing/mod.rs` -> `axum.routing` (a `src` folder is no part of a
    module's name; a generic file name is its folder). A docs page that names `rich.markup` names
    that module, not the `Text.markup` property its last part would find (`Retriever._definitions_of`)."""
    names: set[str] = set()
    for path in paths:
        folders, _, name = path.rpartition("/")
        parts = [part for part in folders.split("/") if part and part != "src"]
        stem = name.split(".")[0]
        if stem and stem.lower() not in _GENERIC_STEMS:
            parts.append(stem)
        names.update(".".join(parts[start:]) for start in range(len(parts) - 1))
    return frozenset(names)


# A private definition among this many best candidates (`LRUCache.#has`, `Semaphore._acquire`) lifts
# its public twin in the same file (`LRUCache.has`) to its own score: a description of what code does
# describes the interface, and the private twin shares its words, so it often outranks it.
TWIN_DEPTH = 20


def public_twin(symbol: str | None) -> str | None:
    """The public name of a private definition: `LRUCache.#has` -> `LRUCache.has`, `_get` -> `get`;
    None for a public or dunder name (`__init__`) and for a chunk of several definitions."""
    if not symbol or "," in symbol:
        return None
    scope, dot, name = symbol.rpartition(".")
    public = name.lstrip("#_")
    if public == name or name.startswith("__") or not public:
        return None
    return f"{scope}{dot}{public}"


@dataclass(frozen=True, slots=True)
class Ranking:
    """Which ranking steps after the fusion a search applies (the benchmark turns them off one by one)."""

    roles: bool = True
    links: bool = True
    whole_definitions: bool = True
    names: bool = True
    paths: bool = True
    link_share: float = LINK_SHARE
    unrelated_factor: float = UNRELATED_FACTOR
    link_spread: float = LINK_SPREAD
    name_boost: float = NAME_BOOST
    path_boost: float = PATH_BOOST


DEFAULT_RANKING = Ranking()
