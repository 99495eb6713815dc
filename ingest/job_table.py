"""The ingest jobs of every process on one data dir, in a SQLite table under `REPOLENS_HOME/jobs/`.

`repolens serve --workers N` runs N processes, and a client's next request may reach any of them:
without Redis they share jobs through this table, so every process answers `GET /api/jobs/{id}`,
streams a job's progress and cancels it, whichever process runs it (`ingest.jobs.JobPool` uses it).
A job runs in the process that took its request (its token stays in that process's memory); what
the table holds is what `GET /api/jobs` shows, never an option or a token:

- `jobs`: one row per job: its repository, state, owner (the process running it), a `cancel` flag
  another process sets, its `view` (the job's `to_json()`) and its `final` frame;
- `job_events`: each job's frames (`status` ..., then one `done`/`error` marked `final`), numbered,
  the last `KEEP_EVENTS` kept, which a watcher in another process polls;
- one SQLite database in WAL mode: readers never wait for the writer, and every change that must
  not race (join a repository's job, take a running slot, end a job once) is one `BEGIN IMMEDIATE`
  transaction across processes.

A process owns its jobs through a `ProcessLease`: an `flock` on `jobs/owners/<owner>.lock` held for
the process's life. The kernel drops it when the process dies, even by SIGKILL, so another process
tells a live owner from a dead one exactly (no heartbeat to tune, no pid reuse to fool it), and
`reap` ends a dead owner's unfinished jobs `failed` (`ingest_failed`, "interrupted") instead of
leaving them `running` forever. SQLite in WAL mode needs every process on one host, so a data dir's
processes are one host's: the running-slot limit (`REPOLENS_INGEST_WORKERS`) is per host.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.jobs import JobState, worker_name
from rag.errors import ErrorCode
from rag.events import Event, error_event
from rag.redact import redact

DB_NAME = "jobs.sqlite3"
# Finished jobs kept (the oldest are forgotten first); unfinished ones are always kept.
KEEP_FINISHED = 100
# Frames kept per job: a watcher polls several times a second, and the pipeline reports a few a second.
KEEP_EVENTS = 200
# How long a write waits for another process's transaction (they last milliseconds).
BUSY_TIMEOUT_S = 30.0
QUEUED, RUNNING = JobState.QUEUED.value, JobState.RUNNING.value
FINISHED_STATES = (JobState.DONE.value, JobState.FAILED.value, JobState.CANCELLED.value)
CANCELLED_BEFORE_START = "the ingest was cancelled before it started"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    repo_id TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    owner TEXT NOT NULL,
    cancel INTEGER NOT NULL DEFAULT 0,
    view TEXT NOT NULL,
    final TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, repo_id);
CREATE TABLE IF NOT EXISTS job_events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    final INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, seq)
);
"""
_UNFINISHED = f"state IN ('{QUEUED}', '{RUNNING}')"


class ProcessLease:
    """This process's claim on the jobs it runs: an exclusive `flock` on `owners/<name>.lock`, held
    until `release` or the process's death (the kernel drops it), and checked by `alive`."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.name = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._path = folder / f"{self.name}.lock"
        # Locked under a name `alive` and `sweep` never look at, then renamed: no other process
        # ever sees this lease's file unlocked (and takes it for a dead one's).
        making = folder / f"{self.name}.new"
        fd = os.open(making, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)  # not inherited by children
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(making, self._path)
        self._fd: int | None = fd
        self._closer = weakref.finalize(self, os.close, fd)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()
            self._closer()
            self._fd = None

    @staticmethod
    def sweep(folder: Path) -> None:
        """Remove the lock files of processes that ended (each run of a server leaves one)."""
        for path in folder.glob("*.lock"):
            ProcessLease.alive(folder, path.stem)

    @staticmethod
    def alive(folder: Path, name: str) -> bool:
        """Whether the process holding lease `name` still runs; a dead one's lock file is removed."""
        path = folder / f"{name}.lock"
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return False


@dataclass(frozen=True, slots=True)
class Frame:
    """One of a job's frames as the table numbers it."""

    seq: int
    event: Event
    final: bool


@dataclass(frozen=True, slots=True)
class StoredView:
    """A job's row: its `/api/jobs` view and, once it ended, its last frame."""

    view: dict[str, Any]
    final: Event | None


def _text(value: Any) -> str:
    """JSON for the table, with every secret the current scope knows masked (the writes of a job's
    progress run inside the job's `secret_scope`)."""
    return redact(json.dumps(value))


class JobTable:
    """The shared job rows of one data dir (`<home>/jobs/jobs.sqlite3`), and this process's lease."""

    def __init__(self, home: Path) -> None:
        self.folder = home / "jobs"
        self._owners = self.folder / "owners"
        self._lease = ProcessLease(self._owners)
        ProcessLease.sweep(self._owners)
        self.owner = self._lease.name
        self.worker = worker_name()
        self._db = sqlite3.connect(
            self.folder / DB_NAME, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S
        )
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken before reading (so no other process changes what it reads)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def create(self, job_id: str, repo_id: str, created_at: float, view: dict[str, Any]) -> str | None:
        """Store a new queued job of this process, or return the id of the unfinished job of its
        repository (any process's), which the request joins instead."""
        with self._write() as db:
            self._reap(db)
            active = db.execute(
                f"SELECT id FROM jobs WHERE repo_id = ? AND {_UNFINISHED}", (repo_id,)
            ).fetchone()
            if active is not None:
                return str(active[0])
            db.execute(
                "INSERT INTO jobs (id, repo_id, state, created_at, owner, view) VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, repo_id, QUEUED, created_at, self.owner, _text(view)),
            )
            forgotten = [
                row[0]
                for row in db.execute(
                    "SELECT id FROM jobs WHERE state IN (?, ?, ?) ORDER BY created_at DESC LIMIT -1 OFFSET ?",
                    (*FINISHED_STATES, KEEP_FINISHED),
                )
            ]
            for old in forgotten:
                db.execute("DELETE FROM job_events WHERE job_id = ?", (old,))
                db.execute("DELETE FROM jobs WHERE id = ?", (old,))
        return None

    def claim(self, job_id: str, limit: int, view: dict[str, Any]) -> JobState:
        """Make the queued job `running` (with `view`) if fewer than `limit` jobs run on this data dir.
        Returns its state: `running` (it runs now), `queued` (every slot is taken: wait), or how it
        ended meanwhile (cancelled while queued; a job no longer stored counts as `cancelled`)."""
        with self._write() as db:
            self._reap(db)
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return JobState.CANCELLED
            if row[0] != QUEUED:
                return JobState(row[0])
            (running,) = db.execute("SELECT count(*) FROM jobs WHERE state = ?", (RUNNING,)).fetchone()
            if running >= limit:
                return JobState.QUEUED
            db.execute("UPDATE jobs SET state = ?, view = ? WHERE id = ?", (RUNNING, _text(view), job_id))
        return JobState.RUNNING

    def publish(self, job_id: str, view: dict[str, Any], event: Event) -> None:
        """A `status` frame of an unfinished job, and its view's latest progress."""
        with self._write() as db:
            changed = db.execute(
                f"UPDATE jobs SET view = ? WHERE id = ? AND {_UNFINISHED}", (_text(view), job_id)
            ).rowcount
            if changed:
                self._append(db, job_id, event, final=False)

    def finish(self, job_id: str, view: dict[str, Any], final: Event) -> bool:
        """End the job once (False if it had already ended): its view, state and last frame."""
        with self._write() as db:
            return self._finish(db, job_id, view, final)

    def request_cancel(self, job_id: str) -> bool:
        """Ask the job to stop (False: no such job). A queued job ends `cancelled` here and now; a
        running one's owner sees the flag (`cancel_requested`) and stops its build."""
        with self._write() as db:
            self._reap(db)
            row = db.execute("SELECT state, view FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return False
            db.execute("UPDATE jobs SET cancel = 1 WHERE id = ?", (job_id,))
            if row[0] == QUEUED:
                view = json.loads(row[1])
                error = {"code": str(ErrorCode.CANCELLED), "message": CANCELLED_BEFORE_START}
                view.update(state=JobState.CANCELLED.value, finished_at=time.time(), error=error)
                self._finish(db, job_id, view, error_event(ErrorCode.CANCELLED, CANCELLED_BEFORE_START))
        return True

    def cancel_requested(self, job_ids: list[str]) -> set[str]:
        """Which of these jobs (this process's) another process asked to stop, or ended meanwhile."""
        if not job_ids:
            return set()
        marks = ", ".join("?" * len(job_ids))
        rows = self._read(
            f"SELECT id FROM jobs WHERE id IN ({marks}) AND (cancel = 1 OR NOT {_UNFINISHED})", *job_ids
        )
        return {str(row[0]) for row in rows}

    def get(self, job_id: str) -> StoredView | None:
        rows = self._read("SELECT view, final FROM jobs WHERE id = ?", job_id)
        return _stored(rows[0]) if rows else None

    def jobs(self) -> list[StoredView]:
        """Every job kept, newest first."""
        return [_stored(row) for row in self._read("SELECT view, final FROM jobs ORDER BY created_at DESC")]

    def frames_after(self, job_id: str, seq: int) -> list[Frame] | None:
        """The job's frames numbered after `seq` (None: the job is no longer in the table)."""
        with self._lock:
            if self._db.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
                return None
            rows = self._db.execute(
                "SELECT seq, event, final FROM job_events WHERE job_id = ? AND seq > ? ORDER BY seq",
                (job_id, seq),
            ).fetchall()
        return [Frame(int(row[0]), json.loads(row[1]), bool(row[2])) for row in rows]

    def latest_frame(self, job_id: str) -> Frame | None:
        rows = self._read(
            "SELECT seq, event, final FROM job_events WHERE job_id = ? ORDER BY seq DESC LIMIT 1", job_id
        )
        return Frame(int(rows[0][0]), json.loads(rows[0][1]), bool(rows[0][2])) if rows else None

    def reap(self) -> None:
        """End the unfinished jobs of processes that died (`failed`, interrupted)."""
        owners = self._read(f"SELECT DISTINCT owner FROM jobs WHERE {_UNFINISHED} AND owner != ?", self.owner)
        if any(not ProcessLease.alive(self._owners, owner) for (owner,) in owners):
            with self._write() as db:
                self._reap(db)

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._lease.release()

    def _reap(self, db: sqlite3.Connection) -> None:
        rows = db.execute(
            f"SELECT id, owner, view FROM jobs WHERE {_UNFINISHED} AND owner != ?", (self.owner,)
        )
        for job_id, owner, raw in rows.fetchall():
            if ProcessLease.alive(self._owners, owner):
                continue
            view = json.loads(raw)
            message = (
                f"the server process running this ingest ({view.get('worker', owner)}) stopped before it "
                "finished; the previous index is unchanged: start the ingest again"
            )
            view.update(
                state=JobState.FAILED.value,
                finished_at=time.time(),
                error={"code": str(ErrorCode.INGEST_FAILED), "message": message},
            )
            self._finish(db, job_id, view, error_event(ErrorCode.INGEST_FAILED, message))

    def _finish(self, db: sqlite3.Connection, job_id: str, view: dict[str, Any], final: Event) -> bool:
        changed = db.execute(
            f"UPDATE jobs SET state = ?, view = ?, final = ? WHERE id = ? AND {_UNFINISHED}",
            (view["state"], _text(view), _text(final), job_id),
        ).rowcount
        if changed:
            self._append(db, job_id, final, final=True)
        return bool(changed)

    @staticmethod
    def _append(db: sqlite3.Connection, job_id: str, event: Event, *, final: bool) -> None:
        (last,) = db.execute(
            "SELECT coalesce(max(seq), 0) FROM job_events WHERE job_id = ?", (job_id,)
        ).fetchone()
        db.execute(
            "INSERT INTO job_events (job_id, seq, event, final) VALUES (?, ?, ?, ?)",
            (job_id, last + 1, _text(event), int(final)),
        )
        db.execute("DELETE FROM job_events WHERE job_id = ? AND seq <= ?", (job_id, last + 1 - KEEP_EVENTS))


def _stored(row: tuple[Any, ...]) -> StoredView:
    return StoredView(json.loads(row[0]), json.loads(row[1]) if row[1] else None)
