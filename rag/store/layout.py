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
MAX_REPO_ID_CHARS = 1024
VERSION_DIGITS = 6
BUILD_PREFIX = "build-"


class InvalidRepoIdError(RepoLensError):
    """A repository id that could name something other than one repository's folder."""

    code = ErrorCode.BAD_REQUEST


class IndexBusyError(RepoLensError):
    """Another process is building (or deleting) this repository's index right now."""

    code = ErrorCode.BUSY


def validate_repo_id(repo_id: str) -> str:
    """`repo_id` if it can only ever name one repository, else `InvalidRepoIdError`.

    The one check every route and CLI command goes through (via `Store.paths`): an empty id,
    an empty, `.` or `..` segment, a NUL or other control character, or an id longer than
    `MAX_REPO_ID_CHARS` is refused before it becomes part of a path.
    """
    if not isinstance(repo_id, str) or not repo_id:
        raise InvalidRepoIdError("a repository id is required (e.g. github.com/owner/name)")
    if len(repo_id) > MAX_REPO_ID_CHARS:
        raise InvalidRepoIdError(f"repository id is {len(repo_id)} characters, over {MAX_REPO_ID_CHARS}")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in repo_id):
        raise InvalidRepoIdError("repository ids cannot contain control characters")
    if any(segment in ("", ".", "..") for segment in repo_id.split("/")):
        raise InvalidRepoIdError(
            "repository ids cannot have empty, '.' or '..' segments (e.g. github.com/owner/name)"
        )
    return repo_id


def contained(path: Path, base: Path) -> Path:
    """`path` resolved, refused unless it lies strictly inside `base` (checked before any read or delete)."""
    resolved, root = path.resolve(), base.resolve()
    if resolved == root or not resolved.is_relative_to(root):
        raise InvalidRepoIdError(f"refusing a path outside {root.name}/")
    return resolved


def contained_folder(root: Path, name: str) -> Path:
    """`contained(root / name, root)` for a `root` already resolved and one folder name (`repo_folder`'s),
    with one `lstat` instead of resolving every component of both paths: a folder that is not a symlink
    resolves to itself; a symlink is resolved and checked in full. A question's readiness and retrieval
    check their repository's folder five times, and each full check was ~11 `lstat`s, every one a GIL
    hand-off behind the event loop streaming other answers."""
    folder = root / name
    if folder.is_symlink():
        return contained(folder, root)
    if name in ("", ".", "..") or folder.parent != root:
        raise InvalidRepoIdError(f"refusing a path outside {root.name}/")
    return folder


def repo_folder(repo_id: str) -> str:
    """A repo id as one safe folder name (`github.com/a/b` -> `github.com%2Fa%2Fb`).

    Ids too long for a file name (deep local paths) keep a readable prefix
    plus a hash, so two long ids never share a folder.
    """
    folder = urllib.parse.quote(validate_repo_id(repo_id), safe="")
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


def process_alive(pid: int) -> bool:
    """Whether process `pid` still runs (a pid in a lock file or a build/partial folder name)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def build_holder(paths: RepoPaths) -> int | None:
    """The pid of the live process building this repository (its held lock names it), or None: a
    released lock names nobody, and one left by a dead process names a pid that is gone. Another
    `repolens serve --workers` process, a CLI ingest or a background `repolens embed` count."""
    try:
        text = paths.lock_file.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and process_alive(int(text)) else None


class RepoLock:
    """An exclusive, non-blocking `flock` on `repos/<folder>/lock`, released when the process dies."""

    def __init__(self, paths: RepoPaths, repo_id: str) -> None:
        self._paths = paths
        self._repo_id = repo_id
        self._fd: int | None = None

    def __enter__(self) -> RepoLock:
        while True:
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
            if self._still_linked(fd):
                break
            os.close(fd)  # the holder removed the folder of a failed first build meanwhile: retry
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def _still_linked(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_ino == os.stat(self._paths.lock_file).st_ino
        except FileNotFoundError:
            return False

    def release_and_remove_if_unindexed(self) -> None:
        """Release the lock; if the repository has no live version (a failed first ingest),
        remove its folder too, so failures leave no `repos/<id>/` behind. Done while the
        lock is held, and lockers check the lock file is still linked, so no builder races it."""
        if self._fd is not None and self._paths.current_target() is None:
            shutil.rmtree(self._paths.root, ignore_errors=True)
        self.__exit__(None, None, None)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            # A released lock names nobody: only a process that died holding it leaves its pid
            # behind (what `repolens doctor` reports as `stale_lock`).
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None
