"""One chat request from validated body to typed event frames, shared by every transport.

`/ws/chat` (both modes), `POST /chat/completions/stream` (plain and SSE) and `repolens ask`
all call `chat_events`, so indexing-on-first-use, deep research dispatch, error handling and
the end-of-answer rule are the same everywhere:

- an accepted request always ends with exactly one `done` frame (an `error` frame comes
  before it when something failed), so a client can wait for `done` alone;
- a repository that is not indexed yet is ingested first, as a job of the server's pool
  (`ingest.jobs`; a concurrent request for it joins the same job), reporting `status` frames
  (`cloning`, then `indexing` with counts); a consumer that goes away stops waiting, the job
  goes on (an explicit `cancel` frame cancels it: `cancel_ingest`);
- a repository whose code graph is still being built (a moment after its searchable version) is
  waited for, briefly (`api.graph_wait`), or the answer says it is made without the graph;
- the request token is masked by `rag.redact` (a `secret_scope`, forgotten when the request ends)
  before anything can log or echo it;
- a private repository (indexed with a token) answers only when the request's `token` is
  accepted by its host (`ingest.access.verify_access`), deep research included;
- a server that stops (SIGINT/SIGTERM, `api.shutdown`) ends the answer at once, wherever it is
  (indexing, retrieval, the provider's stream), with an `error` frame of code `server_stopping`
  (`rag.events.stopping_event`) and then `done`, on every transport.

Rejected input never gets here: transports validate with `api.schemas` first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from api.graph_wait import GraphWait
from api.schemas import ChatRequestBody
from api.services import Services
from api.shutdown import ServerStop, streaming
from ingest import IngestOptions
from ingest.jobs import IngestJob, JobState
from ingest.sources import RepoSource, resolve_source
from rag.answer import AnswerCancelled, AnswerRequest, until_cancelled
from rag.errors import ErrorCode, NotFoundError, RepoLensError
from rag.events import Event, done_event, failure_event, status_event, stopping_event
from rag.redact import secret_scope
from rag.research import ResearchOptions, compat_iteration, is_deep_research, run_research
from rag.types import RepoRecord
from rag.wiki.compat import answers_offline, compat_wiki_events, wiki_request_kind

logger = logging.getLogger(__name__)

CANCEL_GRACE_S = 2.0
STOPPED_ANSWER = "the answer ends here; ask again once the server is back"
# Waiting for another process's build of a repository: how often to look, and when to try the job again.
BUSY_POLL_S = 0.25
BUSY_RETRY_S = 2.0
# Producer tasks of `detached_events`, referenced until they end (asyncio keeps only weak refs).
_producers: set[asyncio.Task[None]] = set()


async def chat_events(
    services: Services,
    request: ChatRequestBody,
    cancel: asyncio.Event,
    stop: ServerStop | None = None,
    graph_wait_s: float | None = None,
) -> AsyncGenerator[Event, None]:
    """Every frame of one accepted request; the last is always one `done`. The request's token
    is masked (`secret_scope`) from the first step to the last, and forgotten afterwards.

    With the serving app's `stop` (`api.shutdown`), a server that stops ends the answer at once
    (the provider's stream closed) with `stopping_event` and `done`, and its stop waits for that.
    A repository whose code graph is still being built is waited for up to `graph_wait_s` seconds
    (default `REPOLENS_GRAPH_WAIT_S`; `api.graph_wait`)."""
    wait_s = services.settings.graph_wait_s if graph_wait_s is None else graph_wait_s
    with secret_scope(request.token), streaming(stop):
        async with contextlib.aclosing(_request_events(services, request, cancel, stop, wait_s)) as events:
            async for event in events:
                yield event


async def _request_events(
    services: Services,
    request: ChatRequestBody,
    cancel: asyncio.Event,
    stop: ServerStop | None,
    graph_wait_s: float,
) -> AsyncGenerator[Event, None]:
    """Every frame of one accepted request; the last is always one `done`."""
    started = time.perf_counter()
    index_ms: float | None = None
    saw_done = False
    stopping = stop.event if stop is not None else None
    try:
        source = resolve_source(
            request.repo_url,
            platform=request.platform,
            ref=request.ref,
            platform_is_hint=request.platform_is_hint,
        )
        graph = GraphWait(services, source.repo_id, graph_wait_s)
        ready = _ready_at_once(services, source.repo_id) or await asyncio.to_thread(
            _readiness, services, graph, request.token
        )
        if ready is None:
            indexing = until_cancelled(_ensure_indexed(services, request, source, cancel), stopping)
            async with contextlib.aclosing(indexing) as progress:
                async for event in progress:
                    yield event
            index_ms = round((time.perf_counter() - started) * 1000, 1)
            ready = await asyncio.to_thread(_readiness, services, graph, request.token)
            if ready is None:
                raise NotFoundError(f"{source.repo_id} is not indexed")
        waiting_for_graph = until_cancelled(graph.events(ready.graph_pending, cancel), stopping)
        async with contextlib.aclosing(waiting_for_graph) as waiting:
            async for event in waiting:
                yield event
        answer_events = _answer_events(services, request, source.repo_id, cancel, graph.missing)
        answering = until_cancelled(answer_events, stopping)
        async with contextlib.aclosing(answering) as answer:
            async for event in answer:
                if event.get("type") == "done":
                    if saw_done:
                        continue
                    saw_done = True
                    if index_ms is not None:
                        event = {**event, "timings": {**event.get("timings", {}), "index_ms": index_ms}}
                yield event
    except Exception as error:
        if isinstance(error, AnswerCancelled) and stopping is not None and stopping.is_set():
            yield stopping_event(STOPPED_ANSWER)
        else:
            yield failure_event(error, logger, "chat request")
    if not saw_done:
        yield done_event(started=started, timings={"index_ms": index_ms} if index_ms is not None else None)


async def detached_events(
    services: Services, request: ChatRequestBody, stop: ServerStop | None = None
) -> AsyncGenerator[Event, None]:
    """`chat_events` produced in a task of its own, for consumers that get cancelled abruptly.

    Starlette cancels a streaming response's task when the client disconnects. Here that
    cancellation lands on a queue read instead of inside a provider read, and the answer is
    then stopped through its cancel flag, which closes the provider stream cleanly (with a
    task cancel as the fallback after `CANCEL_GRACE_S`).
    """
    cancel = asyncio.Event()
    queue: asyncio.Queue[Event | None] = asyncio.Queue()

    async def produce() -> None:
        try:
            async with contextlib.aclosing(chat_events(services, request, cancel, stop)) as events:
                async for event in events:
                    queue.put_nowait(event)
        finally:
            queue.put_nowait(None)

    producer = asyncio.create_task(produce())
    _producers.add(producer)
    producer.add_done_callback(_producers.discard)
    try:
        while (event := await queue.get()) is not None:
            yield event
    finally:
        if not producer.done():
            cancel.set()
            asyncio.get_running_loop().call_later(CANCEL_GRACE_S, producer.cancel)


@dataclass(frozen=True)
class _Ready:
    """An indexed repository the request may read; `graph_pending` is its live version's record when
    that version has no code graph yet and something is building it (`GraphWait.building_without_graph`)."""

    graph_pending: RepoRecord | None


def _readiness(services: Services, graph: GraphWait, token: str | None) -> _Ready | None:
    """None when the repository is not indexed; else `_Ready`, after a private repository's host
    accepted the request's token (refused: the access error). Blocking, and called in ONE thread hop
    per question: the record's read, the host's answer and the graph's state together, because each
    hop waits for the GIL behind an event loop streaming other answers (three hops here doubled the
    first-token p95 at 200 streams); and not at all when `_ready_at_once` already knows."""
    record = services.store.get(graph.repo_id)
    if record is None:
        return None
    services.verify_access(record, token)
    return _Ready(graph_pending=graph.building_without_graph())


def _ready_at_once(services: Services, repo_id: str) -> _Ready | None:
    """`_readiness` without a thread hop, for the common case: a public repository whose live version
    this process has loaded, with its code graph (`Store.loaded`: a `readlink`, no load, no lock, no
    SQLite). None sends the question through `_readiness`: not loaded yet or swapped since, private
    (the host checks the token), no graph known (it may be building)."""
    index = services.store.loaded(repo_id)
    if index is None or index.record.private or not index.has_graph_known():
        return None
    return _Ready(graph_pending=None)


def _answer_events(
    services: Services, request: ChatRequestBody, repo_id: str, cancel: asyncio.Event, graph_missing: bool
) -> AsyncGenerator[Event, None]:
    messages = [message.model_dump() for message in request.messages]
    if request.deep_research:
        options = ResearchOptions(max_iterations=request.max_iterations or ResearchOptions.max_iterations)
        return run_research(
            services,
            repo_id=repo_id,
            question=request.question,
            history=request.history,
            provider=request.provider,
            model=request.model,
            language=request.language,
            options=options,
            cancel=cancel,
        )
    if is_deep_research(messages):
        return compat_iteration(
            services,
            repo_id=repo_id,
            messages=messages,
            provider=request.provider,
            model=request.model,
            language=request.language,
            cancel=cancel,
        )
    wiki_kind = wiki_request_kind(request.question)
    if wiki_kind and answers_offline(services.settings, request.provider, request.model):
        return compat_wiki_events(services, repo_id, wiki_kind, request.question)  # deepwiki's wiki, offline
    answer_request = AnswerRequest(
        repo_id=repo_id,
        question=request.question,
        history=request.history,
        provider=request.provider,
        model=request.model,
        language=request.language,
        file_path=request.file_path,
        k=request.k,
        graph_missing=graph_missing,
    )
    return services.answers.answer(answer_request, cancel)


def _ingest_job(services: Services, request: ChatRequestBody, source: RepoSource) -> IngestJob:
    """The job indexing `source` for this request, named by its resolved platform: the request's
    `type` may have been a hint only (`ChatRequestBody.platform_is_hint`)."""
    options = IngestOptions.from_fields(
        services.settings,
        platform=source.platform,
        ref=request.ref,
        token=request.token,
        included_dirs=request.included_dirs,
        excluded_dirs=request.excluded_dirs,
        included_files=request.included_files,
        excluded_files=request.excluded_files,
    )
    options.policy = services.source_policy
    return IngestJob.for_ingest(request.repo_url, options)


async def _ensure_indexed(
    services: Services, request: ChatRequestBody, source: RepoSource, cancel: asyncio.Event
) -> AsyncGenerator[Event, None]:
    """Ingest `source` as a job of the server's pool (joining one already running for it); yields
    its `status` frames, and raises the job's error if it failed.

    Returns at the ingest's `searchable` milestone (lexical-first: the version answers with BM25
    everywhere and vectors where they exist); the job goes on with the dense phase and commits
    better versions as it goes. Setting `cancel` stops waiting (error `cancelled`) but not the
    job, which other requests may share and which finishes for the next question;
    `cancel_ingest` stops the job itself.

    When another process is building this repository (another `repolens serve --workers` process
    answering the same first question, or a CLI ingest), the job stops at once with `busy`: the
    request then waits for that build's searchable version instead of failing, and runs the job
    again if the other build ends without one.
    """
    if source.is_local:
        yield status_event("indexing", f"indexing {source.local_path}")
    else:
        yield status_event("cloning", f"fetching {source.url}")
    told_waiting = False
    while True:
        job = await services.submit_job(_ingest_job(services, request, source))
        async for event in until_cancelled(services.jobs.events(job), cancel):
            if event["type"] == "status":
                yield event
                if event.get("step") == "searchable":
                    return  # answer now; the job's dense phase goes on
        # `busy` (`IndexBusyError`; its type may not survive the ingest worker process, its code does)
        if not (isinstance(job.error, RepoLensError) and job.error.code == ErrorCode.BUSY):
            break
        if not told_waiting:
            told_waiting = True
            yield status_event("indexing", f"another process is indexing {source.repo_id}: waiting for it")
        if await _indexed_elsewhere(services, source.repo_id, cancel):
            return
    if job.error is not None:
        raise job.error
    if job.state is not JobState.DONE:
        raise RepoLensError(f"indexing {source.repo_id} failed (see the server log)", code=ErrorCode.INTERNAL)


async def _indexed_elsewhere(services: Services, repo_id: str, cancel: asyncio.Event) -> bool:
    """Wait up to `BUSY_RETRY_S` for another process's build of `repo_id` to commit a version: True
    once one is there, False when it is time to try the job again. `cancel` ends the wait."""
    deadline = time.monotonic() + BUSY_RETRY_S
    while time.monotonic() < deadline:
        if await asyncio.to_thread(services.store.get, repo_id) is not None:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(cancel.wait(), BUSY_POLL_S)
        if cancel.is_set():
            raise AnswerCancelled("the answer was cancelled")
    return await asyncio.to_thread(services.store.get, repo_id) is not None


async def cancel_ingest(services: Services, request: ChatRequestBody) -> None:
    """Cancel the running ingest job of the request's repository (an explicit `cancel` frame); the
    job table is read and written in a thread (SQLite: never on the event loop)."""
    try:
        repo_id = resolve_source(
            request.repo_url, platform=request.platform, ref=request.ref, platform_is_hint=True
        ).repo_id
    except RepoLensError:
        return
    await asyncio.to_thread(_cancel_jobs, services, repo_id)


def _cancel_jobs(services: Services, repo_id: str) -> None:
    for job in services.jobs.list():
        if job.repo_id == repo_id and not job.finished:
            services.jobs.cancel(job.id)


async def stop_answer(task: asyncio.Task[Any], cancel: asyncio.Event) -> None:
    """Stop an answer task: first through its cancel flag, which ends it cleanly (provider
    stream closed, `cancelled` error and `done` frames sent), then by cancelling the task if
    it has not ended within `CANCEL_GRACE_S` (e.g. stuck in a blocking step)."""
    cancel.set()
    _, pending = await asyncio.wait({task}, timeout=CANCEL_GRACE_S)
    if pending:
        task.cancel()
        await asyncio.wait({task})
