"""Keep secrets out of every message and log line.

Known secrets (tokens, API keys) are registered once and replaced wherever they
appear; credential-shaped text (URL userinfo, Authorization headers, key=value
pairs) is masked even when the secret was never registered.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

MASK = "***"
_MIN_SECRET_LENGTH = 4

_secrets: set[str] = set()
_lock = threading.Lock()

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # https://user:token@host or https://token@host
    (re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@"), r"\g<scheme>" + MASK + "@"),
    # Authorization: Basic xxx / Bearer xxx (headers, git's http.extraHeader)
    (re.compile(r"(?i)(authorization\s*[:=]\s*)(basic|bearer|token)?\s*[^\s'\"]+"), r"\1\2 " + MASK),
    # api_key=..., "token": "...", x-goog-api-key: ...
    (
        re.compile(r"(?i)((?:api[_-]?key|access[_-]?token|token|password|secret)[\"']?\s*[:=]\s*[\"']?)[^\s'\",&]+"),
        r"\1" + MASK,
    ),
    (re.compile(r"(?i)(key=)[A-Za-z0-9_\-]{8,}"), r"\1" + MASK),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"), MASK),
)


def register_secret(value: str | None) -> None:
    """Remember a secret so it is masked everywhere from now on."""
    if value and len(value) >= _MIN_SECRET_LENGTH:
        with _lock:
            _secrets.add(value)


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


class RedactingFilter(logging.Filter):
    """Rewrites each record's message with secrets masked before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if cleaned != message or record.args:
            record.msg = cleaned
            record.args = None
        return True


def install_log_redaction() -> None:
    """Attach the filter to the root logger and its handlers (idempotent)."""
    root = logging.getLogger()
    targets: list[logging.Filterer] = [root, *root.handlers]
    for target in targets:
        if not any(isinstance(existing, RedactingFilter) for existing in target.filters):
            target.addFilter(RedactingFilter())
