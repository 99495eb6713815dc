"""The research loop against the scripted fake provider on loopback (real SSE, real tool-call format)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from rag.research import ResearchOptions, run_research
from rag.research.tools import RepoTools
from tests.support.fake_provider import FakeProvider, FakeResponse
from tests.test_research_tools import ResearchIndex, shared_research_index

QUESTION = "Trace what happens from the CLI command to the HTTP request"
CONCLUSION = (
    "The command starts in main (weatherline/cli.py:19-25), which calls ForecastService.run "
    "(weatherline/service.py:16-21), which calls HttpClient.send (weatherline/client.py:23-34). The imports "
    "(weatherline/cli.py:1-2) were never shown."
)


@pytest.fixture
def research_index() -> ResearchIndex:
    return shared_research_index()


def tool(tool_name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": tool_name, "arguments": arguments}


async def collect(events: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event async for event in events]


def research(
    index: ResearchIndex,
    provider: FakeProvider,
    *,
    gemini: bool = False,
    cancel: asyncio.Event | None = None,
    **options: Any,
) -> AsyncIterator[dict[str, Any]]:
    env = provider.gemini_env() if gemini else provider.openai_env()
    return run_research(
        index.with_env(env),
        repo_id=index.repo_id,
        question=QUESTION,
        provider="google" if gemini else "openai",
        options=ResearchOptions(**options),
        cancel=cancel,
    )


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] == kind]


def research_frames(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [event for event in of_type(events, "research") if event["event"] == kind]


def answer_text(events: list[dict[str, Any]]) -> str:
    return "".join(event["text"] for event in of_type(events, "token"))


def tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [message for message in body["messages"] if message["role"] == "tool"]


async def test_plan_investigate_conclude_with_parallel_calls_fed_back(
    research_index: ResearchIndex, fake_provider: FakeProvider
) -> None:
    fake_provider.script(
        FakeResponse(text="1. Where does the CLI start? Look for main. 2. How is the request sent?"),
        FakeResponse(
            text="Looking for the entry point and the sender.",
            tool_calls=[
                tool("find_symbol", name="main"),
                tool("grep", pattern=r"def send", path_glob="*.py"),
            ],
        ),
        FakeResponse(
            tool_calls=[tool("read_file", path="weatherline/service.py", start_line=16, end_line=21)]
        ),
        FakeResponse(text="main -> ForecastService.run -> HttpClient.send; the evidence suffices."),
        FakeResponse(text=CONCLUSION),
    )
    events = await collect(research(research_index, fake_provider))

    phases = [event["phase"] for event in of_type(events, "research")]
    assert phases[0] == "plan" and phases[-1] == "conclude" and "investigate" in phases
    assert research_frames(events, "plan")[0]["summary"].startswith("1. Where does the CLI start?")
    calls = research_frames(events, "tool_call")
    assert [(c["iteration"], c["tool"]) for c in calls] == [(1, "find_symbol"), (1, "grep"), (2, "read_file")]
    assert all(json.dumps(c["args"]) != json.dumps(QUESTION) for c in calls)
    results = research_frames(events, "tool_result")
    assert "weatherline/client.py" in next(r for r in results if r["tool"] == "grep")["files"]
    assert answer_text(events) == CONCLUSION
    assert {s["path"] for s in of_type(events, "sources")[0]["sources"]} >= {
        "weatherline/cli.py",
        "weatherline/client.py",
        "weatherline/service.py",
    }
    citations = of_type(events, "citations")[0]["citations"]
    # The code graph's chain (the lead) showed HttpClient.send whole; no tool showed cli.py's imports.
    assert [c["in_context"] for c in citations] == [True, True, True, False]
    done = events[-1]
    assert done["type"] == "done"
    assert done["research"]["turns"] == 3 and done["research"]["tool_calls"] == 4  # with the trace
    assert done["research"]["stopped_because"] == "enough_evidence"
    assert (
        done["research"]["tokens"] == done["usage"]["prompt_tokens"] + done["usage"]["completion_tokens"] > 0
    )

    bodies = [request.body for request in fake_provider.requests]
    assert len(bodies) == 5
    assert "tools" not in bodies[0] and "tools" not in bodies[4]
    assert {t["function"]["name"] for t in bodies[1]["tools"]} >= {
        "search",
        "grep",
        "read_file",
        "find_symbol",
    }
    fed_back = tool_messages(bodies[2])
    assert [m["tool_call_id"] for m in fed_back] == ["call_0", "call_1"]
    assert "def main(" in fed_back[0]["content"]
    assert "weatherline/client.py:23:" in fed_back[1]["content"]
    assert bodies[2]["messages"][-3]["tool_calls"][1]["function"]["name"] == "grep"
    assert "weatherline/service.py:16-21" in json.dumps(bodies[3]["messages"])
    assert "   16|" in bodies[4]["messages"][-1]["content"]


async def test_tool_calls_of_one_turn_run_concurrently(
    research_index: ResearchIndex, fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = RepoTools.run
    # The turn's three reads must be in flight at once to pass the barrier; run one by one, it breaks.
    together = threading.Barrier(3, timeout=60)

    def slow_run(self: RepoTools, name: str, args: Any) -> Any:
        if name == "read_file":
            together.wait()
        return original(self, name, args)

    monkeypatch.setattr(RepoTools, "run", slow_run)
    reads = [
        tool("read_file", path=p)
        for p in ("weatherline/cli.py", "weatherline/service.py", "weatherline/client.py")
    ]
    fake_provider.script(FakeResponse(text="plan"), FakeResponse(tool_calls=reads), FakeResponse(text="done"))
    fake_provider.script(FakeResponse(text="answer"))
    events = await collect(research(research_index, fake_provider))
    assert not together.broken
    assert [r["phase"] for r in research_frames(events, "tool_result")] == ["plan", *["investigate"] * 3]


async def test_a_slow_code_graph_lead_is_left_out_within_its_share_of_the_time_budget(
    research_index: ResearchIndex, fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = RepoTools.run

    def slow_trace(self: RepoTools, name: str, args: Any) -> Any:
        if name == "trace":
            time.sleep(3.0)  # past its share of the budget (a quarter of 8 s)
        return original(self, name, args)

    monkeypatch.setattr(RepoTools, "run", slow_trace)
    fake_provider.script(FakeResponse(text="plan"), FakeResponse(text="enough"), FakeResponse(text="answer"))
    events = await collect(research(research_index, fake_provider, max_seconds=8.0))
    assert answer_text(events) == "answer"
    assert not [r for r in research_frames(events, "tool_result") if r["tool"] == "trace"]
    assert "Code graph chain" not in fake_provider.requests[0].body["messages"][-1]["content"]


async def test_reading_outside_the_repository_is_refused_and_research_goes_on(
    research_index: ResearchIndex, fake_provider: FakeProvider
) -> None:
    fake_provider.script(
        FakeResponse(text="plan"),
        FakeResponse(
            tool_calls=[tool("read_file", path="../../../etc/passwd"), tool("grep", pattern="HttpClient")]
        ),
        FakeResponse(text="enough"),
        FakeResponse(text="answer"),
    )
    events = await collect(research(research_index, fake_provider))
    refused = next(r for r in research_frames(events, "tool_result") if r["tool"] == "read_file")
    assert refused["summary"].startswith("refused") and refused["files"] == []
    fed_back = tool_messages(fake_provider.requests[2].body)
    assert fed_back[0]["content"].startswith("ERROR: refused")
    assert "root:" not in json.dumps([r.body for r in fake_provider.requests])
    assert events[-1]["research"]["stopped_because"] == "enough_evidence"


async def test_stops_when_a_turn_brings_no_new_evidence(
    research_index: ResearchIndex, fake_provider: FakeProvider
) -> None:
    same = [tool("grep", pattern="ZORBLAX_RETRY_CEILING")]
    fake_provider.script(
        FakeResponse(text="plan"),
        FakeResponse(tool_calls=same),
        FakeResponse(tool_calls=same),
        FakeResponse(text="answer"),
    )
    events = await collect(research(research_index, fake_provider))
    assert events[-1]["research"]["stopped_because"] == "no_new_evidence"
    assert events[-1]["research"]["turns"] == 2
    assert len(fake_provider.requests) == 4
    assert answer_text(events) == "answer"


async def test_turn_cap(research_index: ResearchIndex, fake_provider: FakeProvider) -> None:
    fake_provider.script(
        FakeResponse(text="plan"),
        FakeResponse(tool_calls=[tool("read_file", path="weatherline/cli.py")]),
        FakeResponse(tool_calls=[tool("read_file", path="weatherline/client.py")]),
        FakeResponse(text="answer"),
    )
    events = await collect(research(research_index, fake_provider, max_iterations=2))
    assert events[-1]["research"]["stopped_because"] == "max_iterations"
    assert events[-1]["research"]["turns"] == 2
    assert {e["max_iterations"] for e in of_type(events, "research")} == {2}
    assert "tools" not in fake_provider.requests[-1].body


async def test_token_budget(research_index: ResearchIndex, fake_provider: FakeProvider) -> None:
    fake_provider.script(
        FakeResponse(text="plan", usage=(3_000, 10)),
        FakeResponse(tool_calls=[tool("read_file", path="weatherline/cli.py")], usage=(3_000, 10)),
        FakeResponse(text="answer", usage=(1_000, 10)),
    )
    events = await collect(research(research_index, fake_provider, max_tokens=6_000))
    assert events[-1]["research"]["stopped_because"] == "token_budget"
    assert events[-1]["research"]["turns"] == 1
    assert events[-1]["research"]["tokens"] == 7_030
    assert answer_text(events) == "answer"


async def test_time_budget(research_index: ResearchIndex, fake_provider: FakeProvider) -> None:
    fake_provider.script(
        FakeResponse(text="plan"),
        # A turn that would outlast the test: only the time budget can end it.
        FakeResponse(tool_calls=[tool("read_file", path="weatherline/cli.py")], first_delay=600, text="slow"),
        FakeResponse(text="answer"),
    )
    events = await asyncio.wait_for(collect(research(research_index, fake_provider, max_seconds=1.0)), 120)
    assert events[-1]["research"]["stopped_because"] == "time_budget"
    assert answer_text(events) == "answer"


async def test_cancel_mid_turn_closes_the_provider_stream(
    research_index: ResearchIndex, fake_provider: FakeProvider
) -> None:
    # The second turn streams for 10 minutes unless the cancel cuts it.
    fake_provider.script(FakeResponse(text="plan"), FakeResponse(text="thinking " * 60, delay=10))
    cancel = asyncio.Event()
    frames: list[dict[str, Any]] = []

    async def consume() -> None:
        async for frame in research(research_index, fake_provider, cancel=cancel):
            frames.append(frame)

    task = asyncio.create_task(consume())
    assert await asyncio.to_thread(fake_provider.wait_for_requests, 2, 10)
    cancel.set()
    await asyncio.wait_for(task, 120)
    assert [f["type"] for f in frames[-2:]] == ["error", "done"]
    assert frames[-2]["code"] == "cancelled"
    assert frames[-1]["research"]["stopped_because"] == "cancelled"
    assert await asyncio.to_thread(fake_provider.wait_for_disconnect, 5)
    assert len(fake_provider.requests) == 2


async def test_closing_the_stream_mid_turn_closes_the_provider_stream(
    research_index: ResearchIndex, fake_provider: FakeProvider
) -> None:
    # The second turn streams for 10 minutes unless the cancel cuts it.
    fake_provider.script(FakeResponse(text="plan"), FakeResponse(text="thinking " * 60, delay=10))
    stream = research(research_index, fake_provider)
    assert (await anext(stream))["event"] == "plan"
    assert (await anext(stream))["tool"] == "trace"
    pending = asyncio.ensure_future(anext(stream))
    assert await asyncio.to_thread(fake_provider.wait_for_requests, 2, 10)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    await stream.aclose()
    assert await asyncio.to_thread(fake_provider.wait_for_disconnect, 5)


async def test_provider_error_mid_research_keeps_the_findings(
    research_index: ResearchIndex, fake_provider: FakeProvider
) -> None:
    fake_provider.script(
        FakeResponse(text="plan: find the sender"),
        FakeResponse(
            tool_calls=[tool("grep", pattern="ZORBLAX_RETRY_CEILING")], text="Found the retry limit."
        ),
        FakeResponse(status=500),
    )
    events = await collect(research(research_index, fake_provider))
    text = answer_text(events)
    assert text.startswith("**Research ended early")
    assert "Found the retry limit." in text and "weatherline/client.py:9-9" in text
    assert [e["type"] for e in events[-3:]] == ["citations", "error", "done"]
    assert events[-2]["code"] == "provider_error"
    assert events[-1]["research"]["stopped_because"] == "error"
    assert of_type(events, "sources")[0]["sources"][0]["path"] == "weatherline/client.py"


async def test_json_action_format_for_providers_without_tool_calling(
    research_index: ResearchIndex, fake_provider: FakeProvider
) -> None:
    actions = (
        'I will look.\n{"action": "tool", "tool": "grep", "args": {"pattern": "def send"}}\n'
        '{"action": "tool", "tool": "list_dir", "args": {"path": "weatherline"}}'
    )
    fake_provider.script(
        FakeResponse(text="plan"),
        FakeResponse(text=actions),
        FakeResponse(text='{"action": "finish", "summary": "send is in weatherline/client.py:23-34"}'),
        FakeResponse(text="answer"),
    )
    events = await collect(research(research_index, fake_provider, tool_mode="json"))
    assert [c["tool"] for c in research_frames(events, "tool_call")] == ["grep", "list_dir"]
    turn_two = fake_provider.requests[2].body
    assert "tools" not in fake_provider.requests[1].body
    assert '"action": "tool"' in turn_two["messages"][0]["content"]
    assert turn_two["messages"][-1]["content"].startswith("Tool results:")
    assert "weatherline/client.py:23:" in turn_two["messages"][-1]["content"]
    assert events[-1]["research"]["stopped_because"] == "enough_evidence"


async def test_gemini_native_tool_calls(research_index: ResearchIndex, fake_provider: FakeProvider) -> None:
    fake_provider.script(
        FakeResponse(text="plan"),
        FakeResponse(text=None, tool_calls=[tool("find_symbol", name="send")]),
        FakeResponse(text="enough"),
        FakeResponse(text="answer"),
    )
    events = await collect(research(research_index, fake_provider, gemini=True))
    assert research_frames(events, "tool_call")[0]["tool"] == "find_symbol"
    body = fake_provider.requests[2].body
    assert body["tools"][0]["functionDeclarations"]
    responses = [p for c in body["contents"] for p in c["parts"] if "functionResponse" in p]
    assert "HttpClient.send" in responses[0]["functionResponse"]["response"]["content"]
    assert answer_text(events) == "answer"


async def test_older_findings_are_summarised_not_dropped(
    research_index: ResearchIndex, fake_provider: FakeProvider
) -> None:
    reads = ["weatherline/cli.py", "weatherline/service.py", "weatherline/client.py"]
    fake_provider.script(
        FakeResponse(text="plan"),
        *[
            FakeResponse(text=f"Read {p}. " + "detail " * 150, tool_calls=[tool("read_file", path=p)])
            for p in reads
        ],
        FakeResponse(text="enough"),
        FakeResponse(text="answer"),
    )
    events = await collect(
        research(research_index, fake_provider, context_tokens=1_600, tool_output_tokens=300)
    )
    assert events[-1]["research"]["turns"] == 4
    last_turn = json.dumps(fake_provider.requests[4].body["messages"][1]["content"])
    assert "Turn 1 (summarised)" in last_turn and "weatherline/cli.py:1-" in last_turn
    assert "Turn 3: Read weatherline/client.py." in last_turn


async def test_a_broken_tool_ends_research_with_the_findings_so_far(
    research_index: ResearchIndex, fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = RepoTools.run

    def failing_run(self: RepoTools, name: str, args: Any) -> Any:
        if name == "glob":
            raise OSError("disk I/O error")
        return original(self, name, args)

    monkeypatch.setattr(RepoTools, "run", failing_run)
    fake_provider.script(
        FakeResponse(text="plan"),
        FakeResponse(text="Found the limit.", tool_calls=[tool("grep", pattern="ZORBLAX_RETRY_CEILING")]),
        FakeResponse(tool_calls=[tool("glob", pattern="*.py")]),
    )
    events = await collect(research(research_index, fake_provider))
    text = answer_text(events)
    assert text.startswith("**Research ended early (the glob tool failed: disk I/O error)")
    assert "Found the limit." in text and "weatherline/client.py:9-9" in text
    assert events[-2] == {
        "type": "error",
        "code": "tool_error",
        "message": "the glob tool failed: disk I/O error",
    }
    assert events[-1]["research"]["stopped_because"] == "error"
    assert len(fake_provider.requests) == 3
