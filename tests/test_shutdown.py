"""`api.shutdown`: an event stream ends at once, with its last frame, when the server stops.

The real stop (SIGTERM to `repolens serve` with an ingest's progress open: no traceback, a
`server_stopping` frame) is tested in tests/test_ingest_isolation.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from api.shutdown import end_when_stopping


async def test_a_stream_waiting_for_its_next_frame_ends_with_the_last_frame_when_stopping() -> None:
    closed = asyncio.Event()

    async def progress() -> AsyncGenerator[str, None]:
        try:
            yield "first"
            await asyncio.Event().wait()  # an ingest between two progress events
            yield "never"
        finally:
            closed.set()

    stopping = asyncio.Event()
    stream = end_when_stopping(progress(), stopping, "stopping")
    assert await anext(stream) == "first"
    following = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    assert not following.done()
    stopping.set()
    assert await following == "stopping"
    assert [frame async for frame in stream] == [] and closed.is_set()


async def test_a_stream_that_ends_by_itself_has_no_last_frame() -> None:
    async def frames() -> AsyncGenerator[str, None]:
        for frame in ("a", "b"):
            yield frame

    assert [frame async for frame in end_when_stopping(frames(), asyncio.Event(), "stopping")] == ["a", "b"]
