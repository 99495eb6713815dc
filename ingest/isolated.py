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
- a cancel (a message on the pipe) sets an event the pipeline polls, exactly as in-process;
- a worker that dies (killed, out of memory) fails its job with `ingest_failed`; the next job
  starts a fresh worker, and the store treats the dead process's locks as stale;
- workers stop with the pool (`ProcessPool.stop`), and exit on their own when the server is gone
  (their pipe closes).
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
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
    """One worker process (started on first use, restarted after a crash) that runs jobs one at a time.

    It talks to the server over two one-way pipes (tasks and cancels in, progress, log records and
    the outcome out): plain file descriptors, no named semaphores, so a server that ends without
    running its exit handlers (uvicorn re-raises the SIGTERM it stopped on; a SIGKILL) leaves
    nothing for the resource tracker to clean up, and a worker sees the server go as the end of
    its pipe."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None  # multiprocessing's SpawnProcess
        self._tasks: Connection | None = None
        self._events: Connection | None = None

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
        assert self._tasks is not None and self._events is not None
        cancel_sent = False
        try:
            self._tasks.send(("run", kind, target, options, logging.getLogger().getEffectiveLevel()))
            while True:
                if cancel.is_set() and not cancel_sent:
                    self._tasks.send(("cancel",))
                    cancel_sent = True
                if not self._events.poll(_POLL_S):
                    if not self._process.is_alive():
                        raise EOFError
                    continue
                message = self._events.recv()
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
        except (EOFError, OSError):  # the worker is gone (killed, out of memory)
            exit_code = self._reap()
            raise IngestError(
                f"the ingest process stopped unexpectedly (exit code {exit_code}); "
                "the previous index is unchanged"
            ) from None

    def stop(self) -> None:
        """Ask the worker to exit (a running job is cancelled first); kill it if it does not."""
        if self._process is None:
            return
        if self._tasks is not None:
            with contextlib.suppress(OSError):
                self._tasks.send(("cancel",))
                self._tasks.send(None)
        self._reap()

    def _reap(self) -> int | None:
        """Wait for the worker to end (killing it if it will not), close the pipes; its exit code."""
        process, self._process = self._process, None
        if process is not None:
            deadline = time.monotonic() + _STOP_TIMEOUT_S
            while process.is_alive() and time.monotonic() < deadline:
                self._drain()  # a worker blocked on a full pipe could not see its cancel
                process.join(_POLL_S)
            if process.is_alive():
                process.kill()
                process.join(_STOP_TIMEOUT_S)
        for channel in (self._tasks, self._events):
            if channel is not None:
                channel.close()
        self._tasks = self._events = None
        return None if process is None else process.exitcode

    def _drain(self) -> None:
        with contextlib.suppress(EOFError, OSError):
            while self._events is not None and self._events.poll():
                self._events.recv()

    def _start(self) -> None:
        self._reap()  # a worker that died between jobs: its pipes
        tasks, self._tasks = self._context.Pipe(duplex=False)
        self._events, events = self._context.Pipe(duplex=False)
        # Not a daemon: the pipeline may start processes of its own, which a daemon may not.
        self._process = self._context.Process(
            target=_serve, args=(self.settings, tasks, events), name="repolens-ingest"
        )
        self._process.start()
        tasks.close()  # the worker's ends: only the worker holds them now
        events.close()


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


def _serve(settings: Settings, tasks: Connection, events: Connection) -> None:
    """The worker's main loop: lower its priority, then run each task until told to stop (or until
    the server's end of the pipe closes: nobody would read the results)."""
    from ingest.pipeline import ingest, update
    from rag.embedders import get_embedder
    from rag.store import open_store

    with contextlib.suppress(OSError):
        os.nice(settings.ingest_nice)
    outbox = _Outbox(events)
    root = logging.getLogger()
    root.handlers[:] = [_ForwardLogs(outbox)]  # type: ignore[arg-type]
    install_log_redaction()
    for secret in settings.secrets():
        register_configured_secret(secret)
    cancel = threading.Event()
    inbox: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
    threading.Thread(target=_read_tasks, args=(tasks, inbox, cancel), daemon=True).start()
    embedder = None
    with open_store(settings) as store:  # closed when the server stops the worker
        while (task := inbox.get()) is not None:
            _, kind, target, options, level = task
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
                        progress=lambda update_: outbox.put(("progress", update_)),
                        cancel=cancel,
                    )
                except RepoLensError as error:
                    outbox.put(("error", str(error.code), redact(error.message)))
                except Exception as error:  # a bug: logged here, reported as `internal`
                    logger.exception("ingest of %s failed", redact(target))
                    outbox.put(("error", str(ErrorCode.INTERNAL), redact(f"{type(error).__name__}: {error}")))
                else:
                    outbox.put(("done", report))


def _read_tasks(
    tasks: Connection, inbox: queue.Queue[tuple[Any, ...] | None], cancel: threading.Event
) -> None:
    """The worker's reader: a task clears the cancel flag and queues the task, a cancel sets the
    flag (the pipeline polls it); `None` or a closed pipe (the server is gone) cancels and stops."""
    while True:
        try:
            message = tasks.recv()
        except (EOFError, OSError):
            message = None
        if message is None:
            cancel.set()
            inbox.put(None)
            return
        if message[0] == "cancel":
            cancel.set()
        else:
            cancel.clear()  # in pipe order: a cancel of the previous job came before this task
            inbox.put(message)


class _Outbox:
    """The worker's end of the events pipe, safe to send on from any of the worker's threads."""

    def __init__(self, events: Connection) -> None:
        self._events = events
        self._lock = threading.Lock()

    def put(self, message: tuple[Any, ...]) -> None:
        with self._lock, contextlib.suppress(OSError):  # the server is gone: the reader stops us
            self._events.send(message)

    put_nowait = put


class _ForwardLogs(logging.handlers.QueueHandler):
    """Sends the worker's log records (already redacted, formatted, tracebacks as text) to the
    server, which hands them to its own handlers: one log, whichever process wrote it."""

    def enqueue(self, record: logging.LogRecord) -> None:
        self.queue.put_nowait(("log", record))
