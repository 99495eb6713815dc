"""Which code the graph walk keeps off a chain: tests and examples as `rag.roles.file_role` (the role
the index records) tells them, and the Rust tests inside a source file. One classifier for the walk's
edges (`ChainFinder.wanted`), the chain's steps (`implementation`) and the hits it cites (`code_hits`)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from rag.graph_walk import ChainFinder, code_hits
from rag.roles import file_role

RUST_SOURCE = """pub fn route() -> u32 {
    7
}

#[cfg(test)]
mod tests {
    #[test]
    fn routes() {
        assert_eq!(super::route(), 7);
    }
}
"""


@dataclass
class Hit:
    path: str
    language: str = "python"
    start_line: int = 1


class Index:
    """The one graph query `wanted` uses for a Rust file: its text."""

    def file_text(self, path: str) -> str | None:
        return RUST_SOURCE if path == "src/routing.rs" else None


# Paths the old path regex classified wrongly, both ways: names that merely contain `test_`, and test
# files and folders it did not know.
SOURCE = ["src/latest_version.py", "pkg/contest_rules.py", "lib/attest_signature.go"]
NOT_SOURCE = ["web/app.spec.js", "pkg/testdata/fixture.go", "conftest.py", "e2e/login.ts", "demos/run.py"]


@pytest.mark.parametrize("path", SOURCE + NOT_SOURCE)
def test_the_walk_and_the_index_agree_on_what_is_a_test(path: str) -> None:
    finder = ChainFinder(Index(), "How is a request routed?")
    assert finder.wanted(path, 1) == (file_role(path) not in ("test", "example"))
    assert finder.wanted(path, 1) == (path in SOURCE)


def test_code_hits_keep_source_and_drop_tests_examples_and_docs() -> None:
    hits = [Hit(path) for path in SOURCE + NOT_SOURCE] + [Hit("docs/routing.md", language="markdown")]
    assert [hit.path for hit in code_hits(hits)] == SOURCE


def test_rust_tests_inside_a_source_file_are_not_wanted_unless_asked_about() -> None:
    finder = ChainFinder(Index(), "How is a request routed?")
    assert finder.wanted("src/routing.rs", 1)
    assert not finder.wanted("src/routing.rs", 8)
    asking = ChainFinder(Index(), "Which test checks routing?")
    assert asking.wanted("src/routing.rs", 8) and asking.wanted("web/app.spec.js", 1)
