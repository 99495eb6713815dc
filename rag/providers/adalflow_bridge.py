"""AdalFlow model clients as RepoLens `ChatProvider`s, and AWS Bedrock through AdalFlow.

`AdalFlowProvider` drives any AdalFlow `ModelClient` through its own protocol: `call(api_kwargs,
ModelType.LLM)` with `stream=True`, then `parse_chat_completion(...)`, whose `raw_response` is the
client's stream of raw chunks. A `StreamAdapter` per vendor builds the `api_kwargs` from a
`ChatRequest`, turns the raw chunks into `TextDelta` / `ToolCallEvent` / `Usage` as they arrive,
maps the vendor's exceptions onto the provider error codes, and closes the stream.

AdalFlow's clients are synchronous where it matters (Bedrock's `acall` is not implemented), so the
stream is read in a dedicated thread and handed to the event loop one event at a time; closing the
async iterator (aclose, task cancel) stops the thread and closes the vendor's HTTP stream.

Importing AdalFlow is deferred to the first use (it takes seconds and reads tiktoken encodings at
import): `load_adalflow()` seeds the offline tiktoken cache first, so it imports without network.

Bedrock: AdalFlow's `BedrockAPIClient` streams with `converse_stream`, tool use included. Its
runtime client is built without `endpoint_url`, timeouts or a retry policy, so it is replaced by
one that has them (`AWS_ENDPOINT_URL_BEDROCK_RUNTIME` points it at a gateway or a test server).
Credentials use deepwiki-open's names: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (optionally
`AWS_SESSION_TOKEN`), `AWS_REGION`, and `AWS_ROLE_ARN` to assume a role first (STS).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

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
    stream_with_retry,
)
from rag.redact import redact, register_configured_secret, register_secret

_MAX_DETAIL = 300
_DONE = object()


@functools.cache
def load_adalflow() -> None:
    """Make AdalFlow importable offline and quiet: seed tiktoken's cache (AdalFlow reads its
    encodings at import) and keep its optional-integration notices out of our logs."""
    from rag.tokens import seed_tiktoken_cache

    seed_tiktoken_cache()
    logging.getLogger("adalflow.tracing.mlflow_integration").setLevel(logging.ERROR)


class StreamAdapter(Protocol):
    """What one vendor's AdalFlow client needs from the bridge."""

    def api_kwargs(self, request: ChatRequest, model: str) -> dict[str, Any]: ...

    def events(self, chunks: Iterable[Any]) -> Iterator[StreamEvent]: ...

    def error(self, error: Exception, model: str) -> ProviderError | None: ...

    def close(self, completion: Any) -> None: ...


class AdalFlowProvider:
    """A ChatProvider over an AdalFlow `ModelClient` (see the module docstring)."""

    def __init__(
        self,
        name: str,
        model: str,
        client: Callable[[], Any],
        adapter: StreamAdapter,
        *,
        supports_tools: bool = True,
    ) -> None:
        self.name = name
        self.model = model
        self.supports_tools = supports_tools
        self._client = client
        self._adapter = adapter

    def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        return stream_with_retry(lambda: self._attempt(request))

    async def _attempt(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        model = request.model or self.model
        if not self.supports_tools:
            request = dataclasses.replace(request, tools=None)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()
        opened: list[Any] = []

        def put(item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def read() -> None:
            try:
                for event in self._events(request, model, opened, stop):
                    put(event)
                put(_DONE)
            except Exception as error:
                put(error)
            finally:
                self._close(opened)

        worker = threading.Thread(target=read, name=f"{self.name}-stream", daemon=True)
        worker.start()
        try:
            while (item := await queue.get()) is not _DONE:
                if isinstance(item, Exception):
                    raise self._mapped(item, model) from None
                yield item
        finally:
            stop.set()
            self._close(opened)

    def _events(
        self, request: ChatRequest, model: str, opened: list[Any], stop: threading.Event
    ) -> Iterator[StreamEvent]:
        """Runs in the worker thread: AdalFlow's call, its parsed stream, our events."""
        load_adalflow()
        from adalflow.core.types import ModelType

        client = self._client()
        completion = client.call(
            api_kwargs=self._adapter.api_kwargs(request, model), model_type=ModelType.LLM
        )
        opened.append(completion)
        output = client.parse_chat_completion(completion)
        if output.error:
            raise ProviderError(
                ErrorCode.BAD_RESPONSE, redact(str(output.error))[:_MAX_DETAIL], provider=self.name
            )
        for event in self._adapter.events(output.raw_response):
            if stop.is_set():
                return
            yield event

    def _close(self, opened: list[Any]) -> None:
        while opened:
            with contextlib.suppress(Exception):
                self._adapter.close(opened.pop())

    def _mapped(self, error: Exception, model: str) -> ProviderError:
        if isinstance(error, ProviderError):
            return error
        mapped = self._adapter.error(error, model)
        if mapped is not None:
            return mapped
        return ProviderError(
            ErrorCode.UNAVAILABLE, f"the provider failed ({type(error).__name__})", provider=self.name
        )


# ---- AWS Bedrock (ConverseStream) ----------------------------------------------------------------


@dataclass(frozen=True)
class BedrockConfig:
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"
    session_token: str | None = None
    role_arn: str | None = None
    endpoint_url: str | None = None
    sts_endpoint_url: str | None = None
    timeout_s: float = 60.0
    connect_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        for secret in (self.secret_access_key, self.session_token, self.access_key_id):
            register_configured_secret(secret)


_AUTH_CODES = {
    "UnrecognizedClientException",
    "AccessDeniedException",
    "InvalidSignatureException",
    "ExpiredTokenException",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
}
_UNAVAILABLE_CODES = {
    "InternalServerException",
    "ServiceUnavailableException",
    "ModelStreamErrorException",
    "ModelNotReadyException",
    "ModelErrorException",
}
_RATE_CODES = {"ThrottlingException", "ServiceQuotaExceededException", "TooManyRequestsException"}
_CLIENTS: dict[BedrockConfig, Any] = {}
_CLIENTS_LOCK = threading.Lock()
_ROLE_CREDENTIALS: dict[tuple[str, str], tuple[dict[str, str], float]] = {}


def bedrock_client(config: BedrockConfig) -> Any:
    """AdalFlow's `BedrockAPIClient` with a runtime client that has our endpoint, timeouts and no
    retries (`stream_with_retry` retries once, before output); one per configuration."""
    with _CLIENTS_LOCK:
        cached = _CLIENTS.get(config)
        if cached is not None and not _role_expired(config):
            return cached
    load_adalflow()
    # botocore logs request headers and response bodies at DEBUG, STS's temporary keys included,
    # before anything could register them for redaction, and chats at INFO: warnings only.
    logging.getLogger("botocore").setLevel(logging.WARNING)
    import boto3
    from adalflow.components.model_client.bedrock_client import BedrockAPIClient
    from botocore.config import Config

    credentials = _credentials(config)
    client = BedrockAPIClient(
        aws_profile_name=None,
        aws_region_name=config.region,
        **{f"aws_{k}": v for k, v in credentials.items()},
    )
    session = boto3.Session(region_name=config.region, **{f"aws_{k}": v for k, v in credentials.items()})
    client.sync_client = session.client(
        "bedrock-runtime",
        endpoint_url=config.endpoint_url,
        config=Config(
            connect_timeout=config.connect_timeout_s,
            read_timeout=config.timeout_s,
            retries={"total_max_attempts": 1},
        ),
    )
    with _CLIENTS_LOCK:
        _CLIENTS[config] = client
    return client


def _credentials(config: BedrockConfig) -> dict[str, str]:
    """The keys to sign with: the configured ones, or a role's temporary ones (`AWS_ROLE_ARN`)."""
    keys = {"access_key_id": config.access_key_id, "secret_access_key": config.secret_access_key}
    if config.session_token:
        keys["session_token"] = config.session_token
    if not config.role_arn:
        return keys
    cache_key = (config.role_arn, config.access_key_id)
    cached = _ROLE_CREDENTIALS.get(cache_key)
    if cached is not None and cached[1] > time.time():
        for value in cached[0].values():  # masked in the scope of each use (the cache outlives a request)
            register_secret(value)
        return cached[0]
    import boto3
    from botocore.config import Config

    sts = boto3.Session(region_name=config.region, **{f"aws_{k}": v for k, v in keys.items()}).client(
        "sts", endpoint_url=config.sts_endpoint_url, config=Config(retries={"total_max_attempts": 1})
    )
    answer = sts.assume_role(RoleArn=config.role_arn, RoleSessionName="repolens")["Credentials"]
    role_keys = {
        "access_key_id": answer["AccessKeyId"],
        "secret_access_key": answer["SecretAccessKey"],
        "session_token": answer["SessionToken"],
    }
    for value in role_keys.values():
        register_secret(value)
    expires = answer["Expiration"].timestamp() - 300  # renew five minutes early
    _ROLE_CREDENTIALS[cache_key] = (role_keys, expires)
    return role_keys


def _role_expired(config: BedrockConfig) -> bool:
    if not config.role_arn:
        return False
    cached = _ROLE_CREDENTIALS.get((config.role_arn, config.access_key_id))
    return cached is None or cached[1] <= time.time()


def converse_messages(messages: list[Message]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system, messages) in the Converse shape. Bedrock wants user and assistant turns to
    alternate, so consecutive turns of one role (tool results, then a question) are merged."""
    system = [
        {"text": message.content} for message in messages if message.role == "system" and message.content
    ]
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"
        content: list[dict[str, Any]]
        if message.role == "tool":
            content = [
                {"toolResult": {"toolUseId": message.tool_call_id, "content": [{"text": message.content}]}}
            ]
        else:
            content = [{"text": message.content}] if message.content else []
            content += [
                {"toolUse": {"toolUseId": call.id, "name": call.name, "input": call.arguments}}
                for call in message.tool_calls
            ]
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(content)
        else:
            turns.append({"role": role, "content": content})
    return system, turns


class BedrockConverseAdapter:
    """ConverseStream chunks (`contentBlockDelta`, `contentBlockStart.toolUse`, `metadata`, ...) as events."""

    def api_kwargs(self, request: ChatRequest, model: str) -> dict[str, Any]:
        system, messages = converse_messages(request.messages)
        kwargs: dict[str, Any] = {"modelId": model, "messages": messages, "stream": True}
        if system:
            kwargs["system"] = system
        inference: dict[str, Any] = {}
        if request.max_tokens:
            inference["maxTokens"] = request.max_tokens
        if request.temperature is not None:
            inference["temperature"] = request.temperature
        if inference:
            kwargs["inferenceConfig"] = inference
        if request.tools:
            specs = [
                {
                    "toolSpec": {
                        "name": t.name,
                        "description": t.description,
                        "inputSchema": {"json": t.parameters},
                    }
                }
                for t in request.tools
            ]
            kwargs["toolConfig"] = {"tools": specs}
        return kwargs

    def events(self, chunks: Iterable[dict[str, Any]]) -> Iterator[StreamEvent]:
        """Text as it arrives; a tool call whole at its `contentBlockStop`, its input fragments joined."""
        tools: dict[int, dict[str, str]] = {}
        for chunk in chunks:
            if "contentBlockStart" in chunk:
                start = chunk["contentBlockStart"]
                tool = start.get("start", {}).get("toolUse")
                if tool:
                    tools[start["contentBlockIndex"]] = {
                        "id": tool["toolUseId"],
                        "name": tool["name"],
                        "json": "",
                    }
            elif "contentBlockDelta" in chunk:
                block = chunk["contentBlockDelta"]
                delta = block.get("delta", {})
                if delta.get("text"):
                    yield TextDelta(delta["text"])
                if "toolUse" in delta and block["contentBlockIndex"] in tools:
                    tools[block["contentBlockIndex"]]["json"] += delta["toolUse"].get("input", "")
            elif "contentBlockStop" in chunk:
                call = tools.pop(chunk["contentBlockStop"]["contentBlockIndex"], None)
                if call is not None:
                    yield _tool_call(call)
            elif "metadata" in chunk:
                usage = chunk["metadata"].get("usage", {})
                yield Usage(usage.get("inputTokens", 0), usage.get("outputTokens", 0))

    def close(self, completion: Any) -> None:
        stream = completion.get("stream") if isinstance(completion, dict) else None
        if stream is not None:
            stream.close()

    def error(self, error: Exception, model: str) -> ProviderError | None:
        from botocore import exceptions

        if isinstance(error, exceptions.ClientError):
            return _client_error(error, model)
        if isinstance(error, exceptions.ReadTimeoutError | exceptions.ConnectTimeoutError):
            return ProviderError(ErrorCode.TIMEOUT, "the model stopped sending (timeout)", provider="bedrock")
        if isinstance(error, exceptions.EndpointConnectionError):
            return ProviderConnectionError("could not connect to Bedrock", provider="bedrock")
        if isinstance(error, exceptions.NoCredentialsError | exceptions.PartialCredentialsError):
            return ProviderError(
                ErrorCode.NOT_CONFIGURED,
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                provider="bedrock",
            )
        if isinstance(error, exceptions.BotoCoreError | OSError):
            return broken_stream(error, "bedrock")
        return None


def _tool_call(call: dict[str, str]) -> ToolCallEvent:
    try:
        arguments = json.loads(call["json"] or "{}")
    except json.JSONDecodeError:
        raise ProviderError(
            ErrorCode.BAD_RESPONSE,
            f"the model sent invalid JSON arguments for tool '{call['name']}'",
            provider="bedrock",
        ) from None
    return ToolCallEvent(id=call["id"], name=call["name"], arguments=arguments)


def _client_error(error: Any, model: str) -> ProviderError:
    """A botocore `ClientError` (HTTP error or an `exception` event mid-stream) by its AWS error code."""
    details = error.response.get("Error", {})
    code = str(details.get("Code", ""))
    code = code[:1].upper() + code[1:]  # exception events name it `modelStreamErrorException`
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    detail = redact(str(details.get("Message") or code))[:_MAX_DETAIL]
    lowered = detail.lower()
    if code in _AUTH_CODES or status in (401, 403):
        return ProviderError(
            ErrorCode.AUTH,
            f"AWS rejected the credentials ({code or status}); "
            "check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ROLE_ARN",
            provider="bedrock",
        )
    if code in _RATE_CODES or status == 429:
        return ProviderError(
            ErrorCode.RATE_LIMIT, f"rate limit or quota exceeded: {detail}", provider="bedrock"
        )
    if code == "ResourceNotFoundException" or "model identifier is invalid" in lowered:
        return ProviderError(
            ErrorCode.MODEL_NOT_FOUND, f"model '{model}' was not found: {detail}", provider="bedrock"
        )
    if "too long" in lowered or "too many tokens" in lowered or "context" in lowered:
        return ProviderError(
            ErrorCode.CONTEXT_LENGTH, f"the prompt is too long for '{model}': {detail}", provider="bedrock"
        )
    if code == "ModelTimeoutException":
        return ProviderError(ErrorCode.TIMEOUT, f"the model timed out: {detail}", provider="bedrock")
    if code in _UNAVAILABLE_CODES or status >= 500:
        return ProviderError(
            ErrorCode.UNAVAILABLE, f"Bedrock failed ({code or status}): {detail}", provider="bedrock"
        )
    return ProviderError(
        ErrorCode.BAD_RESPONSE, f"Bedrock rejected the request: {detail}", provider="bedrock"
    )


def bedrock_provider(model: str, config: BedrockConfig) -> AdalFlowProvider:
    return AdalFlowProvider("bedrock", model, lambda: bedrock_client(config), BedrockConverseAdapter())
