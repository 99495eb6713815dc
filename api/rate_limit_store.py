"""The rate-limit counts of every process on one data dir, in a SQLite table under `REPOLENS_HOME/limits/`.

`repolens serve --workers N` runs N processes, and a client's next request may reach any of them:
without Redis they share one budget per client through this table (`api.middleware.RateLimits`
uses it), as they share ingest jobs through `ingest.job_table`. It is a `limits` storage with the
moving-window strategy only, the strategy `RateLimits` uses, with the same semantics as `limits`'
memory and Redis storages (a request is refused when the window already holds `limit` entries):

- `hits`: one row per counted request: its key (`limits`' `LIMITER/<kind>/<client>/<limit>`), when it
  was counted (wall clock: every process on a host shares it) and when it leaves every window;
- one SQLite database in WAL mode: readers never wait for the writer, and "count the window, then add
  the entry" is one `BEGIN IMMEDIATE` transaction across processes, so N processes never let more than
  `limit` requests through between them. With `synchronous=NORMAL` a commit does not wait for the disk
  (a crash can lose the last counts, never the database).

A hit drops its own key's rows that left the window; rows of keys no client uses any more are swept
once a minute. SQLite in WAL mode needs every process on one host, so the budget is per host, like
the data dir; with `REPOLENS_REDIS_URL` the counts live in Redis instead, for every replica.
A failing database (disk full, a lock held past `BUSY_TIMEOUT_S`) raises `limits.errors.StorageError`
(`wrap_exceptions=True`), which `RateLimits` answers by counting in memory, as for a failing Redis.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from limits.storage import MovingWindowSupport, Storage

DB_NAME = "rate_limits.sqlite3"
# A request waits at most this long for another process's transaction (they last microseconds);
# past it the request is counted in memory (`RateLimits`), never refused for it.
BUSY_TIMEOUT_S = 1.0
# How often a process deletes the rows every window has left (a hit tidies its own key each time).
SWEEP_EVERY_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS hits (
    key TEXT NOT NULL,
    at REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS hits_by_key ON hits (key, at);
CREATE INDEX IF NOT EXISTS hits_by_expiry ON hits (expires);
"""


class SQLiteStorage(Storage, MovingWindowSupport):
    """`limits`' moving-window storage in `<home>/limits/rate_limits.sqlite3` (see the module docstring).

    The database is opened on first use, inside a counted call: a data dir that cannot hold it is a
    `StorageError` there (a request counted in memory), never a server that does not start."""

    STORAGE_SCHEME = None  # built by `RateLimits`, not from a URI

    def __init__(self, home: Path, *, wrap_exceptions: bool = True) -> None:
        super().__init__(None, wrap_exceptions=wrap_exceptions)
        self.path = home / "limits" / DB_NAME
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._swept_at = float("-inf")

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return (sqlite3.Error, OSError)

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S
            )
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(_SCHEMA)
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken before reading (so no other process counts in between)."""
        with self._lock:
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """Count `amount` requests under `key` if the last `expiry` seconds hold at most `limit - amount`."""
        if amount > limit:
            return False
        with self._write() as db:
            now = time.time()
            db.execute("DELETE FROM hits WHERE key = ? AND at < ?", (key, now - expiry))
            (held,) = db.execute("SELECT count(*) FROM hits WHERE key = ?", (key,)).fetchone()
            if held + amount > limit:
                return False
            db.executemany(
                "INSERT INTO hits (key, at, expires) VALUES (?, ?, ?)", [(key, now, now + expiry)] * amount
            )
            if now - self._swept_at >= SWEEP_EVERY_S:
                self._swept_at = now
                db.execute("DELETE FROM hits WHERE expires < ?", (now,))
        return True

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """When the window's oldest entry was counted, and how many entries it holds (an entry exactly
        `expiry` old no longer counts here, though it still refuses a hit: `limits`' own storages)."""
        with self._lock:
            now = time.time()
            oldest, held = (
                self._connection()
                .execute("SELECT min(at), count(*) FROM hits WHERE key = ? AND at > ?", (key, now - expiry))
                .fetchone()
            )
        return (float(oldest), int(held)) if held else (now, 0)

    def check(self) -> bool:
        with self._lock:
            self._connection().execute("SELECT 1").fetchone()
        return True

    def reset(self) -> int | None:
        with self._write() as db:
            return db.execute("DELETE FROM hits").rowcount

    def clear(self, key: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM hits WHERE key = ?", (key,))

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # The fixed-window counters `limits` also defines: `RateLimits` uses the moving window only.
    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        raise NotImplementedError("the data dir's rate-limit store keeps moving windows only")

    def get(self, key: str) -> int:
        raise NotImplementedError("the data dir's rate-limit store keeps moving windows only")

    def get_expiry(self, key: str) -> float:
        raise NotImplementedError("the data dir's rate-limit store keeps moving windows only")
