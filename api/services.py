"""The long-lived objects a server process shares between requests.

Created once per app (see `api.app.create_app`) and handed to routes through
FastAPI dependency injection, so tests can build an app on a temporary data dir.
`repolens ask` builds the same object, so the CLI answers exactly like the server.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from fastapi import Request, WebSocket

from ingest.access import verify_access
from ingest.isolated import ProcessPool
from ingest.job_table import JobTable
from ingest.jobs import IngestJob, JobPool, JobQueue
from ingest.policy import SourcePolicy
from rag.answer import AnswerService
from rag.embedders import Embedder, get_embedder
from rag.redact import register_configured_secret
from rag.settings import Settings
from rag.store import Store, open_store
from rag.types import RepoRecord

T = TypeVar("T")


class built_once(Generic[T]):  # a decorator, named like functools.cached_property
    """`functools.cached_property` that builds its value once per instance when threads ask at once.

    The server's worker threads reach `jobs` or `embedder` together at first use: without a lock both
    build one (two job pools each start ingest workers; the embedder's model is loaded twice). Python
    3.12 dropped cached_property's lock, and 3.11's was one per class, so building one `Services`'
    embedder held up every other instance's. Here each instance and attribute has its own lock, taken
    only while the value is missing. The value lives in the instance's `__dict__` under the attribute's
    name, like cached_property's: a test may put one there, and `"jobs" in services.__dict__` says
    whether it was built."""

    def __init__(self, build: Callable[[Any], T]) -> None:
        self.build = build
        self.name = build.__name__
        self.__doc__ = build.__doc__

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> built_once[T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...

    def __get__(self, instance: object | None, owner: type | None = None) -> built_once[T] | T:
        if instance is None:
            return self
        cache = instance.__dict__
        if self.name not in cache:
            # setdefault is atomic: racing threads all get the lock the first of them put there.
            lock: threading.Lock = cache.setdefault(f"_{self.name}_lock", threading.Lock())
            with lock:
                if self.name not in cache:
                    cache[self.name] = self.build(instance)
        value: T = cache[self.name]
        return value

    def built(self, instance: object) -> T | None:
        """The value if it was built, without building it; a build under way in another thread is
        waited for. What `stop` must shut down may be mid-build when shutdown begins (a request's
        first use of the job pool): reading the `__dict__` alone would miss it, and its workers would
        outlive the server."""
        lock: threading.Lock | None = instance.__dict__.get(f"_{self.name}_lock")
        if lock is not None:
            with lock:
                pass
        value: T | None = instance.__dict__.get(self.name)
        return value


@dataclass
class Services:
    settings: Settings
    store: Store
    # Rules for client-named sources: set by `create_app` (the server); None for the CLI.
    source_policy: SourcePolicy | None = None

    @built_once
    def embedder(self) -> Embedder:
        """Loaded on first use: the server starts fast and tests that never embed never pay."""
        return get_embedder(self.settings)

    @built_once
    def jobs(self) -> JobQueue:
        """The server's ingest jobs, shared by every route: on the Redis queue that `repolens worker`
        processes run (`REPOLENS_REDIS_URL`), else run by this process (`REPOLENS_INGEST_WORKERS` at once
        on the host, each in a lower-priority worker process unless `REPOLENS_INGEST_ISOLATION=thread`)
        and shared with every process on the data dir (`repolens serve --workers N`) through its job
        table (`ingest.job_table`)."""
        if self.settings.redis_url is not None:
            from ingest.redis_queue import RedisJobQueue  # imported only by servers that use it

            return RedisJobQueue(self.settings)
        processes = ProcessPool(self.settings) if self.settings.ingest_isolation == "process" else None
        table = JobTable(self.settings.home)
        return JobPool(
            self.store, lambda: self.embedder, self.settings.ingest_workers, processes, table=table
        )

    async def submit_job(self, job: IngestJob) -> IngestJob:
        """`jobs.submit` for async code, in a thread: the job table is SQLite (and the first use opens
        it), whose write waits for another `--workers` process's; on the event loop that would stall
        every stream of this process. Returns `job`, or the job of its repository it joined."""
        return await asyncio.to_thread(self._submit_job, job)

    def _submit_job(self, job: IngestJob) -> IngestJob:
        return self.jobs.submit(job)

    def running_here(self) -> list[IngestJob]:
        """The unfinished ingest jobs this process runs (none if it started none; none on the Redis
        queue, whose workers run them): what a command that exits must hand on or cancel."""
        jobs = self.__dict__.get("jobs")
        return jobs.running_here() if isinstance(jobs, JobPool) else []

    def verify_access(self, record: RepoRecord, token: str | None) -> None:
        """`ingest.access.verify_access` under this server's source policy: the host check of a
        private repository is refused, or pinned, like a clone (blocking: call it from a thread)."""
        verify_access(record, token, policy=self.source_policy)

    @built_once
    def answers(self) -> AnswerService:
        return AnswerService(self.store, self.embedder, self.settings)

    def stop(self) -> None:
        """Server shutdown: in-process ingest jobs are cancelled (their previous index stays); jobs on
        the Redis queue go on on their workers. Then the store's connections (a database store's pool)
        are closed."""
        jobs = Services.jobs.built(self)
        if jobs is not None:
            jobs.shutdown()
        self.store.close()

    def __enter__(self) -> Services:
        """`with Services.from_settings(settings) as services:` for a command that exits: `stop` on
        the way out, errors included (its ingest worker and the store's connections)."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        """Configured keys and tokens are masked in every log line and message from now on."""
        for secret in settings.secrets():
            register_configured_secret(secret)
        return cls(settings=settings, store=open_store(settings))


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_ws_services(websocket: WebSocket) -> Services:
    services: Services = websocket.app.state.services
    return services
