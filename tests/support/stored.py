"""What a test finds on disk after RepoLens wrote its data dir: for the secrets-stay-secret checks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def stored_files(root: Path) -> Iterator[tuple[Path, bytes]]:
    """Every regular file under `root` (symlinks not followed) with its bytes.

    Background indexing may swap versions while the walk runs: a folder or file that vanishes
    mid-walk is no longer stored, so it is skipped (`os.walk` already skips vanished folders,
    where `Path.rglob` raises).
    """
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if path.is_symlink():
                continue
            try:
                yield path, path.read_bytes()
            except FileNotFoundError:
                continue


def files_holding(root: Path, *needles: bytes) -> list[Path]:
    """The stored files under `root` that contain any of `needles`."""
    return [path for path, data in stored_files(root) if any(needle in data for needle in needles)]
