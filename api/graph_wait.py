"""A chat that reaches a repository whose code graph is still being built waits for it, briefly.

A new repository's ingest commits a searchable (lexical) version first and its code graph in the next
version, a moment later (`ingest.pipeline`: the `graph` milestone). The offline answer is explained from
that graph, so a question asked in between (the chat's own indexing on first use, or a chat right
after `POST /api/repos` reached its searchable milestone) would get the retrieval list instead of the
chain. `GraphWait` waits for the graph's version, up to a bound (`REPOLENS_GRAPH_WAIT_S` for the
server's chats; `repolens ask` waits up to `ASK_GRAPH_WAIT_S`), saying so in a status frame; when the
graph is not there in time the answer goes on and says that it is made without it
(`rag.events.graph_building_event`, one frame for every transport).

Hot path: a live version with the graph costs the cached index's freshness check (one `readlink`) and
its cached `has_graph` (the answer opens the same cached index next), about 0.2 ms. It is never on the
event loop (the store may load a new version, or be a database) and takes no thread hop of its own:
the chat calls `building_without_graph` inside the one hop that also reads the record and checks
access (`api.chat_session`). Each hop under 200 streams waits for the GIL behind the loop, so three
hops per question doubled the first-token tail. Only a version without a graph looks at the ingest
jobs (a repository with no code the graph understands, or indexed before the graph existed, and no
job: no wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from api.services import Services
from rag.answer import AnswerCancelled
from rag.errors import RepoLensError
from rag.events import Event, graph_building_event
from rag.store.layout import build_holder
from rag.types import RepoRecord

# How often the record is read while waiting (one small JSON file; the graph's version lands in ~0.1-2 s).
POLL_S = 0.1
# `repolens ask`: a terminal user who asked one question is already waiting for the index; the bound
# only guards against a build that never gets there.
ASK_GRAPH_WAIT_S = 60.0


@dataclass
class GraphWait:
    """The wait of one chat for `repo_id`'s code graph. `missing` is True after `events` when the
    answer has to go on without the graph (the wait ran out): the offline answer then says so."""

    services: Services
    repo_id: str
    wait_s: float
    missing: bool = False

    async def events(self, record: RepoRecord | None, cancel: asyncio.Event) -> AsyncGenerator[Event, None]:
        """Nothing when `record` is None (`building_without_graph`: the graph is live, or nobody builds
        it); else a status frame, the wait (ended by the graph's version, the build's end, the bound or
        `cancel`), and, when the graph is still not there, the frame saying the answer is made without it."""
        if record is None:
            return
        if self.wait_s > 0:
            yield graph_building_event(self.repo_id, self.wait_s)
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(cancel.wait(), min(POLL_S, max(0.0, deadline - time.monotonic())))
            if cancel.is_set():
                raise AnswerCancelled("the answer was cancelled")
            if not await asyncio.to_thread(self._still_without_graph, record):
                return
        self.missing = True
        yield graph_building_event(self.repo_id)

    def building_without_graph(self) -> RepoRecord | None:
        """The live version's record when it has no graph and something builds the repository; else
        None (code the graph does not understand, or an index left lexical). Blocking, for a thread:
        the open loads a version committed since (FAISS and SQLite, ~60 ms for rich), or waits for the
        store's lock while another thread loads one."""
        index = self.services.store.open(self.repo_id)  # cached, reloaded after a swap (the answer's next)
        if index.has_graph:
            return None
        record = index.record
        return record if self._being_built(record.index_state == "complete") else None

    def _still_without_graph(self, record: RepoRecord) -> bool:
        """`record`'s version is still the live one and still being built. The version after the
        searchable one carries the graph (if the repository has code it understands); a build that
        ended without one leaves nothing to wait for."""
        current = self.services.store.get(self.repo_id)
        if current is None or current.version != record.version:
            return False
        return self._being_built(current.index_state == "complete")

    def _being_built(self, complete: bool) -> bool:
        """A process holds the repository's build (this one, another `--workers` process, a CLI ingest,
        `repolens embed`), or, for an index not `complete`, an ingest job of this server or its Redis
        queue still runs for it (a worker on another host). A complete index without a graph (code the
        graph does not understand) is not looked up in the queue on every chat; an unavailable queue
        only means nothing is known to be building it (the answer does not need the queue)."""
        if build_holder(self.services.store.paths(self.repo_id)) is not None:
            return True
        if complete:
            return False
        try:
            jobs = self.services.jobs.list()
        except RepoLensError:
            return False
        return any(job.repo_id == self.repo_id and not job.finished for job in jobs)


__all__ = ["ASK_GRAPH_WAIT_S", "GraphWait"]
