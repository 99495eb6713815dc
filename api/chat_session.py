"""One chat request from validated body to typed event frames, shared by every transport.

`/ws/chat` (both modes), `POST /chat/completions/stream` (plain and SSE) and `repolens ask`
all call `chat_events`, so indexing-on-first-use, deep research dispatch, error handling and
the end-of-answer rule are the same everywhere:

- an accepted request always ends with exactly one `done` frame (an `error` frame comes
  before it when something failed), so a client can wait for `done` alone;
- a repository that is not indexed yet is ingested first, in a worker thread, reporting
  `status` frames (`cloning`, then `indexing` with counts); cancelling the consumer (a client
  cancel or disconnect) sets the ingest's cancel flag so the thread stops too;
- the request token is masked by `rag.redact` (a `secret_scope`, forgotten when the request ends)
  before anything can log or echo it;
- a private repository (indexed with a token) answers only when the request's `token` is
  accepted by its host (`ingest.access.verify_access`), deep research included.

Rejected input never gets here: transports validate with `api.schemas` first.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from api.schemas import ChatRequestBody
from api.services import Services
from ingest import IngestOptions, Progress, ingest
from ingest.access import verify_access
from ingest.filters import FilterSpec, parse_patterns
from ingest.sources import RepoSource, resolve_source
from rag.answer import AnswerRequest, until_cancelled
from rag.errors import ErrorCode, NotFoundError, RepoLensError
from rag.events import Event, done_event, error_event, status_event
from rag.redact import secret_scope
from rag.research import ResearchOptions, compat_iteration, is_deep_research, run_research
from rag.wiki.compat import answers_offline, compat_wiki_events, wiki_request_kind

logger = logging.getLogger(__name__)

CANCEL_GRACE_S = 2.0
# Producer tasks of `detached_events`, referenced until they end (asyncio keeps only weak refs).
_producers: set[asyncio.Task[None]] = set()


async def chat_events(
    services: Services, request: ChatRequestBody, cancel: asyncio.Event
) -> AsyncIterator[Event]:
    """Every frame of one accepted request; the last is always one `done`. The request's token
    is masked (`secret_scope`) from the first step to the last, and forgotten afterwards."""
    with secret_scope(request.token):
        async with contextlib.aclosing(_request_events(services, request, cancel)) as events:
            async for event in events:
                yield event


async def _request_events(
    services: Services, request: ChatRequestBody, cancel: asyncio.Event
) -> AsyncIterator[Event]:
    """Every frame of one accepted request; the last is always one `done`."""
    started = time.perf_counter()
    index_ms: float | None = None
    saw_done = False
    try:
        source = resolve_source(request.repo_url, platform=request.platform, ref=request.ref)
        if services.store.get(source.repo_id) is None:
            async with contextlib.aclosing(_ensure_indexed(services, request, source, cancel)) as progress:
                async for event in progress:
                    yield event
            index_ms = round((time.perf_counter() - started) * 1000, 1)
        await _check_access(services, source.repo_id, request.token)
        async with contextlib.aclosing(_answer_events(services, request, source.repo_id, cancel)) as answer:
            async for event in answer:
                if event.get("type") == "done":
                    if saw_done:
                        continue
                    saw_done = True
                    if index_ms is not None:
                        event = {**event, "timings": {**event.get("timings", {}), "index_ms": index_ms}}
                yield event
    except RepoLensError as error:
        yield error_event(error.code, str(error))
    except Exception as error:
        logger.exception("chat request failed")
        yield error_event(ErrorCode.INTERNAL, f"internal error: {type(error).__name__}: {error}")
    if not saw_done:
        yield done_event(started=started, timings={"index_ms": index_ms} if index_ms is not None else None)


async def detached_events(services: Services, request: ChatRequestBody) -> AsyncIterator[Event]:
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
            async with contextlib.aclosing(chat_events(services, request, cancel)) as events:
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


async def _check_access(services: Services, repo_id: str, token: str | None) -> None:
    """A private repository answers only requests whose token the host accepts (network I/O: a thread)."""
    record = services.store.get(repo_id)
    if record is None:
        raise NotFoundError(f"{repo_id} is not indexed")
    await asyncio.to_thread(verify_access, record, token)


def _answer_events(
    services: Services, request: ChatRequestBody, repo_id: str, cancel: asyncio.Event
) -> AsyncIterator[Event]:
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
    )
    return services.answers.answer(answer_request, cancel)


def _filter_spec(request: ChatRequestBody) -> FilterSpec:
    return FilterSpec(
        include_dirs=parse_patterns(request.included_dirs),
        exclude_dirs=parse_patterns(request.excluded_dirs),
        include_files=parse_patterns(request.included_files),
        exclude_files=parse_patterns(request.excluded_files),
    )


def status_from_progress(progress: Progress) -> Event:
    """An ingest progress report as a `status` frame (every stage after cloning is `indexing`)."""
    stage = "cloning" if progress.stage == "cloning" else "indexing"
    fields = {**progress.to_json(), "stage": stage, "step": progress.stage}
    if fields.get("index_state") is None:
        fields.pop("index_state", None)  # set only at milestones (searchable, each dense version)
    return status_event(**fields)


async def _ensure_indexed(
    services: Services, request: ChatRequestBody, source: RepoSource, cancel: asyncio.Event
) -> AsyncIterator[Event]:
    """Ingest `source` unless another request did meanwhile; yields `status` frames.

    Returns at the ingest's `searchable` milestone (lexical-first: the version answers with BM25
    everywhere and vectors where they exist); the dense phase goes on in the ingest thread and
    commits better versions as it goes. Setting `cancel` before that milestone stops the ingest
    (error `cancelled`). The per-repo lock is held until
    the ingest thread has really ended, even when the consumer is gone first, so the next
    request never races a dying build.
    """
    lock = services.index_lock(source.repo_id)
    await lock.acquire()
    release_now = True
    try:
        if services.store.get(source.repo_id) is not None:
            return
        if source.is_local:
            yield status_event("indexing", f"indexing {source.local_path}")
        else:
            yield status_event("cloning", f"fetching {source.url}")
        options = IngestOptions(
            platform=request.platform,
            ref=request.ref,
            token=request.token,
            filters=_filter_spec(request),
        )
        loop = asyncio.get_running_loop()
        updates: asyncio.Queue[Event | None] = asyncio.Queue()
        stop = threading.Event()

        def report(progress: Progress) -> None:
            call_soon(loop, updates.put_nowait, status_from_progress(progress))

        def work() -> Any:
            try:
                return ingest(
                    request.repo_url,
                    options,
                    store=services.store,
                    embedder=services.embedder,
                    progress=report,
                    cancel=stop,
                )
            finally:
                call_soon(loop, updates.put_nowait, None)

        finished = _run_in_thread(loop, work)
        searchable = False
        try:
            async with contextlib.aclosing(until_cancelled(_drain(updates), cancel)) as progress:
                async for event in progress:
                    yield event
                    if event.get("step") == "searchable":
                        searchable = True  # answer now; the dense phase goes on in its thread
                        break
            if not searchable:
                await finished
        finally:
            if not finished.done():
                if not searchable:
                    stop.set()
                release_now = False
                finished.add_done_callback(lambda _: lock.release())
    finally:
        if release_now:
            lock.release()


async def _drain(updates: asyncio.Queue[Event | None]) -> AsyncIterator[Event]:
    while (event := await updates.get()) is not None:
        yield event


async def stop_answer(task: asyncio.Task[Any], cancel: asyncio.Event) -> None:
    """Stop an answer task: first through its cancel flag, which ends it cleanly (provider
    stream closed, `cancelled` error and `done` frames sent), then by cancelling the task if
    it has not ended within `CANCEL_GRACE_S` (e.g. stuck in a blocking step)."""
    cancel.set()
    _, pending = await asyncio.wait({task}, timeout=CANCEL_GRACE_S)
    if pending:
        task.cancel()
        await asyncio.wait({task})


def call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., Any], *args: Any) -> None:
    """Schedule `callback` on `loop` from a worker thread; a closed loop means nobody listens."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


def _run_in_thread(loop: asyncio.AbstractEventLoop, work: Callable[[], Any]) -> asyncio.Future[Any]:
    """Run blocking `work` in its own thread (long ingests must not hold the shared executor)."""
    future: asyncio.Future[Any] = loop.create_future()
    # An abandoned run (cancelled consumer) still ends with an outcome nobody awaits.
    future.add_done_callback(lambda done: done.cancelled() or done.exception())

    def settle(outcome: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(outcome)
        else:
            future.set_exception(error)

    def target() -> None:
        try:
            outcome = work()
        except BaseException as error:
            call_soon(loop, settle, None, error)
        else:
            call_soon(loop, settle, outcome, None)

    # The thread runs in a copy of this context, so the request's secret scope covers it too.
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(target,), name="repolens-ingest", daemon=True).start()
    return future
