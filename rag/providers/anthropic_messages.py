"""Anthropic (Claude) through its native Messages API, with the official `anthropic` SDK.

Why not the AdalFlow bridge: AdalFlow 1.1.3's `AnthropicAPIClient` talks to Anthropic's
OpenAI-compatibility endpoint through the OpenAI SDK, not the Messages API, and wraps each call
in `backoff` retries (also on 400s). The native stream is what Anthropic documents and what
carries tool use faithfully (`content_block_start` with the tool's id and name, then
`input_json_delta` fragments), so this provider reads it directly.

The SDK's own retries are off (`max_retries=0`): `stream_with_retry` retries once, and only
before the first event, so no answer is ever duplicated.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx2  # the transport the anthropic SDK streams over; its errors surface mid-stream

from rag.errors import ErrorCode
from rag.providers.base import (
    ChatRequest,
    Message,
    ProviderConnectionError,
    ProviderError,
    StreamEvent,
    TextDelta,
    ToolCallEvent,
    Usage,
    broken_stream,
    read_timeout,
    request_timeout,
    stream_with_retry,
)
from rag.providers.pool import ClientPool
from rag.redact import redact

DEFAULT_BASE_URL = "https://api.anthropic.com"
# The Messages API requires max_tokens; used when the caller gives none.
DEFAULT_MAX_TOKENS = 4096
_MAX_DETAIL = 300


@dataclass(frozen=True)
class AnthropicConfig:
    api_key: str
    base_url: str = DEFAULT_BASE_URL
    timeout_s: float = 60.0
    connect_timeout_s: float = 10.0


# One client per event loop and endpoint (`rag.providers.pool`): the SDK's connection pool
# belongs to its loop, and is closed with it.
_CLIENTS: ClientPool[anthropic.AsyncAnthropic] = ClientPool()


async def _client(config: AnthropicConfig) -> anthropic.AsyncAnthropic:
    return await _CLIENTS.get(
        config,
        lambda: anthropic.AsyncAnthropic(
            api_key=config.api_key,
            base_url=config.base_url,
            max_retries=0,
            timeout=anthropic.Timeout(config.timeout_s, connect=config.connect_timeout_s),
        ),
    )


def messages_json(messages: list[Message]) -> tuple[str, list[dict[str, Any]]]:
    """(system, messages) in the Messages API shape: the system prompt apart, tool calls as
    `tool_use` blocks on the assistant turn and tool results as `tool_result` blocks on a user turn."""
    system = "\n\n".join(message.content for message in messages if message.role == "system")
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        if message.role == "tool":
            block = {"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.content}
            if turns and turns[-1]["role"] == "user" and isinstance(turns[-1]["content"], list):
                turns[-1]["content"].append(block)  # several results answer one assistant turn
            else:
                turns.append({"role": "user", "content": [block]})
            continue
        if message.role == "assistant" and message.tool_calls:
            blocks: list[dict[str, Any]] = (
                [{"type": "text", "text": message.content}] if message.content else []
            )
            blocks += [
                {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
                for call in message.tool_calls
            ]
            turns.append({"role": "assistant", "content": blocks})
            continue
        turns.append({"role": message.role, "content": message.content})
    return system, turns


def map_error(error: anthropic.APIError, *, model: str) -> ProviderError:
    """The SDK's exception as a ProviderError with a stable code and a key-free message."""
    if isinstance(error, anthropic.APITimeoutError):
        return request_timeout("anthropic")
    if isinstance(error, anthropic.APIConnectionError):
        return ProviderConnectionError(
            f"could not connect to the provider ({type(error).__name__})", provider="anthropic"
        )
    detail = _detail(error)
    status = getattr(error, "status_code", None)
    if isinstance(error, anthropic.AuthenticationError | anthropic.PermissionDeniedError):
        return ProviderError(
            ErrorCode.AUTH,
            f"the API key was rejected (HTTP {status}); check ANTHROPIC_API_KEY",
            provider="anthropic",
        )
    if isinstance(error, anthropic.NotFoundError):
        return ProviderError(
            ErrorCode.MODEL_NOT_FOUND, f"model '{model}' was not found: {detail}", provider="anthropic"
        )
    if isinstance(error, anthropic.RateLimitError):
        return ProviderError(
            ErrorCode.RATE_LIMIT, f"rate limit or quota exceeded: {detail}", provider="anthropic"
        )
    lowered = detail.lower()
    if "prompt is too long" in lowered or "context window" in lowered or "too many tokens" in lowered:
        return ProviderError(
            ErrorCode.CONTEXT_LENGTH, f"the prompt is too long for '{model}': {detail}", provider="anthropic"
        )
    if (
        isinstance(error, anthropic.APIStatusError)
        and (status or 0) >= 500
        or _error_type(error)
        in (
            "overloaded_error",
            "api_error",
        )
    ):
        shown = f"HTTP {status}" if status and status >= 500 else _error_type(error)
        return ProviderError(
            ErrorCode.UNAVAILABLE, f"the provider failed ({shown}): {detail}", provider="anthropic"
        )
    if isinstance(error, anthropic.APIStatusError):
        return ProviderError(
            ErrorCode.BAD_RESPONSE, f"the provider rejected the request: {detail}", provider="anthropic"
        )
    return ProviderError(
        ErrorCode.UNAVAILABLE, f"the provider failed mid-answer: {detail}", provider="anthropic"
    )


def _error_body(error: anthropic.APIError) -> dict[str, Any]:
    body = error.body if isinstance(error.body, dict) else {}
    inner = body.get("error")
    return inner if isinstance(inner, dict) else body


def _error_type(error: anthropic.APIError) -> str:
    return str(_error_body(error).get("type") or "")


def _detail(error: anthropic.APIError) -> str:
    return redact(str(_error_body(error).get("message") or error.message))[:_MAX_DETAIL]


class _Blocks:
    """Content blocks by index: text is streamed as it arrives, a tool call is emitted whole at
    its `content_block_stop`, once its `input_json_delta` fragments are joined and parsed."""

    def __init__(self) -> None:
        self._tools: dict[int, dict[str, str]] = {}

    def start(self, index: int, block: Any) -> None:
        if block.type == "tool_use":
            self._tools[index] = {"id": block.id, "name": block.name, "json": ""}

    def add_json(self, index: int, fragment: str) -> None:
        if index in self._tools:
            self._tools[index]["json"] += fragment

    def stop(self, index: int) -> ToolCallEvent | None:
        call = self._tools.pop(index, None)
        if call is None:
            return None
        try:
            arguments = json.loads(call["json"] or "{}")
        except json.JSONDecodeError:
            raise ProviderError(
                ErrorCode.BAD_RESPONSE,
                f"the model sent invalid JSON arguments for tool '{call['name']}'",
                provider="anthropic",
            ) from None
        return ToolCallEvent(id=call["id"], name=call["name"], arguments=arguments)


class AnthropicProvider:
    """A ChatProvider over the Anthropic Messages API (`POST /v1/messages`, `stream: true`)."""

    name = "anthropic"
    supports_tools = True

    def __init__(self, model: str, config: AnthropicConfig) -> None:
        self.model = model
        self._config = config

    def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        return stream_with_retry(lambda: self._attempt(request))

    def _arguments(self, request: ChatRequest) -> dict[str, Any]:
        system, messages = messages_json(request.messages)
        arguments: dict[str, Any] = {
            "model": request.model or self.model,
            "messages": messages,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "stream": True,
        }
        if system:
            arguments["system"] = system
        # No `temperature`: the Messages API of the current SDK (2.x) no longer takes one.
        if request.tools:
            arguments["tools"] = [
                {"name": tool.name, "description": tool.description, "input_schema": tool.parameters}
                for tool in request.tools
            ]
        return arguments

    async def _attempt(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        arguments = self._arguments(request)
        model = arguments["model"]
        try:
            client = await _client(self._config)
            response = await client.messages.create(**arguments)
        except anthropic.APIError as error:
            raise map_error(error, model=model) from None
        blocks = _Blocks()
        prompt_tokens = completion_tokens = 0
        try:
            async for event in response:
                if event.type == "message_start":
                    prompt_tokens = event.message.usage.input_tokens or 0
                    completion_tokens = event.message.usage.output_tokens or 0
                elif event.type == "content_block_start":
                    blocks.start(event.index, event.content_block)
                elif event.type == "content_block_delta":
                    if event.delta.type == "text_delta" and event.delta.text:
                        yield TextDelta(event.delta.text)
                    elif event.delta.type == "input_json_delta":
                        blocks.add_json(event.index, event.delta.partial_json)
                elif event.type == "content_block_stop":
                    call = blocks.stop(event.index)
                    if call is not None:
                        yield call
                elif event.type == "message_delta":
                    completion_tokens = event.usage.output_tokens or completion_tokens
                elif event.type == "message_stop":
                    yield Usage(prompt_tokens, completion_tokens)
        except anthropic.APIError as error:
            raise map_error(error, model=model) from None
        except httpx2.TimeoutException:
            raise read_timeout(self.name) from None
        except (httpx2.HTTPError, OSError) as error:
            raise broken_stream(error, self.name) from None
        finally:
            await response.close()
