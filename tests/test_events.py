"""The event models of `rag/events.py`: one serialiser, redacted errors, and `types.ts` kept in step."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from rag.events import (
    EVENT_MODELS,
    Citation,
    ErrorEvent,
    Source,
    TokenEvent,
    Usage,
    done_event,
    encode,
    error_event,
    research_event,
    sse_frame,
    status_event,
    stopping_event,
    token_event,
)
from rag.redact import MASK, secret_scope

TYPES_TS = Path(__file__).resolve().parent.parent / "api" / "web" / "src" / "types.ts"


def ts_interfaces() -> dict[str, dict[str, bool]]:
    """`interface Name { field?: type; ... }` of types.ts as {name: {field: optional}}."""
    text = TYPES_TS.read_text(encoding="utf-8")
    found = {}
    for name, body in re.findall(r"export interface (\w+) \{(.*?)\n\}", text, re.S):
        fields = re.findall(r"^\s+(\w+)(\??):", body, re.M)
        found[name] = {field: bool(optional) for field, optional in fields}
    return found


@pytest.mark.parametrize("model", [*EVENT_MODELS, Source, Citation, Usage], ids=lambda model: model.__name__)
def test_types_ts_matches_the_models(model: type[BaseModel]) -> None:
    interface = ts_interfaces().get(model.__name__)
    assert interface is not None, f"types.ts has no interface {model.__name__}"
    assert set(interface) == set(model.model_fields), model.__name__
    for name, field in model.model_fields.items():
        if name != "type":
            assert interface[name] == (not field.is_required()), (
                f"{model.__name__}.{name}: optional in one only"
            )


def test_every_event_model_is_in_the_chat_event_union() -> None:
    union = re.search(r"export type ChatEvent =(.*?);", TYPES_TS.read_text(encoding="utf-8"), re.S)
    assert union is not None
    assert set(re.findall(r"\w+", union.group(1))) == {model.__name__ for model in EVENT_MODELS}


def test_error_frames_are_always_redacted() -> None:
    with secret_scope("request-secret-token-42"):
        event = error_event("auth_failed", "refused https://x:request-secret-token-42@host/repo")
    assert "request-secret-token-42" not in encode(event) and MASK in event["message"]
    assert event == {"type": "error", "code": "auth_failed", "message": event["message"]}


def test_frames_keep_their_wire_shape() -> None:
    status = status_event("retrieving", "searching x")
    assert status == {"type": "status", "stage": "retrieving", "message": "searching x"}
    done = done_event(usage=(3, 4), timings={"first_token_ms": None}, started=0.0)
    assert done["usage"] == {"prompt_tokens": 3, "completion_tokens": 4}
    assert done["timings"]["first_token_ms"] is None and done["timings"]["total_ms"] > 0
    frame = sse_frame(status)
    assert frame.startswith("event: status\ndata: ") and json.loads(frame.split("data: ", 1)[1]) == status


def test_the_direct_token_builder_is_the_models_wire_form() -> None:
    for text in ("word ", "", 'naïve — 日本語 \u2028 "quoted"\n'):
        assert token_event(text) == TokenEvent(text=text).wire()
        assert json.loads(encode(token_event(text))) == {"type": "token", "text": text}
    assert "日本語" in encode(token_event("日本語"))  # not \u-escaped, as before
    with pytest.raises(TypeError):
        token_event(3)  # type: ignore[arg-type]


def test_bad_frames_are_refused_when_built() -> None:
    with pytest.raises(ValidationError):
        error_event("no_such_code", "x")
    with pytest.raises(ValidationError):
        research_event(iteration=1, max_iterations=5, phase="plan", event="plan", surprise=1)


def test_the_stopping_frame_is_one_error_every_transport_sends() -> None:
    frame = stopping_event("the answer ends here")
    assert frame == {
        "type": "error",
        "code": "server_stopping",
        "message": "the server is stopping: the answer ends here",
    }
    assert ErrorEvent.model_validate(frame).wire() == frame
