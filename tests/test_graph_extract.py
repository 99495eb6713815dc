"""The code-graph walk over one parsed file (`ingest.graph.extract`), beyond what the ingest tests see."""

from __future__ import annotations

import pytest

from ingest import graph as code_graph
from ingest.chunking import Chunker
from ingest.reader import SourceFile

CHAIN = " + ".join(["a"] * 4000)


@pytest.mark.parametrize(
    ("language", "path", "text"),
    [
        ("python", "deep.py", f"def total(a):\n    return {CHAIN} + finish(a)\n"),
        ("javascript", "deep.js", f"function total(a) {{\n  return {CHAIN} + finish(a);\n}}\n"),
    ],
)
def test_a_long_chain_of_operators_is_walked_to_its_call(language: str, path: str, text: str) -> None:
    """4,000 nested `+` nodes: deeper than Python's recursion limit, which a walk calling itself per
    node hit (a RecursionError that failed the whole ingest); the call at the bottom is found."""
    file = SourceFile(path, language, text, "0" * 64, len(text))
    tree = Chunker(256).parse(file)
    assert tree is not None
    graph = code_graph.extract(language, tree)
    assert graph is not None
    assert [(ref.scope, ref.name, ref.kind) for ref in graph.references] == [("total", "finish", "call")]
    assert [definition.qualname for definition in graph.definitions] == ["total"]
