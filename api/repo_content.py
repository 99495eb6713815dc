"""Reading an indexed repository on a client's behalf: the access check, search and file lines.

The HTTP routes (`/api/repos/{id}/search`, `/api/repos/{id}/file`) and the MCP tools
(`search_code`, `read_file`, the `repolens://` resources) all call these, so they refuse a
private repository, a bad path or a bad line range with the same error and message.
Everything here blocks (index load, embedding, a `git ls-remote` for private repositories):
call it from a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from api.schemas import BadRequestError
from api.services import Services
from rag.errors import NotFoundError
from rag.retrieval import MAX_K, Mode, Retriever
from rag.roles import Role
from rag.store import RepoIndex
from rag.types import SearchHit


@dataclass(frozen=True)
class FileLines:
    """Lines `start_line..end_line` (1-based, inclusive) of one indexed file."""

    repo: str
    commit: str | None
    path: str
    language: str | None
    start_line: int
    end_line: int
    total_lines: int
    text: str

    def to_json(self) -> dict[str, Any]:
        return {
            "repo": self.repo,
            "commit": self.commit,
            "path": self.path,
            "language": self.language,
            "start_line": self.start_line,
            "end_line": self.end_line,
            "total_lines": self.total_lines,
            "text": self.text,
        }


def open_readable(services: Services, repo_id: str, token: str | None) -> RepoIndex:
    """The live index of `repo_id`, once the caller has shown it may read it (private repos: a token)."""
    index = services.store.open(repo_id)
    services.verify_access(index.record, token)
    return index


def safe_relative(path: str) -> str:
    """`path` if it is a plain file path relative to the repository root, else `BadRequestError`."""
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or "\x00" in path or ".." in parts or "" in parts:
        raise BadRequestError("path must be a file path relative to the repository root, like 'src/app.py'")
    return path


def read_lines(index: RepoIndex, path: str, start: int | None = None, end: int | None = None) -> FileLines:
    """Lines `start..end` of an indexed file (default: all of it), served from the index, never the disk."""
    text = index.file_text(safe_relative(path))
    if text is None:
        raise NotFoundError(f"{path} is not in the index of {index.record.id}")
    lines = text.splitlines()
    first = start or 1
    last = min(end or len(lines), len(lines))
    if first > max(last, 1):
        raise BadRequestError(f"start ({first}) is after the end ({last}) of {path}")
    info = index.file_info(path)
    return FileLines(
        repo=index.record.id,
        commit=index.record.commit,
        path=path,
        language=info.language if info else None,
        start_line=first,
        end_line=last,
        total_lines=len(lines),
        text="\n".join(lines[first - 1 : last]),
    )


def search_repo(
    services: Services,
    repo_id: str,
    query: str,
    *,
    k: int = 10,
    path_glob: str | None = None,
    language: str | None = None,
    mode: Mode = "hybrid",
    role: Role | None = None,
    explain: bool = False,
    token: str | None = None,
) -> tuple[RepoIndex, list[SearchHit]]:
    """The index of `repo_id` and the hits for `query` (after the access check).

    `role` keeps only files of that role (`rag.roles`: source, test, docs, ...): the search
    then ranks `MAX_K` candidates and keeps the best `k` of the role."""
    index = open_readable(services, repo_id, token)
    embedder = None if mode == "lexical" else services.embedder
    pool = MAX_K if role else k
    hits = Retriever(index, embedder).search(
        query, pool, path_glob=path_glob, language=language, mode=mode, explain=explain
    )
    if role:
        roles = index.roles()
        hits = [hit for hit in hits if roles.get(hit.path) == role][:k]
    return index, hits
