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

`JobQueue` is the interface the routes use; `JobPool` implements it in-process, and
`ingest.redis_queue.RedisJobQueue` on Redis for several API replicas and `repolens worker` processes
(`REPOLENS_REDIS_URL`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import secrets
import threading
import time
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol

from ingest.errors import IngestCancelled
from ingest.isolated import IngestProcess, ProcessPool
from ingest.pipeline import IngestOptions, IngestReport, Progress, ingest, update
from ingest.sources import resolve_source
from rag.embedders import Embedder
from rag.errors import ErrorCode, NotFoundError, RepoLensError
from rag.events import Event, error_event, ingest_done_event, status_event
from rag.redact import redact, secret_scope
from rag.store import Store

logger = logging.getLogger(__name__)

Kind = Literal["ingest", "update"]
# Finished jobs kept for `GET /api/jobs` (the oldest are forgotten first).
KEEP_FINISHED = 100


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


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
        return self.state in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)

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
        self.state, self.started_at = JobState.RUNNING, time.time()

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
        return {
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
    """Runs ingest jobs in at most `workers` threads; joins jobs per repository; keeps the results."""

    def __init__(
        self,
        store: Store,
        embedder: Callable[[], Embedder],
        workers: int,
        processes: ProcessPool | None = None,
    ) -> None:
        self.store = store
        self._embedder = embedder
        self.workers = workers
        # Worker processes (`ingest.isolated`) the jobs run in; None: in the pool's threads.
        self.processes = processes
        self._executor = self._new_executor()
        self._jobs: dict[str, IngestJob] = {}
        self._listeners: dict[str, list[_Listener]] = {}
        self._lock = threading.Lock()

    def submit(self, job: IngestJob) -> IngestJob:
        with self._lock:
            for active in self._jobs.values():
                if active.repo_id == job.repo_id and not active.finished:
                    return active
            self._jobs[job.id] = job
            self._listeners[job.id] = []
            self._forget_old()
        # Run in a copy of the submitter's context: its secret scope masks the job's token in logs.
        context = contextvars.copy_context()
        self._executor.submit(context.run, self._work, job)
        return job

    def get(self, job_id: str) -> IngestJob | None:
        return self._jobs.get(job_id)

    def _new_executor(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="repolens-ingest")

    def list(self) -> list[IngestJob]:
        return sorted(self._jobs.values(), key=lambda job: job.created_at, reverse=True)

    def cancel(self, job_id: str) -> IngestJob:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"no ingest job {job_id}")
        job.cancel.set()
        return job

    async def events(self, job: IngestJob) -> AsyncGenerator[Event, None]:
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

    def shutdown(self) -> None:
        """Cancel every job and wait for the workers (server shutdown, tests). The pool takes new jobs
        afterwards (an app that is served again)."""
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

    def _work(self, job: IngestJob) -> None:
        def report(progress: Progress) -> None:
            self._broadcast(job, status_from_progress(progress))

        if job.cancel.is_set():  # cancelled while queued
            job.error = IngestCancelled("the ingest was cancelled before it started")
            job.state, job.finished_at = JobState.CANCELLED, time.time()
        else:
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
        with self._lock:
            listeners = self._listeners.pop(job.id, [])
            self._listeners[job.id] = []
        final = job.final_event()
        for listener in listeners:
            listener.put(final)
            listener.put(None)

    def _forget_old(self) -> None:
        finished = [job for job in self._jobs.values() if job.finished]
        for job in sorted(finished, key=lambda job: job.created_at)[: max(0, len(finished) - KEEP_FINISHED)]:
            self._jobs.pop(job.id, None)
            self._listeners.pop(job.id, None)
