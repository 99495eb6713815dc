"""`repolens doctor`: find (and with `repair=True` fix) what crashes and kills leave in a data dir.

Checked under `$REPOLENS_HOME`:

- `leftover_build`: a `repos/<id>/build-*` folder of a killed ingest (removed);
- `unindexed_folder`: a `repos/<id>/` with no live version, e.g. a failed first ingest (removed);
- `dangling_current`: `current` names a missing version (pointed at the newest intact version
  if there is one, else the folder is removed: the repository must be ingested again);
- `corrupt_version`: the live version fails its checksums or does not load (`current` moved
  to the newest intact older version if any; else `reindex` is the fix and it is reported);
- `old_versions`: versions beside the live one that a crash kept (removed);
- `stale_lock`: a lock file naming a process that is gone (harmless, since `flock` dies with its
  process, but reported; rewritten, or removed with its folder; a held lock is never touched);
- `orphan_clone`: a `clones/<id>` without an indexed repository, or a partial clone (removed).

Repositories being built right now (their lock is held) are skipped, so doctor is safe to run
beside a live server.
"""

from __future__ import annotations

import os
import shutil
import urllib.parse
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path

from rag.errors import IndexCorruptError
from rag.store.index import RepoIndex
from rag.store.layout import BUILD_PREFIX, IndexBusyError, RepoLock, RepoPaths, process_alive, repo_folder


@dataclass
class Finding:
    repo: str
    problem: str
    detail: str
    repaired: bool = False

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _intact(version: Path) -> bool:
    try:
        RepoIndex(version).close()
    except (IndexCorruptError, OSError):
        return False
    return True


def check(home: Path, *, repair: bool = False, shared: Collection[str] = ()) -> list[Finding]:
    """Every problem found under `home` (each marked `repaired` when `repair` fixed it).

    `shared`: the repositories indexed in a shared store (PostgreSQL), whose folders under `home`
    hold only their wikis and whose clones are in use."""
    findings: list[Finding] = []
    repos = Path(home) / "repos"
    indexed = {repo_folder(repo) for repo in shared}
    for root in sorted(repos.iterdir()) if repos.is_dir() else []:
        if not root.is_dir() or root.name in indexed:
            continue
        repo = urllib.parse.unquote(root.name)
        stale = _stale_lock(RepoPaths(root))
        try:
            with RepoLock(RepoPaths(root), repo) as lock:
                found = _check_repo(RepoPaths(root), repo, repair)
                if repair and RepoPaths(root).current_target() is None:
                    lock.release_and_remove_if_unindexed()
        except IndexBusyError:
            continue  # being built right now
        if stale is not None:
            findings.append(Finding(repo, "stale_lock", f"lock file of pid {stale}, which is gone", repair))
        findings.extend(found)
        if root.exists() and RepoPaths(root).current_target() is not None:
            indexed.add(root.name)
    clones = Path(home) / "clones"
    for clone in sorted(clones.iterdir()) if clones.is_dir() else []:
        partial = ".partial-" in clone.name
        if clone.name in indexed or (partial and _partial_alive(clone)):
            continue
        finding = Finding(
            urllib.parse.unquote(clone.name), "orphan_clone", f"{clone} has no indexed repository"
        )
        if repair:
            shutil.rmtree(clone, ignore_errors=True)
            finding.repaired = True
        findings.append(finding)
    return findings


def _partial_alive(clone: Path) -> bool:
    pid = clone.name.rpartition(".partial-")[2].split("-")[0]
    return pid.isdigit() and process_alive(int(pid))


def _stale_lock(paths: RepoPaths) -> int | None:
    """The pid a lock file names when that process is gone (read before taking the lock)."""
    try:
        text = paths.lock_file.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) != os.getpid() and not process_alive(int(text)) else None


def _check_repo(paths: RepoPaths, repo: str, repair: bool) -> list[Finding]:
    findings: list[Finding] = []

    def found(problem: str, detail: str, fixed: bool) -> None:
        findings.append(Finding(repo, problem, detail, repaired=repair and fixed))

    for leftover in sorted(paths.root.glob(BUILD_PREFIX + "*")):
        if repair:
            shutil.rmtree(leftover, ignore_errors=True)
        found("leftover_build", f"{leftover.name} of an ingest that did not finish", True)
    versions = sorted(paths.versions.iterdir(), reverse=True) if paths.versions.is_dir() else []
    target = paths.current_target()
    live = paths.root / target if target else None
    if target is None:
        found("unindexed_folder", "no live version (a failed or interrupted first ingest)", True)
        return findings
    assert live is not None
    if not live.is_dir() or not _intact(live):
        problem = "dangling_current" if not live.is_dir() else "corrupt_version"
        fallback = next((v for v in versions if v != live and _intact(v)), None)
        if fallback is not None:
            if repair:
                paths.swap_current(fallback)
            found(problem, f"{target}: live version unusable; {fallback.name} is intact", True)
            live = fallback
        else:
            if repair and problem == "dangling_current":
                paths.current.unlink(missing_ok=True)
            detail = f"{target} is unusable and no intact version is left: re-index with --reindex"
            found(problem, detail, problem == "dangling_current")
            return findings
    old = [v for v in versions if v != live]
    if old:
        if repair:
            paths.remove_old_versions()
        found("old_versions", f"{len(old)} version(s) beside the live one", True)
    return findings
