"""The chat request as clients send it, validated once at the edge.

The body is deepwiki-open's (`repo_url`, `messages`, `filePath`, `token`, `type`, `provider`,
`model`, `language`, and the four filter strings, newline-separated and percent-encoded) plus
RepoLens' own fields (`protocol`, `deep_research`, `max_iterations`, `k`, `ref`). The same model
serves `/ws/chat`, `POST /chat/completions/stream` and `repolens ask`, so every entry point
rejects the same bad input with the same `bad_request` message. Unknown fields are ignored
(deepwiki clients send a few we do not need); known fields of the wrong type are errors.
Validation messages never echo input values: the body may carry a token.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import Depends, Header
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rag.errors import ErrorCode, RepoLensError
from rag.prompt import MAX_ANSWER_K
from rag.research.options import MAX_ITERATIONS, MIN_ITERATIONS
from rag.settings import Settings
from rag.store.layout import validate_repo_id

# A private repository's access token on routes that serve its content (a header keeps it out of URLs).
RepoToken = Annotated[str | None, Header(alias="X-Repo-Token")]
MAX_REQUEST_BYTES_VARIABLE = "REPOLENS_MAX_REQUEST_BYTES"


def _checked_repo_id(repo_id: str) -> str:
    """The `{repo_id:path}` of a route, refused (400, `InvalidRepoIdError`) by
    `rag.store.layout.validate_repo_id` before any route code runs; the store checks again, so
    nothing bypasses it."""
    return validate_repo_id(repo_id)


RepoIdPath = Annotated[str, Depends(_checked_repo_id)]


class BadRequestError(RepoLensError):
    code = ErrorCode.BAD_REQUEST


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["user", "assistant", "system"]
    content: str


class ChatRequestBody(BaseModel):
    """One question of a conversation; `messages` is the whole history, the question last."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    repo_url: str = Field(min_length=1)
    messages: list[ChatMessage]
    file_path: str | None = Field(None, alias="filePath")
    token: str | None = None
    type: Literal["github", "gitlab", "bitbucket", "git", "local"] = "github"
    provider: str | None = None
    model: str | None = None
    language: str = "en"
    excluded_dirs: str | list[str] | None = None
    excluded_files: str | list[str] | None = None
    included_dirs: str | list[str] | None = None
    included_files: str | list[str] | None = None
    protocol: Literal["events"] | None = None
    deep_research: bool = False
    max_iterations: int | None = Field(None, ge=MIN_ITERATIONS, le=MAX_ITERATIONS)
    k: int = Field(10, ge=1, le=MAX_ANSWER_K)
    ref: str | None = None

    @property
    def question(self) -> str:
        return self.messages[-1].content

    @property
    def history(self) -> list[dict[str, str]]:
        return [message.model_dump() for message in self.messages[:-1]]

    @property
    def platform(self) -> str | None:
        """The platform the client named, or None to let the source resolver detect it.

        deepwiki clients always send `type` (default `github`), so an explicit value is
        trusted; an omitted one must not force `github` onto a GitLab or local location.
        """
        return self.type if "type" in self.model_fields_set else None

    @property
    def platform_is_hint(self) -> bool:
        """Whether a `type` the location contradicts is ignored rather than refused (`type_mismatch`).

        deepwiki-open's page sends `type: github` whenever its URL lacks `?type=`, a local folder's
        included, so its plain-text protocol keeps `type` a hint, as it always did; RepoLens' own
        events protocol (the page, `repolens ask`) refuses it as `repolens ingest` does.
        """
        return self.protocol != "events"


def max_request_bytes(settings: Settings) -> int:
    return settings.max_request_bytes


def check_size(raw: str | bytes | bytearray, limit: int) -> None:
    size = len(raw.encode("utf-8")) if isinstance(raw, str) else len(raw)
    if size > limit:
        raise BadRequestError(
            f"request is {size} bytes, over the limit of {limit} bytes "
            f"(raise it with {MAX_REQUEST_BYTES_VARIABLE})"
        )


def decode_frame(raw: str | bytes, limit: int) -> dict[str, Any]:
    """A JSON object from one WebSocket frame, or a specific `BadRequestError`."""
    check_size(raw, limit)
    data: dict[str, Any] = decode_json(raw)
    return data


# Bounds every JSON entry point shares (WebSocket frames, HTTP bodies via `api.middleware`): deep
# nesting used to kill the socket with a RecursionError, and a 5,000-digit number with a ValueError.
MAX_JSON_DEPTH = 64
MAX_NUMBER_CHARS = 100


def _bounded_number(kind: type) -> Any:
    def parse(text: str) -> Any:
        if len(text) > MAX_NUMBER_CHARS:
            raise BadRequestError(f"a JSON number has {len(text)} characters, over {MAX_NUMBER_CHARS}")
        return kind(text)

    return parse


def _no_constant(name: str) -> Any:
    raise BadRequestError(f"{name} is not valid JSON")


def decode_json(raw: str | bytes, *, max_depth: int = MAX_JSON_DEPTH, require_object: bool = True) -> Any:
    """JSON within the bounds above, or a specific `BadRequestError` (never another exception)."""
    try:
        data = json.loads(
            raw,
            parse_int=_bounded_number(int),
            parse_float=_bounded_number(float),
            parse_constant=_no_constant,
        )
    except RecursionError:
        raise BadRequestError(f"JSON is nested deeper than {max_depth} levels") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BadRequestError(f"malformed JSON: {error}") from None
    except ValueError as error:
        raise BadRequestError(f"malformed JSON: {str(error)[:200]}") from None
    if _depth_over(data, max_depth):
        raise BadRequestError(f"JSON is nested deeper than {max_depth} levels")
    if require_object and not isinstance(data, dict):
        raise BadRequestError(f"the request must be a JSON object, got {type(data).__name__}")
    return data


def _depth_over(data: Any, limit: int) -> bool:
    """True when containers nest more than `limit` deep (iterative: no recursion to exhaust)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def parse_chat_request(data: dict[str, Any]) -> ChatRequestBody:
    """Validate a decoded request; the messages checks use deepwiki-open's wording."""
    if not data.get("messages") and isinstance(data.get("messages", []), list):
        raise BadRequestError("No messages provided")
    try:
        request = ChatRequestBody.model_validate(data)
    except ValidationError as error:
        raise BadRequestError(f"invalid request: {describe(error)}") from None
    if request.messages[-1].role != "user":
        raise BadRequestError("Last message must be from the user")
    return request


def describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "body"
        problems.append(f"{where}: {item['msg']}")
    return "; ".join(problems)
