"""The one streaming interface every LLM provider implements.

Callers (the answer service, deep research) never see a provider's wire format: they send a
`ChatRequest` and iterate `TextDelta`, `ToolCallEvent` and `Usage` events. Failures are
`ProviderError`s with a stable code and a message that never contains an API key.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from rag.errors import ErrorCode, RepoLensError
from rag.redact import redact
from rag.types import SearchHit

Role = Literal["system", "user", "assistant", "tool"]

PROVIDER_ERROR_CODES = (
    ErrorCode.AUTH,
    ErrorCode.MODEL_NOT_FOUND,
    ErrorCode.RATE_LIMIT,
    ErrorCode.CONTEXT_LENGTH,
    ErrorCode.UNAVAILABLE,
    ErrorCode.TIMEOUT,
    ErrorCode.BAD_RESPONSE,
    ErrorCode.NOT_CONFIGURED,
)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model asked for, carried on the assistant message that requested it."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Message:
    """One chat turn. `tool_calls` on assistant turns and `tool_call_id` on tool results let a
    tool-calling conversation be replayed to the provider."""

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the model may call; `parameters` is a JSON Schema object."""

    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """`question` and `context` (the user's question as asked, and the retrieved spans the prompt was
    built from) serve providers that answer from code instead of reading the prompt (the offline
    provider); LLM providers ignore them."""

    messages: list[Message]
    model: str
    tools: list[ToolSpec] | None = None
    max_tokens: int | None = None
    temperature: float | None = 0.2
    question: str = ""
    context: tuple[SearchHit, ...] = ()
    # For the offline provider's explained answer: a `rag.graph_walk.Chain`, a `path -> text`
    # reader over the index, and the answer's language code.
    chain: Any = None
    file_text: Any = None
    language: str = "en"
    # The code graph is still being built: the offline answer lists the retrieved code and says so.
    graph_missing: bool = False


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallEvent:
    """A complete tool call (arguments already assembled from the streamed pieces and parsed)."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


StreamEvent = TextDelta | ToolCallEvent | Usage


class ProviderError(RepoLensError):
    """A provider failed; `code` is one of `PROVIDER_ERROR_CODES`."""

    def __init__(self, code: ErrorCode, message: str, *, provider: str | None = None) -> None:
        prefix = f"{provider}: " if provider else ""
        super().__init__(redact(prefix + message), code=code)
        self.provider = provider


@runtime_checkable
class ChatProvider(Protocol):
    """Streams one answer. Closing the iterator (aclose, task cancel) closes the HTTP stream."""

    name: str
    model: str

    def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]: ...


class ProviderConnectionError(ProviderError):
    """The provider could not be reached or dropped the connection; worth one retry before any output."""

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(ErrorCode.UNAVAILABLE, message, provider=provider)


def request_timeout(provider: str | None) -> ProviderError:
    """No response came within the timeout (before any output, so not worth repeating the wait)."""
    return ProviderError(ErrorCode.TIMEOUT, "the request timed out waiting for the model", provider=provider)


def read_timeout(provider: str | None) -> ProviderError:
    """The response started, then the model stopped sending for longer than the timeout."""
    return ProviderError(ErrorCode.TIMEOUT, "the model stopped sending (read timeout)", provider=provider)


def broken_stream(error: BaseException, provider: str | None) -> ProviderError:
    """The connection failed after the answer began: never retried, since it would repeat text."""
    return ProviderError(
        ErrorCode.UNAVAILABLE, f"the stream broke mid-answer ({type(error).__name__})", provider=provider
    )


RETRY_DELAY_S = 0.25


async def stream_with_retry(
    attempt: Callable[[], AsyncGenerator[StreamEvent, None]],
) -> AsyncGenerator[StreamEvent, None]:
    """Run `attempt()`, retrying once if it fails to connect before producing any event.

    Once an event has been yielded a retry would duplicate output, so later failures propagate.
    `aclosing` makes closing this iterator close the attempt (and its HTTP stream) at once.
    """
    for remaining in (1, 0):
        produced = False
        try:
            async with contextlib.aclosing(attempt()) as events:
                async for event in events:
                    produced = True
                    yield event
            return
        except ProviderConnectionError:
            if produced or remaining == 0:
                raise
        await asyncio.sleep(RETRY_DELAY_S)
