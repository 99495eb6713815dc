"""Anthropic's and AWS Bedrock's streaming wire formats, for the fake provider server.

`tests.support.fake_provider` serves these on the same loopback server and scripts them with the
same `FakeResponse`s as the OpenAI and Gemini formats:

- `POST .../v1/messages` (`stream: true`): Anthropic Messages API server-sent events, exactly as
  Anthropic sends them: `event: message_start` (input tokens), `content_block_start` (a `text` block,
  or a `tool_use` block with id and name), `ping`, `content_block_delta` (`text_delta`, or
  `input_json_delta` fragments of the tool's arguments), `content_block_stop`, `message_delta`
  (stop reason, output tokens), `message_stop`; `event: error` for an in-band failure. HTTP errors
  carry Anthropic's `{"type": "error", "error": {"type": ..., "message": ...}}` body.
- `POST /model/{modelId}/converse-stream`: Bedrock `ConverseStream` in the AWS event-stream binary
  framing (prelude with lengths and CRC32, typed headers, payload, message CRC32): `messageStart`,
  `contentBlockStart` (`toolUse`), `contentBlockDelta` (`text` / `toolUse.input` fragments),
  `contentBlockStop`, `messageStop`, `metadata` (usage); an `exception` message for an in-band
  failure. HTTP errors carry `x-amzn-ErrorType` and a `{"message": ...}` body, as botocore expects.

- `POST /` with the form `Action=AssumeRole` (AWS query protocol): STS's XML answer with the fixed
  temporary credentials `ROLE_CREDENTIALS`, for `AWS_ROLE_ARN`.

`encode_event_message(headers, payload)` is the framing; the tests check it against botocore's own
decoder (`botocore.eventstream.EventStreamBuffer`).
"""

from __future__ import annotations

import binascii
import json
import struct
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.support.fake_provider import FakeResponse, RecordedRequest

Frames = AsyncIterator[tuple[float, bytes | None]]

# ---- Anthropic Messages API --------------------------------------------------------------------

_ANTHROPIC_ERRORS = {
    400: ("invalid_request_error", "messages: text content blocks must be non-empty"),
    401: ("authentication_error", "invalid x-api-key: {key}"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "model: {model}"),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


def is_anthropic(request: RecordedRequest) -> bool:
    return request.path.endswith("/v1/messages")


def anthropic_error_body(script: FakeResponse, request: RecordedRequest, model: str) -> dict[str, Any]:
    kind, message = _ANTHROPIC_ERRORS.get(script.status or 500, _ANTHROPIC_ERRORS[500])
    if script.error_code == "context_length_exceeded":
        kind, message = "invalid_request_error", "prompt is too long: 215000 tokens > 200000 maximum"
    message = script.error_message or message.format(key=request.api_key or "", model=model)
    return {"type": "error", "error": {"type": kind, "message": message}}


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def anthropic_events(script: FakeResponse, model: str, body: dict[str, Any], split: Any) -> Frames:
    """The Messages API stream for `script`; `split` cuts the text into the scripted pieces."""
    prompt_tokens, completion_tokens = script.usage or (
        len(json.dumps(body.get("messages", [])).split()),
        len((script.text or "").split()) + len(script.tool_calls),
    )
    message: dict[str, Any] = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": model,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": prompt_tokens, "output_tokens": 1},
    }
    yield 0.0, _sse("message_start", {"type": "message_start", "message": message})
    index = 0
    pieces = split(script.text or "", script.chunks)
    if pieces:
        block: dict[str, Any] = {"type": "text", "text": ""}
        yield (
            0.0,
            _sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}),
        )
        yield 0.0, _sse("ping", {"type": "ping"})
        for number, piece in enumerate(pieces):
            if script.fail_after is not None and number >= script.fail_after:
                if script.fail_mode == "close":
                    yield 0.0, None
                else:
                    error = {"type": "overloaded_error", "message": "Overloaded"}
                    yield 0.0, _sse("error", {"type": "error", "error": error})
                return
            delta = {"type": "text_delta", "text": piece}
            yield (
                (script.first_delay if number == 0 else 0.0) + script.delay,
                _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
            )
        yield 0.0, _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
        index = 1
    for offset, call in enumerate(script.tool_calls):
        block = {
            "type": "tool_use",
            "id": call.get("id", f"toolu_{offset:02d}"),
            "name": call["name"],
            "input": {},
        }
        start = {"type": "content_block_start", "index": index, "content_block": block}
        yield script.delay, _sse("content_block_start", start)
        arguments = json.dumps(call.get("arguments", {}))
        half = len(arguments) // 2
        for part in ("", arguments[:half], arguments[half:]):
            delta = {"type": "input_json_delta", "partial_json": part}
            yield (
                script.delay,
                _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}),
            )
        yield 0.0, _sse("content_block_stop", {"type": "content_block_stop", "index": index})
        index += 1
    stop = "tool_use" if script.tool_calls else "end_turn"
    delta_event = {
        "type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": None},
        "usage": {"output_tokens": completion_tokens},
    }
    yield 0.0, _sse("message_delta", delta_event)
    yield 0.0, _sse("message_stop", {"type": "message_stop"})


# ---- AWS event stream + Bedrock ConverseStream -------------------------------------------------

_STRING_HEADER = 7


def encode_event_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude (total and header lengths, CRC32), string headers,
    payload, CRC32 of everything before it."""
    encoded_headers = b""
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        encoded_headers += struct.pack("!B", len(raw_name)) + raw_name
        encoded_headers += struct.pack("!BH", _STRING_HEADER, len(raw_value)) + raw_value
    total = 12 + len(encoded_headers) + len(payload) + 4
    prelude = struct.pack("!II", total, len(encoded_headers))
    prelude += struct.pack("!I", binascii.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + encoded_headers + payload
    return message + struct.pack("!I", binascii.crc32(message) & 0xFFFFFFFF)


def _event(event_type: str, payload: dict[str, Any]) -> bytes:
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return encode_event_message(headers, json.dumps(payload).encode())


def _exception(exception_type: str, message: str) -> bytes:
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_event_message(headers, json.dumps({"message": message}).encode())


_BEDROCK_ERRORS = {
    400: ("ValidationException", "The provided model identifier is invalid."),
    403: ("UnrecognizedClientException", "The security token included in the request is invalid."),
    404: ("ResourceNotFoundException", "Model not found: {model}"),
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    500: ("InternalServerException", "The system encountered an unexpected error during processing."),
    503: ("ServiceUnavailableException", "The service is unavailable. Please try again later."),
}


def is_bedrock(request: RecordedRequest) -> bool:
    return request.path.startswith("/model/") and request.path.endswith("/converse-stream")


def bedrock_error(script: FakeResponse) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """(headers, body) of a Bedrock HTTP error, in the shape botocore's rest-json parser reads."""
    kind, message = _BEDROCK_ERRORS.get(script.status or 500, _BEDROCK_ERRORS[500])
    if script.error_code == "context_length_exceeded":
        kind, message = "ValidationException", "Input is too long for requested model."
    headers = [("x-amzn-errortype", f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/")]
    return headers, {"message": script.error_message or message}


async def bedrock_events(script: FakeResponse, body: dict[str, Any], split: Any) -> Frames:
    """The ConverseStream event stream for `script`."""
    yield 0.0, _event("messageStart", {"role": "assistant"})
    pieces = split(script.text or "", script.chunks)
    index = 0
    for number, piece in enumerate(pieces):
        if script.fail_after is not None and number >= script.fail_after:
            if script.fail_mode == "close":
                yield 0.0, None
            else:
                yield 0.0, _exception("modelStreamErrorException", "The model stopped unexpectedly.")
            return
        delta = {"contentBlockIndex": 0, "delta": {"text": piece}}
        yield (script.first_delay if number == 0 else 0.0) + script.delay, _event("contentBlockDelta", delta)
    if pieces:
        yield 0.0, _event("contentBlockStop", {"contentBlockIndex": 0})
        index = 1
    for offset, call in enumerate(script.tool_calls):
        tool = {"toolUseId": call.get("id", f"tooluse_{offset:02d}"), "name": call["name"]}
        yield (
            script.delay,
            _event("contentBlockStart", {"contentBlockIndex": index, "start": {"toolUse": tool}}),
        )
        arguments = json.dumps(call.get("arguments", {}))
        half = len(arguments) // 2
        for part in (arguments[:half], arguments[half:]):
            delta = {"contentBlockIndex": index, "delta": {"toolUse": {"input": part}}}
            yield script.delay, _event("contentBlockDelta", delta)
        yield 0.0, _event("contentBlockStop", {"contentBlockIndex": index})
        index += 1
    yield 0.0, _event("messageStop", {"stopReason": "tool_use" if script.tool_calls else "end_turn"})
    prompt, completion = script.usage or (
        len(json.dumps(body.get("messages", [])).split()),
        len((script.text or "").split()) + len(script.tool_calls),
    )
    usage = {"inputTokens": prompt, "outputTokens": completion, "totalTokens": prompt + completion}
    yield 0.0, _event("metadata", {"usage": usage, "metrics": {"latencyMs": 42}})


# ---- STS AssumeRole (AWS_ROLE_ARN) ---------------------------------------------------------------

ROLE_CREDENTIALS = {
    "AccessKeyId": "ASIAFAKEROLEKEY01234",
    "SecretAccessKey": "fake/role+secret-abcdefghijklmnopqrstuvwxyz0123",
    "SessionToken": "FakeRoleSessionToken//0123456789abcdefghijklmnopqrstuvwxyz==",
}


def is_sts(request: RecordedRequest) -> bool:
    return request.path == "/" and request.body.get("Action") == "AssumeRole"


def sts_assume_role(request: RecordedRequest) -> bytes:
    """STS's `AssumeRoleResponse` XML with `ROLE_CREDENTIALS`, valid for an hour."""
    expiration = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    credentials = "".join(f"<{name}>{value}</{name}>" for name, value in ROLE_CREDENTIALS.items())
    session = request.body.get("RoleSessionName", "session")
    return (
        '<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>'
        f"<Credentials>{credentials}<Expiration>{expiration}</Expiration></Credentials>"
        f"<AssumedRoleUser><AssumedRoleId>AROAFAKE:{session}</AssumedRoleId>"
        f"<Arn>{request.body.get('RoleArn', '')}/{session}</Arn></AssumedRoleUser>"
        "</AssumeRoleResult><ResponseMetadata><RequestId>fake-request</RequestId></ResponseMetadata>"
        "</AssumeRoleResponse>"
    ).encode()
