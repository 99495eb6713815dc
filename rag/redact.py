"""Keep secrets out of every message and log line.

Known secrets (tokens, API keys) are registered and replaced wherever they appear, also in
their URL-encoded form. Three kinds of registration, so the registry never grows with traffic:

- configured secrets (`register_configured_secret`: provider keys, `REPOLENS_API_KEY`, read
  from the settings) are masked for the life of the process;
- a secret registered inside `secret_scope()` (a request's token; the server opens a scope for
  every request, `IngestJob.run` one for every ingest) is masked while that scope runs, in its
  context (tasks, threads and jobs started from it inherit it), and forgotten when it ends;
- a secret registered outside any scope (a library call, a script) is masked for
  `UNSCOPED_TTL_S` after its last registration, at most `MAX_UNSCOPED_SECRETS` of them (the
  least recently registered go first).

Credential-shaped text (URL userinfo, Authorization headers, key=value pairs, the well-known
token formats of GitHub, GitLab, Atlassian, Google and OpenAI) is masked even when the secret
was never registered, because a token can arrive from places we do not control (a URL a user
pasted, a provider's error body).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

MASK = "***"
_MIN_SECRET_LENGTH = 4
MAX_UNSCOPED_SECRETS = 256
UNSCOPED_TTL_S = 3600.0

_configured: set[str] = set()
# Secrets registered outside any scope -> when they stop being masked (monotonic clock).
_unscoped: OrderedDict[str, float] = OrderedDict()
_lock = threading.Lock()
# The secret sets of the scopes this context runs in, outermost first (empty: no scope).
_scopes: contextvars.ContextVar[tuple[set[str], ...]] = contextvars.ContextVar(
    "repolens_secret_scopes", default=()
)

# Credential-shaped text: each rule masks its `secret` group. Every pattern starts with a
# literal, so the regex engine jumps from one occurrence of that literal to the next instead of
# trying a match at every position, and conditions on what comes before the literal are
# lookbehinds placed *after* it; a pattern that could start anywhere (`[a-z][a-z0-9+.-]*://`)
# rescans a long word once per position: a 50 KB repo_url used to block the server for 10 s.
# Case-insensitive rules run on an ASCII-lowercased copy (same length, so spans carry over).
_RULES: tuple[tuple[re.Pattern[str], bool], ...] = (
    # https://user:token@host or https://token@host (ssh's plain `git@` login is not a secret)
    (re.compile(r"://(?<=[a-zA-Z0-9+.-]://)(?!git@)(?P<secret>[^/\s@]+)@"), False),
    # Authorization: Basic xxx / Bearer xxx (headers, git's http.extraHeader)
    (re.compile(r"authorization\s*[:=]\s*(?:(?:basic|bearer|token)\s*)?(?P<secret>[^\s'\"]+)"), True),
    # api_key=..., "token": "...", x-goog-api-key: ..., password=..., secret: ...
    *(
        (re.compile(prefix + r"[\"']?\s*[:=]\s*[\"']?(?P<secret>[^\s'\",&]+)"), True)
        for prefix in (r"api[_-]?key", r"access[_-]?token", r"token", r"password", r"secret")
    ),
    (re.compile(r"key=(?P<secret>[a-z0-9_\-]{8,})"), True),
    # Token formats with a recognisable prefix: OpenAI, GitHub, GitLab, Atlassian/Bitbucket, Google.
    *(
        (re.compile(f"(?P<secret>{prefix}(?<![A-Za-z0-9_]{prefix}){body})"), False)
        for prefix, body in (
            ("sk-", r"[A-Za-z0-9_\-]{8,}"),
            ("gh[pousr]_", r"[A-Za-z0-9]{20,}"),
            ("github_pat_", r"[A-Za-z0-9_]{20,}"),
            ("glpat-", r"[A-Za-z0-9_\-]{20,}"),
            *((prefix, r"[A-Za-z0-9_\-=]{20,}") for prefix in ("ATBB", "ATATT", "ATCTT")),
            ("AIza", r"[A-Za-z0-9_\-]{30,}"),
        )
    ),
)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _spellings(value: str | None) -> set[str]:
    if not value or len(value) < _MIN_SECRET_LENGTH:
        return set()
    return {value, urllib.parse.quote(value, safe="")}


def register_configured_secret(value: str | None) -> None:
    """Mask a secret read from the settings (a provider key, the API key) for the life of the process."""
    spellings = _spellings(value)
    with _lock:
        _configured.update(spellings)


def register_secret(value: str | None) -> None:
    """Mask a secret (and its URL-encoded spelling) from now on: until the innermost
    `secret_scope()` ends, or, outside any scope, for `UNSCOPED_TTL_S` (bounded registry)."""
    spellings = _spellings(value)
    if not spellings:
        return
    scopes = _scopes.get()
    with _lock:
        if scopes:
            scopes[-1].update(spellings)
            return
        expires = time.monotonic() + UNSCOPED_TTL_S
        for spelling in spellings:
            _unscoped[spelling] = expires
            _unscoped.move_to_end(spelling)
        while len(_unscoped) > MAX_UNSCOPED_SECRETS:
            _unscoped.popitem(last=False)


@contextlib.contextmanager
def secret_scope(*values: str | None) -> Iterator[None]:
    """Mask `values`, and every secret registered meanwhile in this context, until the block ends.

    An inner scope also masks its outer scopes' secrets and forgets only its own when it ends (a
    long-lived WebSocket's scope does not collect the tokens of each of its requests). Restores
    the previous state by value (not by token), so it also works in an async generator that a
    different task resumes."""
    previous = _scopes.get()
    _scopes.set((*previous, set()))
    try:
        for value in values:
            register_secret(value)
        yield
    finally:
        _scopes.set(previous)


def known_secret_count() -> int:
    """How many spellings are registered for this context: configured, unscoped and scoped."""
    return len(_known())


def _known() -> set[str]:
    now = time.monotonic()
    with _lock:
        for expired in [secret for secret, expires in _unscoped.items() if expires < now]:
            del _unscoped[expired]
        known = _configured | _unscoped.keys()
        for scope in _scopes.get():
            known |= scope
    return known


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every known or credential-shaped secret replaced by ***."""
    known = _known()
    known.update(secret for secret in secrets if secret and len(secret) >= _MIN_SECRET_LENGTH)
    for secret in sorted(known, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return _mask_credentials(text)


def _mask_credentials(text: str) -> str:
    """`text` with the `secret` group of every rule's matches replaced by MASK, in one pass."""
    lowered = text.translate(_ASCII_LOWER)
    spans: list[tuple[int, int]] = []
    for pattern, case_insensitive in _RULES:
        spans.extend(
            match.span("secret") for match in pattern.finditer(lowered if case_insensitive else text)
        )
    if not spans:
        return text
    parts: list[str] = []
    position = 0
    for start, end in sorted(spans):
        if end <= position:
            continue
        parts.append(text[position : max(start, position)])
        if start >= position:
            parts.append(MASK)
        position = end
    parts.append(text[position:])
    return "".join(parts)


def _scrub(record: logging.LogRecord) -> None:
    """Mask secrets in a record's message and traceback text, in place.

    Records without secrets are left untouched, and a record's args keep their
    shape when masking them is enough: formatters such as uvicorn's access log
    unpack `record.args` and would fail on a record flattened to one string.
    """
    if record.exc_info and record.exc_info[1] is not None:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        record.exc_info = None
    try:
        message = record.getMessage()
    except (TypeError, ValueError):
        message = f"{record.msg} {record.args}"
    cleaned = redact(message)
    if cleaned == message:
        return
    if isinstance(record.args, tuple) and record.args and isinstance(record.msg, str):
        original = (record.msg, record.args)
        record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        record.msg = redact(record.msg)
        try:
            if redact(record.getMessage()) == record.getMessage():
                return
        except (TypeError, ValueError):
            pass
        record.msg, record.args = original
    record.msg = cleaned
    record.args = None


class RedactingFilter(logging.Filter):
    """Rewrites each record's message with secrets masked before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        _scrub(record)
        return True


def install_log_redaction() -> None:
    """Mask secrets in every log record, whichever logger or handler it goes through (idempotent).

    Filters on the root logger do not see records propagated from child
    loggers, and handlers added later (a test's log capture, uvicorn's) would
    miss them too; redacting in the record factory covers all of them, and the
    root filters stay for records whose text is changed after creation.
    """
    root = logging.getLogger()
    targets: list[logging.Filterer] = [root, *root.handlers]
    for target in targets:
        if not any(isinstance(existing, RedactingFilter) for existing in target.filters):
            target.addFilter(RedactingFilter())
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "redacting", False):
        logging.setLogRecordFactory(_redacting_factory(factory))


def _redacting_factory(inner: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = inner(*args, **kwargs)
        _scrub(record)
        return record

    factory.redacting = True  # type: ignore[attr-defined]
    return factory
