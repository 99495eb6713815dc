"""AnswerService end to end: a real index of the fixture repo, real retrieval, the fake provider."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from rag.answer import AnswerCancelled, AnswerRequest, AnswerService, until_cancelled
from rag.embedders import Embedder, get_embedder
from rag.providers.offline import labels
from rag.store import Store
from rag.tokens import count_tokens
from tests.support.chat import settings_for
from tests.support.fake_provider import FAKE_API_KEY, FakeProvider, FakeResponse
from tests.support.repos import make_fixture_repo

QUESTION = "How does the CLI reach the HTTP client?"


@dataclass
class Indexed:
    store: Store
    embedder: Embedder
    repo_id: str
    home: Path

    def service(self, **env: str) -> AnswerService:
        return AnswerService(self.store, self.embedder, settings_for(self.home, **env))


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Indexed]:
    """The fixture repo indexed once for the module (embedding takes a second or two)."""
    from ingest import ingest

    root = tmp_path_factory.mktemp("answer")
    settings = settings_for(root / "home")
    store, embedder = Store(settings.home), get_embedder(settings)
    report = ingest(str(make_fixture_repo(root / "weatherline")), store=store, embedder=embedder)
    yield Indexed(store, embedder, report.repo_id, settings.home)


def openai_env(fake: FakeProvider, **extra: str) -> dict[str, str]:
    return {**fake.openai_env(), "REPOLENS_PROVIDER": "openai", **extra}


async def run(
    service: AnswerService, request: AnswerRequest, cancel: asyncio.Event | None = None
) -> list[dict]:
    return [event async for event in service.answer(request, cancel)]


def text(events: list[dict]) -> str:
    return "".join(event["text"] for event in events if event["type"] == "token")


def one(events: list[dict], kind: str) -> dict:
    matching = [event for event in events if event["type"] == kind]
    assert len(matching) == 1, events
    return matching[0]


async def test_offline_answer_is_grounded_labelled_and_deterministic(indexed: Indexed) -> None:
    service = indexed.service()
    events = await run(service, AnswerRequest(indexed.repo_id, QUESTION))
    answer = text(events)

    assert [event["type"] for event in events][:3] == ["status", "sources", "status"]
    assert sum(event["type"] == "token" for event in events) > 5, "streamed in pieces"
    assert answer.startswith(f"**{labels('en')['title']}**")
    # The code graph's chain, each step cited: the entry point first, down to the HTTP client.
    assert re.search(
        r"reached from `main\(\)` \(`weatherline/cli\.py:19-25`\) → `ForecastService\.run\(\)` "
        r"\(`weatherline/service\.py:16-21`\) → `HttpClient\.send\(\)` \(`weatherline/client\.py:23-34`\)",
        answer,
    )
    assert 'payload = self.client.send("GET"' in answer, "a key excerpt"
    citations = one(events, "citations")["citations"]
    assert citations and all(citation["in_context"] for citation in citations)
    sources = one(events, "sources")["sources"]
    assert sources[0]["url"].startswith(f"/api/repos/{indexed.repo_id}/file?path=")
    done = events[-1]
    assert done["type"] == "done" and done["provider"] == "offline"
    assert text(await run(service, AnswerRequest(indexed.repo_id, QUESTION))) == answer


async def test_llm_answer_streams_with_sources_and_checked_citations(
    indexed: Indexed, fake_provider: FakeProvider
) -> None:
    scripted = "`main` builds a ForecastService (weatherline/cli.py:19-25), see also ghost/nowhere.py:1-5."
    fake_provider.script(FakeResponse(text=scripted, usage=(1234, 21)))
    service = indexed.service(**openai_env(fake_provider))
    events = await run(service, AnswerRequest(indexed.repo_id, QUESTION, language="fr"))

    kinds = [event["type"] for event in events]
    assert kinds[:3] == ["status", "sources", "status"] and kinds[-2:] == ["citations", "done"]
    assert set(kinds[3:-2]) == {"token"}
    assert text(events) == scripted
    sent = fake_provider.requests[-1].body
    assert sent["model"] == "gpt-4o-mini" and sent["stream"] is True
    system, user = sent["messages"][0]["content"], sent["messages"][-1]["content"]
    assert "Respond in Français" in system
    assert "## File: weatherline/cli.py" in user and "22:     service = ForecastService(" in user
    assert user.endswith(f"Question: {QUESTION}")
    citations = {c["path"]: c for c in one(events, "citations")["citations"]}
    assert citations["weatherline/cli.py"]["in_context"] is True
    assert citations["weatherline/cli.py"]["url"].endswith("path=weatherline%2Fcli.py&start=19&end=25")
    assert citations["ghost/nowhere.py"]["in_context"] is False
    done = events[-1]
    assert done["usage"] == {"prompt_tokens": 1234, "completion_tokens": 21}
    timings = done["timings"]
    assert 0 <= timings["retrieval_ms"] <= timings["first_token_ms"] <= timings["total_ms"]


async def test_provider_error_is_an_error_event_without_the_key(
    indexed: Indexed, fake_provider: FakeProvider
) -> None:
    fake_provider.script(FakeResponse(status=401))
    events = await run(indexed.service(**openai_env(fake_provider)), AnswerRequest(indexed.repo_id, QUESTION))
    error = events[-1]
    assert error["type"] == "error" and error["code"] == "auth"
    assert "OPENAI_API_KEY" in error["message"] and FAKE_API_KEY not in error["message"]


async def test_mid_stream_failure_after_tokens(indexed: Indexed, fake_provider: FakeProvider) -> None:
    fake_provider.script(FakeResponse(text="one two three four", fail_after=2, fail_mode="close"))
    events = await run(indexed.service(**openai_env(fake_provider)), AnswerRequest(indexed.repo_id, QUESTION))
    assert text(events) == "one two "
    assert events[-1]["type"] == "error" and events[-1]["code"] == "unavailable"


async def test_cancel_stops_the_answer_and_closes_the_provider_stream(
    indexed: Indexed, fake_provider: FakeProvider
) -> None:
    fake_provider.script(FakeResponse(text="word " * 100, delay=0.1))
    service = indexed.service(**openai_env(fake_provider))
    cancel = asyncio.Event()
    events = []
    async for event in service.answer(AnswerRequest(indexed.repo_id, QUESTION), cancel):
        events.append(event)
        if event["type"] == "token":
            cancel.set()
    assert events[-1] == {"type": "error", "code": "cancelled", "message": "the answer was cancelled"}
    assert sum(event["type"] == "token" for event in events) == 1
    assert await asyncio.to_thread(fake_provider.wait_for_disconnect, 3.0)


async def test_unknown_repo_and_unknown_pinned_file_are_not_found(indexed: Indexed) -> None:
    service = indexed.service()
    events = await run(service, AnswerRequest("github.com/nobody/nothing", QUESTION))
    assert events[-1]["type"] == "error" and events[-1]["code"] == "not_found"
    events = await run(service, AnswerRequest(indexed.repo_id, QUESTION, file_path="no/such/file.py"))
    assert events[-1]["code"] == "not_found" and "no/such/file.py" in events[-1]["message"]


async def test_pinned_file_is_sent_and_citable(indexed: Indexed, fake_provider: FakeProvider) -> None:
    fake_provider.script(FakeResponse(text="It is stored by persist_forecasts (weatherline/storage.py:1-5)."))
    service = indexed.service(**openai_env(fake_provider))
    request = AnswerRequest(
        indexed.repo_id, "What does this file do?", file_path="weatherline/storage.py", k=1
    )
    events = await run(service, request)
    user = fake_provider.requests[-1].body["messages"][-1]["content"]
    assert "## Pinned file: weatherline/storage.py" in user
    assert one(events, "citations")["citations"][0]["in_context"] is True


async def test_unconfigured_provider_falls_back_to_offline_only_when_nothing_is_configured(
    indexed: Indexed, fake_provider: FakeProvider
) -> None:
    events = await run(indexed.service(), AnswerRequest(indexed.repo_id, QUESTION, provider="google"))
    assert "google is not configured" in events[0]["message"]
    assert text(events).startswith(f"**{labels('en')['title']}**")
    configured = indexed.service(**fake_provider.openai_env())
    events = await run(configured, AnswerRequest(indexed.repo_id, QUESTION, provider="google"))
    assert events[-1]["type"] == "error" and events[-1]["code"] == "not_configured"
    assert "GOOGLE_API_KEY" in events[-1]["message"]


async def test_long_history_is_fitted_to_the_context_window(
    indexed: Indexed, fake_provider: FakeProvider
) -> None:
    history = []
    for n in range(40):
        history += [
            {"role": "user", "content": f"question {n}: " + "tell me more about forecasts " * 20},
            {"role": "assistant", "content": f"answer {n}: " + "forecasts are parsed and stored " * 20},
        ]
    window = 6000
    service = indexed.service(**openai_env(fake_provider, REPOLENS_CONTEXT_WINDOW=str(window)))
    events = await run(service, AnswerRequest(indexed.repo_id, QUESTION, history=history))
    done = events[-1]
    assert done["type"] == "done", events[-1]
    assert done["context"]["dropped_turns"] > 0 and done["context"]["hits"] >= 1
    sent = fake_provider.requests[-1].body
    prompt_tokens = sum(count_tokens(message["content"]) + 4 for message in sent["messages"]) + 3
    assert prompt_tokens + sent["max_completion_tokens"] <= window
    assert sent["messages"][-2]["content"].startswith("answer 39:"), "the newest turns are kept"
    assert sent["messages"][-1]["content"].endswith(f"Question: {QUESTION}")


async def test_short_follow_up_is_searched_with_the_previous_question(indexed: Indexed) -> None:
    history = [
        {"role": "user", "content": "How does parse_forecasts work?"},
        {"role": "assistant", "content": "It builds Forecast objects."},
    ]
    events = await run(
        indexed.service(), AnswerRequest(indexed.repo_id, "What does it return?", history=history)
    )
    assert one(events, "sources")["sources"][0]["path"] == "weatherline/models.py"


async def one_then_stall(closed: asyncio.Event) -> AsyncIterator[int]:
    """Yields 1, then waits a minute before 2; `closed` is set once the generator is closed."""
    try:
        yield 1
        await asyncio.sleep(60)
        yield 2
    finally:
        closed.set()


async def test_cancelling_the_consumer_task_closes_the_stream_cleanly() -> None:
    """Cancelling the task that reads an answer must close the source without 'already running' errors."""
    closed = asyncio.Event()

    received: list[int] = []

    async def consume() -> None:
        async for event in until_cancelled(one_then_stall(closed), asyncio.Event()):
            received.append(event)

    task = asyncio.create_task(consume())
    while not received:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed.is_set()
    assert received == [1]


async def test_cancel_interrupts_a_waiting_step_and_leaves_the_task_uncancelled() -> None:
    """`cancel` set while the next event is awaited (in the consuming task, no per-step task): the
    source is closed, `AnswerCancelled` is raised, and the task carries no cancel request afterwards."""
    closed = asyncio.Event()

    cancel = asyncio.Event()
    received: list[int] = []

    async def consume() -> int:
        with pytest.raises(AnswerCancelled):
            async for event in until_cancelled(one_then_stall(closed), cancel):
                received.append(event)
                asyncio.get_running_loop().call_later(0.01, cancel.set)
        await asyncio.sleep(0)  # a cancel request left on the task would raise here
        current = asyncio.current_task()
        assert current is not None
        return current.cancelling()

    assert await asyncio.wait_for(consume(), 10) == 0
    assert closed.is_set() and received == [1]


async def test_cancel_set_between_events_stops_before_the_next() -> None:
    cancel = asyncio.Event()

    async def events() -> AsyncIterator[int]:
        for number in range(5):
            yield number

    received: list[int] = []
    with pytest.raises(AnswerCancelled):
        async for event in until_cancelled(events(), cancel):
            received.append(event)
            if event == 2:
                cancel.set()
    assert received == [0, 1, 2]


def test_retrieval_runs_on_its_own_pool_not_behind_a_saturated_default_executor(indexed: Indexed) -> None:
    """Every thread of the default executor is busy (a burst of other blocking calls): the question is
    still retrieved and its sources sent, on a `repolens-retrieval` thread, before any of them ends."""
    service = indexed.service()
    threads: list[str] = []
    retrieve = service._retrieve

    def recording_retrieve(request: AnswerRequest):  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread().name)
        return retrieve(request)

    service._retrieve = recording_retrieve  # type: ignore[method-assign]

    async def first_events_while_the_default_executor_is_held() -> list[str]:
        loop = asyncio.get_running_loop()  # a loop of its own: its default executor goes with it
        loop.set_default_executor(ThreadPoolExecutor(max_workers=1, thread_name_prefix="saturated"))
        release = threading.Event()
        blocker = loop.run_in_executor(None, release.wait)
        events = service.answer(AnswerRequest(indexed.repo_id, QUESTION))
        try:
            # The timeout only keeps a regression (retrieval queued behind the blocker) from hanging.
            kinds = [(await asyncio.wait_for(anext(events), 60))["type"] for _ in range(2)]
            assert not blocker.done(), "the default executor's only thread is still held"
            return kinds
        finally:
            release.set()
            await events.aclose()
            await blocker

    assert asyncio.run(first_events_while_the_default_executor_is_held()) == ["status", "sources"]
    assert len(threads) == 1 and threads[0].startswith("repolens-retrieval"), threads
