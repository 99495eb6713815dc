"""`/ws/chat`: deepwiki-open's plain-text protocol and RepoLens' typed events, on one endpoint.

The mode is chosen by the first frame. A chat request without `"protocol"` is *compatible*
mode, exactly deepwiki-open: the answer's text as plain frames, `Error: ...` on failure, then
the server closes the socket. A request with `"protocol": "events"`, a control frame
(`ping`/`cancel`), or a connection to `/ws/chat?protocol=events` selects *events* mode: JSON
frames that each carry a `type`, and a socket that stays open for the whole conversation.

Both modes send an answer through `api.coalesce.coalesced`, the per-connection send queue: the
answer keeps streaming while a send waits on a slow socket, and token frames that pile up meanwhile
(or arrive within 20 ms of the previous one) go out as one frame, text in order.

A server that stops ends an answer with its `server_stopping` error (`api.shutdown`): in events mode
the `error` and `done` frames, in compatible mode the `Error: ...` text; uvicorn then closes the
socket (code 1012).

Events mode runs one answer at a time per socket: a request that arrives while an answer
streams is refused with error `busy` (the client sends `{"type": "cancel"}` first if it wants
to replace it). Cancel and disconnect both cancel the answer task, which closes the provider
stream and stops an ingest in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from fastapi import APIRouter, WebSocket, status

from api.chat_session import cancel_ingest, chat_events, stop_answer
from api.coalesce import coalesce_window_s, coalesced
from api.middleware import client_of
from api.origins import origin_allowed, refusal
from api.schemas import BadRequestError, ChatRequestBody, decode_frame, max_request_bytes, parse_chat_request
from api.services import Services, get_ws_services
from api.shutdown import server_stop, streaming
from rag.errors import ErrorCode
from rag.events import Event, done_event, encode, error_event, pong_event

logger = logging.getLogger(__name__)

router = APIRouter()

_CONTROL_TYPES = ("cancel", "ping")


@router.websocket("/ws/chat")
async def chat_socket(websocket: WebSocket) -> None:
    services = get_ws_services(websocket)
    origin = websocket.headers.get("origin")
    if not origin_allowed(origin, websocket.headers.get("host"), services.settings):
        logger.warning(refusal(origin or ""))
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION)
        return
    await websocket.accept()
    limit = max_request_bytes(services.settings)
    raw = await _receive(websocket)
    if raw is None:
        return
    events_mode = websocket.query_params.get("protocol") == "events"
    try:
        data = decode_frame(raw, limit)
    except BadRequestError as error:
        if events_mode:
            await EventsConnection(websocket, services, limit).run(first=raw)
        else:
            await _compat_error(websocket, str(error))
        return
    if events_mode or _selects_events(data):
        await EventsConnection(websocket, services, limit).run(first=raw)
    else:
        await _compat_conversation(websocket, services, data)


def _selects_events(first: dict[str, Any]) -> bool:
    """deepwiki clients never send `protocol` nor a bare control frame."""
    return first.get("protocol") == "events" or (
        "messages" not in first and first.get("type") in _CONTROL_TYPES
    )


async def _receive(websocket: WebSocket) -> str | bytes | None:
    """The next text or binary frame, or None once the client has gone."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        return None
    return message.get("text") if message.get("text") is not None else message.get("bytes", b"")


async def _compat_error(websocket: WebSocket, message: str) -> None:
    with contextlib.suppress(Exception):
        await websocket.send_text(f"Error: {message}")
        await websocket.close()


async def _rate_limited(websocket: WebSocket) -> str | None:
    """Each chat request on a socket counts against the client's chat budget (`api.middleware`)."""
    limits = getattr(websocket.app.state, "rate_limits", None)
    return await limits.hit("chat", client_of(websocket.scope)) if limits is not None else None


async def _compat_conversation(websocket: WebSocket, services: Services, data: dict[str, Any]) -> None:
    """deepwiki-open's protocol: one request, the answer text, then close."""
    try:
        request = parse_chat_request(data)
    except BadRequestError as error:
        await _compat_error(websocket, str(error))
        return
    if refusal := await _rate_limited(websocket):
        await _compat_error(websocket, refusal)
        return
    cancel = asyncio.Event()
    answer = asyncio.create_task(_compat_answer(websocket, services, request, cancel))
    gone = asyncio.create_task(_wait_for_disconnect(websocket))
    await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
    if gone.done():
        await stop_answer(answer, cancel)
    else:
        gone.cancel()
    await asyncio.gather(answer, gone, return_exceptions=True)


async def _wait_for_disconnect(websocket: WebSocket) -> None:
    while await _receive(websocket) is not None:
        pass


async def _compat_answer(
    websocket: WebSocket, services: Services, request: ChatRequestBody, cancel: asyncio.Event
) -> None:
    window = coalesce_window_s(services.settings)
    stop = server_stop(websocket.app)
    with streaming(stop):
        answer = coalesced(chat_events(services, request, cancel, stop), window)
        async with contextlib.aclosing(answer) as events:
            async for event in events:
                if event["type"] == "token":
                    await websocket.send_text(event["text"])
                elif event["type"] == "error":
                    await websocket.send_text(f"Error: {event['message']}")
                    break
        with contextlib.suppress(Exception):
            await websocket.close()


class EventsConnection:
    """One events-mode socket: a reader loop plus at most one answer task."""

    def __init__(self, websocket: WebSocket, services: Services, limit: int) -> None:
        self.websocket = websocket
        self.services = services
        self.limit = limit
        self.answer: asyncio.Task[None] | None = None
        self.request: ChatRequestBody | None = None
        self.cancel_flag = asyncio.Event()
        self.closed = False
        self._send_lock = asyncio.Lock()
        self.window_s = coalesce_window_s(services.settings)
        self.stop = server_stop(websocket.app)

    async def run(self, first: str | bytes) -> None:
        raw: str | bytes | None = first
        try:
            while raw is not None:
                await self.handle(raw)
                raw = await _receive(self.websocket)
        finally:
            self.closed = True
            await self.stop_answer()

    async def send(self, event: Event) -> None:
        """Send one frame; a client that has gone is noticed by the reader, not here."""
        if self.closed:
            return
        async with self._send_lock:
            try:
                await self.websocket.send_text(encode(event))
            except Exception:
                self.closed = True

    async def handle(self, raw: str | bytes) -> None:
        try:
            data = decode_frame(raw, self.limit)
        except BadRequestError as error:
            await self.send(error_event(error.code, str(error)))
            return
        if "messages" in data:
            await self.start_answer(data)
        elif data.get("type") == "ping":
            await self.send(pong_event())
        elif data.get("type") == "cancel":
            if self.request is not None and self.answer is not None and not self.answer.done():
                await cancel_ingest(self.services, self.request)
            await self.stop_answer()
        else:
            kind = data.get("type")
            await self.send(
                error_event(
                    ErrorCode.BAD_REQUEST,
                    f"unknown frame type {kind!r}: send a chat request (with 'messages') "
                    f"or a control frame of type {' or '.join(_CONTROL_TYPES)}",
                )
            )

    async def start_answer(self, data: dict[str, Any]) -> None:
        if self.answer is not None and not self.answer.done():
            message = 'an answer is already streaming on this socket: send {"type": "cancel"} first'
            await self.send(error_event(ErrorCode.BUSY, message))
            return
        try:
            request = parse_chat_request({**data, "protocol": "events"})  # this socket's protocol
        except BadRequestError as error:
            await self.send(error_event(error.code, str(error)))
            return
        if refusal := await _rate_limited(self.websocket):
            await self.send(error_event(ErrorCode.RATE_LIMITED, refusal))
            return
        self.cancel_flag = asyncio.Event()
        self.request = request
        self.answer = asyncio.create_task(self.stream(request, self.cancel_flag))

    async def stop_answer(self) -> None:
        """Stop the running answer (if any) and wait until its provider stream is closed."""
        if self.answer is not None and not self.answer.done():
            await stop_answer(self.answer, self.cancel_flag)

    async def stream(self, request: ChatRequestBody, cancel: asyncio.Event) -> None:
        started = time.perf_counter()
        try:
            with streaming(self.stop):
                answer = coalesced(chat_events(self.services, request, cancel, self.stop), self.window_s)
                async with contextlib.aclosing(answer) as events:
                    async for event in events:
                        await self.send(event)
        except asyncio.CancelledError:
            if self.closed:
                raise
            await self.send(error_event(ErrorCode.CANCELLED, "the answer was cancelled by the client"))
            await self.send(done_event(started=started))
