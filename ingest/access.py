"""Who may read a private repository's index: whoever the host lets read the repository.

Tokens are never stored, so the server cannot remember who was allowed; each request for a
private repository's content brings a token, and the host is asked (`git ls-remote`) whether
it still opens the repository. A yes is remembered in memory only, under a hash of the token,
for `CACHE_TTL_S`, so a conversation does not ask the host for every question.

On the server that question is a connection a client causes, like a clone: it goes through the
same source policy (`ingest.policy.SourcePolicy.admit`: the host's addresses are checked before
any connection, then git is pinned to them), because the host's DNS may have changed since the
repository was ingested.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from ingest.errors import AuthenticationError
from ingest.git import ls_remote
from ingest.sources import resolve_source
from rag.redact import register_secret
from rag.types import RepoRecord

if TYPE_CHECKING:
    from ingest.policy import SourcePolicy

__all__ = ["CACHE_TTL_S", "LS_REMOTE_TIMEOUT_S", "clear_cache", "verify_access"]

CACHE_TTL_S = 600.0
LS_REMOTE_TIMEOUT_S = 20.0
_CACHE_SIZE = 1024

_granted: OrderedDict[tuple[str, str], float] = OrderedDict()
_lock = threading.Lock()


def verify_access(
    record: RepoRecord,
    token: str | None,
    username: str | None = None,
    *,
    policy: SourcePolicy | None = None,
) -> None:
    """Return if `token` may read `record`'s repository; raise `AuthenticationError` if not.

    Public records always pass. With a `policy` (the server's), a host it forbids is refused
    (`forbidden_host`) before any connection, and the check connects only to the addresses it
    admitted. Blocking (network I/O to the host): call it from a thread.
    """
    if not record.private:
        return
    token = (token or "").strip()
    if not token:
        raise AuthenticationError(
            f"{_name(record)} is private: send its access token "
            "(the `token` field, or the `X-Repo-Token` header)"
        )
    register_secret(token)
    key = (record.id, hashlib.sha256(token.encode()).hexdigest())
    if _is_granted(key):
        return
    source = resolve_source(record.url, platform=record.platform, ref=record.ref)
    pins = policy.admit(source) if policy is not None else ()
    try:
        ls_remote(source, token, username=username, timeout=LS_REMOTE_TIMEOUT_S, resolve=pins)
    except AuthenticationError:
        raise AuthenticationError(
            f"access to {_name(record)} refused: the host did not accept the token"
        ) from None
    _grant(key)


def clear_cache() -> None:
    """Forget every granted access (tests, and operators revoking tokens)."""
    with _lock:
        _granted.clear()


def _name(record: RepoRecord) -> str:
    """`github.com/o/r` for a repository at `https://github.com/o/r`."""
    return record.url.split("://", 1)[-1].removesuffix(".git")


def _is_granted(key: tuple[str, str]) -> bool:
    with _lock:
        expires = _granted.get(key)
        if expires is None:
            return False
        if expires < time.monotonic():
            del _granted[key]
            return False
        _granted.move_to_end(key)
        return True


def _grant(key: tuple[str, str]) -> None:
    with _lock:
        _granted[key] = time.monotonic() + CACHE_TTL_S
        _granted.move_to_end(key)
        while len(_granted) > _CACHE_SIZE:
            _granted.popitem(last=False)
