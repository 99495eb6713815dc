"""Every OpenAI-style provider (OpenAI, Azure, OpenRouter, DashScope, Ollama, vLLM/LM Studio/llama.cpp)
through streaming chat completions, read straight off the wire.

The stream is parsed from the provider's Server-Sent Events with `json.loads`, line by line off an
aiohttp response: building the SDK's pydantic models for every chunk was the largest single cost of
the server at 200 concurrent streams, and after that httpx's read path (a cancel scope per read, ten
layers of byte/text/line iterators, a pure-Python HTTP parser) was; aiohttp's C parser and stream
reader cost about half as much CPU per chunk (see docs/ARCHITECTURE.md, "Streaming at load"). The
request is the one the `openai` SDK sends (same URL, headers and body, Azure's deployment path and
`api-version` included), and errors map to the same `ProviderError` codes. The SDK itself is not
imported: it takes over a second, which every CLI command paid. Proxies come from the environment
(`HTTPS_PROXY`, `NO_PROXY`, a proxy's login in `~/.netrc`), as with the SDK (`_env_proxy`).

There are no automatic retries: a retry after the first token would duplicate output, so
`stream_with_retry` retries once, and only before anything was produced.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

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
    broken_stream,
    read_timeout,
    request_timeout,
    stream_with_retry,
)
from rag.providers.pool import ClientPool
from rag.redact import redact

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_MAX_DETAIL = 300
_LINE_BYTES = 2**20
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


# One pooled client per event loop (`rag.providers.pool`), closed with its loop.
_CLIENTS: ClientPool[aiohttp.ClientSession] = ClientPool()


def _new_client() -> aiohttp.ClientSession:
    # No cap on connections: 200 concurrent answers are 200 concurrent provider streams. Timeouts are
    # per request (`OpenAICompatProvider._timeout`); proxies per request too (`_env_proxy`), not with
    # `trust_env`. A line of the stream may be up to 2 * `read_bufsize` long (one large delta or tool call).
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None),
        read_bufsize=_LINE_BYTES,
    )


async def _env_proxy(url: str) -> URL | None:
    """The proxy the environment names for `url`, as aiohttp's `trust_env` finds it (`HTTP(S)_PROXY`,
    `NO_PROXY`; its login from `~/.netrc` unless the proxy URL has one), or None.

    Not `trust_env` itself: it also looks up the provider's host in `~/.netrc` as a login, which
    clashes with the `Authorization` header every request sends (aiohttp then refuses the request), and
    each request paid two thread hops for those look-ups, in an answer's way to its first token (at
    200 streams each hop waits for the GIL behind the event loop). Without a proxy in the environment
    (the usual case) this reads only the environment; with one, the `~/.netrc` read is in a thread.
    The login travels in the proxy URL, which aiohttp sends as `Proxy-Authorization`."""
    if urlsplit(url).scheme not in urllib.request.getproxies():
        return None
    try:
        proxy, login = await asyncio.to_thread(get_env_proxy_for_url, URL(url))
    except LookupError:  # `NO_PROXY` names the host
        return None
    return proxy if login is None else proxy.with_user(login.login).with_password(login.password)


def _endpoint(config: OpenAIConfig, model: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """(URL, query, headers) of the streaming call, as the SDK builds them (Azure: deployment path)."""
    headers = {"Accept": "text/event-stream", **dict(config.headers)}
    if config.azure_endpoint:
        root = config.azure_endpoint.rstrip("/")
        headers["api-key"] = config.api_key
        query = {"api-version": config.azure_api_version} if config.azure_api_version else {}
        return f"{root}/openai/deployments/{model}/chat/completions", query, headers
    headers["Authorization"] = f"Bearer {config.api_key}"
    return f"{(config.base_url or DEFAULT_BASE_URL).rstrip('/')}/chat/completions", {}, headers


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


def _body_detail(body: object, fallback: str) -> tuple[str, str]:
    """(error code, key-free message) of an OpenAI error body (`{"error": {...}}` or the inner dict)."""
    inner = body.get("error", body) if isinstance(body, dict) else {}
    inner = inner if isinstance(inner, dict) else {"message": str(inner)}
    message = inner.get("message") or fallback
    return str(inner.get("code") or ""), redact(str(message))[:_MAX_DETAIL]


def status_error(
    status: int | None, body: object, *, provider: str, model: str, key_variable: str, fallback: str = ""
) -> ProviderError:
    """An HTTP error status (None: an error sent inside the stream) as a ProviderError with a stable
    code and an actionable, key-free message."""
    code, detail = _body_detail(body, fallback)
    if status in (401, 403):
        return ProviderError(
            ErrorCode.AUTH,
            f"the API key was rejected (HTTP {status}); check {key_variable}",
            provider=provider,
        )
    if status == 404:
        return ProviderError(
            ErrorCode.MODEL_NOT_FOUND, f"model '{model}' was not found: {detail}", provider=provider
        )
    if status == 429:
        return ProviderError(
            ErrorCode.RATE_LIMIT, f"rate limit or quota exceeded: {detail}", provider=provider
        )
    lowered = detail.lower()
    if code == "context_length_exceeded" or "context length" in lowered or "too many tokens" in lowered:
        return ProviderError(
            ErrorCode.CONTEXT_LENGTH, f"the prompt is too long for '{model}': {detail}", provider=provider
        )
    if status is not None and status >= 500:
        return ProviderError(
            ErrorCode.UNAVAILABLE, f"the provider failed (HTTP {status}): {detail}", provider=provider
        )
    if status is not None:
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

    def add(self, deltas: list[dict[str, Any]]) -> None:
        for delta in deltas:
            call = self._calls.setdefault(
                int(delta.get("index") or 0), {"id": "", "name": "", "arguments": ""}
            )
            if delta.get("id"):
                call["id"] = delta["id"]
            function = delta.get("function")
            if function:
                call["name"] += function.get("name") or ""
                call["arguments"] += function.get("arguments") or ""

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
        # As the SDK: `timeout_s` at most without a byte (headers included), `connect_timeout_s` to connect.
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_read=config.timeout_s, sock_connect=config.connect_timeout_s
        )

    def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
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

    def _error(self, status: int | None, body: object, model: str, fallback: str = "") -> ProviderError:
        return status_error(
            status,
            body,
            provider=self.name,
            model=model,
            key_variable=self._config.key_variable,
            fallback=fallback,
        )

    async def _attempt(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        arguments = self._arguments(request)
        model = arguments["model"]
        url, query, headers = _endpoint(self._config, model)
        client = await _CLIENTS.get(None, _new_client)
        proxy = await _env_proxy(url)
        try:
            response = await client.post(
                url,
                params=query,
                json=arguments,
                headers=headers,
                timeout=self._timeout,
                proxy=proxy,
            )
        except TimeoutError:
            raise request_timeout(self.name) from None
        except (aiohttp.ClientError, OSError, ValueError) as error:
            # ValueError: a URL aiohttp cannot use (no scheme or host), as httpx's UnsupportedProtocol.
            raise ProviderConnectionError(
                f"could not connect to the provider ({type(error).__name__}: {redact(str(error))})",
                provider=self.name,
            ) from None
        try:
            if response.status >= 400:
                raw = await response.read()
                raise self._error(response.status, _json_or_text(raw), model, f"HTTP {response.status}")
            async for event in self._events(response, model):
                yield event
        except TimeoutError:
            raise read_timeout(self.name) from None
        except (aiohttp.ClientError, aiohttp.http_exceptions.HttpProcessingError, OSError) as error:
            raise broken_stream(error, self.name) from None
        finally:
            # An answer closed early (cancel, disconnect) drops its connection rather than reading the rest.
            response.close()

    async def _events(
        self, response: aiohttp.ClientResponse, model: str
    ) -> AsyncGenerator[StreamEvent, None]:
        """Events of one SSE body: `data: {chunk}` lines up to `data: [DONE]`."""
        tool_calls = _ToolCallAssembler()
        async for line in response.content:  # lines, `\n` (or `\r\n`) included
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            try:
                chunk = json.loads(data)
            except ValueError:
                raise ProviderError(
                    ErrorCode.BAD_RESPONSE, "the provider sent malformed JSON", provider=self.name
                ) from None
            if not isinstance(chunk, dict):
                continue
            if chunk.get("error"):
                raise self._error(None, chunk, model, "the provider reported an error")
            usage = chunk.get("usage")
            if usage:
                yield Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    yield TextDelta(delta["content"])
                if delta.get("tool_calls"):
                    tool_calls.add(delta["tool_calls"])
                if choice.get("finish_reason"):
                    for event in tool_calls.events(self.name):
                        yield event
        for event in tool_calls.events(self.name):
            yield event


def _json_or_text(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except ValueError:
        return {"message": raw[:_MAX_DETAIL].decode(errors="replace")}
