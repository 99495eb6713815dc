"""An OpenAI-compatible chat API: `POST /v1/chat/completions` and `GET /v1/models`.

Any OpenAI client or chat UI (the `openai` SDK, Open WebUI, LibreChat, ...) can ask about an
indexed repository by choosing it as the model: `repolens/<repo-id>` answers like `/ws/chat`,
`repolens/<repo-id>+deep` runs deep research. The answer comes from the server's configured
provider (offline without one); the `repolens` extra body field overrides it per request
(`{"provider", "model", "language", "k", "file_path", "max_iterations", "token"}`), and a provider
or model not configured here is a `400 not_configured` before the response starts, never an
offline answer in its place.

The answer is the text of `api.chat_session.chat_events` followed by a **Sources** list of links
(`api.answer_text`). Streaming sends `chat.completion.chunk`s (role first, then content, then
`finish_reason: "stop"`, then a usage chunk when `stream_options.include_usage` is set) and
`data: [DONE]`. Errors use OpenAI's shape `{"error": {"message", "type", "param", "code"}}` with
the HTTP status of the error's code; one that happens after streaming started is sent as an
`error` data frame, which the `openai` SDK raises as `APIError` (so does a server that stops
mid-answer: code `server_stopping`, `api.shutdown`). A private repository's token
comes in the `X-Repo-Token` header (or `repolens.token`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.answer_text import CollectedAnswer
from api.chat_session import detached_events
from api.origins import origin_allowed, refusal
from api.routes.chat_http import read_body
from api.schemas import (
    BadRequestError,
    ChatRequestBody,
    decode_json,
    describe,
    max_request_bytes,
    parse_chat_request,
)
from api.services import Services, get_services
from api.shutdown import server_stop
from ingest.errors import AmbiguousRepoError
from ingest.pipeline import repo_id_by_last_part
from rag.errors import ErrorCode, RepoLensError, http_status
from rag.events import Event
from rag.prompt import MAX_ANSWER_K
from rag.providers.catalog import check_model, usable_provider
from rag.redact import redact, register_secret
from rag.research.options import MAX_ITERATIONS, MIN_ITERATIONS
from rag.settings import Settings
from rag.store.layout import InvalidRepoIdError
from rag.types import RepoRecord

router = APIRouter(prefix="/v1", tags=["openai"])

MODEL_PREFIX = "repolens/"
DEEP_SUFFIX = "+deep"
OWNER = "repolens"
_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# OpenAI error `type` by HTTP status; anything else is `api_error`.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(part.text for part in self.content if part.type == "text" and part.text)
        return self.content or ""


class RepoLensOptions(BaseModel):
    """The `repolens` extra body field: what the OpenAI request has no place for."""

    model_config = ConfigDict(extra="forbid")

    provider: str | None = None
    model: str | None = None
    language: str | None = None
    k: int | None = Field(None, ge=1, le=MAX_ANSWER_K)
    file_path: str | None = None
    max_iterations: int | None = Field(None, ge=MIN_ITERATIONS, le=MAX_ITERATIONS)
    token: str | None = Field(None, repr=False)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class CompletionRequest(BaseModel):
    """OpenAI's chat completion body; sampling options (temperature, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    messages: list[OpenAIMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    repolens: RepoLensOptions = Field(default_factory=RepoLensOptions)


class OpenAIError(Exception):
    """An error to answer in OpenAI's shape."""

    def __init__(
        self, message: str, code: str, *, status: int | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = redact(message)
        self.code = code
        self.status = status or http_status(code)
        self.param = param

    @classmethod
    def of(cls, error: RepoLensError) -> OpenAIError:
        return cls(error.message, error.code)

    def body(self) -> dict[str, Any]:
        kind = _ERROR_TYPES.get(self.status, "api_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def model_ids(record: RepoRecord) -> list[str]:
    return [f"{MODEL_PREFIX}{record.id}", f"{MODEL_PREFIX}{record.id}{DEEP_SUFFIX}"]


def parse_model(model: str) -> tuple[str, bool]:
    """`repolens/<repo-id>[+deep]` (the prefix may be left out) → (repo id, deep research?)."""
    name = model.strip().removeprefix(MODEL_PREFIX)
    deep = name.endswith(DEEP_SUFFIX)
    return name.removesuffix(DEEP_SUFFIX), deep


def _model_entry(model_id: str, record: RepoRecord) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": _created(record), "owned_by": OWNER}


def _created(record: RepoRecord) -> int:
    try:
        return int(datetime.fromisoformat(record.created_at).timestamp())
    except ValueError:
        return 0


def _model_record(services: Services, model: str) -> tuple[RepoRecord, bool]:
    """The repository a model name names: `repolens/<repo-id>`, or the unique last part of an id
    (`repolens/cobra`), as the CLI and MCP take it. Reads the store: call it from a thread."""
    repo_id, deep = parse_model(model)
    record = None
    with contextlib.suppress(InvalidRepoIdError):  # `cobra` is no id, but may be the last part of one
        record = services.store.get(repo_id) if repo_id else None
    if record is None and repo_id:
        try:
            short = repo_id_by_last_part(services.store, repo_id)
        except AmbiguousRepoError as several:
            raise OpenAIError(several.message, "model_not_found", status=404, param="model") from None
        record = services.store.get(short) if short is not None else None
    if record is None:
        raise OpenAIError(
            f"The model {model!r} does not exist: use {MODEL_PREFIX}<repo-id> (or {MODEL_PREFIX}<repo-id>"
            f"{DEEP_SUFFIX}, or the unique last part of an id) for an indexed repository; "
            f"{_indexed_models(services)}",
            "model_not_found",
            status=404,
            param="model",
        )
    return record, deep


def _admitted_record(
    services: Services, body: CompletionRequest, token: str | None
) -> tuple[RepoRecord, bool]:
    """The model's repository (404), the provider choice (400), then a private repository's access
    check (401), all before the response starts, so none is an in-stream error. Blocking, and ONE
    thread hop: each hop waits for the GIL behind an event loop streaming other answers."""
    record, deep = _model_record(services, body.model)
    _check_choice(body.repolens, services.settings)
    services.verify_access(record, token)
    return record, deep


_LISTED_MODELS = 5


def _indexed_models(services: Services) -> str:
    """What a client could have asked for instead, so a first try with `gpt-4o` shows the way."""
    ids = [f"{MODEL_PREFIX}{record.id}" for record in services.store.list()]
    if not ids:
        return "nothing is indexed yet: index a repository first (`repolens ingest`, POST /api/repos)"
    more = f" and {len(ids) - _LISTED_MODELS} more" if len(ids) > _LISTED_MODELS else ""
    return f"indexed: {', '.join(ids[:_LISTED_MODELS])}{more} (GET /v1/models lists them all)"


@router.get("/models")
def list_models(http_request: Request) -> dict[str, Any]:
    """Two models per indexed repository: the answer and the deep-research answer."""
    services = get_services(http_request)
    data = [
        _model_entry(model_id, record) for record in services.store.list() for model_id in model_ids(record)
    ]
    return {"object": "list", "data": data}


@router.get("/models/{model:path}", response_model=None)
def retrieve_model(model: str, http_request: Request) -> Response | dict[str, Any]:
    try:
        record, _ = _model_record(get_services(http_request), model)
    except OpenAIError as error:
        return error.response()
    return _model_entry(model, record)


@router.post("/chat/completions", response_model=None)
async def chat_completions(http_request: Request) -> Response:
    services = get_services(http_request)
    origin = http_request.headers.get("origin")
    if not origin_allowed(origin, http_request.headers.get("host"), services.settings):
        return OpenAIError(refusal(origin or ""), ErrorCode.FORBIDDEN_ORIGIN).response()
    try:
        body = await _completion_request(http_request, services)
        token = body.repolens.token or http_request.headers.get("x-repo-token") or None
        register_secret(token)
        record, deep = await asyncio.to_thread(_admitted_record, services, body, token)
        request = _chat_request(body, record, deep, token)
    except OpenAIError as error:
        return error.response()
    except RepoLensError as error:
        return OpenAIError.of(error).response()
    completion = _Completion(body.model, str(http_request.base_url))
    events = detached_events(services, request, server_stop(http_request.app))
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            completion.chunks(events, include_usage), media_type="text/event-stream", headers=_STREAM_HEADERS
        )
    return await completion.whole(events)


def _check_choice(options: RepoLensOptions, settings: Settings) -> None:
    """Refuse a `repolens.provider`/`model` this server cannot answer with, before the response starts.

    The WebSocket and deepwiki routes answer offline when an unconfigured provider is named on a
    server without any (deepwiki-open clients always send `google`); a client of this API names one
    only on purpose, and an answer from another provider, flagged only in a field the SDK hides in
    `model_extra`, would pass for the one it asked for.
    """
    param = "repolens.provider"
    try:
        info = usable_provider(options.provider, settings)
        param = "repolens.model"
        check_model(info, options.model, settings)
    except RepoLensError as error:
        raise OpenAIError(error.message, error.code, param=param) from None


async def _completion_request(http_request: Request, services: Services) -> CompletionRequest:
    raw = await read_body(http_request, max_request_bytes(services.settings))
    try:
        return CompletionRequest.model_validate(decode_json(raw))
    except ValidationError as error:
        raise OpenAIError(f"invalid request: {describe(error)}", ErrorCode.BAD_REQUEST) from None
    except BadRequestError as error:
        raise OpenAIError.of(error) from None


def _chat_request(
    body: CompletionRequest, record: RepoRecord, deep: bool, token: str | None
) -> ChatRequestBody:
    """The request `chat_events` takes: the conversation, the repository, the `repolens` options."""
    options = body.repolens
    messages = [
        {"role": "system" if message.role == "developer" else message.role, "content": message.text()}
        for message in body.messages
        if message.role in ("system", "developer", "user", "assistant")
    ]
    fields: dict[str, Any] = {
        "repo_url": record.url,
        "type": record.platform,
        "ref": record.ref,
        "messages": messages,
        "token": token,
        "provider": options.provider,
        "model": options.model,
        "language": options.language,
        "k": options.k,
        "filePath": options.file_path,
        "max_iterations": options.max_iterations,
        "deep_research": deep,
    }
    return parse_chat_request({name: value for name, value in fields.items() if value is not None})


class _Completion:
    """One completion's OpenAI frames, built from the chat events."""

    def __init__(self, model: str, base_url: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.base_url = base_url
        self.answer = CollectedAnswer()

    async def whole(self, events: AsyncGenerator[Event, None]) -> Response:
        async with contextlib.aclosing(events):
            async for event in events:
                self.answer.add(event)
        if self.answer.error is not None:
            return OpenAIError(self.answer.error["message"], self.answer.error["code"]).response()
        message = {
            "role": "assistant",
            "content": self.answer.text + self.answer.sources_markdown(self.base_url),
        }
        return JSONResponse(
            {
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
                "usage": self.answer.usage,
                "repolens": self._extras(),
            }
        )

    async def chunks(
        self, events: AsyncGenerator[Event, None], include_usage: bool
    ) -> AsyncGenerator[str, None]:
        yield self._chunk({"role": "assistant", "content": ""})
        async with contextlib.aclosing(events):
            async for event in events:
                self.answer.add(event)
                if event["type"] == "token":
                    yield self._chunk({"content": event["text"]})
                elif event["type"] == "error":
                    yield _data(OpenAIError(event["message"], event["code"]).body())
                    return
        if sources := self.answer.sources_markdown(self.base_url):
            yield self._chunk({"content": sources})
        yield self._chunk({}, finish_reason="stop")
        if include_usage:
            yield _data({**self._frame(), "choices": [], "usage": self.answer.usage})
        yield "data: [DONE]\n\n"

    def _frame(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
        }

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return _data({**self._frame(), "choices": [choice]})

    def _extras(self) -> dict[str, Any]:
        done = self.answer.done or {}
        return {
            "sources": self.answer.links(self.base_url),
            "citations": self.answer.citations,
            "provider": done.get("provider"),
            "model": done.get("model"),
        }


def _data(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
