"""`POST /chat/completions/stream`: the chat for clients that cannot hold a WebSocket.

Same body as `/ws/chat`. By default the answer streams as raw text like deepwiki-open (content
type `text/event-stream` but no SSE framing); an error found before the first token is an
HTTP status with JSON `{"detail": ...}`, one found later is appended as `\\nError: ...`.
Typed SSE (`event: <type>` / `data: <json>`, the same frames as the WebSocket) only when asked for
explicitly: `"protocol": "events"` in the body or the header `X-RepoLens-Protocol: events`.
`Accept: text/event-stream` alone is not enough: deepwiki-open's proxy sends it and pastes the body
into the answer as text, so it must get plain text.
Token frames are coalesced as on the WebSocket (`api.coalesce`).
A client that disconnects cancels the stream, which closes the provider's stream too.
A server that stops ends the answer with its `server_stopping` error (`api.shutdown`): an HTTP 503
before the first token, `\nError: the server is stopping: ...` in the plain text after it, the
`error` and `done` frames in SSE; the response then ends normally.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from api.chat_session import detached_events
from api.coalesce import coalesce_window_s, coalesced
from api.errors import error_response
from api.origins import origin_allowed, refusal
from api.schemas import (
    BadRequestError,
    check_size,
    decode_json,
    max_request_bytes,
    parse_chat_request,
)
from api.services import get_services
from api.shutdown import server_stop
from rag.errors import ErrorCode
from rag.events import Event, sse_frame

router = APIRouter()

_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_ANSWER_END = ("token", "error", "done")


@router.post("/chat/completions/stream", response_model=None)
async def chat_completions_stream(http_request: Request) -> Response:
    services = get_services(http_request)
    origin = http_request.headers.get("origin")
    if not origin_allowed(origin, http_request.headers.get("host"), services.settings):
        return error_response(ErrorCode.FORBIDDEN_ORIGIN, refusal(origin or ""))
    try:
        body = await read_body(http_request, max_request_bytes(services.settings))
        request = parse_chat_request(_with_protocol(http_request, decode_json(body)))
    except BadRequestError as error:
        return error_response(error.code, str(error))
    answer = detached_events(services, request, server_stop(http_request.app))
    events = coalesced(answer, coalesce_window_s(services.settings))
    if request.protocol == "events":
        return StreamingResponse(_sse(events), media_type="text/event-stream", headers=_STREAM_HEADERS)
    return await _plain_response(http_request, events)


async def read_body(http_request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes `limit` (a huge upload is never buffered whole)."""
    body = bytearray()
    async for part in http_request.stream():
        body.extend(part)
        if len(body) > limit:
            check_size(body, limit)
    return bytes(body)


PROTOCOL_HEADER = "x-repolens-protocol"


def _with_protocol(http_request: Request, data: dict[str, Any]) -> dict[str, Any]:
    """The body, in the events protocol when the header asks for it as the body can: the request
    then carries its protocol, which decides its SSE framing and whether its `type` is a hint
    (`ChatRequestBody.platform_is_hint`)."""
    if http_request.headers.get(PROTOCOL_HEADER, "").lower() == "events":
        return {**data, "protocol": "events"}
    return data


async def _sse(events: AsyncGenerator[Event, None]) -> AsyncGenerator[str, None]:
    async with contextlib.aclosing(events):
        async for event in events:
            yield sse_frame(event)


async def _plain_response(http_request: Request, events: AsyncGenerator[Event, None]) -> Response:
    """Hold the response until the first token so an early failure can still be an HTTP error."""
    first_task = asyncio.ensure_future(_first_answer_event(events))
    gone = asyncio.ensure_future(_wait_for_disconnect(http_request))
    await asyncio.wait({first_task, gone}, return_when=asyncio.FIRST_COMPLETED)
    gone.cancel()
    if not first_task.done():
        first_task.cancel()
        await asyncio.gather(first_task, return_exceptions=True)
        await events.aclose()
        return Response(status_code=499)
    first = first_task.result()
    if first is not None and first["type"] == "error":
        await events.aclose()
        return error_response(first["code"], first["message"])
    return StreamingResponse(
        _plain_text(first, events), media_type="text/event-stream", headers=_STREAM_HEADERS
    )


async def _first_answer_event(events: AsyncGenerator[Event, None]) -> Event | None:
    async for event in events:
        if event["type"] in _ANSWER_END:
            return event
    return None


async def _wait_for_disconnect(http_request: Request) -> None:
    while (await http_request.receive())["type"] != "http.disconnect":
        pass


async def _plain_text(first: Event | None, events: AsyncGenerator[Event, None]) -> AsyncGenerator[str, None]:
    async with contextlib.aclosing(events):
        event = first
        while event is not None:
            if event["type"] == "token":
                yield event["text"]
            elif event["type"] == "error":
                yield f"\nError: {event['message']}"
                return
            event = await anext(events, None)
