"""The typed event frames every transport sends, defined once.

Each event type is a pydantic model; producers build events through these models (the builders
below validate every frame) and pass them on in their wire form, a JSON-ready dict whose `type`
names the model (`Event`). `encode` is the one serialiser: the WebSocket events mode, every SSE
stream (`sse_frame`: the HTTP chat and the ingest routes) and `repolens ask --json` use it, so a
frame reads the same everywhere. Error frames are always redacted (`ErrorEvent` masks its message).
`api/web/src/types.ts` mirrors these models; `tests/test_events.py` fails when they drift.

Adding a field: add it to the model (optional, so older producers stay valid) and to `types.ts`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from rag.errors import ErrorCode, RepoLensError
from rag.redact import redact

Event = dict[str, Any]
"""An event in its wire form (what `encode` writes)."""


class _Frame(BaseModel):
    """Fields a producer leaves out are left out of the frame (`exclude_unset`)."""

    model_config = ConfigDict(extra="forbid")

    type: str  # each event narrows it to its `Literal` name

    def wire(self) -> Event:
        return {"type": self.type, **self.model_dump(mode="json", exclude_unset=True, exclude={"type"})}


class StatusEvent(_Frame):
    """Progress: `cloning`/`indexing` (ingest counts, the pipeline `step`), `retrieving`, `generating`."""

    type: Literal["status"] = "status"
    stage: str
    message: str | None = None
    step: str | None = None
    files_done: int | None = None
    files_total: int | None = None
    chunks_done: int | None = None
    chunks_total: int | None = None
    rate: float | None = None
    eta_s: float | None = None
    provider: str | None = None
    model: str | None = None
    # Lexical-first ingest: `lexical`, `partial n/m` or `complete` (the searchable milestone, each dense
    # version, and an answer from an index still being embedded).
    index_state: str | None = None


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    start_line: int
    end_line: int
    symbol: str | None = None
    language: str | None = None
    score: float | None = None
    url: str | None = None


class SourcesEvent(_Frame):
    type: Literal["sources"] = "sources"
    sources: list[Source]


class TokenEvent(_Frame):
    type: Literal["token"] = "token"
    text: str


class Citation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    start_line: int
    end_line: int
    url: str | None = None
    in_context: bool


class CitationsEvent(_Frame):
    type: Literal["citations"] = "citations"
    citations: list[Citation]


class ResearchEvent(_Frame):
    """Deep-research progress; the plan is iteration 0."""

    type: Literal["research"] = "research"
    iteration: int
    max_iterations: int
    phase: str
    event: str
    summary: str = ""
    tool: str | None = None
    args: dict[str, Any] | None = None
    files: list[str] | None = None


class WikiEvent(_Frame):
    """Wiki generation progress (`rag.wiki.generate`): the planned `structure`, each finished `page`
    (k of n, `reused` when unchanged since the last wiki, else `reason`: why it was written again), or a
    `note` for the reader."""

    type: Literal["wiki"] = "wiki"
    event: Literal["structure", "page", "note"]
    title: str | None = None
    total: int | None = None
    mode: str | None = None
    pages: list[dict[str, str]] | None = None
    index: int | None = None
    page_id: str | None = None
    reused: bool | None = None
    reason: str | None = None
    message: str | None = None


class ErrorEvent(_Frame):
    type: Literal["error"] = "error"
    code: ErrorCode
    message: str

    @field_validator("message")
    @classmethod
    def _redacted(cls, message: str) -> str:
        return redact(message)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class DoneEvent(_Frame):
    """The end of an answer (usage, timings, ...) or of an ingest (`repo`, `report`)."""

    type: Literal["done"] = "done"
    usage: Usage | None = None
    timings: dict[str, float | None] | None = None
    provider: str | None = None
    model: str | None = None
    context: dict[str, int] | None = None
    research: dict[str, Any] | None = None
    repo: dict[str, Any] | None = None
    report: dict[str, Any] | None = None
    wiki: dict[str, Any] | None = None


class PongEvent(_Frame):
    type: Literal["pong"] = "pong"


EVENT_MODELS: tuple[type[_Frame], ...] = (
    StatusEvent,
    SourcesEvent,
    TokenEvent,
    CitationsEvent,
    ResearchEvent,
    WikiEvent,
    ErrorEvent,
    DoneEvent,
    PongEvent,
)


def status_event(stage: str, message: str | None = None, **fields: Any) -> Event:
    if message is not None:
        fields["message"] = message
    return StatusEvent(stage=stage, **fields).wire()


# The `step` of a chat's status frame when its index is not complete and nothing is embedding it (an
# ingest stopped in its dense phase): the frame's message (`rag.retrieval.index_note`) says how to finish it.
UNFINISHED_INDEX_STEP = "index_unfinished"

# The `step` of the status frames of a chat that reaches a repository whose code graph is still being
# built (a new repository's graph goes live a moment after its searchable version).
GRAPH_BUILDING_STEP = "graph_building"

# The `step` of a chat's `retrieving` status frame when the provider it named is not configured on a
# server with none configured, so the answer is made offline: the message says what to set
# (`rag.providers.catalog.provider_or_offline`). The page keeps it with the answer.
OFFLINE_FALLBACK_STEP = "offline_fallback"


def graph_building_event(repo_id: str, wait_s: float | None = None) -> Event:
    """The status frame of a chat whose repository's code graph is still being built: with `wait_s`,
    the chat waits up to that long for it (stage `indexing`); without, the answer comes without the
    graph (stage `retrieving`): the offline answer is then the retrieval list, not the explained chain.
    Every transport sends this one frame (`api.graph_wait`)."""
    if wait_s is not None:
        message = f"building the code graph of {repo_id}: waiting for it (up to {wait_s:g} s)"
        return status_event("indexing", message, step=GRAPH_BUILDING_STEP)
    message = (
        f"the code graph of {repo_id} is still being built: this answer is made without it; "
        "ask again in a moment for the answer explained from the code graph"
    )
    return status_event("retrieving", message, step=GRAPH_BUILDING_STEP)


def sources_event(sources: list[dict[str, Any]]) -> Event:
    return SourcesEvent.model_validate({"sources": sources}).wire()


def token_event(text: str) -> Event:
    """`TokenEvent(text=text).wire()`, built directly: the one frame sent per streamed piece (thousands a
    second at load), and its only field needs no more validation than its type."""
    if type(text) is not str:
        raise TypeError(f"a token's text is a str, not {type(text).__name__}")
    return {"type": "token", "text": text}


def citations_event(citations: list[dict[str, Any]]) -> Event:
    return CitationsEvent.model_validate({"citations": citations}).wire()


def research_event(**fields: Any) -> Event:
    return ResearchEvent.model_validate(fields).wire()


def wiki_event(**fields: Any) -> Event:
    return WikiEvent.model_validate(fields).wire()


def wiki_done_event(summary: dict[str, Any]) -> Event:
    """The end of a wiki generation: its summary with `regenerated` and `reused` page counts, and
    `reasons` (`{why: pages}` of the regenerated ones, `rag.wiki.freshness`)."""
    return DoneEvent(wiki=summary).wire()


def error_event(code: ErrorCode, message: str) -> Event:
    """An `error` frame; the message is redacted."""
    return ErrorEvent(code=code, message=message).wire()


def stopping_event(what: str) -> Event:
    """The last frame of a stream the server ends because it is stopping: an `error` frame of code
    `server_stopping` whose message starts "the server is stopping: " and goes on with `what` (what
    becomes of the stream's work). Every transport sends this one, in its own form (`api.shutdown`)."""
    return error_event(ErrorCode.SERVER_STOPPING, f"the server is stopping: {what}")


def failure_event(error: Exception, log: logging.Logger, action: str) -> Event:
    """The `error` frame for the exception that ended a stream.

    A `RepoLensError` is expected: its own code and message. Anything else is a bug: logged with its
    traceback (as `<action> failed`) and reported as `internal`, naming the exception.
    """
    if isinstance(error, RepoLensError):
        return error_event(error.code, str(error))
    log.error("%s failed", action, exc_info=error)
    return error_event(ErrorCode.INTERNAL, f"internal error: {type(error).__name__}: {error}")


def done_event(
    *,
    usage: tuple[int, int] = (0, 0),
    timings: dict[str, float | None] | None = None,
    started: float | None = None,
    **fields: Any,
) -> Event:
    """A `done` frame for an answer: `usage` as (prompt, completion) tokens; with `started` (a
    `time.perf_counter()` value) `timings` gets `total_ms`."""
    timings = dict(timings or {})
    if started is not None:
        timings["total_ms"] = round((time.perf_counter() - started) * 1000, 1)
    prompt, completion = usage
    usage_model = Usage(prompt_tokens=prompt, completion_tokens=completion)
    return DoneEvent(usage=usage_model, timings=timings, **fields).wire()


def ingest_done_event(repo: dict[str, Any], report: dict[str, Any]) -> Event:
    return DoneEvent(repo=repo, report=report).wire()


def pong_event() -> Event:
    return PongEvent().wire()


# One encoder for every frame: `json.dumps(..., ensure_ascii=False)` would build a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False)


def encode(event: Event) -> str:
    """The one serialiser: an event as one line of JSON."""
    return _ENCODER.encode(event)


def sse_frame(event: Event) -> str:
    """One event as a Server-Sent Events frame (`event: <type>`, `data: <json>`)."""
    return f"event: {event['type']}\ndata: {encode(event)}\n\n"
