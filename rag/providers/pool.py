"""Pooled provider clients: one per event loop and key, closed when that loop shuts down.

A client's connections belong to the event loop that opened them, so each loop gets its own
clients (the server has one loop; `repolens ask`, each test and each `asyncio.run` have theirs).
Left to the garbage collector, a pool's sockets would be closed without their loop, and Python
reports each one as an unclosed resource. asyncio has no "loop closing" callback, but
`asyncio.run`, `asyncio.Runner` (used by uvicorn and pytest-asyncio) and every well-behaved loop
owner call `loop.shutdown_asyncgens()` before closing a loop: it finalises the async generators
still suspended in it. So each loop's clients are held by one such generator, and its cleanup
closes them, inside their own loop.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator, Callable, Hashable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Client = TypeVar("Client", bound=AbstractAsyncContextManager[object])


async def _held_until_shutdown(stack: AsyncExitStack) -> AsyncGenerator[None, None]:
    """Suspended for the loop's lifetime; `shutdown_asyncgens()` resumes it to close `stack`."""
    async with stack:
        yield


@dataclass
class _LoopClients(Generic[Client]):
    stack: AsyncExitStack = field(default_factory=AsyncExitStack)
    by_key: dict[Hashable, Client] = field(default_factory=dict)
    holder: AsyncGenerator[None, None] | None = None


class ClientPool(Generic[Client]):
    """`await pool.get(key, make)`: the running loop's client for `key`, made on first use."""

    def __init__(self) -> None:
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClients[Client]] = (
            weakref.WeakKeyDictionary()
        )

    async def get(self, key: Hashable, make: Callable[[], Client]) -> Client:
        loop = asyncio.get_running_loop()
        clients = self._loops.get(loop)
        if clients is None:
            clients = self._loops[loop] = _LoopClients()
            clients.holder = _held_until_shutdown(clients.stack)
            await clients.holder.__anext__()  # now suspended, and known to the loop
        if key not in clients.by_key:
            client = clients.by_key[key] = make()
            clients.stack.push_async_exit(client)  # its `__aexit__` closes it, at the loop's shutdown
        return clients.by_key[key]
