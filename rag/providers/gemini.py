"""Google Gemini over its REST API (`streamGenerateContent?alt=sse`) with httpx.

The key travels in the `x-goog-api-key` header, never in the URL, so it cannot end up in an access
log or an exception message that quotes the URL.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import httpx

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

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
_MAX_DETAIL = 300

# One pooled client per event loop (`rag.providers.pool`), closed with its loop.
_CLIENTS: ClientPool[httpx.AsyncClient] = ClientPool()


def _contents(messages: list[Message]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(systemInstruction, contents): Gemini keeps the system prompt apart and calls the assistant `model`."""
    system = [message.content for message in messages if message.role == "system"]
    names = {call.id: call.name for message in messages for call in message.tool_calls}
    contents: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        if message.role == "tool":
            name = message.name or names.get(message.tool_call_id or "", "tool")
            part = {"functionResponse": {"name": name, "response": {"content": message.content}}}
            contents.append({"role": "user", "parts": [part]})
            continue
        parts: list[dict[str, Any]] = [{"text": message.content}] if message.content else []
        parts += [
            {"functionCall": {"name": call.name, "args": call.arguments}} for call in message.tool_calls
        ]
        contents.append({"role": "model" if message.role == "assistant" else "user", "parts": parts})
    instruction = {"parts": [{"text": "\n\n".join(system)}]} if system else None
    return instruction, contents


def _error(status: int, body: bytes, *, model: str) -> ProviderError:
    try:
        error = json.loads(body)
        error = (error[0] if isinstance(error, list) else error).get("error", {})
    except (ValueError, AttributeError, IndexError):
        error = {}
    detail = redact(str(error.get("message") or body[:_MAX_DETAIL].decode(errors="replace")))[:_MAX_DETAIL]
    reasons = {str(item.get("reason", "")) for item in error.get("details", []) if isinstance(item, dict)}
    lowered = detail.lower()
    if status in (401, 403) or "API_KEY_INVALID" in reasons or "api key not valid" in lowered:
        return ProviderError(
            ErrorCode.AUTH,
            f"the API key was rejected (HTTP {status}); check GOOGLE_API_KEY",
            provider="google",
        )
    if status == 404:
        return ProviderError(
            ErrorCode.MODEL_NOT_FOUND, f"model '{model}' was not found: {detail}", provider="google"
        )
    if status == 429:
        return ProviderError(
            ErrorCode.RATE_LIMIT, f"rate limit or quota exceeded: {detail}", provider="google"
        )
    if "token count" in lowered and "exceeds" in lowered:
        return ProviderError(
            ErrorCode.CONTEXT_LENGTH, f"the prompt is too long for '{model}': {detail}", provider="google"
        )
    if status >= 500:
        return ProviderError(
            ErrorCode.UNAVAILABLE, f"the provider failed (HTTP {status}): {detail}", provider="google"
        )
    return ProviderError(
        ErrorCode.BAD_RESPONSE, f"the provider rejected the request: {detail}", provider="google"
    )


class GeminiProvider:
    """A ChatProvider for the Gemini API (or anything serving its REST shape at `base_url`)."""

    name = "google"

    def __init__(
        self, model: str, api_key: str, *, base_url: str = DEFAULT_BASE_URL, timeout_s: float = 60.0
    ):
        self.model = model
        self._api_key = api_key
        self._base_url = base_url.rstrip("/")
        self._timeout = httpx.Timeout(timeout_s, connect=10.0)

    def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        return stream_with_retry(lambda: self._attempt(request))

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        instruction, contents = _contents(request.messages)
        body: dict[str, Any] = {"contents": contents}
        if instruction:
            body["systemInstruction"] = instruction
        config: dict[str, Any] = {}
        if request.temperature is not None:
            config["temperature"] = request.temperature
        if request.max_tokens:
            config["maxOutputTokens"] = request.max_tokens
        if config:
            body["generationConfig"] = config
        if request.tools:
            declarations = [
                {"name": tool.name, "description": tool.description, "parameters": tool.parameters}
                for tool in request.tools
            ]
            body["tools"] = [{"functionDeclarations": declarations}]
        return body

    async def _attempt(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        model = request.model or self.model
        url = f"{self._base_url}/models/{model}:streamGenerateContent"
        client = await _CLIENTS.get(None, httpx.AsyncClient)
        http_request = client.build_request(
            "POST",
            url,
            params={"alt": "sse"},
            json=self._body(request),
            headers={"x-goog-api-key": self._api_key},
            timeout=self._timeout,
        )
        try:
            response = await client.send(http_request, stream=True)
        except httpx.TimeoutException:
            raise request_timeout(self.name) from None
        except httpx.TransportError as error:
            raise ProviderConnectionError(
                f"could not connect to the provider ({type(error).__name__})", provider=self.name
            ) from None
        try:
            if response.status_code >= 400:
                raise _error(response.status_code, await response.aread(), model=model)
            async for event in self._events(response, model):
                yield event
        except httpx.TimeoutException:
            raise read_timeout(self.name) from None
        except httpx.TransportError as error:
            raise broken_stream(error, self.name) from None
        finally:
            await response.aclose()

    async def _events(self, response: httpx.Response, model: str) -> AsyncGenerator[StreamEvent, None]:
        usage: Usage | None = None
        calls = 0
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            try:
                payload = json.loads(line[5:])
            except json.JSONDecodeError:
                raise ProviderError(
                    ErrorCode.BAD_RESPONSE, "the provider sent malformed JSON", provider=self.name
                ) from None
            if "error" in payload:
                status = int(payload["error"].get("code") or 500)
                raise _error(status, json.dumps(payload).encode(), model=model)
            for candidate in payload.get("candidates", []):
                for part in (candidate.get("content") or {}).get("parts", []):
                    if part.get("text"):
                        yield TextDelta(part["text"])
                    if "functionCall" in part:
                        call = part["functionCall"]
                        yield ToolCallEvent(
                            id=call.get("id") or f"call_{calls}",
                            name=call["name"],
                            arguments=call.get("args") or {},
                        )
                        calls += 1
            metadata = payload.get("usageMetadata")
            if metadata:
                usage = Usage(metadata.get("promptTokenCount", 0), metadata.get("candidatesTokenCount", 0))
        if usage is not None:
            yield usage
