"""The endpoints deepwiki-open's web front end calls besides the chat, with the shapes it parses.

Read from its source (`api/api.py`, `src/app/[owner]/[repo]/page.tsx`, `src/app/api/*`): `/auth/status`,
`/auth/validate`, `/api/wiki_cache` (GET/POST/DELETE), `/export/wiki`, `/api/processed_projects` and
`/local_repo/structure`. Where deepwiki-open is unsafe we keep its contract and fix the fault:

- its "authorization code" is our API key (`REPOLENS_API_KEY`): auth is required exactly when a key is
  set, codes are compared in constant time, and deleting a cached wiki needs the key;
- a cached wiki never stores the client's access token;
- `/local_repo/structure` reads a local folder only when local sources are allowed
  (`REPOLENS_ALLOW_LOCAL`, optionally limited to `REPOLENS_LOCAL_ROOTS`), refused by default;
- wikis RepoLens generated on the server are offered to its front end too (cache and project list),
  for public repositories only (its client sends no repository token on these calls).
"""

from __future__ import annotations

import asyncio
import hmac
import os
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from api.services import Services, get_services
from ingest.filters import FileFilter, FilterSpec
from ingest.policy import SourcePolicy
from rag.prompt import DEFAULT_LANGUAGE, LANGUAGES
from rag.settings import Settings
from rag.types import RepoRecord
from rag.wiki.client_cache import CacheKey, ClientWikiCache
from rag.wiki.export import attachment_name, json_document, markdown_document
from rag.wiki.model import Wiki, WikiPage, WikiStructure
from rag.wiki.store import WikiStore

router = APIRouter()
ServicesDep = Annotated[Services, Depends(get_services)]

API_KEY_VARIABLE = "REPOLENS_API_KEY"
README_MAX_CHARS = 200_000
TREE_MAX_FILES = 20_000
NameQuery = Annotated[str, Query(min_length=1, max_length=200)]


class AuthCode(BaseModel):
    code: str = Field(max_length=1000)


class RepoInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")

    owner: str = Field(min_length=1, max_length=200)
    repo: str = Field(min_length=1, max_length=200)
    type: str = Field(min_length=1, max_length=40)
    token: str | None = None
    localPath: str | None = None
    repoUrl: str | None = None


class WikiCacheBody(BaseModel):
    """deepwiki-open's `WikiCacheRequest` (its client also sends `comprehensive`)."""

    model_config = ConfigDict(extra="ignore")

    repo: RepoInfo
    language: str = DEFAULT_LANGUAGE
    wiki_structure: WikiStructure
    generated_pages: dict[str, WikiPage]
    provider: str | None = None
    model: str | None = None


class ExportBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    repo_url: str = Field(max_length=4096)
    pages: list[WikiPage]
    format: Literal["markdown", "json"]


def api_key(settings: Settings) -> str | None:
    return settings.value(API_KEY_VARIABLE)


def code_accepted(settings: Settings, code: str | None) -> bool:
    """True when no key is configured, or `code` is the key (constant-time comparison)."""
    key = api_key(settings)
    if not key:
        return True
    return code is not None and hmac.compare_digest(code.encode(), key.encode())


def _language(code: str) -> str:
    return code if code in LANGUAGES else DEFAULT_LANGUAGE


def _cache(services: Services) -> ClientWikiCache:
    return ClientWikiCache(services.settings.home)


@router.get("/auth/status")
def auth_status(services: ServicesDep) -> dict[str, bool]:
    return {"auth_required": bool(api_key(services.settings))}


@router.post("/auth/validate")
def auth_validate(body: AuthCode, services: ServicesDep) -> dict[str, bool]:
    return {"success": code_accepted(services.settings, body.code)}


_HOSTS = {"github": "github.com", "gitlab": "gitlab.com", "bitbucket": "bitbucket.org"}


def _owner_and_repo(record: RepoRecord) -> tuple[str, str, str]:
    """deepwiki-open's (owner, repo, repo_type) for one of our repositories."""
    if record.platform == "local":
        return "local", record.id.rstrip("/").split("/")[-1], "local"
    parts = record.id.split("@")[0].split("/")
    return (parts[-2] if len(parts) > 2 else parts[0]), parts[-1], record.platform


def _server_wiki(services: Services, owner: str, repo: str, repo_type: str, language: str) -> Wiki | None:
    """A wiki RepoLens generated for the repository deepwiki's client names (public repositories only)."""
    wikis = WikiStore(services.store)
    for record in services.store.list():
        if not record.private and _owner_and_repo(record) == (owner, repo, repo_type):
            wiki = wikis.latest(record.id, language)
            if wiki is not None:
                return wiki
    return None


@router.get("/api/wiki_cache", response_model=None)
def get_wiki_cache(
    services: ServicesDep,
    owner: NameQuery,
    repo: NameQuery,
    repo_type: NameQuery,
    language: str = DEFAULT_LANGUAGE,
) -> dict[str, Any] | None:
    """The cached wiki, or `null` (200) when there is none: deepwiki's client then generates one.

    A wiki its client saved comes first; else one RepoLens generated on the server for that repository.
    """
    language = _language(language)
    cached = _cache(services).get(CacheKey(owner, repo, repo_type, language))
    if cached is not None:
        return cached
    wiki = _server_wiki(services, owner, repo, repo_type, language)
    if wiki is None:
        return None
    record = services.store.get(wiki.repo_id)
    url = record.url if record else None
    local_path = url if repo_type == "local" else None
    info = {
        "owner": owner,
        "repo": repo,
        "type": repo_type,
        "token": None,
        "localPath": local_path,
        "repoUrl": url,
    }
    return {**wiki.cache_data(info), "repo_url": url}


@router.post("/api/wiki_cache")
def save_wiki_cache(body: WikiCacheBody, services: ServicesDep) -> dict[str, str]:
    key = CacheKey(body.repo.owner, body.repo.repo, body.repo.type, _language(body.language))
    data = {
        "wiki_structure": body.wiki_structure.model_dump(),
        "generated_pages": {page_id: page.model_dump() for page_id, page in body.generated_pages.items()},
        "repo": body.repo.model_dump(),
        "provider": body.provider,
        "model": body.model,
    }
    _cache(services).save(key, data)
    return {"message": "Wiki cache saved successfully"}


@router.delete("/api/wiki_cache", response_model=None)
def delete_wiki_cache(
    services: ServicesDep,
    owner: NameQuery,
    repo: NameQuery,
    repo_type: NameQuery,
    language: str = DEFAULT_LANGUAGE,
    authorization_code: Annotated[str | None, Query(max_length=1000)] = None,
) -> dict[str, str] | JSONResponse:
    if language not in LANGUAGES:
        return JSONResponse({"detail": "Language is not supported"}, status_code=400)
    if not code_accepted(services.settings, authorization_code):
        return JSONResponse({"detail": "Authorization code is invalid"}, status_code=401)
    if not _cache(services).delete(CacheKey(owner, repo, repo_type, language)):
        return JSONResponse({"detail": "Wiki cache not found"}, status_code=404)
    return {"message": f"Wiki cache for {owner}/{repo} ({language}) deleted successfully"}


@router.get("/api/processed_projects")
def processed_projects(services: ServicesDep) -> list[dict[str, Any]]:
    """Wikis its client saved, then those RepoLens generated (public repositories), newest first."""
    projects = _cache(services).projects()
    listed = {(p["owner"], p["repo"], p["repo_type"], p["language"]) for p in projects}
    wikis = WikiStore(services.store)
    for record in services.store.list():
        if record.private:
            continue
        owner, repo, repo_type = _owner_and_repo(record)
        for item in wikis.summaries(record.id):
            key = (owner, repo, repo_type, item["language"])
            if key in listed:
                continue
            listed.add(key)
            stamp = datetime.fromisoformat(item["generated_at"]).timestamp() if item["generated_at"] else 0
            projects.append(
                {
                    "id": f"repolens:{record.id}:{item['language']}",
                    "owner": owner,
                    "repo": repo,
                    "name": f"{owner}/{repo}",
                    "repo_type": repo_type,
                    "submittedAt": int(stamp * 1000),
                    "language": item["language"],
                }
            )
    return sorted(projects, key=lambda project: project["submittedAt"], reverse=True)


@router.post("/export/wiki")
def export_wiki(body: ExportBody) -> Response:
    if body.format == "markdown":
        content = markdown_document("Wiki", body.repo_url, body.pages)
        extension, media_type = "md", "text/markdown"
    else:
        content = json_document(body.repo_url, body.pages)
        extension, media_type = "json", "application/json"
    filename = attachment_name(body.repo_url, extension)
    return Response(
        content, media_type=media_type, headers={"Content-Disposition": f"attachment; filename={filename}"}
    )


def local_path_refusal(path: Path, settings: Settings) -> str | None:
    """Why the server may not read the folder `path`, or None when it may (`ingest.policy`)."""
    return SourcePolicy.for_server(settings).local_refusal(path)


def _structure(root: Path) -> dict[str, str]:
    """Sorted relative paths of the files the ingest filters keep, and the README's text."""
    file_filter = FileFilter(FilterSpec(), root)
    paths: list[str] = []
    for folder, dirs, files in os.walk(root):
        relative_dir = Path(folder).relative_to(root).as_posix()
        prefix = "" if relative_dir == "." else relative_dir + "/"
        dirs[:] = sorted(name for name in dirs if file_filter.accepts_dir(prefix + name))
        paths.extend(prefix + name for name in files if file_filter.accepts(prefix + name))
        if len(paths) > TREE_MAX_FILES:
            break
    paths.sort()
    readme = next((path for path in paths if path.lower() == "readme.md"), None)
    readme = readme or next((path for path in paths if path.lower().endswith("/readme.md")), None)
    text = ""
    if readme is not None:
        text = (root / readme).read_text(encoding="utf-8", errors="replace")[:README_MAX_CHARS]
    return {"file_tree": "\n".join(paths[:TREE_MAX_FILES]), "readme": text}


@router.get("/local_repo/structure", response_model=None)
async def local_repo_structure(
    services: ServicesDep, path: Annotated[str | None, Query(max_length=4096)] = None
) -> dict[str, str] | JSONResponse:
    if not path:
        return JSONResponse(
            {"error": "No path provided. Please provide a 'path' query parameter."}, status_code=400
        )
    folder = Path(path).expanduser()
    if not folder.is_absolute() or "\x00" in path:
        return JSONResponse({"error": "path must be an absolute folder path"}, status_code=400)
    folder = folder.resolve()
    refusal = local_path_refusal(folder, services.settings)
    if refusal is not None:
        return JSONResponse({"error": refusal}, status_code=403)
    if not folder.is_dir():
        return JSONResponse({"error": f"Directory not found: {path}"}, status_code=404)
    return await asyncio.to_thread(_structure, folder)
