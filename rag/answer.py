"""One question in, a stream of typed events out: retrieval → prompt → provider → citations.

Every way of asking (both WebSocket modes, the HTTP fallback, `repolens ask`) goes through
`AnswerService.answer`, so they cannot drift apart in what they retrieve, send or report.
Events are built with `rag.events` (docs/ARCHITECTURE.md, "Typed events").
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rag.citations import Span, check_citations, covers, extract_citations, link, source_url
from rag.embedders import Embedder, embedder_for
from rag.embedders.local import available_cpus
from rag.errors import ErrorCode, NotFoundError, RepoLensError
from rag.events import (
    OFFLINE_FALLBACK_STEP,
    UNFINISHED_INDEX_STEP,
    Event,
    citations_event,
    done_event,
    failure_event,
    sources_event,
    status_event,
    token_event,
)
from rag.graph_walk import Chain, traced_chain
from rag.prompt import PinnedFile, PromptResult, build_prompt
from rag.providers.base import ChatProvider, ChatRequest, Message, TextDelta, Usage
from rag.providers.catalog import PROVIDERS, provider_or_offline, resolve_model
from rag.retrieval import Retriever, index_note
from rag.settings import Settings
from rag.store import RepoIndex, Store
from rag.tokens import count_tokens
from rag.types import RepoRecord, SearchHit

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_K = 10
FOLLOW_UP_WORDS = 8
# Output tokens kept free in the context window; capped by the model's own output limit.
RESERVED_OUTPUT = 4096


class AnswerCancelled(RepoLensError):
    code = ErrorCode.CANCELLED


@dataclass
class AnswerRequest:
    """`history` is the conversation before `question`, as `{role, content}` dicts."""

    repo_id: str
    question: str
    history: list[dict[str, str]] = field(default_factory=list)
    provider: str | None = None
    model: str | None = None
    language: str = "en"
    file_path: str | None = None
    k: int = DEFAULT_K
    # The repository's code graph is still being built (`api.graph_wait` ran out): the offline answer
    # is the retrieval list, and says why.
    graph_missing: bool = False


def sources_payload(record: RepoRecord, hits: Sequence[SearchHit]) -> list[dict[str, Any]]:
    return [
        {
            "path": hit.path,
            "start_line": hit.start_line,
            "end_line": hit.end_line,
            "symbol": hit.label,
            "language": hit.language,
            "score": round(hit.score, 6),
            "url": source_url(record, hit.path, hit.start_line, hit.end_line),
        }
        for hit in hits
    ]


def chain_sources(index: RepoIndex, chain: Chain, hits: Sequence[SearchHit]) -> list[SearchHit]:
    """The lines an offline answer cites from the code graph (`Chain.cited`) that no retrieved hit
    covers, as sources (score 0: the graph found them, retrieval did not rank them)."""
    covered = [Span(hit.path, hit.start_line, hit.end_line) for hit in hits]
    extra: list[SearchHit] = []
    for span in chain.cited():
        if covers(covered, span.path, span.start_line, span.end_line):
            continue
        info = index.file_info(span.path)
        language = info.language if info is not None else ""
        extra.append(SearchHit(span.path, language, span.start_line, span.end_line, span.symbol, "", 0.0))
        covered.append(Span(span.path, span.start_line, span.end_line))
    return extra


def history_messages(history: Sequence[dict[str, str]]) -> list[Message]:
    """User and assistant turns with content; other roles (system) are the server's business."""
    return [
        Message(turn["role"], turn["content"])  # type: ignore[arg-type]
        for turn in history
        if turn.get("role") in ("user", "assistant") and (turn.get("content") or "").strip()
    ]


def retrieval_query(request: AnswerRequest) -> str:
    """What to search for. A short follow-up ("what does it return?") names nothing to find, so it is
    searched together with the previous user question it refers to."""
    previous = [turn.get("content", "") for turn in request.history if turn.get("role") == "user"]
    if previous and len(request.question.split()) <= FOLLOW_UP_WORDS:
        return f"{previous[-1]}\n{request.question}"
    return request.question


async def until_cancelled(events: AsyncIterator[T], cancel: asyncio.Event | None) -> AsyncGenerator[T, None]:
    """`events`, stopped (and closed, which closes the provider's HTTP stream) as soon as `cancel` is set,
    even while waiting for the next token.

    Each step awaits `events` in the consuming task itself: a token costs no task and no `asyncio.wait`
    (at 200 concurrent streams those were ~7% of the server's CPU). Setting `cancel` while a step waits
    interrupts it by cancelling the consuming task (once, and taken back with `Task.uncancel`, as
    `asyncio.timeout` does), which surfaces here as `AnswerCancelled`; a cancellation of the task from
    anywhere else still propagates as `CancelledError`.
    """
    async with contextlib.aclosing(events):  # type: ignore[type-var]
        if cancel is None:
            async for event in events:
                yield event
            return
        task: asyncio.Task[Any] | None = None  # the consuming task
        waiting: asyncio.Task[Any] | None = None  # the same, while a step waits
        interrupted = False

        def interrupt(_: object) -> None:
            nonlocal interrupted
            if waiting is not None and not interrupted:
                interrupted = True
                waiting.cancel()

        # `current_task(loop)`: without the loop it looks the loop up, which on Python 3.11 is a
        # `getpid` system call, once per event per stream.
        loop = asyncio.get_running_loop()
        waiter = asyncio.ensure_future(cancel.wait())
        waiter.add_done_callback(interrupt)
        try:
            while not cancel.is_set():
                task = waiting = asyncio.current_task(loop)
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    break
                except BaseException:
                    # Interrupted by `cancel` (the source saw the CancelledError, or turned it into
                    # another error): take the request back; a cancellation from elsewhere goes on.
                    if interrupted and task is not None and task.uncancel() == 0:
                        raise AnswerCancelled("the answer was cancelled") from None
                    raise
                finally:
                    waiting = None
                if interrupted:
                    break  # the source swallowed the interruption
                yield event
            if interrupted and task is not None:
                task.uncancel()
            if cancel.is_set():
                raise AnswerCancelled("the answer was cancelled")
        finally:
            waiter.remove_done_callback(interrupt)
            waiter.cancel()


class AnswerService:
    """Answers questions about indexed repositories; shared by every request of a process."""

    def __init__(self, store: Store, embedder: Embedder, settings: Settings) -> None:
        self.store = store
        self.embedder = embedder
        self.settings = settings

    async def answer(
        self, request: AnswerRequest, cancel: asyncio.Event | None = None
    ) -> AsyncGenerator[Event, None]:
        """Events for one answer: status, sources, tokens, citations, done; or an `error` event."""
        try:
            async for event in self._answer(request, cancel):
                yield event
        except Exception as error:
            yield failure_event(error, logger, "answer")

    def _provider(self, request: AnswerRequest) -> tuple[ChatProvider, str | None]:
        """The provider to use, and a note when falling back to the offline answer."""
        return provider_or_offline(request.provider, self.settings, request.model)

    def _retrieve(self, request: AnswerRequest) -> tuple[RepoIndex, list[SearchHit], PinnedFile | None]:
        """Blocking work (index load, embedding, search); run in a thread."""
        index = self.store.open(request.repo_id)
        embedder = embedder_for(self.embedder, index.record.embedder)
        index.check_embedder(embedder)
        hits = Retriever(index, embedder).search(retrieval_query(request), request.k or DEFAULT_K)
        pinned = None
        if request.file_path:
            path = request.file_path.strip().lstrip("/")
            text = index.file_text(path)
            if text is None:
                raise NotFoundError(f"file '{path}' is not in the index of {request.repo_id}")
            pinned = PinnedFile(path, text)
        return index, hits, pinned

    def _prepare(
        self, request: AnswerRequest, provider: ChatProvider, started: float
    ) -> tuple[RepoIndex, list[SearchHit], PinnedFile | None, PromptResult, int, float]:
        """Retrieve, then build the prompt; also returns the ms from `started` to the hits."""
        index, hits, pinned = self._retrieve(request)
        retrieval_ms = _ms(started)
        prompt, reserve = self._prompt(request, provider, hits, pinned)
        return index, hits, pinned, prompt, reserve, retrieval_ms

    def _prompt(
        self, request: AnswerRequest, provider: ChatProvider, hits: list[SearchHit], pinned: PinnedFile | None
    ) -> tuple[PromptResult, int]:
        model = resolve_model(PROVIDERS[provider.name], self.settings, request.model)
        reserve = min(RESERVED_OUTPUT, model.max_output, model.context_window // 4)
        result = build_prompt(
            request.question,
            history_messages(request.history),
            hits,
            file_pin=pinned,
            language=request.language,
            model_context=model.context_window,
            reserve_output=reserve,
            repo=request.repo_id,
        )
        return result, reserve

    def _chain(
        self, index: RepoIndex, request: AnswerRequest, hits: list[SearchHit]
    ) -> tuple[Chain, list[SearchHit]]:
        """The code graph's chain for an offline answer, found as deep research finds it
        (`traced_chain`: its own retrieval, so both name the same subject), and the lines it cites
        beyond `hits` (the answer's sources)."""
        retriever = Retriever(index, self.embedder)
        chain, _ = traced_chain(index, retriever, request.question, retrieval_query(request))
        return chain, chain_sources(index, chain, hits)

    async def _answer(
        self, request: AnswerRequest, cancel: asyncio.Event | None
    ) -> AsyncGenerator[Event, None]:
        started = time.perf_counter()
        if not request.question.strip():
            raise RepoLensError("the question is empty", code=ErrorCode.BAD_REQUEST)
        provider, note = self._provider(request)
        if note:
            yield status_event("retrieving", note, step=OFFLINE_FALLBACK_STEP)
        else:
            yield status_event("retrieving", f"searching {request.repo_id}")
        # Retrieval and the prompt's token counting are CPU work: off the event loop, so other
        # conversations keep streaming meanwhile, and in one hop of the retrieval pool.
        index, hits, pinned, prompt, reserve, retrieval_ms = await _in_retrieval_pool(
            self._prepare, request, provider, started
        )
        record = index.record
        # Not complete: embedding goes on, or (nothing building it) the answer says how to finish it.
        state = (
            None
            if record.index_state == "complete"
            else await asyncio.to_thread(index_note, self.store, record)
        )
        if state is not None:
            step = UNFINISHED_INDEX_STEP if state.unfinished else None
            yield status_event("retrieving", state.text, index_state=record.index_state, step=step)
        chain = None
        graph_spans: list[SearchHit] = []
        if provider.name == "offline" and not request.graph_missing:
            # Without a model, the answer explains the code graph's chain for the question; the lines
            # it cites are sources too (linked on the page, and what its citations are checked against).
            chain, graph_spans = await _in_retrieval_pool(self._chain, index, request, prompt.used_hits)
        yield sources_event(sources_payload(record, [*prompt.used_hits, *graph_spans]))
        yield status_event(
            "generating",
            f"asking {provider.name} ({provider.model})",
            provider=provider.name,
            model=provider.model,
        )
        chat = ChatRequest(
            prompt.messages,
            model=provider.model,
            max_tokens=reserve,
            question=request.question,
            context=tuple(prompt.used_hits),
            chain=chain,
            file_text=index.file_text,
            language=request.language or "en",
            graph_missing=request.graph_missing,
        )
        parts: list[str] = []
        usage: Usage | None = None
        first_token_ms: float | None = None
        async for event in until_cancelled(provider.stream(chat), cancel):
            if isinstance(event, TextDelta):
                if first_token_ms is None:
                    first_token_ms = _ms(started)
                parts.append(event.text)
                yield token_event(event.text)
            elif isinstance(event, Usage):
                usage = event
        if state is not None and state.unfinished:  # in the text: MCP and the OpenAI API show no frames
            parts.append(f"\n\n---\n**Note:** {state.text}.\n")
            yield token_event(parts[-1])
        text = "".join(parts)
        context: list[SearchHit | Span] = [*prompt.used_hits, *graph_spans]
        if pinned is not None:
            context.append(Span(pinned.path, 1, pinned.text.count("\n") + 1))
        citations = link(check_citations(extract_citations(text), context), record)
        yield citations_event([citation.to_json() for citation in citations])
        yield done_event(
            usage=(
                usage.prompt_tokens if usage else prompt.prompt_tokens,
                usage.completion_tokens if usage else count_tokens(text),
            ),
            timings={"retrieval_ms": retrieval_ms, "first_token_ms": first_token_ms},
            started=started,
            provider=provider.name,
            model=provider.model,
            context={
                "hits": len(prompt.used_hits),
                "dropped_hits": len(prompt.dropped_hits),
                "dropped_turns": prompt.dropped_turns,
            },
        )


# A burst of questions is CPU-bound Python (search, ranking, token counts): one thread per core runs it,
# so the burst queues here rather than in the default executor (every other blocking call) and fewer
# threads take the GIL from the event loop streaming the other answers.
_RETRIEVAL_POOL = ThreadPoolExecutor(max_workers=available_cpus(), thread_name_prefix="repolens-retrieval")


async def _in_retrieval_pool(func: Callable[..., T], *args: Any) -> T:
    """`asyncio.to_thread` on the retrieval pool (the caller's context variables go along)."""
    context = contextvars.copy_context()
    call = functools.partial(context.run, func, *args)
    return await asyncio.get_running_loop().run_in_executor(_RETRIEVAL_POOL, call)


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 1)
