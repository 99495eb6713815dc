"""No regular expression of RepoLens backtracks its way through hostile text.

Patterns run on what clients, repositories and models write: a question, a file's text, an answer,
a diagram. One that rescans the rest of its input from every start position is quadratic, and a
1 MB question or a header of blank lines then pins a core for hours (`named_paths` took 29 s on a
32,000-letter question). Every module-level pattern of `rag`, `ingest` and `api` is run, the way
its module uses it, on 20,000 characters of each kind of run that trips such patterns. A linear
pattern needs milliseconds; the bound is 100 times that, and a quadratic one needs seconds.
"""

from __future__ import annotations

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

SIZE = 20_000
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
        source = Path(module.__file__).read_text() if module.__file__ else ""
        for name, value in vars(module).items():
            if isinstance(value, re.Pattern) and id(value) not in seen and isinstance(value.pattern, str):
                seen.add(id(value))
                scans = any(f"{name}.{method}(" in source for method in _SCANS)
                yield f"{module.__name__}.{name}", value, "search" if scans else "match"


PATTERNS = list(_patterns())


def test_the_sweep_sees_the_patterns_it_guards() -> None:
    names = {name for name, _, _ in PATTERNS}
    assert {"rag.retrieval._PATH_LIKE", "rag.citations._CITATION", "ingest.languages._CPP_IN_HEADER"} <= names
    assert len(PATTERNS) > 50


@pytest.mark.parametrize(("name", "pattern", "how"), PATTERNS, ids=[name for name, _, _ in PATTERNS])
def test_pattern_is_linear_on_hostile_runs(name: str, pattern: re.Pattern[str], how: str) -> None:
    apply = getattr(pattern, how)
    for run in RUNS:
        text = (run * (SIZE // len(run) + 1))[:SIZE]
        started = time.perf_counter()
        apply(text)
        seconds = time.perf_counter() - started
        assert seconds < SECONDS, f"{name}.{how} took {seconds:.1f}s on 20,000 characters of {run!r}"
