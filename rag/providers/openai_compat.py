"""Every OpenAI-style provider (OpenAI, Azure, OpenRouter, DashScope, Ollama, vLLM/LM Studio/llama.cpp)
through the official SDK's streaming chat completions.

The SDK's own retries are off (`max_retries=0`): a retry after the first token would duplicate output,
so `stream_with_retry` retries once, and only before anything was produced.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx2  # the transport the openai SDK streams over; its errors surface mid-stream
import openai

from rag.errors import ErrorCode
from rag.providers.base import (
    ChatRequest,
    Message,
    ProviderConnectionError,
    ProviderError,
    StreamEvent,
    TextDelta,
    ToolCallEvent,
    ToolSpec,
    Usage,
    stream_with_retry,
)
from rag.redact import redact

_MAX_DETAIL = 300
# Reasoning models reject `temperature` and `max_tokens` (they take `max_completion_tokens`).
_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")


@dataclass(frozen=True)
class OpenAIConfig:
    """How to reach one OpenAI-style endpoint. `key_variable` names the setting to fix on an auth error."""

    api_key: str
    base_url: str | None
    key_variable: str
    timeout_s: float = 60.0
    connect_timeout_s: float = 10.0
    azure_endpoint: str | None = None
    azure_api_version: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    max_tokens_field: str = "max_tokens"


# One client per event loop and endpoint: the SDK's connection pool belongs to the loop that made it.
_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[OpenAIConfig, openai.AsyncOpenAI]] = (
    weakref.WeakKeyDictionary()
)


def _client(config: OpenAIConfig) -> openai.AsyncOpenAI:
    clients = _CLIENTS.setdefault(asyncio.get_running_loop(), {})
    if config not in clients:
        timeout = openai.Timeout(config.timeout_s, connect=config.connect_timeout_s)
        common: dict[str, Any] = {
            "api_key": config.api_key,
            "max_retries": 0,
            "timeout": timeout,
            "default_headers": dict(config.headers) or None,
        }
        if config.azure_endpoint:
            clients[config] = openai.AsyncAzureOpenAI(
                azure_endpoint=config.azure_endpoint, api_version=config.azure_api_version, **common
            )
        else:
            clients[config] = openai.AsyncOpenAI(base_url=config.base_url, **common)
    return clients[config]


def _message_json(message: Message) -> dict[str, Any]:
    data: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        data["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id:
        data["tool_call_id"] = message.tool_call_id
    return data


def _tool_json(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
    }


def _detail(error: openai.APIError) -> str:
    body = error.body if isinstance(error.body, dict) else {}
    message = (body.get("message") or (body.get("error") or {}).get("message")) if body else None
    return redact(str(message or error.message))[:_MAX_DETAIL]


def map_error(error: openai.APIError, *, provider: str, model: str, key_variable: str) -> ProviderError:
    """The SDK's exception as a ProviderError with a stable code and an actionable, key-free message."""
    if isinstance(error, openai.APITimeoutError):
        return ProviderError(
            ErrorCode.TIMEOUT, "the request timed out waiting for the model", provider=provider
        )
    if isinstance(error, openai.APIConnectionError):
        return ProviderConnectionError(
            f"could not connect to the provider ({redact(str(error))})", provider=provider
        )
    code = str(getattr(error, "code", "") or "")
    detail = _detail(error)
    if isinstance(error, openai.AuthenticationError | openai.PermissionDeniedError):
        status = getattr(error, "status_code", "")
        return ProviderError(
            ErrorCode.AUTH,
            f"the API key was rejected (HTTP {status}); check {key_variable}",
            provider=provider,
        )
    if isinstance(error, openai.NotFoundError):
        return ProviderError(
            ErrorCode.MODEL_NOT_FOUND, f"model '{model}' was not found: {detail}", provider=provider
        )
    if isinstance(error, openai.RateLimitError):
        return ProviderError(
            ErrorCode.RATE_LIMIT, f"rate limit or quota exceeded: {detail}", provider=provider
        )
    lowered = detail.lower()
    if code == "context_length_exceeded" or "context length" in lowered or "too many tokens" in lowered:
        return ProviderError(
            ErrorCode.CONTEXT_LENGTH, f"the prompt is too long for '{model}': {detail}", provider=provider
        )
    if isinstance(error, openai.APIStatusError) and error.status_code >= 500:
        return ProviderError(
            ErrorCode.UNAVAILABLE,
            f"the provider failed (HTTP {error.status_code}): {detail}",
            provider=provider,
        )
    if isinstance(error, openai.APIStatusError):
        return ProviderError(
            ErrorCode.BAD_RESPONSE, f"the provider rejected the request: {detail}", provider=provider
        )
    return ProviderError(
        ErrorCode.UNAVAILABLE, f"the provider failed mid-answer: {detail}", provider=provider
    )


class _ToolCallAssembler:
    """Collects `tool_calls` deltas (id and name first, then argument fragments) by index."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, str]] = {}

    def add(self, deltas: list[Any]) -> None:
        for delta in deltas:
            call = self._calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            if delta.id:
                call["id"] = delta.id
            if delta.function is not None:
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""

    def events(self, provider: str) -> list[ToolCallEvent]:
        events = []
        for index in sorted(self._calls):
            call = self._calls[index]
            try:
                arguments = json.loads(call["arguments"] or "{}")
            except json.JSONDecodeError:
                raise ProviderError(
                    ErrorCode.BAD_RESPONSE,
                    f"the model sent invalid JSON arguments for tool '{call['name']}'",
                    provider=provider,
                ) from None
            events.append(
                ToolCallEvent(id=call["id"] or f"call_{index}", name=call["name"], arguments=arguments)
            )
        self._calls.clear()
        return events


class OpenAICompatProvider:
    """A ChatProvider over any OpenAI-style `/chat/completions` endpoint."""

    def __init__(self, name: str, model: str, config: OpenAIConfig) -> None:
        self.name = name
        self.model = model
        self._config = config

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        return stream_with_retry(lambda: self._attempt(request))

    def _arguments(self, request: ChatRequest) -> dict[str, Any]:
        model = request.model or self.model
        arguments: dict[str, Any] = {
            "model": model,
            "messages": [_message_json(message) for message in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        reasoning = model.startswith(_REASONING_PREFIXES)
        if request.temperature is not None and not reasoning:
            arguments["temperature"] = request.temperature
        if request.max_tokens:
            arguments["max_completion_tokens" if reasoning else self._config.max_tokens_field] = (
                request.max_tokens
            )
        if request.tools:
            arguments["tools"] = [_tool_json(tool) for tool in request.tools]
        return arguments

    async def _attempt(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        arguments = self._arguments(request)
        model = arguments["model"]
        tool_calls = _ToolCallAssembler()
        try:
            response = await _client(self._config).chat.completions.create(**arguments)
        except openai.APIError as error:
            raise map_error(
                error, provider=self.name, model=model, key_variable=self._config.key_variable
            ) from None
        try:
            async for chunk in response:
                if chunk.usage is not None:
                    yield Usage(chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0)
                for choice in chunk.choices:
                    if choice.delta.content:
                        yield TextDelta(choice.delta.content)
                    if choice.delta.tool_calls:
                        tool_calls.add(choice.delta.tool_calls)
                    if choice.finish_reason:
                        for event in tool_calls.events(self.name):
                            yield event
            for event in tool_calls.events(self.name):
                yield event
        except openai.APIError as error:
            raise map_error(
                error, provider=self.name, model=model, key_variable=self._config.key_variable
            ) from None
        except httpx2.TimeoutException:
            raise ProviderError(
                ErrorCode.TIMEOUT, "the model stopped sending (read timeout)", provider=self.name
            ) from None
        except (httpx2.HTTPError, OSError) as error:
            raise ProviderError(
                ErrorCode.UNAVAILABLE,
                f"the stream broke mid-answer ({type(error).__name__})",
                provider=self.name,
            ) from None
        finally:
            await response.close()
