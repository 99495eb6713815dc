"""The ingest jobs of this server: `GET /api/jobs`, `GET /api/jobs/{id}`, `GET /api/jobs/{id}/events`,
`POST /api/jobs/{id}/cancel`.

Jobs are started by `POST /api/repos`, `POST /api/repos/{id}/update` and the chat's
ingest-on-first-use (see `ingest.jobs`); these routes show their state and latest progress, stream
it (SSE, the same frames as the ingest's own response) and cancel one, whichever process of
`repolens serve --workers N` (or Redis worker) runs it. No token or option of a job is shown."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from api.services import Services, get_services
from api.shutdown import ServerStop, StoppingDep, end_when_stopping
from ingest.jobs import IngestJob
from rag.errors import NotFoundError
from rag.events import sse_frame, stopping_event

router = APIRouter()

ServicesDep = Annotated[Services, Depends(get_services)]

_STOPPING = (
    "progress ends here (an ingest this server runs is cancelled, and the "
    "repository keeps its last committed version; one a `repolens worker` runs goes on: GET /api/jobs/{id})"
)


async def _frames(services: Services, job: IngestJob) -> AsyncGenerator[str, None]:
    async with contextlib.aclosing(services.jobs.events(job)) as events:
        async for event in events:
            yield sse_frame(event)


def progress_stream(services: Services, job: IngestJob, stop: ServerStop) -> StreamingResponse:
    """`job`'s frames as SSE: its latest `status` frame, every later one, then its `done` or `error`.

    The response names the job (`X-RepoLens-Job`); a client that disconnects stops listening only.
    A server that stops ends the stream with a `server_stopping` error frame."""
    headers = {"Cache-Control": "no-store", "X-RepoLens-Job": job.id}
    last = sse_frame(stopping_event(_STOPPING.format(id=job.id)))
    frames = end_when_stopping(_frames(services, job), stop, last)
    return StreamingResponse(frames, media_type="text/event-stream", headers=headers)


@router.get("/api/jobs")
def list_jobs(services: ServicesDep) -> dict[str, Any]:
    """Every job, newest first (finished ones are kept for a while)."""
    return {"jobs": [job.to_json() for job in services.jobs.list()]}


@router.get("/api/jobs/{job_id}")
def show_job(job_id: str, services: ServicesDep) -> dict[str, Any]:
    job = services.jobs.get(job_id)
    if job is None:
        raise NotFoundError(f"no ingest job {job_id}")
    return job.to_json()


@router.get("/api/jobs/{job_id}/events")
def watch_job(job_id: str, services: ServicesDep, stop: StoppingDep) -> StreamingResponse:
    """The job's progress as Server-Sent Events (a finished job: its last frame only)."""
    job = services.jobs.get(job_id)
    if job is None:
        raise NotFoundError(f"no ingest job {job_id}")
    return progress_stream(services, job, stop)


@router.post("/api/jobs/{job_id}/cancel")
def cancel_job(job_id: str, services: ServicesDep) -> dict[str, Any]:
    """Ask the job to stop; it ends `cancelled` and the previous index stays as it was."""
    job = services.jobs.get(job_id)
    if job is None:
        raise NotFoundError(f"no ingest job {job_id}")
    return services.jobs.cancel(job.id).to_json()
