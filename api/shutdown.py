"""Ending open event streams when the server stops, so that a clean stop logs no traceback.

uvicorn tells an app nothing about a stop until every open response has ended: it waits for them
(`timeout_graceful_shutdown`), then cancels the ones left, and logs each as "Exception in ASGI
application" with a `CancelledError` traceback. An ingest's progress stream lasts as long as the
ingest, so a stop with one open always ended that way. `watch_exit_signals` chains the process's
SIGINT/SIGTERM handlers (uvicorn's, which still run) to set an event the streams watch
(`end_when_stopping`): each then ends at once with a last frame that says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from types import FrameType
from typing import Annotated, Any

from fastapi import Depends, Request

_EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def watch_exit_signals(stopping: asyncio.Event) -> Iterator[None]:
    """While inside (the app's lifespan, in the running loop): SIGINT and SIGTERM also set `stopping`.

    Only the main thread can handle signals; in another one (a test's in-thread server, stopped
    without a signal) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}

    def handle(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(stopping.set)
        chained = previous.get(signum)
        if callable(chained):
            chained(signum, frame)

    for signum in _EXIT_SIGNALS:
        previous[signum] = signal.signal(signum, handle)
    try:
        yield
    finally:
        for watched, chained in previous.items():
            if signal.getsignal(watched) is handle:
                signal.signal(watched, chained)


async def end_when_stopping(
    frames: AsyncIterator[str], stopping: asyncio.Event, last_frame: str
) -> AsyncGenerator[str, None]:
    """`frames` until they end or `stopping` is set; then `last_frame` and the end of the stream."""
    stop = asyncio.ensure_future(stopping.wait())
    try:
        while True:
            following = asyncio.ensure_future(anext(frames))
            await asyncio.wait({following, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not following.done():
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await following
                stop.result()  # raises if the wait itself failed (not a stop)
                yield last_frame
                return
            try:
                frame = following.result()
            except StopAsyncIteration:
                return
            yield frame
    finally:
        stop.cancel()


def stopping_event(request: Request) -> asyncio.Event:
    """The app's "the server is stopping" event (`api.app.create_app`'s lifespan sets it on `app.state`)."""
    event = getattr(request.app.state, "stopping", None)
    return event if isinstance(event, asyncio.Event) else asyncio.Event()


StoppingDep = Annotated[asyncio.Event, Depends(stopping_event)]
