"""Ingest jobs: one `IngestJob` per run, a bounded pool that runs them, and their event streams.

Every way of starting an ingest goes through here: `repolens ingest`/`update` run a job in the
calling process (`IngestJob.run`, with Ctrl-C cancelling it), and the server (`POST /api/repos`,
`POST /api/repos/{id}/update`, the chat's ingest-on-first-use) submits jobs to a `JobPool`:

- at most `REPOLENS_INGEST_WORKERS` jobs run at once, each from a pool thread, so clone/parse/
  embed never run on the event loop and never outnumber the workers (the rest wait `queued`);
  the server's pool runs each job in a lower-priority worker process (`ingest.isolated`,
  `REPOLENS_INGEST_ISOLATION=process`), so an ingest does not take the GIL or the CPU from the
  answers being streamed; `thread` runs them in the pool's threads, as the CLI does;
- a request for a repository that already has a queued or running job joins that job (one clone,
  one build) instead of starting another;
- a client that disconnects only stops listening: the job carries on and its result is kept;
  an explicit cancel (`POST /api/jobs/{id}/cancel`, the chat's `cancel` frame) stops it;
- `GET /api/jobs` and `GET /api/jobs/{id}` show every job's state and latest progress.

`JobQueue` is the interface the routes use. `JobPool` runs jobs in this process and shares them
with every process on the same data dir through an `ingest.job_table.JobTable` (SQLite under
`REPOLENS_HOME`), so with `repolens serve --workers N` any process answers for any job: the limit
and the join above hold across the processes, and a cancel reaches the process running the job
within `CANCEL_POLL_S`. `ingest.redis_queue.RedisJobQueue` implements it on Redis for several API
replicas and `repolens worker` processes (`REPOLENS_REDIS_URL`). `StoredJob` is a job as either
shared store holds it (another process's), with the same `to_json()` and `final_event()`.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import contextvars
import logging
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ingest.errors import IngestCancelled
from ingest.isolated import IngestProcess, ProcessPool
from ingest.pipeline import IngestOptions, IngestReport, Progress, ingest, update
from ingest.reader import Limits
from ingest.sources import resolve_source
from rag.embedders import Embedder
from rag.errors import ErrorCode, NotFoundError, RepoLensError
from rag.events import Event, error_event, ingest_done_event, status_event
from rag.redact import redact, secret_scope
from rag.store import Store

if TYPE_CHECKING:
    from ingest.job_table import Frame, JobTable

logger = logging.getLogger(__name__)

Kind = Literal["ingest", "update"]
# Finished jobs kept in this process's memory (the shared table keeps as many: `ingest.job_table`).
KEEP_FINISHED = 100
# How often a process looks for cancels of its jobs sent through another process, and a job waiting
# for a running slot taken by another process looks again.
CANCEL_POLL_S = 0.25
# How often a watcher of another process's job looks for its new frames.
EVENT_POLL_S = 0.25
WAITING_FOR_SLOT = (
    "waiting for a free ingest slot: {limit} already running on this host (REPOLENS_INGEST_WORKERS)"
)


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


_ENDED = (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


def status_from_progress(progress: Progress) -> Event:
    """An ingest progress report as a `status` frame (every stage after cloning is `indexing`)."""
    stage = "cloning" if progress.stage == "cloning" else "indexing"
    fields = {**progress.to_json(), "stage": stage, "step": progress.stage}
    if fields.get("index_state") is None:
        fields.pop("index_state", None)  # set only at milestones (searchable, each dense version)
    return status_event(**fields)


@dataclass(eq=False)
class IngestJob:
    """One ingest or update of one repository, and what it has reported so far.

    `target` is the location (`ingest`) or the repository id (`update`). Options (and so the
    token) never leave the process: `to_json` shows neither."""

    kind: Kind
    target: str
    repo_id: str
    options: IngestOptions = field(repr=False)
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    state: JobState = JobState.QUEUED
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    progress: Progress | None = None
    report: IngestReport | None = None
    error: RepoLensError | None = None
    # The process that runs it (`host:pid`), shown once a server's pool took it.
    worker: str | None = None
    # Why a queued job waits (every running slot of the host is taken), shown while it does.
    note: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    @classmethod
    def for_ingest(cls, location: str, options: IngestOptions) -> IngestJob:
        """Raises the source's error (bad URL, missing folder) before anything is queued."""
        source = resolve_source(location, platform=options.platform, ref=options.ref)
        return cls("ingest", location, source.repo_id, options)

    @classmethod
    def for_update(cls, repo_id: str, options: IngestOptions) -> IngestJob:
        return cls("update", repo_id, repo_id, options)

    @property
    def finished(self) -> bool:
        return self.state in _ENDED

    def run_in_foreground(
        self,
        store: Store,
        embedder: Embedder,
        progress: Callable[[Progress], None] | None = None,
        on_interrupt: Callable[[], None] = lambda: None,
    ) -> IngestReport:
        """`run` in a worker thread while this (main) thread waits: Ctrl-C cancels the job, calls
        `on_interrupt`, and waits for the build to stop (the CLI's runner).

        The main thread waits on an event rather than `Thread.join`, which an interrupt can
        leave believing the thread has ended."""
        finished = threading.Event()
        outcome: list[IngestReport | BaseException] = []

        def work() -> None:
            try:
                outcome.append(self.run(store, embedder, progress))
            except BaseException as error:  # handed to the main thread, which re-raises it
                outcome.append(error)
            finally:
                finished.set()

        threading.Thread(target=contextvars.copy_context().run, args=(work,), name="repolens-ingest").start()
        try:
            while not finished.wait(0.2):  # a timed wait lets the interrupt through promptly
                pass
        except KeyboardInterrupt:
            self.cancel.set()
            on_interrupt()
            finished.wait()
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    def run(
        self, store: Store, embedder: Embedder, progress: Callable[[Progress], None] | None = None
    ) -> IngestReport:
        """Run the job in this thread (the CLI, a pool worker); raises what the pipeline raises."""
        pipeline = ingest if self.kind == "ingest" else update

        def execute(report: Callable[[Progress], None]) -> IngestReport:
            return pipeline(
                self.target, self.options, store=store, embedder=embedder, progress=report, cancel=self.cancel
            )

        return self.run_with(execute, progress)

    def run_in(
        self, worker: IngestProcess, progress: Callable[[Progress], None] | None = None
    ) -> IngestReport:
        """Run the job in an ingest worker process (`ingest.isolated`), waiting for it here."""
        return self.run_with(
            lambda report: worker.run(self.kind, self.target, self.options, self.cancel, report), progress
        )

    def run_with(
        self,
        execute: Callable[[Callable[[Progress], None]], IngestReport],
        progress: Callable[[Progress], None] | None = None,
    ) -> IngestReport:
        """Run `execute(report)` as this job: its state, progress, report or error are kept here.

        The job's token, and every secret met while it runs, are masked in a `secret_scope` of the
        job's own: forgotten when it ends (never kept process-wide)."""
        self.state, self.started_at = JobState.RUNNING, self.started_at or time.time()

        def report(update_: Progress) -> None:
            self.progress = update_
            if progress is not None:
                progress(update_)

        with secret_scope(self.options.token):
            try:
                self.report = execute(report)
            except RepoLensError as error:
                error.message = redact(error.message)  # while the scope still knows the secrets
                self.error = error
                self.state = JobState.CANCELLED if error.code is ErrorCode.CANCELLED else JobState.FAILED
                raise
            except BaseException:
                self.state = JobState.FAILED
                raise
            else:
                self.state = JobState.DONE
                return self.report
            finally:
                self.finished_at = time.time()

    def final_event(self) -> Event:
        """`done` with the record and report, or the `error` the job ended with."""
        if self.report is not None:
            return ingest_done_event(self.report.record.to_json(), self.report.to_json())
        if self.error is not None:
            return error_event(self.error.code, self.error.message)
        return error_event(ErrorCode.INTERNAL, "the ingest failed unexpectedly (see the server log)")

    def to_json(self) -> dict[str, Any]:
        extra = {key: value for key, value in (("worker", self.worker), ("note", self.note)) if value}
        return {
            **extra,
            "id": self.id,
            "kind": self.kind,
            "repo_id": self.repo_id,
            "state": self.state,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "progress": self.progress.to_json() if self.progress else None,
            "error": {"code": self.error.code, "message": self.error.message} if self.error else None,
            "repo": self.report.record.to_json() if self.report else None,
        }


def worker_name() -> str:
    """`host:pid`: the process a job's view names as its `worker`."""
    return f"{socket.gethostname()}:{os.getpid()}"


def error_view(error: RepoLensError) -> dict[str, Any]:
    """The `error` field of a job's view."""
    return {"error": {"code": str(error.code), "message": error.message}}


def _error_of(view: dict[str, Any]) -> RepoLensError | None:
    error = view.get("error")
    if not error:
        return None
    try:
        code = ErrorCode(error["code"])
    except ValueError:
        code = ErrorCode.INTERNAL
    return RepoLensError(str(error["message"]), code=code)


@dataclass(eq=False)
class StoredJob(IngestJob):
    """A job as a shared store holds it (another process's, on the job table or on Redis): `to_json`
    and `final_event` are the stored ones. Never run here, so its options are placeholders."""

    view: dict[str, Any] = field(default_factory=dict, repr=False)
    final: Event | None = field(default=None, repr=False)

    @classmethod
    def from_view(cls, view: dict[str, Any], final: Event | None) -> StoredJob:
        placeholder = IngestOptions(limits=Limits(), dense_commit_s=0.0)
        job = cls(view["kind"], view["repo_id"], view["repo_id"], placeholder, id=view["id"])
        job.created_at, job.final = view["created_at"], final
        apply_view(job, view)
        return job

    def to_json(self) -> dict[str, Any]:
        return dict(self.view)

    def final_event(self) -> Event:
        return self.final if self.final is not None else super().final_event()


def apply_view(job: IngestJob, view: dict[str, Any]) -> None:
    """Bring a job object up to date with its stored view (state, progress, error)."""
    job.state = JobState(view["state"])
    job.started_at, job.finished_at = view.get("started_at"), view.get("finished_at")
    job.progress = Progress(**view["progress"]) if view.get("progress") else None
    job.error = _error_of(view)
    job.worker, job.note = view.get("worker"), view.get("note")
    if isinstance(job, StoredJob):
        job.view = view


class JobQueue(Protocol):
    """What the routes need from whatever runs ingest jobs."""

    def submit(self, job: IngestJob) -> IngestJob:
        """Queue `job`, or return the queued/running job of the same repository it joins."""
        ...

    def get(self, job_id: str) -> IngestJob | None: ...

    def list(self) -> list[IngestJob]: ...

    def cancel(self, job_id: str) -> IngestJob:
        """Ask the job to stop (raises `NotFoundError` for an unknown id)."""
        ...

    def events(self, job: IngestJob) -> AsyncGenerator[Event, None]:
        """The job's `status` frames from now on, then its `done` or `error` frame (with `job`'s
        `state` and `error` up to date by then). Closing the iterator (a client gone) stops the
        stream, not the job."""
        ...

    def shutdown(self) -> None:
        """Server shutdown: stop what this process runs or watches."""
        ...


class _Listener:
    """One async consumer of a job's events, fed from worker threads."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()

    def put(self, event: Event | None) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody listens any more
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)


class JobPool:
    """Runs this process's ingest jobs in at most `workers` threads, and shares every job with the
    other processes on the data dir through `table`: at most `workers` run at once on the host, one
    job per repository whichever process asked, and any process shows, watches or cancels any job.

    This process's jobs are the objects it runs (their frames reach its own watchers straight from
    the pool's threads); another process's are `StoredJob`s read from the table, whose frames a
    watcher polls every `EVENT_POLL_S`."""

    def __init__(
        self,
        store: Store,
        embedder: Callable[[], Embedder],
        workers: int,
        processes: ProcessPool | None = None,
        *,
        table: JobTable,
    ) -> None:
        self.store = store
        self._embedder = embedder
        self.workers = workers
        # Worker processes (`ingest.isolated`) the jobs run in; None: in the pool's threads.
        self.processes = processes
        self.table = table
        self._executor = self._new_executor()
        self._jobs: dict[str, IngestJob] = {}
        self._listeners: dict[str, list[_Listener]] = {}
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    def submit(self, job: IngestJob) -> IngestJob:
        job.worker = self.table.worker
        with self._lock:
            while (
                joined := self.table.create(job.id, job.repo_id, job.created_at, job.to_json())
            ) is not None:
                found = self._jobs.get(joined) or self._stored(joined)
                if found is not None:
                    return found
            self._jobs[job.id] = job
            self._listeners[job.id] = []
            self._forget_old()
            if self._watcher is None:
                self._watcher = threading.Thread(
                    target=self._watch_cancels, name="repolens-job-cancels", daemon=True
                )
                self._watcher.start()
        # Run in a copy of the submitter's context: its secret scope masks the job's token in logs.
        context = contextvars.copy_context()
        self._executor.submit(context.run, self._work, job)
        return job

    def get(self, job_id: str) -> IngestJob | None:
        return self._jobs.get(job_id) or self._stored(job_id)

    def _stored(self, job_id: str) -> StoredJob | None:
        self.table.reap()
        found = self.table.get(job_id)
        return StoredJob.from_view(found.view, found.final) if found is not None else None

    def _new_executor(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="repolens-ingest")

    def list(self) -> list[IngestJob]:
        """Every process's jobs on the data dir, newest first."""
        self.table.reap()
        return [
            self._jobs.get(stored.view["id"]) or StoredJob.from_view(stored.view, stored.final)
            for stored in self.table.jobs()
        ]

    def running_here(self) -> builtins.list[IngestJob]:
        """This process's unfinished jobs."""
        with self._lock:
            return [job for job in self._jobs.values() if not job.finished]

    def cancel(self, job_id: str) -> IngestJob:
        local = self._jobs.get(job_id)
        if local is not None:
            local.cancel.set()
        if not self.table.request_cancel(job_id) and local is None:
            raise NotFoundError(f"no ingest job {job_id}")
        found = self.get(job_id)
        if found is None:
            raise NotFoundError(f"no ingest job {job_id}")
        return found

    async def events(self, job: IngestJob) -> AsyncGenerator[Event, None]:
        if self._jobs.get(job.id) is not job:
            async for frame in self._stored_events(job):
                yield frame
            return
        listener = _Listener()
        with self._lock:
            finished = job.finished
            if not finished:
                self._listeners[job.id].append(listener)
        try:
            if finished:
                yield job.final_event()
                return
            if job.progress is not None:
                yield status_from_progress(job.progress)
            while (event := await listener.queue.get()) is not None:
                yield event
        finally:
            with self._lock, contextlib.suppress(ValueError, KeyError):
                self._listeners[job.id].remove(listener)

    async def _stored_events(self, job: IngestJob) -> AsyncGenerator[Event, None]:
        """Another process's job, from the table: its latest frame, each new one, then the last one
        (a dead owner's job is ended `failed` by the `reap` each poll runs)."""
        latest = await asyncio.to_thread(self.table.latest_frame, job.id)
        seq = 0
        if latest is not None:
            seq = latest.seq
            yield await self._frame(job, latest.event, latest.final)
            if latest.final:
                return
        while True:
            frames = await asyncio.to_thread(self._poll, job.id, seq)
            if frames is None:  # forgotten while watched (a table trimmed by many newer jobs)
                job.state = JobState.FAILED
                job.error = RepoLensError(f"ingest job {job.id} is no longer kept", code=ErrorCode.INTERNAL)
                yield job.final_event()
                return
            for frame in frames:
                seq = frame.seq
                yield await self._frame(job, frame.event, frame.final)
                if frame.final:
                    return
            if not frames:
                await asyncio.sleep(EVENT_POLL_S)

    def _poll(self, job_id: str, seq: int) -> builtins.list[Frame] | None:
        self.table.reap()
        return self.table.frames_after(job_id, seq)

    async def _frame(self, job: IngestJob, event: Event, final: bool) -> Event:
        """`event`; a last one first brings `job` up to date (its final state and error)."""
        if final and (stored := await asyncio.to_thread(self.table.get, job.id)) is not None:
            apply_view(job, stored.view)
            if isinstance(job, StoredJob):
                job.final = event
        return event

    def shutdown(self) -> None:
        """Cancel this process's jobs and wait for the workers (server shutdown, tests). The pool takes
        new jobs afterwards (an app that is served again)."""
        for job in list(self._jobs.values()):
            job.cancel.set()
        executor, self._executor = self._executor, self._new_executor()
        executor.shutdown(wait=True)
        if self.processes is not None:
            self.processes.stop()

    def _broadcast(self, job: IngestJob, event: Event | None) -> None:
        with self._lock:
            listeners = list(self._listeners.get(job.id, ()))
        for listener in listeners:
            listener.put(event)

    def _publish(self, job: IngestJob, event: Event) -> None:
        """A `status` frame for this process's watchers and, through the table, every other's."""
        self._broadcast(job, event)
        try:
            self.table.publish(job.id, job.to_json(), event)
        except sqlite3.Error:
            logger.exception("ingest job %s: its progress could not be shared", job.id)

    def _work(self, job: IngestJob) -> None:
        def report(progress: Progress) -> None:
            self._publish(job, status_from_progress(progress))

        if self._wait_for_slot(job):
            try:
                if self.processes is None:
                    job.run(self.store, self._embedder(), report)
                else:
                    with self.processes.worker() as worker:
                        job.run_in(worker, report)
            except RepoLensError:
                pass  # kept on the job, reported by `final_event`
            except Exception:
                logger.exception("ingest job %s failed", job.id)
        final = job.final_event()
        try:
            self.table.finish(job.id, job.to_json(), final)
        except sqlite3.Error:
            logger.exception("ingest job %s: its end could not be shared", job.id)
        with self._lock:
            listeners = self._listeners.pop(job.id, [])
            self._listeners[job.id] = []
        for listener in listeners:
            listener.put(final)
            listener.put(None)

    def _wait_for_slot(self, job: IngestJob) -> bool:
        """Wait until the job may run (fewer than `workers` jobs run on the host, whichever process
        runs them): True once it is `running`; False if it ended first (cancelled while queued,
        here or through another process), with its state and error set. While it waits, its view's
        `note` and a `queued` frame say why."""
        while not job.cancel.is_set():
            started, waiting = time.time(), job.note
            job.note = None
            running = {**job.to_json(), "state": JobState.RUNNING, "started_at": started}
            state = self.table.claim(job.id, self.workers, running)
            if state is JobState.RUNNING:
                job.state, job.started_at = JobState.RUNNING, started
                return True
            if state is not JobState.QUEUED:
                break
            job.note = waiting or WAITING_FOR_SLOT.format(limit=self.workers)
            if waiting is None:
                self._publish(job, status_event("queued", job.note, step="queued"))
            job.cancel.wait(CANCEL_POLL_S)
        job.note = None
        if (stored := self.table.get(job.id)) is not None and stored.view["state"] in _ENDED:
            apply_view(job, stored.view)
        else:
            job.state, job.finished_at = JobState.CANCELLED, time.time()
        if job.error is None:
            job.error = IngestCancelled("the ingest was cancelled before it started")
        return False

    def _watch_cancels(self) -> None:
        """While this process has unfinished jobs: pass on the cancels other processes wrote to the
        table (within `CANCEL_POLL_S`), and stop a job the table says has ended."""
        while True:
            with self._lock:
                active = [job for job in self._jobs.values() if not job.finished]
                if not active:
                    self._watcher = None
                    return
            try:
                stopped = self.table.cancel_requested([job.id for job in active])
                for job in active:
                    if job.id in stopped:
                        job.cancel.set()
            except sqlite3.Error:
                logger.exception("the shared job table could not be read")
            time.sleep(CANCEL_POLL_S)

    def _forget_old(self) -> None:
        finished = [job for job in self._jobs.values() if job.finished]
        for job in sorted(finished, key=lambda job: job.created_at)[: max(0, len(finished) - KEEP_FINISHED)]:
            self._jobs.pop(job.id, None)
            self._listeners.pop(job.id, None)
