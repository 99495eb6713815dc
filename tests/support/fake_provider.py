"""A fake LLM provider: a real HTTP server on 127.0.0.1 speaking OpenAI's and Gemini's streaming wire formats.

Use it wherever a test needs an LLM. It is a plain asyncio server (HTTP/1.1 via h11) running in a
background thread, so the clients under test (the `openai` SDK, httpx) talk to it over real sockets.

Quick start::

    from tests.support.fake_provider import FakeResponse  # the fixtures come from tests/conftest.py

    def test_something(openai_fake):  # `fake_provider`, with OPENAI_API_KEY + OPENAI_BASE_URL set for it
        openai_fake.script(FakeResponse(text="Hello from the fake", chunks=4, delay=0.01))
        ...  # run code that streams from provider "openai"
        assert openai_fake.requests[-1].body["stream"] is True

Endpoints (any path prefix is accepted, so Azure/Ollama/OpenRouter-style base URLs work too):
- `POST .../chat/completions`: OpenAI chat completions. `stream: true` gets SSE chunks
  (`data: {...}` ... `data: [DONE]`), incl. assembled-by-client `tool_calls` deltas and a final usage
  chunk; `stream: false` gets one `chat.completion` object.
- `POST .../models/{model}:streamGenerateContent?alt=sse`: Gemini SSE (`candidates[].content.parts[]`
  with `text` or `functionCall`, `usageMetadata` on the last event).
- `POST .../v1/messages`: the Anthropic Messages API stream, and `POST /model/{id}/converse-stream`:
  Bedrock ConverseStream in AWS event-stream framing (see `tests.support.fake_vendors`);
  `.anthropic_base_url` / `anthropic_env()` and `.bedrock_endpoint_url` / `bedrock_env()` point at them;
  STS `AssumeRole` (`POST /`, form `Action=AssumeRole`) answers with `fake_vendors.ROLE_CREDENTIALS`.

Scripting (`fake_provider.script(*responses)` queues `FakeResponse`s, consumed one per request, in order):
- `FakeResponse(text=..., chunks=N, delay=s)`: the text split into N pieces (default: one per word),
  `delay` seconds before each piece; `first_delay` before the first one.
- `FakeResponse(tool_calls=[{"name": "grep", "arguments": {"pattern": "x"}}], text=None)`: tool calls
  (OpenAI: split over several `tool_calls` deltas; Gemini: `functionCall` parts).
- `FakeResponse(status=401|404|429|400|500|503, error_code=...)`: an HTTP error with the provider's real
  error body shape (`FakeResponse(status=400, error_code="context_length_exceeded")` for a too-long
  prompt). The 401 body echoes the API key the client sent, like real providers do, so tests can check
  that our error messages redact it.
- `FakeResponse(text=..., fail_after=N)`: send N pieces, then an in-band error event
  (`fail_mode="error_event"`, the default) or cut the TCP connection mid-body (`fail_mode="close"`).
- `FakeResponse(drop=True)`: read the request, then close the connection without any response
  (what a client sees as a connection error before the first token).

With an empty script it answers in an echo style: it repeats the last user question and cites the first
`path:start-end` it finds in the prompt, e.g. `You asked: "how?". See pkg/mod.py:3-9.`.

Recorded for assertions: `requests` (`RecordedRequest(method, path, query, headers, body)`),
`disconnects` (clients that went away mid-stream), `wait_for_disconnect(timeout)`, `completed`
(responses fully sent). `expected_key` (default None = accept any) makes every request with another key
get a real-shaped 401. `.base_url` is the OpenAI-style base (`http://127.0.0.1:PORT/v1`, for
`OPENAI_BASE_URL`), `.gemini_base_url` the Gemini base (for `GOOGLE_API_BASE_URL`); `openai_env()` and
`gemini_env()` return the environment variables that point our providers at the fake.

The server is started once per test session; the `fake_provider` fixture resets its script and records
for every test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import h11
import pytest

from tests.support import fake_vendors

FAKE_API_KEY = "sk-fake-test-key-0123456789abcdef"
FAKE_AWS_KEY_ID = "AKIAFAKETEST01234567"
FAKE_AWS_SECRET = "fake/aws+secret-0123456789abcdefghijklmnopq"
# One request per connection: clients never reuse a socket we are about to close.
_CLOSE = [("connection", "close")]
_CITATION = re.compile(r"([\w./-]+\.\w+):(\d+)-(\d+)")


@dataclass
class FakeResponse:
    """One scripted answer; see the module docstring for the options."""

    text: str | None = "This is a scripted answer."
    chunks: int | None = None
    delay: float = 0.0
    first_delay: float = 0.0
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    fail_after: int | None = None
    fail_mode: str = "error_event"
    drop: bool = False
    usage: tuple[int, int] | None = None


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def api_key(self) -> str | None:
        """The key as sent: a Bearer token, Azure's `api-key`, Gemini's `x-goog-api-key`, Anthropic's
        `x-api-key` header, or the access key id of an AWS SigV4 signature (the secret is never sent)."""
        auth = self.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:]
        if auth.startswith("AWS4-HMAC-SHA256 Credential="):
            return auth.split("=", 1)[1].split("/", 1)[0]
        return (
            self.headers.get("api-key") or self.headers.get("x-goog-api-key") or self.headers.get("x-api-key")
        )


def _split(text: str, chunks: int | None) -> list[str]:
    if not text:
        return []
    if chunks is None:
        return re.findall(r"\S+\s*|\s+", text)
    size = max(1, -(-len(text) // chunks))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _prompt_text(request: RecordedRequest) -> tuple[str, str]:
    """(all prompt text, the last user message) for either wire format."""
    texts: list[str] = []
    question = ""
    for message in request.body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
        texts.append(str(content or ""))
        if message.get("role") == "user":
            question = str(content or "")
    for item in [request.body.get("systemInstruction") or {}, *request.body.get("contents", [])]:
        text = " ".join(str(part.get("text", "")) for part in item.get("parts", []))
        texts.append(text)
        if item.get("role") == "user":
            question = text
    return "\n".join(texts), question


def echo_response(request: RecordedRequest) -> FakeResponse:
    """The default answer: the question repeated, citing the first span found in the prompt."""
    prompt, question = _prompt_text(request)
    question = question.strip().splitlines()[-1] if question.strip() else ""
    match = _CITATION.search(prompt)
    cite = f" See {match.group(0)}." if match else " No sources were given."
    return FakeResponse(text=f'You asked: "{question[:200]}".{cite}')


_OPENAI_ERRORS: dict[int, tuple[str, str, str]] = {
    400: ("invalid_request_error", "bad_request", "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided: {key}."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Access denied."),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model `{model}` does not exist or you do not have access to it.",
    ),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again in 20s."),
    500: ("server_error", "server_error", "The server had an error while processing your request."),
    503: ("server_error", "service_unavailable", "The engine is currently overloaded."),
}
_CONTEXT_MESSAGE = (
    "This model's maximum context length is 128000 tokens. However, your messages resulted in "
    "200000 tokens. Please reduce the length of the messages."
)
_GEMINI_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def openai_error_body(script: FakeResponse, request: RecordedRequest, model: str) -> dict[str, Any]:
    kind, code, message = _OPENAI_ERRORS.get(script.status or 500, _OPENAI_ERRORS[500])
    if script.error_code == "context_length_exceeded":
        code, message = "context_length_exceeded", _CONTEXT_MESSAGE
    elif script.error_code:
        code = script.error_code
    message = script.error_message or message.format(key=request.api_key or "", model=model)
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def gemini_error_body(script: FakeResponse, request: RecordedRequest, model: str) -> list[dict[str, Any]]:
    status = script.status or 500
    message = {
        400: "Request contains an invalid argument.",
        401: "API key not valid. Please pass a valid API key.",
        403: "Permission denied.",
        404: f"models/{model} is not found for API version v1beta, or is not supported for generateContent.",
        429: "Resource has been exhausted (e.g. check quota).",
    }.get(status, "An internal error has occurred.")
    if script.error_code == "context_length_exceeded":
        message = "The input token count (2000000) exceeds the maximum number of tokens allowed (1048576)."
    if script.error_code == "API_KEY_INVALID" or status == 401:
        message = f"API key not valid. Please pass a valid API key. (key: {request.api_key})"
    error = {"code": status, "message": script.error_message or message, "status": _GEMINI_STATUS.get(status)}
    if script.error_code == "API_KEY_INVALID":
        error["details"] = [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
        ]
    return [{"error": error}]


def _parse_body(body: bytes, content_type: str) -> dict[str, Any]:
    """JSON, or a form (AWS query protocol, e.g. STS `AssumeRole`) as a flat dict."""
    if not body:
        return {}
    if content_type.startswith("application/x-www-form-urlencoded"):
        return dict(parse_qsl(body.decode()))
    return json.loads(body)


class _Disconnected(Exception):
    """The client closed its end while we were streaming."""


class FakeProvider:
    """The server and its per-test script and records."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="fake-provider", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self.reset()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def gemini_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1beta"

    def openai_env(self, key: str = FAKE_API_KEY) -> dict[str, str]:
        return {"OPENAI_API_KEY": key, "OPENAI_BASE_URL": self.base_url}

    def gemini_env(self, key: str = FAKE_API_KEY) -> dict[str, str]:
        return {"GOOGLE_API_KEY": key, "GOOGLE_API_BASE_URL": self.gemini_base_url}

    @property
    def anthropic_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def anthropic_env(self, key: str = FAKE_API_KEY) -> dict[str, str]:
        return {"ANTHROPIC_API_KEY": key, "ANTHROPIC_BASE_URL": self.anthropic_base_url}

    @property
    def bedrock_endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def bedrock_env(self, key_id: str = FAKE_AWS_KEY_ID, secret: str = FAKE_AWS_SECRET) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": key_id,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": self.bedrock_endpoint_url,
        }

    def reset(self) -> None:
        with self._lock:
            self._script: list[FakeResponse] = []
            # With an empty script: a function of the request choosing the reply (a scripted model).
            self.policy: Callable[[RecordedRequest], FakeResponse] | None = None
            self.requests: list[RecordedRequest] = []
            self.disconnects = 0
            self.completed = 0
            self.expected_key: str | None = None

    def script(self, *responses: FakeResponse) -> None:
        with self._lock:
            self._script.extend(responses)

    def wait_for_disconnect(self, timeout: float = 5.0, count: int = 1) -> bool:
        """True once at least `count` clients have gone away mid-stream."""
        with self._lock:
            return self._lock.wait_for(lambda: self.disconnects >= count, timeout)

    def wait_for_requests(self, count: int = 1, timeout: float = 5.0) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: len(self.requests) >= count, timeout)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while self._server is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if self._server is None:
            raise RuntimeError("the fake provider did not start")

    def stop(self) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await asyncio.start_server(self._handle, sock=self._socket)

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def _next_script(self, request: RecordedRequest) -> FakeResponse:
        with self._lock:
            self.requests.append(request)
            self._lock.notify_all()
            if self.expected_key is not None and request.api_key != self.expected_key:
                return FakeResponse(
                    status=401, error_code="API_KEY_INVALID" if "x-goog-api-key" in request.headers else None
                )
            if fake_vendors.is_sts(request):
                return FakeResponse()  # credentials for AWS_ROLE_ARN: not an answer, takes no script
            if self._script:
                return self._script.pop(0)
            return self.policy(request) if self.policy is not None else echo_response(request)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = h11.Connection(h11.SERVER)
        try:
            request = await self._read_request(connection, reader)
            if request is None:
                return
            script = self._next_script(request)
            if script.drop:
                return
            stream = _Stream(connection, reader, writer)
            try:
                await self._respond(stream, request, script)
            finally:
                stream.close()
        except (_Disconnected, ConnectionError):
            with self._lock:
                self.disconnects += 1
                self._lock.notify_all()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_request(
        self, connection: h11.Connection, reader: asyncio.StreamReader
    ) -> RecordedRequest | None:
        head: h11.Request | None = None
        body = b""
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                if not data:
                    return None
                connection.receive_data(data)
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                target = urlsplit(head.target.decode())
                headers = {name.decode().lower(): value.decode() for name, value in head.headers}
                return RecordedRequest(
                    method=head.method.decode(),
                    path=target.path,
                    query=parse_qs(target.query),
                    headers=headers,
                    body=_parse_body(body, headers.get("content-type", "")),
                )
            else:
                return None

    async def _respond(self, stream: _Stream, request: RecordedRequest, script: FakeResponse) -> None:
        if fake_vendors.is_sts(request):
            await stream.body_response(200, fake_vendors.sts_assume_role(request), "text/xml")
            return
        if fake_vendors.is_anthropic(request) or fake_vendors.is_bedrock(request):
            await self._respond_vendor(stream, request, script)
            return
        gemini = ":streamGenerateContent" in request.path or ":generateContent" in request.path
        model = (
            request.path.rsplit("/", 1)[-1].split(":")[0] if gemini else str(request.body.get("model", ""))
        )
        if script.status is not None:
            body = (gemini_error_body if gemini else openai_error_body)(script, request, model)
            await stream.json_response(script.status, body)
            return
        if gemini:
            await stream.sse(_gemini_events(script, model))
        elif request.body.get("stream"):
            await stream.sse(_openai_events(script, model, request.body))
        else:
            await stream.json_response(200, _openai_completion(script, model, request.body))
        with self._lock:
            self.completed += 1

    async def _respond_vendor(self, stream: _Stream, request: RecordedRequest, script: FakeResponse) -> None:
        """Anthropic's Messages API or Bedrock's ConverseStream (`tests.support.fake_vendors`)."""
        if fake_vendors.is_bedrock(request):
            if script.status is not None:
                headers, body = fake_vendors.bedrock_error(script)
                await stream.json_response(script.status, body, headers)
                return
            frames = fake_vendors.bedrock_events(script, request.body, _split)
            await stream.sse(frames, content_type="application/vnd.amazon.eventstream")
        else:
            model = str(request.body.get("model", ""))
            if script.status is not None:
                await stream.json_response(
                    script.status, fake_vendors.anthropic_error_body(script, request, model)
                )
                return
            await stream.sse(fake_vendors.anthropic_events(script, model, request.body, _split))
        with self._lock:
            self.completed += 1


class _Stream:
    """One HTTP/1.1 response written with h11, watching the socket for the client going away."""

    def __init__(
        self, connection: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ):
        self._connection = connection
        self._writer = writer
        self._gone = asyncio.ensure_future(reader.read(1))

    def close(self) -> None:
        self._gone.cancel()

    async def _send(self, event: h11.Event) -> None:
        if self._gone.done():
            raise _Disconnected
        data = self._connection.send(event)
        if data:
            self._writer.write(data)
            await self._writer.drain()

    async def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        done, _ = await asyncio.wait({self._gone}, timeout=seconds)
        if done:
            raise _Disconnected

    async def json_response(self, status: int, body: Any, extra: list[tuple[str, str]] | None = None) -> None:
        await self.body_response(status, json.dumps(body).encode(), "application/json", extra)

    async def body_response(
        self, status: int, payload: bytes, content_type: str, extra: list[tuple[str, str]] | None = None
    ) -> None:
        headers = [*_CLOSE, ("content-type", content_type), ("content-length", str(len(payload)))]
        headers += extra or []
        await self._send(h11.Response(status_code=status, headers=headers))
        await self._send(h11.Data(data=payload))
        await self._send(h11.EndOfMessage())

    async def sse(
        self, events: AsyncIterator[tuple[float, bytes | None]], content_type: str = "text/event-stream"
    ) -> None:
        """Stream (delay, payload) pairs; a None payload cuts the connection without finishing the body."""
        headers = [*_CLOSE, ("content-type", content_type), ("transfer-encoding", "chunked")]
        await self._send(h11.Response(status_code=200, headers=headers))
        async for delay, payload in events:
            await self._sleep(delay)
            if payload is None:
                self._writer.transport.abort()
                return
            await self._send(h11.Data(data=payload))
        await self._send(h11.EndOfMessage())


def _sse(data: Any) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    return f"data: {text}\n\n".encode()


def _usage(script: FakeResponse, body: dict[str, Any]) -> tuple[int, int]:
    if script.usage:
        return script.usage
    prompt_words = len(json.dumps(body.get("messages") or body.get("contents") or "").split())
    return prompt_words, len((script.text or "").split()) + len(script.tool_calls)


async def _openai_events(
    script: FakeResponse, model: str, body: dict[str, Any]
) -> AsyncIterator[tuple[float, bytes | None]]:
    base = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    yield 0.0, chunk({"role": "assistant", "content": ""})
    pieces = _split(script.text or "", script.chunks)
    for number, piece in enumerate(pieces):
        if script.fail_after is not None and number >= script.fail_after:
            yield 0.0, _mid_stream_failure(script, gemini=False)
            return
        yield (script.first_delay if number == 0 else 0.0) + script.delay, chunk({"content": piece})
    for index, call in enumerate(script.tool_calls):
        arguments = json.dumps(call.get("arguments", {}))
        half = len(arguments) // 2
        head = {"index": index, "id": call.get("id", f"call_{index}"), "type": "function"}
        yield (
            script.delay,
            chunk({"tool_calls": [{**head, "function": {"name": call["name"], "arguments": ""}}]}),
        )
        for part in (arguments[:half], arguments[half:]):
            yield script.delay, chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
    yield 0.0, chunk({}, "tool_calls" if script.tool_calls else "stop")
    if (body.get("stream_options") or {}).get("include_usage"):
        prompt, completion = _usage(script, body)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        yield 0.0, _sse({**base, "choices": [], "usage": usage})
    yield 0.0, _sse("[DONE]")


async def _gemini_events(script: FakeResponse, model: str) -> AsyncIterator[tuple[float, bytes | None]]:
    def event(
        parts: list[dict[str, Any]], finish: str | None = None, usage: dict[str, int] | None = None
    ) -> bytes:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        payload: dict[str, Any] = {"candidates": [candidate], "modelVersion": model}
        if usage:
            payload["usageMetadata"] = usage
        return _sse(payload)

    pieces = _split(script.text or "", script.chunks)
    for number, piece in enumerate(pieces):
        if script.fail_after is not None and number >= script.fail_after:
            yield 0.0, _mid_stream_failure(script, gemini=True)
            return
        yield (script.first_delay if number == 0 else 0.0) + script.delay, event([{"text": piece}])
    calls = [
        {"functionCall": {"name": call["name"], "args": call.get("arguments", {})}}
        for call in script.tool_calls
    ]
    prompt, completion = script.usage or (10, len(pieces) + len(calls))
    usage = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": completion,
        "totalTokenCount": prompt + completion,
    }
    yield script.delay, event(calls or [{"text": ""}], "STOP", usage)


def _openai_completion(script: FakeResponse, model: str, body: dict[str, Any]) -> dict[str, Any]:
    """The non-streaming `chat.completion` object."""
    message: dict[str, Any] = {"role": "assistant", "content": script.text}
    if script.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.get("id", f"call_{index}"),
                "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(call.get("arguments", {}))},
            }
            for index, call in enumerate(script.tool_calls)
        ]
    prompt, completion = _usage(script, body)
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": "tool_calls" if script.tool_calls else "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def _mid_stream_failure(script: FakeResponse, *, gemini: bool) -> bytes | None:
    if script.fail_mode == "close":
        return None
    if gemini:
        return _sse(
            {"error": {"code": 500, "message": "Internal error during streaming.", "status": "INTERNAL"}}
        )
    return _sse(
        {
            "error": {
                "message": "The server had an error while processing your request.",
                "type": "server_error",
            }
        }
    )


_SERVER: FakeProvider | None = None


def _server() -> FakeProvider:
    global _SERVER
    if _SERVER is None:
        _SERVER = FakeProvider()
        _SERVER.start()
    return _SERVER


@pytest.fixture
def fake_provider() -> Iterator[FakeProvider]:
    """The session's fake provider server, with an empty script and fresh records for this test."""
    server = _server()
    server.reset()
    yield server
    server.reset()


@pytest.fixture
def openai_fake(fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> FakeProvider:
    """`fake_provider`, configured for this test as provider "openai" (OPENAI_API_KEY, OPENAI_BASE_URL)."""
    for name, value in fake_provider.openai_env().items():
        monkeypatch.setenv(name, value)
    return fake_provider
