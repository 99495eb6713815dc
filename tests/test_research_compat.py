"""deepwiki-compatible deep research: iteration from the history, exact headings, the original question."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rag.research import DEEP_RESEARCH_TAG, compat_iteration, is_deep_research
from rag.research.compat import compat_state
from tests.support.fake_provider import FakeProvider, FakeResponse
from tests.test_research_tools import ResearchIndex, shared_research_index

QUESTION = "How does the CLI reach the HTTP client?"
CONTINUE = f"{DEEP_RESEARCH_TAG} Continue the research"


@pytest.fixture
def research_index() -> ResearchIndex:
    return shared_research_index()


def history(assistant_turns: int) -> list[dict[str, str]]:
    """A deepwiki client's messages after `assistant_turns` iterations."""
    messages = [{"role": "user", "content": f"{DEEP_RESEARCH_TAG} {QUESTION}"}]
    for number in range(1, assistant_turns + 1):
        messages.append(
            {"role": "assistant", "content": f"Iteration {number} found weatherline/cli.py:19-25."}
        )
        messages.append({"role": "user", "content": CONTINUE})
    return messages


async def iterate(
    index: ResearchIndex, messages: list[dict[str, str]], provider: str, **env: str
) -> list[dict[str, Any]]:
    services = index.with_env(env) if env else index
    stream = compat_iteration(services, repo_id=index.repo_id, messages=messages, provider=provider)
    return [event async for event in stream]


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["text"] for e in events if e["type"] == "token")


@pytest.mark.parametrize(
    ("assistants", "iteration", "heading"),
    [
        (0, 1, "## Research Plan"),
        (1, 2, "## Research Update 2"),
        (3, 4, "## Research Update 4"),
        (4, 5, "## Final Conclusion"),
        (6, 7, "## Final Conclusion"),
    ],
)
def test_iteration_is_counted_from_the_history(assistants: int, iteration: int, heading: str) -> None:
    state = compat_state(history(assistants))
    assert (state.iteration, state.heading) == (iteration, heading)
    assert state.question == QUESTION
    assert len(state.previous) == assistants


def test_the_tag_and_continue_messages_are_understood() -> None:
    assert is_deep_research(history(0)) and is_deep_research(history(2))
    assert not is_deep_research([{"role": "user", "content": QUESTION}])
    earlier_chat = [
        {"role": "user", "content": "What is this repo?"},
        {"role": "assistant", "content": "A weather tool."},
        *history(1),
    ]
    assert compat_state(earlier_chat).question == QUESTION
    assert compat_state([{"role": "user", "content": CONTINUE}]).question == "Continue the research"


async def test_first_iteration_is_a_plan_ending_with_next_steps(
    research_index: ResearchIndex, fake_provider: FakeProvider
) -> None:
    fake_provider.script(
        FakeResponse(text="Sub-questions: where is main?"),
        FakeResponse(tool_calls=[{"name": "find_symbol", "arguments": {"name": "main"}}]),
        FakeResponse(
            text="## Research Plan\n\nmain is at weatherline/cli.py:19-25.\n\n## Next Steps\n\n- follow run"
        ),
    )
    events = await iterate(research_index, history(0), "openai", **fake_provider.openai_env())
    text = text_of(events)
    assert text.startswith("## Research Plan\n\nmain is at")
    assert text.count("## Research Plan") == 1
    last_heading = [line for line in text.splitlines() if line.startswith("## ")][-1]
    assert last_heading == "## Next Steps"
    assert "## Final Conclusion" not in text
    assert {e["type"] for e in events} == {"token", "done"}
    assert "tools" in fake_provider.requests[1].body


async def test_next_steps_are_added_when_the_model_forgets_them(
    research_index: ResearchIndex, fake_provider: FakeProvider
) -> None:
    fake_provider.script(FakeResponse(text="plan"), FakeResponse(text="enough"), FakeResponse(text="A plan."))
    text = text_of(await iterate(research_index, history(0), "openai", **fake_provider.openai_env()))
    assert text.startswith("## Research Plan\n\nA plan.")
    assert "\n## Next Steps\n" in text and QUESTION in text.split("## Next Steps", 1)[1]


async def test_update_iterations_research_the_original_question(
    research_index: ResearchIndex, fake_provider: FakeProvider
) -> None:
    fake_provider.script(
        FakeResponse(tool_calls=[{"name": "grep", "arguments": {"pattern": "def run"}}]),
        FakeResponse(text="enough"),
        FakeResponse(text="run calls send at weatherline/service.py:17."),
    )
    events = await iterate(research_index, history(2), "openai", **fake_provider.openai_env())
    assert text_of(events) == "## Research Update 3\n\nrun calls send at weatherline/service.py:17."
    first = json.dumps(fake_provider.requests[0].body["messages"])
    assert f"Question: {QUESTION}" in first
    assert "Continue the research" not in first
    assert "Iteration 2 found weatherline/cli.py:19-25." in first
    assert len(fake_provider.requests) == 3


async def test_final_iteration_concludes(research_index: ResearchIndex, fake_provider: FakeProvider) -> None:
    fake_provider.script(
        FakeResponse(text="enough"),
        FakeResponse(text="## Final Conclusion\nmain -> run -> send (weatherline/client.py:23-34)."),
    )
    text = text_of(await iterate(research_index, history(4), "openai", **fake_provider.openai_env()))
    assert text == "## Final Conclusion\n\nmain -> run -> send (weatherline/client.py:23-34)."
    assert "final iteration" in fake_provider.requests[-1].body["messages"][-1]["content"]


async def test_a_provider_error_is_reported_after_the_findings(
    research_index: ResearchIndex, fake_provider: FakeProvider
) -> None:
    fake_provider.script(FakeResponse(status=429))
    events = await iterate(research_index, history(1), "openai", **fake_provider.openai_env())
    assert text_of(events).startswith("## Research Update 2\n\n**Research ended early")
    assert [e["type"] for e in events[-2:]] == ["error", "done"]


async def test_offline_iterations_keep_the_headings(research_index: ResearchIndex) -> None:
    plan = text_of(await iterate(research_index, history(0), "offline"))
    assert plan.startswith("## Research Plan\n\n")
    assert [line for line in plan.splitlines() if line.startswith("## ")][-1] == "## Next Steps"
    update = text_of(await iterate(research_index, history(1), "offline"))
    assert update.startswith("## Research Update 2\n\n")
    final = text_of(await iterate(research_index, history(4), "offline"))
    assert final.startswith("## Final Conclusion\n\n")
    assert "`HttpClient.send` at weatherline/client.py" in final


async def test_empty_messages_are_refused(research_index: ResearchIndex) -> None:
    events = await iterate(research_index, [], "offline")
    assert events[0]["type"] == "error" and events[0]["code"] == "bad_request"
    assert "No messages provided" in events[0]["message"]
