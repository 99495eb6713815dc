"""Where a repository's versions live on disk, and the lock that keeps builders apart.

```
repos/<folder>/current -> versions/000007   (symlink, swapped with os.replace)
repos/<folder>/versions/000007/             (record.json, index.faiss, meta.sqlite)
repos/<folder>/build-<pid>-<rand>/          (a version under construction)
repos/<folder>/lock                         (fcntl lock held while building or deleting)
```
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from rag.errors import ErrorCode, RepoLensError

MAX_FOLDER_CHARS = 200
VERSION_DIGITS = 6
BUILD_PREFIX = "build-"


class IndexBusyError(RepoLensError):
    """Another process is building (or deleting) this repository's index right now."""

    code = ErrorCode.BUSY


def repo_folder(repo_id: str) -> str:
    """A repo id as one safe folder name (`github.com/a/b` -> `github.com%2Fa%2Fb`).

    Ids too long for a file name (deep local paths) keep a readable prefix
    plus a hash, so two long ids never share a folder.
    """
    folder = urllib.parse.quote(repo_id, safe="")
    if len(folder) <= MAX_FOLDER_CHARS:
        return folder
    digest = hashlib.sha256(repo_id.encode("utf-8")).hexdigest()[:16]
    return f"{folder[: MAX_FOLDER_CHARS - 17]}-{digest}"


@dataclass(frozen=True)
class RepoPaths:
    root: Path

    @property
    def current(self) -> Path:
        return self.root / "current"

    @property
    def versions(self) -> Path:
        return self.root / "versions"

    @property
    def lock_file(self) -> Path:
        return self.root / "lock"

    def current_target(self) -> str | None:
        """The `versions/NNNNNN` the `current` link points at: one cheap syscall."""
        try:
            return os.readlink(self.current)
        except FileNotFoundError:
            return None

    def next_version(self) -> int:
        numbers = [int(p.name) for p in self.versions.glob("[0-9]" * VERSION_DIGITS)]
        return max(numbers, default=0) + 1

    def version_dir(self, number: int) -> Path:
        return self.versions / f"{number:0{VERSION_DIGITS}d}"

    def remove_leftover_builds(self) -> None:
        """Build dirs of killed runs (call only while holding the lock)."""
        for leftover in self.root.glob(BUILD_PREFIX + "*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def remove_old_versions(self) -> None:
        """Every version but the current one; open readers keep their files until they close."""
        keep = self.current_target()
        if not self.versions.is_dir():
            return
        for version in self.versions.iterdir():
            if keep is None or f"versions/{version.name}" != keep:
                shutil.rmtree(version, ignore_errors=True)

    def swap_current(self, version: Path) -> None:
        """Point `current` at `version` atomically: readers see the old or the new, never neither."""
        temporary = self.root / f"current.{os.getpid()}.tmp"
        temporary.unlink(missing_ok=True)
        os.symlink(version.relative_to(self.root), temporary)
        os.replace(temporary, self.current)
        fsync_dir(self.root)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RepoLock:
    """An exclusive, non-blocking `flock` on `repos/<folder>/lock`, released when the process dies."""

    def __init__(self, paths: RepoPaths, repo_id: str) -> None:
        self._paths = paths
        self._repo_id = repo_id
        self._fd: int | None = None

    def __enter__(self) -> RepoLock:
        self._paths.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._paths.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise IndexBusyError(
                f"another process (pid {holder}) is indexing {self._repo_id}; "
                "wait for it to finish or stop it, then try again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
