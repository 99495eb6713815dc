"""The repository routes: list, ingest, update, show, delete, and view an indexed file.

Ingest and update answer with Server-Sent Events (`event: <type>` + `data: <json>`):
`status` frames while the work runs, then one `done` frame with the repository
record and the ingest report, or one `error` frame (`code`, `message`). The
work is an `ingest.jobs.IngestJob` in the server's job pool: a second request for the same
repository joins the running job, a client that disconnects only stops listening (the job goes
on; `POST /api/jobs/{id}/cancel` stops it), and a failed or cancelled job leaves the previous
index as it was. Files are served from the index (the stored
text), never from the disk, so a path can only name an indexed file. A private repository's
files need its token (`X-Repo-Token`); its record (`GET /api/repos/{id}`) is metadata only.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from api.repo_content import open_readable, read_lines
from api.routes.jobs import progress_stream
from api.schemas import RepoIdPath, RepoToken
from api.services import Services, get_services
from api.shutdown import ServerStop, StoppingDep
from ingest import IngestOptions
from ingest.chunking import CHUNKER_VERSION
from ingest.jobs import IngestJob
from ingest.sources import resolve_source
from rag.errors import NotFoundError
from rag.settings import Settings

router = APIRouter()
log = logging.getLogger(__name__)


class IngestBody(BaseModel):
    """The repository fields of a chat request (deepwiki names), plus RepoLens' own options."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    repo_url: str = Field(min_length=1, validation_alias=AliasChoices("repo_url", "url"))
    type: Literal["github", "gitlab", "bitbucket", "git", "local"] | None = None
    ref: str | None = Field(None, validation_alias=AliasChoices("ref", "branch"))
    token: str | None = None
    username: str | None = None
    included_dirs: str | list[str] | None = None
    excluded_dirs: str | list[str] | None = None
    included_files: str | list[str] | None = None
    excluded_files: str | list[str] | None = None
    use_default_excludes: bool = True
    reindex: bool = False
    max_files: int | None = Field(None, ge=1)
    max_bytes: int | None = Field(None, ge=1)
    max_file_bytes: int | None = Field(None, ge=1)

    def options(self, settings: Settings) -> IngestOptions:
        return IngestOptions.from_fields(
            settings,
            platform=self.type,
            ref=self.ref,
            token=self.token,
            username=self.username,
            included_dirs=self.included_dirs,
            excluded_dirs=self.excluded_dirs,
            included_files=self.included_files,
            excluded_files=self.excluded_files,
            use_default_excludes=self.use_default_excludes,
            max_files=self.max_files,
            max_bytes=self.max_bytes,
            max_file_bytes=self.max_file_bytes,
            reindex=self.reindex,
        )


class UpdateBody(BaseModel):
    """What an update cannot take from the stored record: credentials are never stored."""

    model_config = ConfigDict(extra="ignore")

    token: str | None = None
    username: str | None = None
    reindex: bool = False


ServicesDep = Annotated[Services, Depends(get_services)]


def _sse(services: Services, job: IngestJob, stop: ServerStop) -> StreamingResponse:
    """Submit `job` (or join the running job of its repository) and stream its frames as SSE
    (`api.routes.jobs.progress_stream`: the response names the job, a client that disconnects stops
    listening only, a server that stops ends the stream with a `server_stopping` error frame)."""
    return progress_stream(services, services.jobs.submit(job), stop)


@router.get("/api/repos")
def list_repos(services: ServicesDep) -> dict[str, Any]:
    """The records, and the chunker version this RepoLens chunks with: a record with another
    `chunker_version` is re-chunked by its next update (the page flags it)."""
    return {
        "repos": [record.to_json() for record in services.store.list()],
        "chunker_version": CHUNKER_VERSION,
    }


@router.post("/api/repos")
def ingest_repo(body: IngestBody, services: ServicesDep, stop: StoppingDep) -> StreamingResponse:
    """Ingest (or incrementally update) a repository; a malformed location is a 400 before streaming."""
    options = body.options(services.settings)
    options.policy = services.source_policy
    job = IngestJob.for_ingest(body.repo_url, options)
    if options.policy is not None:  # a refused folder or host is a 403 before streaming
        options.policy.admit(resolve_source(body.repo_url, platform=body.type, ref=body.ref))
    return _sse(services, job, stop)


@router.post("/api/repos/{repo_id:path}/update")
def update_repo(
    repo_id: RepoIdPath, services: ServicesDep, stop: StoppingDep, body: UpdateBody | None = None
) -> StreamingResponse:
    if services.store.get(repo_id) is None:
        raise NotFoundError(f"{repo_id} is not indexed")
    given = body or UpdateBody()
    options = IngestOptions.from_fields(
        services.settings, token=given.token, username=given.username, reindex=given.reindex
    )
    options.policy = services.source_policy
    return _sse(services, IngestJob.for_update(repo_id, options), stop)


@router.get("/api/repos/{repo_id:path}/file")
def view_file(
    repo_id: RepoIdPath,
    services: ServicesDep,
    path: Annotated[str, Query(min_length=1, max_length=4096)],
    start: Annotated[int | None, Query(ge=1)] = None,
    end: Annotated[int | None, Query(ge=1)] = None,
    repo_token: RepoToken = None,
) -> dict[str, Any]:
    """Lines `start..end` (1-based, inclusive; default the whole file) of an indexed file.

    A private repository's file needs its token in `X-Repo-Token` (checked in this thread-pool
    route, since it asks the git host)."""
    return read_lines(open_readable(services, repo_id, repo_token), path, start, end).to_json()


@router.get("/api/repos/{repo_id:path}")
def show_repo(repo_id: RepoIdPath, services: ServicesDep) -> dict[str, Any]:
    index = services.store.open(repo_id)
    return {**index.record.to_json(), "languages": index.languages()}


@router.delete("/api/repos/{repo_id:path}")
def delete_repo(repo_id: RepoIdPath, services: ServicesDep, repo_token: RepoToken = None) -> dict[str, Any]:
    """Only someone the host lets read a private repository may delete its index."""
    record = services.store.get(repo_id)
    if record is not None:
        services.verify_access(record, repo_token)
    if not services.store.delete(repo_id):
        raise NotFoundError(f"{repo_id} is not indexed")
    return {"deleted": repo_id}
