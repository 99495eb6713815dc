"""Token-frame coalescing (`api.coalesce`): every token kept, in order; bounded hold; clean closing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from api.coalesce import coalesce_window_s, coalesced
from rag.settings import Settings

Event = dict[str, Any]


async def scripted(
    events: list[tuple[float, Event]], closed: list[bool] | None = None
) -> AsyncIterator[Event]:
    """`events` with a pause before each; records in `closed` that the stream was closed."""
    try:
        for pause, event in events:
            await asyncio.sleep(pause)
            yield event
    finally:
        if closed is not None:
            closed.append(True)


def token(text: str) -> Event:
    return {"type": "token", "text": text}


async def collect(events: AsyncIterator[Event], send_s: float = 0.0) -> list[tuple[float, Event]]:
    """Every event with its arrival time; `send_s` simulates a slow socket per frame."""
    received = []
    async for event in events:
        received.append((time.monotonic(), event))
        await asyncio.sleep(send_s)
    return received


async def test_a_slow_socket_gets_fewer_frames_with_every_token_in_order() -> None:
    words = [f"w{i} " for i in range(200)]
    source = [(0.0, {"type": "sources", "sources": []}), *((0.001, token(w)) for w in words)]
    source.append((0.0, {"type": "done"}))
    received = [event for _, event in await collect(coalesced(scripted(source), 0.02), send_s=0.01)]
    tokens = [event for event in received if event["type"] == "token"]
    assert "".join(event["text"] for event in tokens) == "".join(words)
    assert len(tokens) < len(words), "tokens that queue up behind a slow send share a frame"
    assert received[0]["type"] == "sources" and received[-1] == {"type": "done"}


async def test_other_events_keep_their_place_between_tokens() -> None:
    source = [
        (0.0, token("a")),
        (0.0, token("b")),
        (0.0, {"type": "status", "stage": "x"}),
        (0.0, token("c")),
        (0.0, {"type": "token", "text": "d", "extra": 1}),
        (0.0, token("e")),
    ]
    received = [event for _, event in await collect(coalesced(scripted(source), 0.02), send_s=0.005)]
    # Tokens merge only with their neighbours: the status and the token with extra keys stay put.
    groups: list[Any] = []
    for event in received:
        if event.keys() == {"type", "text"} and groups and isinstance(groups[-1], str):
            groups[-1] += event["text"]
        else:
            groups.append(event["text"] if event.keys() == {"type", "text"} else event)
    assert groups == [
        "ab",
        {"type": "status", "stage": "x"},
        "c",
        {"type": "token", "text": "d", "extra": 1},
        "e",
    ]


async def test_a_slow_model_gets_a_frame_per_piece_and_a_fast_one_fewer_frames() -> None:
    slow = [(0.05, token(str(i))) for i in range(5)]
    received = await collect(coalesced(scripted(slow), 0.02))
    assert [event["text"] for _, event in received] == ["0", "1", "2", "3", "4"]
    fast = [(0.0, token("first")), *((0.002, token(str(i))) for i in range(40))]
    merged = [event for _, event in await collect(coalesced(scripted(fast), 0.02))]
    assert len(merged) < 41, "pieces within one window share a frame"
    assert "".join(event["text"] for event in merged) == "first" + "".join(str(i) for i in range(40))


async def test_closing_the_consumer_closes_the_answer_stream() -> None:
    closed: list[bool] = []
    stream = coalesced(scripted([(0.0, token("a")), (10.0, token("never"))], closed), 0.02)
    assert await anext(stream) == token("a")
    await stream.aclose()
    assert closed == [True]


async def test_an_error_of_the_answer_reaches_the_consumer_after_what_came_before() -> None:
    async def failing() -> AsyncIterator[Event]:
        yield token("kept")
        raise RuntimeError("provider broke")

    received: list[Event] = []
    with pytest.raises(RuntimeError, match="provider broke"):
        async for event in coalesced(failing(), 0.02):
            received.append(event)
    assert received == [token("kept")]


def test_the_window_is_configurable_and_bounded() -> None:
    assert coalesce_window_s(Settings.from_env({})) == pytest.approx(0.02)
    assert coalesce_window_s(Settings.from_env({"REPOLENS_STREAM_COALESCE_MS": "0"})) == 0
    assert coalesce_window_s(Settings.from_env({"REPOLENS_STREAM_COALESCE_MS": "junk"})) == pytest.approx(
        0.02
    )
    assert coalesce_window_s(Settings.from_env({"REPOLENS_STREAM_COALESCE_MS": "99999"})) == 1.0
