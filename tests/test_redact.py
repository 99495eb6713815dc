"""Secrets are masked in text, in log records from any logger, and in tracebacks."""

from __future__ import annotations

import logging
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable

import pytest

import rag.redact
from rag.redact import (
    MASK,
    RedactingFilter,
    install_log_redaction,
    known_secret_count,
    redact,
    register_configured_secret,
    register_secret,
    secret_scope,
)
from tests.support.complexity import assert_linear


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("fatal: unable to access 'https://x-access-token:abc123XYZ@github.com/a/b.git/'", "abc123XYZ"),
        ("cloning https://glpat-tokentokentoken1234@gitlab.com/g/r.git", "glpat-tokentokentoken1234"),
        ("Authorization: Basic eC1hY2Nlc3MtdG9rZW46c2VjcmV0", "eC1hY2Nlc3MtdG9rZW46c2VjcmV0"),
        ("authorization=Bearer sk-live-abcdefgh12345678", "sk-live-abcdefgh12345678"),
        ('{"api_key": "AKIA-very-secret-value"}', "AKIA-very-secret-value"),
        ("GET /v1beta/models?key=AIzaSyA-1234567890abcdefghijklmnopqrstu", "AIzaSyA-1234567890abcdef"),
        ("token ghp_0123456789abcdefghijABCDEFGHIJ in text", "ghp_0123456789abcdefghij"),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "github_pat_11ABCDEFG0123456789"),
        ("bitbucket ATBB0123456789abcdefghijklmnopqrst rejected", "ATBB0123456789abcdefghijklmnopqrst"),
        ("REPOLENS_TOKEN=plain-secret-value", "plain-secret-value"),
    ],
)
def test_credential_shaped_text_is_masked(text: str, secret: str) -> None:
    cleaned = redact(text)
    assert secret not in cleaned
    assert MASK in cleaned


def test_registered_secrets_are_masked_in_every_spelling() -> None:
    secret = "rl-unit/secret+value=1"
    register_secret(secret)
    encoded = urllib.parse.quote(secret, safe="")
    cleaned = redact(f"plain {secret} and url-encoded {encoded} and again {secret}")
    assert secret not in cleaned and encoded not in cleaned
    assert cleaned == f"plain {MASK} and url-encoded {MASK} and again {MASK}"


def test_explicit_secrets_and_short_values() -> None:
    assert redact("value one-off-secret here", ["one-off-secret"]) == f"value {MASK} here"
    assert redact("a b c", ["a", ""]) == "a b c"  # too short to be a secret: masking it would garble text
    register_secret("")
    register_secret(None)


def test_ordinary_text_is_left_alone() -> None:
    text = "cloning ssh://git@github.com/encode/httpx.git with max_tokens: 256 at https://github.com/a/b"
    assert redact(text) == text


def test_log_records_from_any_logger_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    secret = "rl-log-secret-0123456789"
    register_secret(secret)
    install_log_redaction()
    install_log_redaction()  # idempotent: one filter, one factory wrapper
    assert sum(isinstance(f, RedactingFilter) for f in logging.getLogger().filters) == 1
    caplog.set_level(logging.DEBUG)
    child = logging.getLogger("repolens.tests.deep.child")
    child.info("using %s for %s", secret, "https://user:other-pass@example.com/x")
    try:
        raise RuntimeError(f"failed with {secret}")
    except RuntimeError:
        child.exception("boom")

    assert secret not in caplog.text
    assert "other-pass" not in caplog.text
    assert "failed with ***" in caplog.text
    assert caplog.records[0].getMessage() == f"using {MASK} for https://{MASK}@example.com/x"


def test_records_keep_their_args_for_formatters_that_unpack_them() -> None:
    """uvicorn's access formatter unpacks `record.args`; masking must not flatten them."""
    secret = "rl-args-secret-0123456789"
    register_secret(secret)
    install_log_redaction()
    logger = logging.getLogger("repolens.tests.access")
    clean_args = ("127.0.0.1:5000", "GET", "/health", "1.1", 200)
    record = logger.makeRecord(
        logger.name, logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', clean_args, None
    )
    assert record.args == clean_args

    secret_args = ("127.0.0.1:5000", "GET", f"/api?token={secret}", "1.1", 200)
    record = logger.makeRecord(
        logger.name, logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', secret_args, None
    )
    assert isinstance(record.args, tuple) and len(record.args) == 5
    assert secret not in record.getMessage()
    assert record.args[2] == f"/api?token={MASK}"

    record = logger.makeRecord(logger.name, logging.INFO, __file__, 1, "token=%s", (secret,), None)
    assert record.getMessage() == f"token={MASK}"


# Hostile shapes for each pattern: a long run where a pattern could start at every position.
# Hostile texts of about n characters: inputs on which a backtracking pattern goes quadratic or worse.
_HOSTILE = {
    "one long word": lambda n: "a" * n,
    "scheme characters": lambda n: "a+" * (n // 2),
    "token prefixes": lambda n: "sk-" * (n // 3),
    "github prefixes": lambda n: "ghp_" * (n // 4),
    "keywords and spaces": lambda n: "token " * (n // 6),
    "header and spaces": lambda n: "authorization" + " " * n,
    "many urls": lambda n: "https://x" * (n // 9),
    "query keys": lambda n: "key=" * (n // 4),
}


@pytest.mark.parametrize("hostile", list(_HOSTILE.values()), ids=list(_HOSTILE))
def test_redaction_is_linear_time_on_hostile_text(
    hostile: Callable[[int], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A complexity guard, not a benchmark: 125 kB against 1 MB (a backtracking pattern takes minutes
    on the megabyte). The secrets other tests registered are set aside: each costs one linear scan."""
    monkeypatch.setattr("rag.redact._configured", set())
    monkeypatch.setattr("rag.redact._unscoped", OrderedDict())
    texts = {n: hostile(n) for n in (125_000, 1_000_000)}
    assert_linear(lambda n: redact(texts[n]), 125_000)


def test_masking_keeps_the_text_around_each_secret() -> None:
    text = "Authorization: Bearer abcdefgh1234 then https://user:pw-secret@host/x and token=t0ps3cret!"
    cleaned = redact(text)
    assert cleaned == f"Authorization: Bearer {MASK} then https://{MASK}@host/x and token={MASK}"


def test_secrets_registered_outside_a_scope_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: every token registered outside a `secret_scope` (ingest jobs, access checks, the
    OpenAI/MCP routes) stayed for the life of the process, and each costs one scan of every
    redacted string. Now they are a bounded, expiring registry; configured keys stay."""
    monkeypatch.setattr("rag.redact._unscoped", OrderedDict())
    register_configured_secret("configured-provider-key-0001")
    for number in range(3 * rag.redact.MAX_UNSCOPED_SECRETS):
        register_secret(f"transient-token-{number:06d}")
    assert len(rag.redact._unscoped) == rag.redact.MAX_UNSCOPED_SECRETS
    newest = f"transient-token-{3 * rag.redact.MAX_UNSCOPED_SECRETS - 1:06d}"
    assert redact(newest) == MASK and redact("transient-token-000000") == "transient-token-000000"
    assert redact("configured-provider-key-0001") == MASK  # never evicted by traffic

    monkeypatch.setattr("rag.redact.UNSCOPED_TTL_S", -1.0)  # registered already expired
    register_secret("expiring-token-0002")
    assert redact("expiring-token-0002") == "expiring-token-0002"
    assert "expiring-token-0002" not in rag.redact._unscoped


def test_nested_scopes_forget_their_own_secrets_and_keep_the_outer_ones() -> None:
    """A long-lived WebSocket's scope (the server opens one per connection) does not collect
    the token of every request on it: each request's scope forgets its own."""
    before = known_secret_count()
    with secret_scope("socket-scope-secret-01"):
        for number in range(50):
            with secret_scope(f"request-token-{number:04d}"):
                assert redact(f"request-token-{number:04d} socket-scope-secret-01") == f"{MASK} {MASK}"
        assert redact("request-token-0003") == "request-token-0003"
        assert redact("socket-scope-secret-01") == MASK
        assert known_secret_count() == before + 1
    assert known_secret_count() == before


def test_threads_started_in_a_scope_see_its_secrets_after_it_ended() -> None:
    """An ingest job runs in a copy of the request's context: it keeps masking the request's
    token after the request returned, and nothing is left once the job is gone."""
    import contextvars

    seen: list[str] = []
    release = threading.Event()
    with secret_scope("job-token-abcdef"):
        context = contextvars.copy_context()
    worker = threading.Thread(
        target=context.run, args=(lambda: (release.wait(5), seen.append(redact("job-token-abcdef"))),)
    )
    worker.start()
    assert redact("job-token-abcdef") == "job-token-abcdef"  # the request's own context forgot it
    release.set()
    worker.join(5)
    assert seen == [MASK]
