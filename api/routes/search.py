"""`POST /api/repos/{repo_id}/search`: the same hybrid search as `repolens search --json`.

A private repository's token comes in the `X-Repo-Token` header or the body's `token` field."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from api import repo_content
from api.schemas import RepoIdPath, RepoToken
from api.services import Services, get_services
from rag.retrieval import MAX_K, Mode, search_payload

router = APIRouter()


class SearchRequest(BaseModel):
    """Unknown fields are refused so a typo (`top_k`) is a 422, not a silently ignored option."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=10_000, pattern=r"\S")
    k: int = Field(10, ge=1, le=MAX_K)
    path_glob: str | None = None
    language: str | None = None
    mode: Mode = "hybrid"
    explain: bool = False
    token: str | None = Field(None, repr=False)


@router.post("/api/repos/{repo_id:path}/search")
def search_repo(
    repo_id: RepoIdPath,
    body: SearchRequest,
    services: Annotated[Services, Depends(get_services)],
    repo_token: RepoToken = None,
) -> dict[str, Any]:
    """A plain `def`: FastAPI runs it in its thread pool, so neither the search nor the access
    check (a request to the git host for private repositories) blocks the event loop."""
    index, hits = repo_content.search_repo(
        services,
        repo_id,
        body.query,
        k=body.k,
        path_glob=body.path_glob,
        language=body.language,
        mode=body.mode,
        explain=body.explain,
        token=repo_token or body.token,
    )
    return search_payload(services.store, index.record, body.query, hits)
