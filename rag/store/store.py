"""The registry of indexed repositories and the per-process cache of loaded indexes."""

from __future__ import annotations

import functools
import json
import shutil
import threading
from pathlib import Path
from typing import Self

from rag.errors import IndexCorruptError, NotFoundError
from rag.store.builder import IndexBuilder
from rag.store.doctor import Finding, check
from rag.store.index import RepoIndex
from rag.store.layout import RepoLock, RepoPaths, build_holder, contained, contained_folder, repo_folder
from rag.store.schema import RECORD_FILE
from rag.store.writer import IndexWriter
from rag.types import RepoRecord

_OPEN_ATTEMPTS = 3


class Store:
    """All repositories under `$REPOLENS_HOME/repos`, one folder each."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.repos_dir = self.home / "repos"
        self._loaded: dict[str, RepoIndex] = {}
        self._lock = threading.Lock()

    @functools.cached_property
    def _repos_root(self) -> Path:
        """`repos/` resolved, once per store: the data dir does not move under a running process."""
        return self.repos_dir.resolve()

    def paths(self, repo_id: str) -> RepoPaths:
        """The folders of `repo_id`; an id that is not valid, or whose folder would resolve outside
        `repos/`, is an `InvalidRepoIdError` (`rag.store.layout.validate_repo_id`, `contained_folder`)."""
        return RepoPaths(contained_folder(self._repos_root, repo_folder(repo_id)))

    def building(self, repo_id: str) -> bool:
        """A live process holds `repo_id`'s build lock: an ingest, update or `repolens embed` of this or
        another process (`rag.store.layout.build_holder`)."""
        return build_holder(self.paths(repo_id)) is not None

    def clone_dir(self, repo_id: str) -> Path:
        """Where the git working copy of `repo_id` lives (removed with the repo)."""
        clones = self.home / "clones"
        return contained(clones / repo_folder(repo_id), clones)

    def doctor(self, *, repair: bool = False) -> list[Finding]:
        """What crashes and kills left behind (`rag.store.doctor`), repaired with `repair`."""
        return check(self.home, repair=repair)

    def list(self) -> list[RepoRecord]:
        records = [
            RepoRecord.from_json(json.loads(path.read_text()))
            for path in self.repos_dir.glob(f"*/current/{RECORD_FILE}")
        ]
        return sorted(records, key=lambda record: record.id)

    def get(self, repo_id: str) -> RepoRecord | None:
        try:
            return RepoRecord.from_json(json.loads((self.paths(repo_id).current / RECORD_FILE).read_text()))
        except FileNotFoundError:
            return None

    def open(self, repo_id: str) -> RepoIndex:
        """The live version, loaded once per process and reloaded after a swap.

        The freshness check is one `readlink`; a version garbage-collected
        between that check and loading (or while loading) is retried with the new link.
        """
        paths = self.paths(repo_id)
        for _ in range(_OPEN_ATTEMPTS):
            target = paths.current_target()
            if target is None:
                break
            with self._lock:
                cached = self._loaded.get(repo_id)
                if cached is not None and cached.version_dir == paths.root / target:
                    return cached
                try:
                    index = RepoIndex(paths.root / target)
                except FileNotFoundError:
                    continue
                except IndexCorruptError:
                    # A version garbage-collected while it loaded fails half-way (FAISS or SQLite cannot
                    # open a file just removed): the link has moved on, so load the new one. Only a
                    # version that is still live and fails to load is damaged.
                    if paths.current_target() != target:
                        continue
                    raise
                self._loaded[repo_id] = index
                return index
        raise NotFoundError(f"{repo_id} is not indexed; run `repolens ingest LOCATION` first")

    def loaded(self, repo_id: str) -> RepoIndex | None:
        """The live version if this process has it loaded already, else None. It never loads one nor
        waits for the store's lock (held while another thread loads a version), so an event loop may
        call it: the folder check and one `readlink`. A store without local versions (PostgreSQL)
        never has one loaded here."""
        paths = self.paths(repo_id)
        target = paths.current_target()
        cached = self._loaded.get(repo_id)  # no lock: one dict read
        if target is None or cached is None or cached.version_dir != paths.root / target:
            return None
        return cached

    def builder(self, record: RepoRecord, base: RepoIndex | None = None) -> IndexWriter:
        """A builder for the next version (`with store.builder(...) as b: ...; b.commit()`)."""
        return IndexBuilder(self.paths(record.id), record, base)

    def delete(self, repo_id: str) -> bool:
        """Remove the index and the clone; False (and nothing removed) unless `repo_id` is an
        indexed repository. Leftovers of repositories never indexed are `repolens doctor`'s job."""
        paths = self.paths(repo_id)
        if paths.current_target() is None or not (paths.current / RECORD_FILE).is_file():
            return False
        with RepoLock(paths, repo_id):
            with self._lock:
                self._loaded.pop(repo_id, None)
            shutil.rmtree(self.clone_dir(repo_id), ignore_errors=True)
            shutil.rmtree(paths.root)
        return True

    def close(self) -> None:
        """Release what the store holds open (nothing for local folders; a backend's connections)."""

    def __enter__(self) -> Self:
        """`with open_store(settings) as store:` closes it on the way out, errors included: a command
        that exits with a database pool still open leaves its threads to the interpreter's teardown."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
