"""No regular expression of RepoLens backtracks its way through hostile text.

Patterns run on what clients, repositories and models write: a question, a file's text, an answer,
a diagram. One that rescans the rest of its input from every start position is quadratic, and a
1 MB question or a header of blank lines then pins a core for hours (`named_paths` took 29 s on a
32,000-letter question). Every pattern of `rag`, `ingest` and `api` is run, the way its module
uses it, on 100,000 characters of each kind of run that trips such patterns: module-level ones (also
inside module-level tables), literal ones written inline in a call (`re.sub(r"...", ...)`), and
the ones built at run time from an escaped name (`BUILT`). A linear pattern needs milliseconds; the
bound is 100 times that, and a quadratic one needs seconds.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import api
import ingest
import rag
from rag.research import tools as research_tools
from rag.retrieval import _DEFINITION

SIZE = 100_000
SECONDS = 1.0
RUNS = [
    "a", "1", "_", " ", "\t", "\n", " \n", "a\n", "a ", "a.", "a/", "a-", "a:", "a@", "x.", "~/", "-- ",
    "[", "(", "{", "<", "=a", "\\", "'", '"', "`", "#", "*", "%", "[a", "(a", "aA", "a=1&",
]  # fmt: skip
# How a module applies a pattern it names: `match`/`fullmatch` look at one position only.
_SCANS = ("search", "finditer", "findall", "sub", "subn", "split")


def _modules() -> Iterator[ModuleType]:
    for package in (rag, ingest, api):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            yield importlib.import_module(info.name)


def _patterns() -> Iterator[tuple[str, re.Pattern[str], str]]:
    seen: set[int] = set()
    for module in _modules():
        held = {(p.pattern, p.flags) for value in vars(module).values() for _, p in _held("", value)}
        source = Path(module.__file__).read_text() if module.__file__ else ""
        for name, value in vars(module).items():
            for label, pattern in _held(name, value):
                if id(pattern) not in seen and isinstance(pattern.pattern, str):
                    seen.add(id(pattern))
                    scans = label != name or any(f"{name}.{method}(" in source for method in _SCANS)
                    yield f"{module.__name__}.{label}", pattern, "search" if scans else "match"
        yield from (
            case for case in _inline(module.__name__, source) if (case[1].pattern, case[1].flags) not in held
        )


def _held(name: str, value: object, depth: int = 0) -> Iterator[tuple[str, re.Pattern[str]]]:
    """A module-level pattern, or the patterns inside a module-level table (tuple, list, dict)."""
    if isinstance(value, re.Pattern):
        yield name, value
    elif depth < 3 and isinstance(value, (tuple, list, dict)):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            yield from _held(f"{name}[{key!r}]", item, depth + 1)


# Where each `re` function takes its flags positionally (`search`, `findall`, ...: third).
_FLAGS_AT = {"compile": 1, "split": 3, "sub": 4, "subn": 4}


def _inline(module: str, source: str) -> Iterator[tuple[str, re.Pattern[str], str]]:
    """Literal patterns written in a call, `re.search(r"...", text, re.M)`, compiled as the call does."""
    for node in ast.walk(ast.parse(source)):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "re"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            continue
        method = node.func.attr
        position = _FLAGS_AT.get(method, 2)
        passed = [*node.args[position : position + 1], *(k.value for k in node.keywords if k.arg == "flags")]
        flags = _flags(passed)
        how = "match" if method in ("match", "fullmatch") else "search"
        yield f"{module}:{node.lineno}", re.compile(node.args[0].value, flags), how


def _flags(nodes: list[ast.expr]) -> re.RegexFlag:
    """`re.M`, `re.I | re.S`: the flags a call passes (anything else counts as none)."""
    flags = re.RegexFlag(0)
    for node in nodes:
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            flags |= _flags([node.left, node.right])
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "re":
            flag = getattr(re, node.attr, None)
            flags |= flag if isinstance(flag, re.RegexFlag) else 0
    return flags


# Patterns built at run time around an escaped identifier, with a typical one.
BUILT: list[tuple[str, re.Pattern[str], str]] = [
    ("rag.research.tools._definition_regex", research_tools._definition_regex("handler"), "search"),
    ("rag.retrieval._DEFINITION", re.compile(_DEFINITION.format(name="handler"), re.MULTILINE), "search"),
    ("rag.research.offline.callers", re.compile(rf"\b{re.escape('handler')}\s*\("), "search"),
]


PATTERNS = [*_patterns(), *BUILT]


def test_the_sweep_sees_the_patterns_it_guards() -> None:
    names = {name for name, _, _ in PATTERNS}
    assert {"rag.retrieval._PATH_LIKE", "rag.citations._CITATION", "ingest.languages._CPP_IN_HEADER"} <= names
    assert {"rag.redact._RULES[0][0]", "rag.wiki.codefacts._BRACE_DEFS['go'][0][0]"} <= names
    assert any(name.startswith("rag.wiki.codefacts:") for name in names)  # inline literals
    assert len(PATTERNS) > 100


@pytest.mark.parametrize(("name", "pattern", "how"), PATTERNS, ids=[name for name, _, _ in PATTERNS])
def test_pattern_is_linear_on_hostile_runs(name: str, pattern: re.Pattern[str], how: str) -> None:
    apply = getattr(pattern, how)
    for run in RUNS:
        text = (run * (SIZE // len(run) + 1))[:SIZE]
        started = time.perf_counter()
        apply(text)
        seconds = time.perf_counter() - started
        assert seconds < SECONDS, f"{name}.{how} took {seconds:.1f}s on {SIZE:,} characters of {run!r}"
