"""Wikis that deepwiki-open's front end generated itself and saved with `POST /api/wiki_cache`.

Kept under `$REPOLENS_HOME/wikicache/`, one JSON file per (repo type, owner, repo, language), named like
deepwiki-open's own cache files so its `GET /api/processed_projects` ids look familiar. Unlike deepwiki-open
we never store the access token the client sends inside `repo`, every name part is percent-encoded (a
client-chosen `owner` cannot leave the folder), and files are replaced atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

PREFIX = "deepwiki_cache_"


@dataclass(frozen=True)
class CacheKey:
    owner: str
    repo: str
    repo_type: str
    language: str

    @property
    def filename(self) -> str:
        parts = (self.repo_type, self.owner, self.repo, self.language)
        return PREFIX + "_".join(quote(part, safe="") for part in parts) + ".json"


class ClientWikiCache:
    def __init__(self, home: Path) -> None:
        self.folder = Path(home) / "wikicache"

    def _path(self, key: CacheKey) -> Path:
        return self.folder / key.filename

    def get(self, key: CacheKey) -> dict[str, Any] | None:
        try:
            entry = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        result: dict[str, Any] | None = entry.get("data")
        return result

    def save(self, key: CacheKey, data: dict[str, Any]) -> None:
        """Write `data` (a `WikiCacheData` dict) for `key`; the repo's token is dropped first."""
        repo = data.get("repo")
        if isinstance(repo, dict):
            data = {**data, "repo": {**repo, "token": None}}
        entry = {
            "owner": key.owner,
            "repo": key.repo,
            "repo_type": key.repo_type,
            "language": key.language,
            "saved_at_ms": int(time.time() * 1000),
            "data": data,
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                json.dump(entry, file, ensure_ascii=False)
            os.replace(temporary, self._path(key))
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def delete(self, key: CacheKey) -> bool:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return False
        return True

    def projects(self) -> list[dict[str, Any]]:
        """deepwiki-open's `ProcessedProjectEntry` for every cached wiki, newest first."""
        entries = []
        for path in self.folder.glob(PREFIX + "*.json"):
            try:
                entry = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            entries.append(
                {
                    "id": path.name,
                    "owner": entry["owner"],
                    "repo": entry["repo"],
                    "name": f"{entry['owner']}/{entry['repo']}",
                    "repo_type": entry["repo_type"],
                    "submittedAt": int(entry.get("saved_at_ms") or path.stat().st_mtime * 1000),
                    "language": entry["language"],
                }
            )
        return sorted(entries, key=lambda entry: entry["submittedAt"], reverse=True)
