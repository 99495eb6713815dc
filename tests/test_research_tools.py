"""The research tools over a really ingested fixture repository: bounded, read-only, inside the index.

`shared_research_index()` (wrapped by each research test module's `research_index` fixture) ingests
the weatherline fixture with the real embedder into its own data dir once per test session; research
only reads it.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from rag.embedders import get_embedder
from rag.research.options import ResearchOptions
from rag.research.tools import RepoTools, normalize_path, tool_schemas
from rag.settings import Settings
from rag.store import Store
from tests.support.repos import RARE_IDENTIFIER, make_fixture_repo


@dataclass
class ResearchIndex:
    """What research needs (an `api.services.Services` look-alike) plus the indexed repo id."""

    store: Store
    embedder: object
    settings: Settings
    repo_id: str
    home: Path

    def with_env(self, env: dict[str, str]) -> ResearchIndex:
        settings = Settings.from_env({"REPOLENS_HOME": str(self.home), **env}, dotenv=self.home / "no.env")
        return ResearchIndex(self.store, self.embedder, settings, self.repo_id, self.home)


@functools.cache
def shared_research_index() -> ResearchIndex:
    """Built once per test session; the other research test modules wrap it in their own fixture."""
    from ingest import ingest

    base = Path(tempfile.mkdtemp(prefix="repolens-research-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    home = base / "home"
    home.mkdir()
    settings = Settings.from_env({"REPOLENS_HOME": str(home)}, dotenv=home / "no.env")
    repo = make_fixture_repo(base / "weatherline")
    store = Store(home)
    embedder = get_embedder(settings)
    report = ingest(str(repo), store=store, embedder=embedder)
    return ResearchIndex(store, embedder, settings, report.repo_id, home)


@pytest.fixture
def research_index() -> ResearchIndex:
    return shared_research_index()


@pytest.fixture
def tools(research_index: ResearchIndex) -> RepoTools:
    from rag.research.loop import open_tools

    return open_tools(research_index, research_index.repo_id, ResearchOptions(tool_output_tokens=400))


@pytest.mark.parametrize(
    "raw",
    ["../etc/passwd", "/etc/passwd", "weatherline/../../secret.py", "~/.ssh/id_rsa", "C:\\Windows\\win.ini"],
)
def test_paths_outside_the_repository_are_refused(tools: RepoTools, raw: str) -> None:
    result = tools.run("read_file", {"path": raw})
    assert result.is_error
    assert result.output.startswith("ERROR: refused")
    assert result.evidence == []


def test_a_file_not_in_the_index_is_refused_with_a_hint(tools: RepoTools) -> None:
    excluded = tools.run("read_file", {"path": "node_modules/leftpad/index.js"})
    assert excluded.is_error and "not a file of the indexed repository" in excluded.output
    misspelt = tools.run("read_file", {"path": "client.py"})
    assert misspelt.is_error and "weatherline/client.py" in misspelt.output


def test_normalize_path_keeps_relative_paths() -> None:
    assert normalize_path("./weatherline//cli.py") == "weatherline/cli.py"
    assert normalize_path("weatherline\\cli.py") == "weatherline/cli.py"


def test_read_file_returns_numbered_lines_and_evidence(tools: RepoTools) -> None:
    result = tools.run("read_file", {"path": "weatherline/client.py", "start_line": 9, "end_line": 10})
    assert not result.is_error
    assert f"    9| {RARE_IDENTIFIER} = 7" in result.output
    assert [item.ref for item in result.evidence] == ["weatherline/client.py:9-10"]


def test_read_file_is_capped_and_says_where_to_continue(tools: RepoTools) -> None:
    tiny = RepoTools(tools.index, tools.retriever, output_tokens=60)
    result = tiny.run("read_file", {"path": "weatherline/client.py"})
    assert "read from line" in result.output
    shown_end = result.evidence[0].end_line
    assert 1 < shown_end < len(tiny.lines("weatherline/client.py"))
    assert f"read from line {shown_end + 1}" in result.output


def test_grep_finds_lines_with_a_path_glob_and_caps_matches(tools: RepoTools) -> None:
    result = tools.run("grep", {"pattern": RARE_IDENTIFIER})
    assert {item.path for item in result.evidence} == {"weatherline/client.py"}
    assert f"weatherline/client.py:9: {RARE_IDENTIFIER} = 7" in result.output
    only_js = tools.run("grep", {"pattern": "function", "path_glob": "web/*.js"})
    assert only_js.files and all(path.startswith("web/") for path in only_js.files)
    capped = tools.run("grep", {"pattern": "import", "max_matches": 2})
    assert len(capped.evidence) == 2 and "stopped at 2 matching lines" in capped.output


def test_grep_rejects_bad_and_catastrophic_patterns_quickly(tools: RepoTools) -> None:
    invalid = tools.run("grep", {"pattern": "(unclosed"})
    assert invalid.is_error and "invalid regular expression" in invalid.output
    slow = RepoTools(tools.index, tools.retriever, grep_seconds=0.3)
    slow._texts = {path: "a" * 40 + "!" for path in slow.paths}
    # Without the regex timeout this pattern backtracks for minutes on each file.
    result = slow.run("grep", {"pattern": "(a|aa)+$"})
    assert result.is_error and "too expensive" in result.output


def test_glob_and_list_dir_show_only_indexed_files(tools: RepoTools) -> None:
    python = tools.run("glob", {"pattern": "*.py"})
    assert "weatherline/cli.py" in python.output and "build/output.py" not in python.output
    root = tools.run("list_dir", {})
    assert "weatherline/  (" in root.output and "README.md" in root.output
    assert "node_modules" not in root.output
    missing = tools.run("list_dir", {"path": "nope"})
    assert missing.is_error


def test_find_symbol_gives_definitions_and_references(tools: RepoTools) -> None:
    result = tools.run("find_symbol", {"name": "send"})
    definitions = [item for item in result.evidence if item.symbol]
    assert [item.symbol for item in definitions] == ["HttpClient.send"]
    references = [item for item in result.evidence if not item.symbol]
    assert any(item.path == "weatherline/service.py" for item in references)
    assert "self.client.send(" in result.output


def test_search_returns_numbered_spans(tools: RepoTools) -> None:
    result = tools.run("search", {"query": "retry with exponential backoff", "k": 3})
    assert "weatherline/client.py" in result.files
    assert "| " in result.output


def test_bad_arguments_and_unknown_tools_become_errors_for_the_model(tools: RepoTools) -> None:
    assert "unknown tool" in tools.run("rm", {"path": "x"}).output
    wrong = tools.run("read_file", {"path": "weatherline/cli.py", "start_line": "first"})
    assert wrong.is_error and "start_line" in wrong.output
    extra = tools.run("grep", {"pattern": "x", "shell": "rm -rf /"})
    assert extra.is_error and "shell" in extra.output


def test_output_is_bounded_with_a_note(tools: RepoTools) -> None:
    tiny = RepoTools(tools.index, tools.retriever, output_tokens=50)
    result = tiny.run("grep", {"pattern": ".", "max_matches": 200})
    assert "[output truncated to 50 tokens" in result.output


def test_schemas_describe_every_tool() -> None:
    names = [schema["name"] for schema in tool_schemas()]
    assert names == [
        "search", "grep", "glob", "list_dir", "read_file", "find_symbol",
        "definition", "callers", "callees", "references", "subclasses", "trace",
    ]  # fmt: skip
    read = next(schema for schema in tool_schemas() if schema["name"] == "read_file")
    assert read["parameters"]["required"] == ["path"]
