"""Offline research (no LLM configured): following the fixture's call chain across three files."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from rag.providers.offline import labels
from rag.research import ResearchOptions, run_research
from rag.store import RepoIndex
from tests.support.repos import CALL_CHAIN
from tests.test_research_tools import ResearchIndex, shared_research_index

QUESTION = "Trace what happens from the CLI command to the HTTP request"


@pytest.fixture
def research_index() -> ResearchIndex:
    return shared_research_index()


async def offline_events(index: ResearchIndex, **kwargs: Any) -> list[dict[str, Any]]:
    stream = run_research(index, repo_id=kwargs.pop("repo_id", index.repo_id), question=QUESTION, **kwargs)
    return [event async for event in stream]


async def test_offline_research_follows_the_call_chain_across_three_files(
    research_index: ResearchIndex,
) -> None:
    events = await offline_events(research_index)
    answer = "".join(e["text"] for e in events if e["type"] == "token")
    assert answer.startswith(f"**{labels('en')['title']}**")
    reached = next(line for line in answer.splitlines() if "reached from" in line)
    steps = re.findall(r"`([\w.]+)\(\)` \(`([\w/.]+):(\d+)-(\d+)`\)", reached)
    assert [(path, name) for name, path, _, _ in steps[:3]] == list(CALL_CHAIN), reached
    assert len({path for path, _ in CALL_CHAIN}) == 3

    research = [e for e in events if e["type"] == "research"]
    assert research[0]["phase"] == "plan" and research[-1]["phase"] == "conclude"
    assert any(e["phase"] == "investigate" and e["event"] == "finding" for e in research)
    sources = {s["path"] for s in next(e for e in events if e["type"] == "sources")["sources"]}
    assert {path for path, _ in CALL_CHAIN} <= sources
    citations = next(e for e in events if e["type"] == "citations")["citations"]
    cited = {(c["path"], c["start_line"]) for c in citations}
    for _, path, start, _ in steps:
        assert (path, int(start)) in cited
    assert all(c["in_context"] for c in citations)
    done = events[-1]
    assert done["type"] == "done" and done["research"]["tokens"] == 0
    assert done["research"]["turns"] >= 1 and done["research"]["tool_calls"] > 0
    assert done["research"]["stopped_because"] == "chain_found"


async def test_without_a_code_graph_offline_research_walks_identifiers(
    research_index: ResearchIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index built before the code graph existed still gets offline research (the older walk)."""
    monkeypatch.setattr(RepoIndex, "has_graph", property(lambda self: False))
    events = await offline_events(research_index)
    answer = "".join(e["text"] for e in events if e["type"] == "token")
    assert answer.startswith("## Offline research (no LLM configured)")
    path_section = answer.split("### Path through the code", 1)[1].split("###", 1)[0]
    steps = re.findall(r"^\d+\. `([\w.]+)` at ([\w/.]+):(\d+)-(\d+)", path_section, re.MULTILINE)
    assert [(path, name) for name, path, _, _ in steps[:3]] == list(CALL_CHAIN), path_section
    assert events[-1]["research"]["turns"] >= 2


async def test_offline_answer_cites_lines_that_exist(research_index: ResearchIndex) -> None:
    events = await offline_events(research_index, provider="offline")
    index = research_index.store.open(research_index.repo_id)
    for citation in next(e for e in events if e["type"] == "citations")["citations"]:
        text = index.file_text(citation["path"])
        assert text is not None and citation["end_line"] <= len(text.splitlines())


async def test_offline_research_is_deterministic(research_index: ResearchIndex) -> None:
    def answer(events: list[dict[str, Any]]) -> str:
        return "".join(e["text"] for e in events if e["type"] == "token")

    first, second = await offline_events(research_index), await offline_events(research_index)
    assert answer(first) == answer(second)


async def test_offline_research_respects_the_hop_budget(
    research_index: ResearchIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = await offline_events(research_index, options=ResearchOptions(max_iterations=1))
    assert events[-1]["research"]["turns"] == 1  # the graph walk is one turn
    monkeypatch.setattr(RepoIndex, "has_graph", property(lambda self: False))
    events = await offline_events(research_index, options=ResearchOptions(max_iterations=1))
    assert events[-1]["research"]["turns"] == 1
    assert events[-1]["research"]["stopped_because"] == "max_iterations"


async def test_offline_research_stops_on_cancel(research_index: ResearchIndex) -> None:
    cancel = asyncio.Event()
    cancel.set()
    events = await offline_events(research_index, cancel=cancel)
    assert [e["type"] for e in events[-2:]] == ["error", "done"]
    assert events[-2]["code"] == "cancelled"
    assert not any(e["type"] == "token" for e in events)


async def test_unknown_repository_is_a_clear_error(research_index: ResearchIndex) -> None:
    events = await offline_events(research_index, repo_id="github.com/nobody/nothing")
    assert events[0]["type"] == "error" and events[0]["code"] == "not_found"
    assert "not indexed" in events[0]["message"]
    assert events[-1]["type"] == "done" and events[-1]["research"]["stopped_because"] == "error"
