"""Ingest jobs in a separate, lower-priority process, so a server's answers never wait on an ingest.

Scanning, chunking and the bookkeeping around embedding are Python: run in the server's process
they take the GIL from the event loop and the retrieval threads, and a 2,000-file ingest added
about 1.3 s to the first token of each of 100 concurrent streams (`python -m bench ingest_load`).
So the server's `JobPool` (with `REPOLENS_INGEST_ISOLATION=process`, the default) hands each job
to an `IngestProcess`: a long-lived worker process (multiprocessing `spawn`: no thread, lock or
socket of the server is inherited) whose CPU priority is lowered by `REPOLENS_INGEST_NICE`
(default 10; its children, git included, inherit it), with its own embedder and store on the
same data dir. A worker runs one job at a time; the pool thread that waits on it relays the
progress, forwards a cancel and turns the outcome back into the job's report or error.

- the job's options (the token included) and its progress, report and error cross a pipe,
  never the disk or a command line; the worker masks the same secrets as the server;
- a cancel sets an event the pipeline polls, exactly as in-process;
- a worker that dies (killed, out of memory) fails its job with `ingest_failed`; the next job
  starts a fresh worker, and the store treats the dead process's locks as stale;
- workers stop with the pool (`ProcessPool.stop`), and exit on their own when the server is gone.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import multiprocessing
import os
import queue
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal

from ingest.errors import IngestError
from rag.errors import ErrorCode, RepoLensError
from rag.redact import install_log_redaction, redact, register_configured_secret, secret_scope
from rag.settings import Settings

if TYPE_CHECKING:
    from ingest.pipeline import IngestOptions, IngestReport, Progress

logger = logging.getLogger(__name__)

Kind = Literal["ingest", "update"]
_POLL_S = 0.1
_STOP_TIMEOUT_S = 10.0


class IngestProcess:
    """One worker process (started on first use, restarted after a crash) that runs jobs one at a time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None  # multiprocessing's SpawnProcess

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.is_alive() else None

    def run(
        self,
        kind: Kind,
        target: str,
        options: IngestOptions,
        cancel: threading.Event,
        progress: Callable[[Progress], None],
    ) -> IngestReport:
        """Run one ingest or update in the worker; returns its report or raises its error here."""
        if self._process is None or not self._process.is_alive():
            self._start()
        self._cancel.clear()
        self._tasks.put((kind, target, options, logging.getLogger().getEffectiveLevel()))
        while True:
            if cancel.is_set():
                self._cancel.set()
            try:
                message = self._events.get(timeout=_POLL_S)
            except queue.Empty:
                if not self._process.is_alive():
                    exit_code, self._process = self._process.exitcode, None
                    raise IngestError(
                        f"the ingest process stopped unexpectedly (exit code {exit_code}); "
                        "the previous index is unchanged"
                    ) from None
                continue
            if message[0] == "progress":
                progress(message[1])
            elif message[0] == "log":  # the worker's log records, into the server's handlers
                record: logging.LogRecord = message[1]
                logging.getLogger(record.name).handle(record)
            elif message[0] == "done":
                report: IngestReport = message[1]
                return report
            else:
                raise RepoLensError(message[2], code=ErrorCode(message[1]))

    def stop(self) -> None:
        """Ask the worker to exit (a running job is cancelled first); kill it if it does not."""
        if self._process is None:
            return
        process, self._process = self._process, None
        self._cancel.set()
        with contextlib.suppress(OSError, ValueError):
            self._tasks.put(None)
        process.join(_STOP_TIMEOUT_S)
        if process.is_alive():
            process.kill()
            process.join(_STOP_TIMEOUT_S)
        for channel in (self._tasks, self._events):
            channel.close()
            channel.join_thread()

    def _start(self) -> None:
        self._tasks = self._context.Queue()
        self._events = self._context.Queue()
        self._cancel = self._context.Event()
        # Not a daemon: the pipeline may start processes of its own, which a daemon may not.
        self._process = self._context.Process(
            target=_serve,
            args=(self.settings, os.getpid(), self._tasks, self._events, self._cancel),
            name="repolens-ingest",
        )
        self._process.start()


class ProcessPool:
    """The `IngestProcess`es of one server: at most one per job running at once, reused across jobs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._idle: list[IngestProcess] = []
        self._all: list[IngestProcess] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def worker(self) -> Iterator[IngestProcess]:
        with self._lock:
            if not self._idle:
                self._all.append(IngestProcess(self.settings))
                self._idle.append(self._all[-1])
            process = self._idle.pop()
        try:
            yield process
        finally:
            with self._lock:
                self._idle.append(process)

    def pids(self) -> list[int]:
        """The running workers' process ids (the bench and tests look at them)."""
        with self._lock:
            return [pid for process in self._all if (pid := process.pid) is not None]

    def stop(self) -> None:
        with self._lock:
            processes, self._all, self._idle = self._all, [], []
        for process in processes:
            process.stop()


def _serve(settings: Settings, parent: int, tasks: Any, events: Any, cancel: Any) -> None:
    """The worker's main loop: lower its priority, then run each task until told to stop."""
    from ingest.pipeline import ingest, update
    from rag.embedders import get_embedder
    from rag.store import open_store

    with contextlib.suppress(OSError):
        os.nice(settings.ingest_nice)
    root = logging.getLogger()
    root.handlers[:] = [_ForwardLogs(events)]
    install_log_redaction()
    for secret in settings.secrets():
        register_configured_secret(secret)
    store = open_store(settings)
    embedder = None
    while True:
        try:
            task = tasks.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:  # the server is gone: nobody will read the results
                return
            continue
        if task is None:
            return
        kind, target, options, level = task
        root.setLevel(level)
        pipeline = ingest if kind == "ingest" else update
        with secret_scope(options.token):
            try:
                embedder = embedder or get_embedder(settings)
                report = pipeline(
                    target,
                    options,
                    store=store,
                    embedder=embedder,
                    progress=lambda update_: events.put(("progress", update_)),
                    cancel=cancel,
                )
            except RepoLensError as error:
                events.put(("error", str(error.code), redact(error.message)))
            except Exception as error:  # a bug: logged here, reported as `internal`
                logger.exception("ingest of %s failed", redact(target))
                events.put(("error", str(ErrorCode.INTERNAL), redact(f"{type(error).__name__}: {error}")))
            else:
                events.put(("done", report))


class _ForwardLogs(logging.handlers.QueueHandler):
    """Sends the worker's log records (already redacted, formatted, tracebacks as text) to the
    server, which hands them to its own handlers: one log, whichever process wrote it."""

    def enqueue(self, record: logging.LogRecord) -> None:
        self.queue.put_nowait(("log", record))
