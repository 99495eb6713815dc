"""Ending open streams when the server stops, with a last frame that says why.

uvicorn tells an app nothing about a stop until every open response has ended: it waits for them
(`timeout_graceful_shutdown`), then cancels the ones left (a cut connection, and "Exception in ASGI
application" with a `CancelledError` traceback each), and it closes every WebSocket at once with
code 1012, mid-answer or not. So the app watches the signal itself: `watch_exit_signals` chains the
process's SIGINT/SIGTERM handlers (uvicorn's) so that the first signal sets `ServerStop.event`, and
hands the signal on to uvicorn only once every stream that `ServerStop.streaming` tracks has ended
(at most `DRAIN_S` later). Each stream ends at once on the event with its transport's form of one
frame, `rag.events.stopping_event` (`server_stopping`):

- the chat on every transport (`api.chat_session.chat_events`: WebSocket both modes, HTTP plain and
  SSE, OpenAI's API, MCP's `ask_question`): an `error` frame, then `done`;
- the ingest and wiki progress streams (SSE, `end_when_stopping`) and MCP's `index_repository`.

A second signal goes to uvicorn at once (its forced exit).
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
from starlette.types import ASGIApp

_EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# How long a stop waits for the open streams to send their last frame before uvicorn's own stop.
DRAIN_S = 2.0


class ServerStop:
    """The server's stop as its streams see it: `event` is set on the first SIGINT/SIGTERM, and
    `drained()` returns once no stream is open (`streaming`). One per serving (in its loop)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self._open = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def stopping(self) -> bool:
        return self.event.is_set()

    @contextlib.contextmanager
    def streaming(self) -> Iterator[None]:
        """Around one open stream: the stop waits for it to end (at most `DRAIN_S`)."""
        self._open += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._open -= 1
            if self._open == 0:
                self._idle.set()

    async def drained(self, timeout: float) -> None:
        """Return once no stream is open, or after `timeout` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)


@contextlib.contextmanager
def watch_exit_signals(stop: ServerStop, drain_s: float = DRAIN_S) -> Iterator[None]:
    """While inside (the app's lifespan, in the running loop): the first SIGINT or SIGTERM sets
    `stop.event`, and reaches the handler it replaced (uvicorn's) once the streams have drained; a
    second one reaches it at once.

    Only the main thread can handle signals; in another one (a test's in-thread server, stopped
    without a signal) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}
    handing_over: set[asyncio.Task[None]] = set()

    def chain(signum: int, frame: FrameType | None) -> None:
        chained = previous.get(signum)
        if callable(chained):
            chained(signum, frame)

    async def hand_over(signum: int) -> None:
        await stop.drained(drain_s)
        chain(signum, None)

    def begin(signum: int) -> None:
        stop.event.set()
        task = loop.create_task(hand_over(signum))
        handing_over.add(task)
        task.add_done_callback(handing_over.discard)

    received = False

    def handle(signum: int, frame: FrameType | None) -> None:
        nonlocal received
        if received:
            chain(signum, frame)
            return
        received = True
        loop.call_soon_threadsafe(begin, signum)

    for signum in _EXIT_SIGNALS:
        previous[signum] = signal.signal(signum, handle)
    try:
        yield
    finally:
        for watched, chained in previous.items():
            if signal.getsignal(watched) is handle:
                signal.signal(watched, chained)


async def end_when_stopping(
    frames: AsyncIterator[str], stop: ServerStop, last_frame: str
) -> AsyncGenerator[str, None]:
    """`frames` until they end or the server stops; then `last_frame` and the end of the stream."""
    with stop.streaming():
        stopping = asyncio.ensure_future(stop.event.wait())
        try:
            while True:
                following = asyncio.ensure_future(anext(frames))
                await asyncio.wait({following, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not following.done():
                    following.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await following
                    stopping.result()  # raises if the wait itself failed (not a stop)
                    yield last_frame
                    return
                try:
                    frame = following.result()
                except StopAsyncIteration:
                    return
                yield frame
        finally:
            stopping.cancel()


def streaming(stop: ServerStop | None) -> contextlib.AbstractContextManager[None]:
    """`stop.streaming()`, or nothing without a stop (outside a served app: the CLI, MCP over stdio)."""
    return stop.streaming() if stop is not None else contextlib.nullcontext()


def server_stop(app: ASGIApp | Any) -> ServerStop | None:
    """The stop of the app serving a request (`api.app.create_app`'s lifespan puts it on
    `app.state.stopping`), or None outside a served app."""
    stop = getattr(getattr(app, "state", None), "stopping", None)
    return stop if isinstance(stop, ServerStop) else None


def stopping_dep(request: Request) -> ServerStop:
    """`server_stop` as a dependency: a stop that never comes outside a served app."""
    return server_stop(request.app) or ServerStop()


StoppingDep = Annotated[ServerStop, Depends(stopping_dep)]
