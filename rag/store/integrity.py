"""Checksums of a version's files: recorded when a builder commits, verified when it is opened.

A truncated or flipped `index.faiss` / `meta.sqlite` used to surface as a raw FAISS or SQLite
error (a 500 on the server, nothing on stdout with `--json`). Now opening a damaged version is
an `IndexCorruptError` (code `index_corrupt`: HTTP 409, its own CLI exit code, an `error`
frame) whose message names `--reindex`, the one fix. Versions built before checksums existed
have no `checksums.json` and are checked by loading them only.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from pathlib import Path

from rag.errors import IndexCorruptError
from rag.store.schema import FAISS_FILE, META_FILE

CHECKSUM_FILE = "checksums.json"
CHECKED_FILES = (FAISS_FILE, META_FILE)
_READ_BYTES = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_READ_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def write_checksums(version_dir: Path) -> None:
    sums = {name: file_sha256(version_dir / name) for name in CHECKED_FILES}
    (version_dir / CHECKSUM_FILE).write_text(json.dumps(sums, indent=2))


def corrupt(version_dir: Path, problem: str) -> IndexCorruptError:
    """The error for a damaged version, naming the repository and the fix."""
    repo_id = urllib.parse.unquote(version_dir.parent.parent.name)
    return IndexCorruptError(
        f"the index of {repo_id} is damaged ({problem}); rebuild it with "
        "`repolens ingest LOCATION --reindex` (its URL or folder; "
        'HTTP: POST /api/repos with "reindex": true), '
        "or run `repolens doctor --repair`"
    )


def verify_checksums(version_dir: Path) -> None:
    """Raise `IndexCorruptError` if a file of `version_dir` differs from its recorded checksum."""
    recorded_path = version_dir / CHECKSUM_FILE
    if not recorded_path.exists():
        return
    try:
        recorded = json.loads(recorded_path.read_text())
    except (OSError, ValueError):
        raise corrupt(version_dir, f"{CHECKSUM_FILE} is unreadable") from None
    for name in CHECKED_FILES:
        path = version_dir / name
        if not path.exists():
            raise FileNotFoundError(path)  # a version garbage-collected meanwhile: the caller retries
        if file_sha256(path) != recorded.get(name):
            raise corrupt(version_dir, f"{name} fails its checksum")
