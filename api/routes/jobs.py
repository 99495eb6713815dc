"""The ingest jobs of this server: `GET /api/jobs`, `GET /api/jobs/{id}`, `POST /api/jobs/{id}/cancel`.

Jobs are started by `POST /api/repos`, `POST /api/repos/{id}/update` and the chat's
ingest-on-first-use (see `ingest.jobs`); these routes show their state and latest progress, and
cancel one. No token or option of a job is shown."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from api.services import Services, get_services
from rag.errors import NotFoundError

router = APIRouter()

ServicesDep = Annotated[Services, Depends(get_services)]


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


@router.post("/api/jobs/{job_id}/cancel")
def cancel_job(job_id: str, services: ServicesDep) -> dict[str, Any]:
    """Ask the job to stop; it ends `cancelled` and the previous index stays as it was."""
    job = services.jobs.get(job_id)
    if job is None:
        raise NotFoundError(f"no ingest job {job_id}")
    return services.jobs.cancel(job.id).to_json()
