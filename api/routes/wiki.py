"""The wiki routes: read, generate (SSE progress) and export the wiki of an indexed repository.

- `GET /api/repos/{id}/wiki?language=en&comprehensive=true`: the newest wiki (`Wiki` JSON, plus
  `stale_pages`: pages the next generation writes again, and `stale_reasons`: `{page id: why}`, e.g. their
  files changed or RepoLens's wiki generator did, `rag.wiki.freshness`), 404 if there is none;
- `POST /api/repos/{id}/wiki` with `{offline, language, comprehensive, provider, model, force}`:
  Server-Sent Events of `rag.wiki.generate` (`status`, `wiki` structure/page/note frames, then `done`);
  a client that disconnects stops the generation;
- `GET /api/repos/{id}/wiki/export?format=md|json|zip`: the wiki as an attachment;
- `GET /api/repos/{id}/wikis`: a summary of every wiki generated for it (`[]` before the first), which
  the page asks first so that "no wiki yet" is an answer, not a 404.

A private repository's wiki needs its token (`X-Repo-Token`), like its files.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from api.schemas import BadRequestError, RepoIdPath, RepoToken
from api.services import Services, get_services
from api.shutdown import StoppingDep, end_when_stopping
from rag.errors import NotFoundError
from rag.events import sse_frame, stopping_event
from rag.prompt import DEFAULT_LANGUAGE, LANGUAGES
from rag.wiki.export import attachment_name, wiki_json, wiki_markdown, wiki_zip
from rag.wiki.freshness import stale_pages
from rag.wiki.generate import DEFAULT_CONCURRENCY, WikiOptions, generate_wiki
from rag.wiki.model import Wiki
from rag.wiki.store import WikiStore

router = APIRouter()
ServicesDep = Annotated[Services, Depends(get_services)]

_EXPORTS = {
    "md": ("md", "text/markdown"),
    "json": ("json", "application/json"),
    "zip": ("zip", "application/zip"),
}


class WikiBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    offline: bool = False
    language: str = DEFAULT_LANGUAGE
    comprehensive: bool = True
    provider: str | None = Field(None, max_length=100)
    model: str | None = Field(None, max_length=200)
    force: bool = False
    concurrency: int = Field(DEFAULT_CONCURRENCY, ge=1, le=8)


def _check_access(services: Services, repo_id: str, token: str | None) -> None:
    """404 for an unknown repository; the host's verdict for a private one (blocking: thread-pool routes)."""
    record = services.store.get(repo_id)
    if record is None:
        raise NotFoundError(f"{repo_id} is not indexed")
    services.verify_access(record, token)


def _language(language: str) -> str:
    if language not in LANGUAGES:
        raise BadRequestError(f"unknown language {language!r}; choose one of: {', '.join(LANGUAGES)}")
    return language


def _wiki(services: Services, repo_id: str, language: str, comprehensive: bool | None) -> Wiki:
    wiki = WikiStore(services.store).latest(repo_id, language, comprehensive)
    if wiki is None:
        raise NotFoundError(f"{repo_id} has no wiki in {language} yet; generate one with POST")
    return wiki


@router.get("/api/repos/{repo_id:path}/wiki/export", response_model=None)
def export_wiki(
    repo_id: RepoIdPath,
    services: ServicesDep,
    format: Annotated[Literal["md", "json", "zip"], Query()] = "md",
    language: str = DEFAULT_LANGUAGE,
    comprehensive: bool | None = None,
    repo_token: RepoToken = None,
) -> Response:
    _check_access(services, repo_id, repo_token)
    wiki = _wiki(services, repo_id, _language(language), comprehensive)
    record = services.store.get(repo_id)
    url = record.url if record else repo_id
    content: str | bytes
    if format == "md":
        content = wiki_markdown(wiki, url)
    elif format == "json":
        content = wiki_json(wiki, url)
    else:
        content = wiki_zip(wiki, url)
    extension, media_type = _EXPORTS[format]
    filename = attachment_name(url, extension)
    return Response(
        content, media_type=media_type, headers={"Content-Disposition": f"attachment; filename={filename}"}
    )


@router.get("/api/repos/{repo_id:path}/wikis")
def list_wikis(repo_id: RepoIdPath, services: ServicesDep, repo_token: RepoToken = None) -> dict[str, Any]:
    """`{"wikis": [summary, ...]}`, newest first: language, detail, mode, pages, generated_at, commit."""
    _check_access(services, repo_id, repo_token)
    return {"wikis": WikiStore(services.store).summaries(repo_id)}


@router.get("/api/repos/{repo_id:path}/wiki")
def read_wiki(
    repo_id: RepoIdPath,
    services: ServicesDep,
    language: str = DEFAULT_LANGUAGE,
    comprehensive: bool | None = None,
    repo_token: RepoToken = None,
) -> dict[str, Any]:
    _check_access(services, repo_id, repo_token)
    wiki = _wiki(services, repo_id, _language(language), comprehensive)
    stale = stale_pages(wiki, services.store.open(repo_id))
    return {**wiki.model_dump(), "stale_pages": list(stale), "stale_reasons": stale}


@router.post("/api/repos/{repo_id:path}/wiki")
async def generate(
    repo_id: RepoIdPath,
    services: ServicesDep,
    stop: StoppingDep,
    body: WikiBody | None = None,
    repo_token: RepoToken = None,
) -> StreamingResponse:
    await asyncio.to_thread(_check_access, services, repo_id, repo_token)
    given = body or WikiBody.model_validate({})
    options = WikiOptions(
        offline=given.offline,
        language=_language(given.language),
        comprehensive=given.comprehensive,
        provider=given.provider,
        model=given.model,
        force=given.force,
        concurrency=given.concurrency,
    )
    last = sse_frame(stopping_event(_STOPPING))
    return StreamingResponse(
        end_when_stopping(_frames(services, repo_id, options), stop, last),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store"},
    )


_STOPPING = "the wiki's generation stops here; ask for it again after the restart"


async def _frames(services: Services, repo_id: str, options: WikiOptions) -> AsyncGenerator[str, None]:
    cancel = asyncio.Event()
    try:
        async with contextlib.aclosing(generate_wiki(services, repo_id, options, cancel)) as events:
            async for event in events:
                yield sse_frame(event)
    finally:
        cancel.set()
