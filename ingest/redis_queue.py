"""Ingest jobs on Redis: the `JobQueue` of API replicas, and the `repolens worker` processes that run them.

With `REPOLENS_REDIS_URL` set, `api.services` uses `RedisJobQueue` instead of the in-process
`JobPool`: routes submit, list, watch and cancel jobs exactly as before, and any replica sees any
job. The engine is `arq` (asyncio, Redis): the API enqueues the job id on the `repolens:queue` arq
queue and `IngestWorker` (`repolens worker`) runs it. What a job is and what it has reported lives
in RepoLens' own keys, so every replica reads the same thing:

- `repolens:job:<id>` (hash): `view` (the job's `to_json()`), `spec` (kind, target and options,
  never a token in clear), `sealed` (a per-request git token sealed with `REPOLENS_QUEUE_KEY`,
  deleted when the job ends), `cancel` (set by `cancel`, polled by the worker), `final` (its last frame);
- `repolens:job:<id>:events` (stream): its `status` frames, then its `done`/`error` frame; a
  watcher reads the latest frame, then blocks for new ones (no frame lost between read and wait);
- `repolens:jobs` (sorted set by creation time): the ids `list` shows;
- `repolens:repo:<repo id>:job`: the queued/running job of a repository, which a new request joins;
- `repolens:repo:<repo id>:lock`: a redis-py `Lock` a worker holds while it builds (expiring after
  `REPOLENS_QUEUE_LEASE_S`, renewed by the worker's heartbeat), so one repository is never
  ingested twice at once, whichever worker takes the job.

A worker killed mid-job stops renewing its lease: arq's in-progress key of the job (which the
heartbeat keeps at the lease too) and the lock expire, another worker takes the job again (arq's
retry, at most `MAX_TRIES` runs), and the store's atomic swap means the killed run's half-built
version is discarded while the previous version keeps serving.

Secrets: a per-request token is sealed (Fernet, key derived from `REPOLENS_QUEUE_KEY`, valid
`SEALED_TOKEN_TTL_S`) before it reaches Redis; without that key a per-request token is refused
(`bad_config`) and workers use their own `GITHUB_TOKEN`/`REPOLENS_TOKEN`/... settings. A token
pasted into the URL is taken out of the stored location and sealed the same way.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar, cast

import redis
import redis.asyncio as aioredis
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import in_progress_key_prefix
from arq.worker import Retry, Worker, func
from cryptography.fernet import Fernet, InvalidToken
from redis.exceptions import LockError, RedisError

from ingest.errors import IngestCancelled
from ingest.filters import FilterSpec
from ingest.jobs import (
    IngestJob,
    JobState,
    Kind,
    StoredJob,
    apply_view,
    error_view,
    status_from_progress,
    worker_name,
)
from ingest.pipeline import IngestOptions, Progress
from ingest.policy import SourcePolicy
from ingest.reader import Limits
from ingest.sources import resolve_source
from rag.embedders import Embedder, get_embedder
from rag.errors import ConfigError, ErrorCode, NotFoundError, RepoLensError
from rag.events import Event, error_event, status_event
from rag.redact import register_configured_secret, secret_scope
from rag.settings import Settings
from rag.store import Store

logger = logging.getLogger(__name__)

QUEUE_NAME = "repolens:queue"
JOBS_KEY = "repolens:jobs"
INGEST_FUNCTION = "repolens_ingest"
# Runs of one job before it fails for good (a worker killed mid-job counts as a run).
MAX_TRIES = 3
# arq's own limit on one run; the lease, not this, is what frees a killed worker's job.
JOB_TIMEOUT_S = 24 * 3600
SEALED_TOKEN_TTL_S = 24 * 3600
FINISHED_TTL_S = 7 * 24 * 3600
# How long a job waits for a worker (arq's own default is a day, after which it drops the job silently).
QUEUED_TTL_S = FINISHED_TTL_S
# Job ids `list` keeps (finished jobs' keys also expire after `FINISHED_TTL_S`).
KEEP_JOBS = 500
STREAM_MAXLEN = 500
# A new job's queue entry follows its record within this; an unfinished job with neither a queue
# entry nor a worker for longer is orphaned, and a new request for its repository replaces it.
ENQUEUE_GRACE_S = 10.0
ORPHANED = "the ingest was lost by the queue (no worker holds it and it is not queued); submit it again"
EVENT_BLOCK_MS = 2000
_FINISHED = {JobState.DONE.value, JobState.FAILED.value, JobState.CANCELLED.value}

T = TypeVar("T")


def job_key(job_id: str) -> str:
    return f"repolens:job:{job_id}"


def events_key(job_id: str) -> str:
    return f"repolens:job:{job_id}:events"


def repo_job_key(repo_id: str) -> str:
    return f"repolens:repo:{repo_id}:job"


def repo_lock_key(repo_id: str) -> str:
    return f"repolens:repo:{repo_id}:lock"


def worker_health_key(host: str) -> str:
    return f"repolens:worker:{host}:health"


class QueueUnavailableError(RepoLensError):
    """Redis (the shared job queue) cannot be reached."""

    code = ErrorCode.QUEUE_UNAVAILABLE


@contextlib.contextmanager
def redis_errors() -> Iterator[None]:
    """Redis failures as one clear `queue_unavailable` error (never the URL, which may hold a password)."""
    try:
        yield
    except RedisError as error:
        raise QueueUnavailableError(
            f"the job queue (REPOLENS_REDIS_URL) is unavailable: {type(error).__name__}"
        ) from None


class TokenSeal:
    """Seals per-request git tokens for the queue with a key shared by API replicas and workers."""

    def __init__(self, secret: str | None) -> None:
        self._fernet = None
        if secret:
            digest = hashlib.sha256(b"repolens-queue-token:" + secret.encode()).digest()
            self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def seal(self, token: str) -> str:
        if self._fernet is None:
            raise ConfigError(
                "this server runs ingests on shared workers (REPOLENS_REDIS_URL): a per-request token "
                "needs REPOLENS_QUEUE_KEY set on the API and the workers (or give the workers "
                "REPOLENS_TOKEN / GITHUB_TOKEN / GITLAB_TOKEN / BITBUCKET_TOKEN)"
            )
        return self._fernet.encrypt(token.encode()).decode("ascii")

    def open(self, sealed: str) -> str:
        if self._fernet is None:
            raise ConfigError("this job carries a sealed token and this worker has no REPOLENS_QUEUE_KEY")
        try:
            return self._fernet.decrypt(sealed.encode("ascii"), ttl=SEALED_TOKEN_TTL_S).decode()
        except InvalidToken:
            raise ConfigError(
                "the job's sealed token cannot be opened: REPOLENS_QUEUE_KEY differs between the API "
                f"and this worker, or the job waited over {SEALED_TOKEN_TTL_S // 3600} h"
            ) from None


def _without_credentials(location: str) -> str:
    """A URL location with its `user:token@` part removed (the token is sealed separately)."""
    parts = urllib.parse.urlsplit(location.strip())
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def job_spec(job: IngestJob, seal: TokenSeal) -> tuple[dict[str, Any], str | None]:
    """What a worker needs to run `job`, and its sealed token (None without one). No token in clear."""
    options = job.options
    token, username, target = options.token, options.username, job.target
    if job.kind == "ingest":
        source = resolve_source(job.target, platform=options.platform, ref=options.ref)
        if source.url_token:
            token = token or source.url_token
            username = username or source.url_username
            target = _without_credentials(job.target)
            if resolve_source(target, platform=options.platform, ref=options.ref).repo_id != job.repo_id:
                raise RepoLensError("send the token in the `token` field", code=ErrorCode.BAD_URL)
    spec = {
        "kind": job.kind,
        "target": target,
        "repo_id": job.repo_id,
        "platform": options.platform,
        "ref": options.ref,
        "username": username,
        "filters": options.filters.model_dump(),
        "limits": {
            "max_file_bytes": options.limits.max_file_bytes,
            "max_files": options.limits.max_files,
            "max_total_bytes": options.limits.max_total_bytes,
        },
        "clone_timeout": options.clone_timeout,
        "reindex": options.reindex,
        "dense": options.dense,
        "dense_commit_s": options.dense_commit_s,
        "policy": options.policy is not None,
    }
    return spec, (seal.seal(token) if token and token.strip() else None)


def options_from_spec(spec: dict[str, Any], token: str | None, policy: SourcePolicy | None) -> IngestOptions:
    return IngestOptions(
        platform=spec["platform"],
        ref=spec["ref"],
        token=token,
        username=spec["username"],
        filters=FilterSpec.model_validate(spec["filters"]),
        limits=Limits(**spec["limits"]),
        clone_timeout=float(spec["clone_timeout"]),
        reindex=bool(spec["reindex"]),
        dense=bool(spec["dense"]),
        dense_commit_s=float(spec["dense_commit_s"]),
        policy=policy if spec["policy"] else None,
    )


def _stalled(view: dict[str, Any], held: int | bool) -> bool:
    """`running`, yet no worker holds the job (arq's in-progress key, renewed by the worker's heartbeat,
    is gone): its worker was killed or lost and its lease ran out. arq runs it again on the next worker."""
    return view["state"] == JobState.RUNNING and not held


def as_seen(view: dict[str, Any], held: int | bool) -> dict[str, Any]:
    """The view a client is shown: a stalled job is `queued` again, with a `note` saying why."""
    return (
        {**view, "state": JobState.QUEUED.value, "note": stalled_note(view)} if _stalled(view, held) else view
    )


def _without_worker(raw: str | None, held: int) -> dict[str, Any] | None:
    view = json.loads(raw) if raw else None
    return view if view is not None and _stalled(view, held) else None


def stalled_note(view: dict[str, Any]) -> str:
    return (
        f"the worker running this ingest ({view.get('worker')}) stopped; it runs again when a worker "
        f"takes it (run {int(view.get('attempt') or 1) + 1} of {MAX_TRIES})"
    )


def _transaction(client: redis.Redis, attempt: Callable[[Any], T], *watched: str) -> T:
    """redis-py's optimistic transaction (WATCH, retried on conflict), returning what `attempt` returns."""
    return cast(T, cast(Any, client).transaction(attempt, *watched, value_from_callable=True))


class JobRecords:
    """RepoLens' job keys in Redis, shared by `RedisJobQueue` (API) and `IngestWorker` (workers)."""

    def __init__(self, url: str) -> None:
        self.redis = redis.Redis.from_url(url, decode_responses=True)

    def view(self, job_id: str) -> dict[str, Any] | None:
        raw = self.redis.hget(job_key(job_id), "view")
        return json.loads(cast(str, raw)) if raw else None

    def job(self, job_id: str) -> StoredJob | None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(job_key(job_id), ["view", "final"])
        pipe.exists(in_progress_key_prefix + job_id)
        (view, final), held = pipe.execute()
        if not view:
            return None
        return self._job(as_seen(json.loads(view), held), final)

    def jobs(self) -> list[StoredJob]:
        ids = cast(list[str], self.redis.zrevrange(JOBS_KEY, 0, KEEP_JOBS - 1))
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(job_key(job_id), ["view", "final"])
            pipe.exists(in_progress_key_prefix + job_id)
        replies = pipe.execute()
        found = []
        for (view, final), held in zip(replies[::2], replies[1::2], strict=True):
            if view:
                found.append(self._job(as_seen(json.loads(view), held), final))
        return found

    def running_without_worker(self, job_id: str) -> dict[str, Any] | None:
        """The job's view if it says `running` while no worker holds it (its worker died), else None."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(job_key(job_id), "view")
        pipe.exists(in_progress_key_prefix + job_id)
        return _without_worker(*pipe.execute())

    @staticmethod
    def _job(view: dict[str, Any], final: str | None) -> StoredJob:
        return StoredJob.from_view(view, json.loads(final) if final else None)

    def create(self, job: IngestJob, spec: dict[str, Any], sealed: str | None) -> str | None:
        """Store a new queued job, or return the id of the unfinished job of its repository (joined)."""
        repo_key = repo_job_key(job.repo_id)

        def attempt(pipe: Any) -> str | None:
            active = pipe.get(repo_key)
            if active:
                current = pipe.hget(job_key(active), "view")
                if current and json.loads(current)["state"] not in _FINISHED:
                    if not self._orphaned(pipe, active, json.loads(current)):
                        return cast(str, active)
                    orphans.append(active)
            fields = {"view": json.dumps(job.to_json()), "spec": json.dumps(spec)}
            if sealed:
                fields["sealed"] = sealed
            pipe.multi()
            pipe.set(repo_key, job.id)
            pipe.hset(job_key(job.id), mapping=fields)
            pipe.zadd(JOBS_KEY, {job.id: job.created_at})
            queued = json.dumps(status_event("queued", "waiting for a worker", step="queued"))
            pipe.xadd(events_key(job.id), {"event": queued}, maxlen=STREAM_MAXLEN, approximate=True)
            pipe.zremrangebyrank(JOBS_KEY, 0, -KEEP_JOBS - 1)
            return None

        orphans: list[str] = []
        joined = _transaction(self.redis, attempt, repo_key)
        for orphan in orphans if joined is None else ():
            self.end_with(orphan, RepoLensError(ORPHANED, code=ErrorCode.INGEST_FAILED))
        return joined

    @staticmethod
    def _orphaned(pipe: Any, job_id: str, view: dict[str, Any]) -> bool:
        """An unfinished job that arq no longer has (Redis lost its keys, or it failed outside RepoLens'
        code): neither queued nor held by a worker, for longer than enqueueing takes."""
        if time.time() - float(view["created_at"]) < ENQUEUE_GRACE_S:
            return False
        return not pipe.exists(in_progress_key_prefix + job_id) and pipe.zscore(QUEUE_NAME, job_id) is None

    def publish(self, job_id: str, view: dict[str, Any], event: Event) -> None:
        """A `status` frame for every watcher, and the view's latest progress."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(job_key(job_id), "view", json.dumps(view))
        pipe.xadd(events_key(job_id), {"event": json.dumps(event)}, maxlen=STREAM_MAXLEN, approximate=True)
        pipe.execute()

    def transition(
        self, job_id: str, change: Callable[[dict[str, Any], bool], dict[str, Any] | None]
    ) -> dict[str, Any] | None:
        """Apply `change(view, cancel_requested)` atomically (WATCH); None from it: nothing to do."""

        def attempt(pipe: Any) -> dict[str, Any] | None:
            raw, cancel = pipe.hmget(job_key(job_id), ["view", "cancel"])
            if not raw:
                return None
            changed = change(json.loads(raw), bool(cancel))
            if changed is None:
                return None
            pipe.multi()
            pipe.hset(job_key(job_id), "view", json.dumps(changed))
            return changed

        return _transaction(self.redis, attempt, job_key(job_id))

    def finish(self, job_id: str, state: JobState, final: Event, update: dict[str, Any]) -> bool:
        """End the job once (False if it had already ended): view, last frame, the repository's slot freed."""

        def attempt(pipe: Any) -> bool:
            raw = pipe.hget(job_key(job_id), "view")
            if not raw:
                return False
            view = json.loads(raw)
            if view["state"] in _FINISHED:
                return False
            repo_key = repo_job_key(view["repo_id"])
            active = pipe.get(repo_key)
            view.update(update, state=state.value, finished_at=time.time())
            pipe.multi()
            pipe.hset(job_key(job_id), mapping={"view": json.dumps(view), "final": json.dumps(final)})
            pipe.hdel(job_key(job_id), "sealed")
            pipe.xadd(
                events_key(job_id),
                {"event": json.dumps(final), "final": "1"},
                maxlen=STREAM_MAXLEN,
                approximate=True,
            )
            pipe.expire(job_key(job_id), FINISHED_TTL_S)
            pipe.expire(events_key(job_id), FINISHED_TTL_S)
            if active == job_id:
                pipe.delete(repo_key)
            return True

        watched = [job_key(job_id)]
        view = self.view(job_id)
        if view is not None:
            watched.append(repo_job_key(view["repo_id"]))
        return _transaction(self.redis, attempt, *watched)

    def end_with(self, job_id: str, error: RepoLensError) -> bool:
        """End the job with `error` (`cancelled` for a cancellation, else `failed`)."""
        state = JobState.CANCELLED if error.code is ErrorCode.CANCELLED else JobState.FAILED
        return self.finish(job_id, state, error_event(error.code, error.message), error_view(error))

    def close(self) -> None:
        self.redis.close()


class _LoopThread:
    """A private event loop for arq's asyncio client, so the queue's sync methods can enqueue."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=_serve, args=(self._loop,), name="repolens-arq", daemon=True).start()
            loop = self._loop
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, loop)
        return future.result(timeout)

    def stop(self, cleanup: Coroutine[Any, Any, None]) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None:
            cleanup.close()
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(cleanup, loop).result(5.0)
        loop.call_soon_threadsafe(loop.stop)


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """Run `loop` until `_LoopThread.stop`, then close it (a stopped loop left open leaks its selector)."""
    try:
        loop.run_forever()
    finally:
        loop.close()


class RedisJobQueue:
    """The `JobQueue` of API replicas sharing one Redis: jobs run on `repolens worker` processes."""

    def __init__(self, settings: Settings) -> None:
        assert settings.redis_url is not None
        self._url = settings.redis_url.get_secret_value()
        register_configured_secret(urllib.parse.urlsplit(self._url).password)
        self.records = JobRecords(self._url)
        self._seal = TokenSeal(settings.secret("REPOLENS_QUEUE_KEY") or None)
        self._loop = _LoopThread()
        self._arq: ArqRedis | None = None

    def submit(self, job: IngestJob) -> IngestJob:
        spec, sealed = job_spec(job, self._seal)
        with redis_errors():
            joined = self.records.create(job, spec, sealed)
            if joined is not None:
                return self.records.job(joined) or job
        try:
            self._loop.run(self._enqueue(job.id))
        except Exception as error:  # Redis went away between the two steps: the job must not wait forever
            failure = QueueUnavailableError(f"the job could not be queued: {type(error).__name__}")
            with contextlib.suppress(RedisError):
                self.records.end_with(job.id, failure)
            raise failure from None
        return job

    async def _enqueue(self, job_id: str) -> None:
        if self._arq is None:
            self._arq = await create_pool(RedisSettings.from_dsn(self._url), default_queue_name=QUEUE_NAME)
        await self._arq.enqueue_job(
            INGEST_FUNCTION, job_id, _job_id=job_id, _queue_name=QUEUE_NAME, _expires=QUEUED_TTL_S
        )

    def get(self, job_id: str) -> IngestJob | None:
        with redis_errors():
            return self.records.job(job_id)

    def list(self) -> list[IngestJob]:
        with redis_errors():
            return list(self.records.jobs())

    def cancel(self, job_id: str) -> IngestJob:
        """Flag the job for its worker; a job still queued ends `cancelled` here and now."""
        with redis_errors():
            if self.records.view(job_id) is None:
                raise NotFoundError(f"no ingest job {job_id}")
            self.records.redis.hset(job_key(job_id), "cancel", "1")
            if (view := self.records.view(job_id)) is not None and view["state"] == JobState.QUEUED:
                self.records.end_with(job_id, IngestCancelled("the ingest was cancelled before it started"))
            elif self.records.running_without_worker(job_id) is not None:
                self.records.end_with(
                    job_id, IngestCancelled("the ingest was cancelled (its worker had stopped)")
                )
            found = self.records.job(job_id)
        assert found is not None
        return found

    async def events(self, job: IngestJob) -> AsyncGenerator[Event, None]:
        """The job's frames from any replica: the latest `status`, each new one, then `done`/`error`."""
        client = aioredis.Redis.from_url(self._url, decode_responses=True)
        try:
            with redis_errors():
                latest = await client.xrevrange(events_key(job.id), count=1)
            last_id, told_stalled = "0-0", False
            if latest:
                last_id, fields = latest[0]
                yield await self._frame(client, job, fields)
                if fields.get("final"):
                    return
            while True:
                with redis_errors():
                    found = await client.xread({events_key(job.id): last_id}, block=EVENT_BLOCK_MS, count=100)
                if not found:
                    if await self._ended_without_frame(client, job):
                        yield job.final_event()
                        return
                    if not told_stalled and (stalled := await self._without_worker(client, job.id)):
                        told_stalled = True
                        yield status_event("queued", stalled_note(stalled), step="queued")
                    continue
                told_stalled = False
                for entry_id, fields in found[0][1]:
                    last_id = entry_id
                    yield await self._frame(client, job, fields)
                    if fields.get("final"):
                        return
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _frame(self, client: aioredis.Redis, job: IngestJob, fields: dict[str, str]) -> Event:
        event = cast(Event, json.loads(fields["event"]))
        if fields.get("final"):
            raw = await cast(Any, client).hget(job_key(job.id), "view")
            if raw:
                apply_view(job, json.loads(raw))
            if isinstance(job, StoredJob):
                job.final = event
        return event

    async def _without_worker(self, client: aioredis.Redis, job_id: str) -> dict[str, Any] | None:
        with redis_errors():
            pipe = client.pipeline(transaction=False)
            pipe.hget(job_key(job_id), "view")
            pipe.exists(in_progress_key_prefix + job_id)
            return _without_worker(*await pipe.execute())

    async def _ended_without_frame(self, client: aioredis.Redis, job: IngestJob) -> bool:
        """A job whose keys expired (or were flushed) while watched: end the stream with its error."""
        with redis_errors():
            if await client.exists(job_key(job.id)):
                return False
        job.state = JobState.FAILED
        job.error = RepoLensError(f"ingest job {job.id} is no longer on the queue", code=ErrorCode.INTERNAL)
        return True

    def shutdown(self) -> None:
        """Close the connections; jobs go on on the workers (this replica only stops watching)."""
        self._loop.stop(self._close_arq())
        self.records.close()

    async def _close_arq(self) -> None:
        if self._arq is not None:
            await self._arq.aclose()
            self._arq = None


class _Stop(threading.Event):
    """A job's cancel event that also says whether the worker lost its lease (then it reports nothing)."""

    lost_lease = False


class IngestWorker:
    """Runs queued ingest jobs (`repolens worker`): `jobs` at once, one embedder for all of them."""

    def __init__(self, settings: Settings, store: Store, *, jobs: int, name: str | None = None) -> None:
        assert settings.redis_url is not None
        self.settings = settings
        self.store = store
        self.jobs = jobs
        self.name = name or worker_name()
        self.lease_s = settings.queue_lease_s
        self._url = settings.redis_url.get_secret_value()
        register_configured_secret(urllib.parse.urlsplit(self._url).password)
        self.records = JobRecords(self._url)
        self._seal = TokenSeal(settings.secret("REPOLENS_QUEUE_KEY") or None)
        self._policy = SourcePolicy.for_server(settings)
        self._embedder: Embedder | None = None
        self._embedder_lock = threading.Lock()

    def embedder(self) -> Embedder:
        with self._embedder_lock:
            if self._embedder is None:
                self._embedder = get_embedder(self.settings)
            return self._embedder

    def load_embedder(self) -> Embedder:
        """Load the embedder and embed one query, before taking any job: the first job does not pay
        for the model (a load that could outlast a short lease), and a missing or broken embedder
        (an unknown model, an unreadable model file, a remote one refusing its key) stops the worker
        at start with its error, instead of failing every job it takes."""
        embedder = self.embedder()
        embedder.embed_query("repolens worker start-up check")
        return embedder

    def arq_worker(self, *, burst: bool = False) -> Worker:
        function = func(self.run, name=INGEST_FUNCTION, max_tries=MAX_TRIES + 1, timeout=JOB_TIMEOUT_S)
        return Worker(
            functions=[function],
            queue_name=QUEUE_NAME,
            redis_settings=RedisSettings.from_dsn(self._url),
            max_jobs=self.jobs,
            keep_result=0,
            poll_delay=min(0.5, self.lease_s / 4),
            burst=burst,
            health_check_interval=self.lease_s,
            health_check_key=worker_health_key(socket.gethostname()),
            handle_signals=True,
        )

    async def run(self, ctx: dict[str, Any], job_id: str) -> None:
        """One run of one job (arq's job function)."""
        in_progress = in_progress_key_prefix + job_id
        self.records.redis.pexpire(in_progress, int(self.lease_s * 1000))  # the lease, not arq's day
        view = self.records.view(job_id)
        raw = cast(list[str | None], self.records.redis.hmget(job_key(job_id), ["spec", "sealed"]))
        if view is None or raw[0] is None or view["state"] in _FINISHED:
            return  # cancelled while queued, or forgotten
        spec = json.loads(raw[0])
        attempt = int(ctx.get("job_try") or 1)
        if attempt > MAX_TRIES:
            error = RepoLensError(
                f"the ingest was interrupted {MAX_TRIES} times (its workers stopped); giving up",
                code=ErrorCode.INGEST_FAILED,
            )
            self.records.end_with(job_id, error)
            return
        lock_name = repo_lock_key(spec["repo_id"])
        lock = self.records.redis.lock(lock_name, timeout=self.lease_s, thread_local=False)
        beat = asyncio.create_task(self._heartbeat(in_progress, lock))
        try:
            acquired = await asyncio.to_thread(lock.acquire, blocking=True, blocking_timeout=self.lease_s * 2)
        finally:
            beat.cancel()
        if not acquired:
            raise Retry(defer=self.lease_s)
        try:
            await self._run_locked(job_id, spec, raw[1], attempt, in_progress, lock)
        finally:
            with contextlib.suppress(LockError, RedisError):
                lock.release()

    async def _run_locked(
        self, job_id: str, spec: dict[str, Any], sealed: str | None, attempt: int, in_progress: str, lock: Any
    ) -> None:
        cancelled_before = False

        def start(view: dict[str, Any], cancelled: bool) -> dict[str, Any] | None:
            nonlocal cancelled_before
            cancelled_before = cancelled
            if view["state"] in _FINISHED or cancelled:
                return None
            return {
                **view,
                "state": JobState.RUNNING.value,
                "started_at": time.time(),
                "worker": self.name,
                "attempt": attempt,
            }

        view = self.records.transition(job_id, start)
        if cancelled_before:
            self.records.end_with(job_id, IngestCancelled("the ingest was cancelled before it started"))
            return
        if view is None:
            return
        if attempt > 1:
            message = (
                f"the worker running this ingest stopped; retrying on {self.name} "
                f"(run {attempt} of {MAX_TRIES})"
            )
            self.records.publish(job_id, view, status_event("indexing", message, step="retrying"))
        try:
            token = self._seal.open(sealed) if sealed else None
        except RepoLensError as error:
            self.records.end_with(job_id, error)
            return
        options = options_from_spec(spec, token, self._policy)
        job = IngestJob(cast(Kind, spec["kind"]), spec["target"], spec["repo_id"], options, id=job_id)
        current = dict(view)

        def report(progress: Progress) -> None:
            current["progress"] = progress.to_json()
            with contextlib.suppress(RedisError):
                self.records.publish(job_id, current, status_from_progress(progress))

        def work() -> None:
            with secret_scope(token):
                job.run(self.store, self.embedder(), report)

        stop = _Stop()
        job.cancel = stop
        beat = asyncio.create_task(self._heartbeat(in_progress, lock, stop, attempt))
        running = asyncio.ensure_future(asyncio.to_thread(work))
        try:
            await asyncio.shield(running)
        except asyncio.CancelledError:  # the worker is stopping: stop the build, another worker retries it
            job.cancel.set()
            with contextlib.suppress(BaseException):
                await running
            self._requeue(job_id)
            raise
        except RepoLensError:
            pass  # kept on the job, reported below
        except Exception:
            logger.exception("ingest job %s failed", job_id)
        finally:
            beat.cancel()
        if stop.lost_lease:
            return  # the job is another worker's now: it reports the end
        state = job.state if job.finished else JobState.FAILED
        record = job.report.record.to_json() if job.report else None
        update = {"progress": current.get("progress"), "repo": record}
        if job.error is not None:
            update.update(error_view(job.error))
        self.records.finish(job_id, state, job.final_event(), update)

    def _requeue(self, job_id: str) -> None:
        def back(view: dict[str, Any], cancelled: bool) -> dict[str, Any] | None:
            return None if view["state"] in _FINISHED else {**view, "state": JobState.QUEUED.value}

        with contextlib.suppress(RedisError):
            self.records.transition(job_id, back)

    async def _heartbeat(
        self, in_progress: str, lock: Any, stop: _Stop | None = None, attempt: int = 0
    ) -> None:
        """Renew the job's lease and lock; with `stop` (the build's cancel event), pass a cancel request
        on, and stop the build if this run is no longer the job's (its lease ran out while this worker
        stalled, another run took the job over or ended it): that run alone reports the end."""
        job_id = in_progress.removeprefix(in_progress_key_prefix)
        interval = max(0.2, self.lease_s / 5)
        while True:
            with contextlib.suppress(RedisError):
                self.records.redis.pexpire(in_progress, int(self.lease_s * 1000))
                if stop is None:
                    with contextlib.suppress(LockError):
                        if lock.owned():
                            lock.reacquire()
                elif not self._still_ours(job_id, lock, attempt):
                    logger.warning("ingest job %s: this run lost its lease; stopping it", job_id)
                    stop.lost_lease = True
                    stop.set()
                    return
                elif self.records.redis.hget(job_key(job_id), "cancel"):
                    stop.set()
            await asyncio.sleep(min(interval, 0.5) if stop is not None else interval)

    def _still_ours(self, job_id: str, lock: Any, attempt: int) -> bool:
        """This run still holds the repository lock, and the job is running as this run (worker, attempt)."""
        try:
            lock.reacquire()
        except LockError:
            return False
        view = self.records.view(job_id) or {}
        return view.get("state") == JobState.RUNNING and (view.get("worker"), view.get("attempt")) == (
            self.name,
            attempt,
        )


def ping_queue(settings: Settings) -> None:
    """Raise `queue_unavailable` at once when Redis cannot be reached (a worker's start, before it loads
    anything; arq alone would retry for seconds and then fail with a bare connection error)."""
    assert settings.redis_url is not None
    client = redis.Redis.from_url(settings.redis_url.get_secret_value(), socket_connect_timeout=5)
    try:
        with redis_errors():
            client.ping()
    finally:
        client.close()


def worker_alive(settings: Settings) -> bool:
    """Whether a worker on this host reported health within its lease (`repolens worker --check`)."""
    assert settings.redis_url is not None
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    try:
        with redis_errors():
            return bool(client.exists(worker_health_key(socket.gethostname())))
    finally:
        client.close()
