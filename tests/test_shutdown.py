"""`api.shutdown`: a stream ends at once, with its last frame, when the server stops, and the stop
reaches uvicorn only once the open streams have ended.

The real stop (SIGTERM to `repolens serve` mid-answer on every transport, and with an ingest's
progress open) is tested in tests/test_stop_streams.py and tests/test_ingest_isolation.py."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncGenerator, Iterator
from types import FrameType

import pytest

from api.shutdown import ServerStop, end_when_stopping, watch_exit_signals


async def test_a_stream_waiting_for_its_next_frame_ends_with_the_last_frame_when_stopping() -> None:
    closed = asyncio.Event()

    async def progress() -> AsyncGenerator[str, None]:
        try:
            yield "first"
            await asyncio.Event().wait()  # an ingest between two progress events
            yield "never"
        finally:
            closed.set()

    stop = ServerStop()
    stream = end_when_stopping(progress(), stop, "stopping")
    assert await anext(stream) == "first"
    following = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    assert not following.done()
    stop.event.set()
    assert await following == "stopping"
    assert [frame async for frame in stream] == [] and closed.is_set()


async def test_a_stream_that_ends_by_itself_has_no_last_frame() -> None:
    async def frames() -> AsyncGenerator[str, None]:
        for frame in ("a", "b"):
            yield frame

    assert [frame async for frame in end_when_stopping(frames(), ServerStop(), "stopping")] == ["a", "b"]


async def test_drained_waits_for_the_open_streams_and_no_longer_than_its_timeout() -> None:
    stop = ServerStop()
    await asyncio.wait_for(stop.drained(60), 5)  # nothing open: at once
    with stop.streaming(), stop.streaming():
        await stop.drained(0.01)  # returns although two are still open
        waiting = asyncio.ensure_future(stop.drained(60))
        await asyncio.sleep(0.01)
        assert not waiting.done()
    await asyncio.wait_for(waiting, 5)


@pytest.fixture
def uvicorn_handler() -> Iterator[list[int]]:
    """SIGTERM's handler before the app's (uvicorn's, in a real server): records what reaches it."""
    received: list[int] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


async def _until(condition: object, what: str) -> None:
    for _ in range(500):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(what)


async def test_the_first_sigterm_stops_the_streams_then_reaches_uvicorn_a_second_reaches_it_at_once(
    uvicorn_handler: list[int],
) -> None:
    stop = ServerStop()
    with watch_exit_signals(stop, drain_s=60):
        with stop.streaming():  # an answer still sending its last frame
            os.kill(os.getpid(), signal.SIGTERM)
            await _until(stop.event.is_set, "the stop event is set")
            await asyncio.sleep(0.05)
            assert uvicorn_handler == []  # uvicorn (which closes every socket) waits for the stream
        await _until(lambda: uvicorn_handler == [signal.SIGTERM], "the signal reaches uvicorn")
        os.kill(os.getpid(), signal.SIGTERM)  # a second one: uvicorn's forced exit, at once
        await _until(lambda: len(uvicorn_handler) == 2, "the second signal reaches uvicorn")
    os.kill(os.getpid(), signal.SIGTERM)  # after the lifespan: uvicorn's handler is back in place
    await _until(lambda: len(uvicorn_handler) == 3, "the handler is restored")


async def test_a_stream_that_does_not_end_holds_the_stop_back_only_for_the_drain_time(
    uvicorn_handler: list[int],
) -> None:
    stop = ServerStop()
    with watch_exit_signals(stop, drain_s=0.1), stop.streaming():
        os.kill(os.getpid(), signal.SIGTERM)
        await _until(lambda: uvicorn_handler == [signal.SIGTERM], "the signal reaches uvicorn")
