"""Keep secrets out of every message and log line.

Known secrets (tokens, API keys) are registered once and replaced wherever they
appear, also in their URL-encoded form; credential-shaped text (URL userinfo,
Authorization headers, key=value pairs, the well-known token formats of GitHub,
GitLab, Atlassian, Google and OpenAI) is masked even when the secret was never
registered, because a token can arrive from places we do not control (a URL a
user pasted, a provider's error body).
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

MASK = "***"
_MIN_SECRET_LENGTH = 4

_secrets: set[str] = set()
_lock = threading.Lock()

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # https://user:token@host or https://token@host (ssh's plain `git@` login is not a secret)
    (re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?!git@)[^/\s@]+@"), r"\g<scheme>" + MASK + "@"),
    # Authorization: Basic xxx / Bearer xxx (headers, git's http.extraHeader)
    (re.compile(r"(?i)(authorization\s*[:=]\s*)(basic|bearer|token)?\s*[^\s'\"]+"), r"\1\2 " + MASK),
    # api_key=..., "token": "...", x-goog-api-key: ...
    (
        re.compile(
            r"(?i)((?:api[_-]?key|access[_-]?token|token|password|secret)[\"']?\s*[:=]\s*[\"']?)[^\s'\",&]+"
        ),
        r"\1" + MASK,
    ),
    (re.compile(r"(?i)(key=)[A-Za-z0-9_\-]{8,}"), r"\1" + MASK),
    # Token formats with a recognisable prefix: OpenAI, GitHub, GitLab, Atlassian/Bitbucket, Google.
    (
        re.compile(
            r"\b(?:sk-[A-Za-z0-9_\-]{8,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|"
            r"glpat-[A-Za-z0-9_\-]{20,}|AT(?:BB|ATT|CTT)[A-Za-z0-9_\-=]{20,}|AIza[A-Za-z0-9_\-]{30,})"
        ),
        MASK,
    ),
)


def register_secret(value: str | None) -> None:
    """Remember a secret (and its URL-encoded spelling) so it is masked everywhere from now on."""
    if not value or len(value) < _MIN_SECRET_LENGTH:
        return
    with _lock:
        _secrets.add(value)
        _secrets.add(urllib.parse.quote(value, safe=""))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every known or credential-shaped secret replaced by ***."""
    with _lock:
        known = set(_secrets)
    known.update(secret for secret in secrets if secret and len(secret) >= _MIN_SECRET_LENGTH)
    for secret in sorted(known, key=len, reverse=True):
        text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


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
