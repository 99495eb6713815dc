"""Generated wikis on disk: `repos/<folder>/wiki/<commit>-<language>-<comprehensive|concise>.json`.

Beside the repository's index versions, so deleting a repository deletes its wikis. One file per commit,
language and mode of detail; written to a temporary file and renamed, so a reader sees the old wiki or
the new one, never half of one. The newest wiki of a repository is what an update starts from.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from rag.store import Store
from rag.wiki.model import Wiki

WIKI_FOLDER = "wiki"


def detail(comprehensive: bool) -> str:
    return "comprehensive" if comprehensive else "concise"


class WikiStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def folder(self, repo_id: str) -> Path:
        return self.store.paths(repo_id).root / WIKI_FOLDER

    def _path(self, repo_id: str, commit: str | None, language: str, comprehensive: bool) -> Path:
        return self.folder(repo_id) / f"{commit or 'uncommitted'}-{language}-{detail(comprehensive)}.json"

    def save(self, wiki: Wiki) -> Path:
        folder = self.folder(wiki.repo_id)
        folder.mkdir(parents=True, exist_ok=True)
        target = self._path(wiki.repo_id, wiki.commit, wiki.language, wiki.comprehensive)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(wiki.model_dump_json())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return target

    def _read(self, path: Path) -> Wiki | None:
        try:
            return Wiki.model_validate_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def load(self, repo_id: str, commit: str | None, language: str, comprehensive: bool) -> Wiki | None:
        return self._read(self._path(repo_id, commit, language, comprehensive))

    def latest(
        self, repo_id: str, language: str | None = None, comprehensive: bool | None = None
    ) -> Wiki | None:
        """The most recently generated wiki of `repo_id` (optionally of one language and detail)."""
        candidates = []
        for path in self.folder(repo_id).glob("*.json"):
            if path.name.startswith(".tmp-"):
                continue
            wanted = f"-{language}-{detail(bool(comprehensive))}.json"
            if language is not None and comprehensive is not None and not path.name.endswith(wanted):
                continue
            candidates.append(path)
        for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
            wiki = self._read(path)
            if wiki is not None and (language is None or wiki.language == language):
                return wiki
        return None

    def summaries(self, repo_id: str) -> list[dict[str, Any]]:
        found = []
        for path in self.folder(repo_id).glob("*.json"):
            wiki = None if path.name.startswith(".tmp-") else self._read(path)
            if wiki is not None:
                found.append(summary(wiki))
        return sorted(found, key=lambda item: item["generated_at"], reverse=True)

    def delete(self, repo_id: str) -> int:
        removed = 0
        for path in self.folder(repo_id).glob("*.json"):
            path.unlink(missing_ok=True)
            removed += 1
        return removed


def summary(wiki: Wiki) -> dict[str, Any]:
    return {
        "repo_id": wiki.repo_id,
        "commit": wiki.commit,
        "language": wiki.language,
        "comprehensive": wiki.comprehensive,
        "mode": wiki.mode,
        "provider": wiki.provider,
        "model": wiki.model,
        "generated_at": wiki.generated_at,
        "title": wiki.structure.title,
        "pages": len(wiki.pages),
        "complete": wiki.complete,
    }
