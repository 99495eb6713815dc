"""Token-frame coalescing: the one per-connection send queue of the streaming transports.

`/ws/chat` and the SSE/plain HTTP chat send an answer's events through `coalesced()`. A reader
task pulls events from the answer into a queue while the transport sends, so a slow socket (a send
waiting for the kernel buffer to drain) never stalls the provider stream; consecutive `token`
events waiting in the queue merge into one frame whose text is theirs, concatenated in order.

Latency stays bounded: a token that arrives when no token frame went out in the last `window_s`
seconds is sent at once; one that arrives sooner waits at most until `window_s` after the previous
token frame (20 ms by default, `REPOLENS_STREAM_COALESCE_MS`), gathering whatever else arrives
meanwhile. A model streaming slower than that is never delayed; a burst becomes one frame per
window; every other event type passes through unmerged, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncGenerator

from rag.events import Event, token_event
from rag.settings import Settings

_TOKEN_KEYS = frozenset(("type", "text"))


def coalesce_window_s(settings: Settings) -> float:
    """The coalescing window in seconds (`REPOLENS_STREAM_COALESCE_MS`; 0 turns timed merging off)."""
    return settings.stream_coalesce_ms / 1000


def _mergeable(event: Event) -> bool:
    return event.get("type") == "token" and event.keys() == _TOKEN_KEYS


class _Pending:
    """Events read but not yet sent; a token appended after a token extends it."""

    def __init__(self) -> None:
        self.events: deque[Event] = deque()
        self.finished = False
        self.error: BaseException | None = None
        self.ready = asyncio.Event()

    def add(self, event: Event) -> None:
        if self.events and _mergeable(event) and _mergeable(self.events[-1]):
            last = self.events[-1]
            self.events[-1] = token_event(last["text"] + event["text"])
        else:
            self.events.append(event)
        self.ready.set()


async def _read(events: AsyncGenerator[Event, None], pending: _Pending) -> None:
    try:
        async with contextlib.aclosing(events):
            async for event in events:
                pending.add(event)
    except asyncio.CancelledError:
        raise
    except BaseException as error:  # handed to the consumer, which re-raises it
        pending.error = error
    finally:
        pending.finished = True
        pending.ready.set()


async def coalesced(events: AsyncGenerator[Event, None], window_s: float) -> AsyncGenerator[Event, None]:
    """`events` with waiting `token` events merged (see the module docstring). Closing or cancelling
    the consumer stops the reader and closes `events` (and with it the provider stream)."""
    pending = _Pending()
    reader = asyncio.create_task(_read(events, pending))
    last_token = float("-inf")
    try:
        while True:
            if not pending.events:
                if pending.finished:
                    break
                pending.ready.clear()
                await pending.ready.wait()
                continue
            if _mergeable(pending.events[0]):
                hold = last_token + window_s - time.monotonic()
                if hold > 0 and not pending.finished:
                    await asyncio.sleep(hold)
                last_token = time.monotonic()
            yield pending.events.popleft()
        if pending.error is not None:
            raise pending.error
    finally:
        if not reader.done():
            reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
