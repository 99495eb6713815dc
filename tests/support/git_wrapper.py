"""A `git` first on PATH that records how it was started: the git tests check what a process was
given (its argv is what `ps` shows) or that none was started at all."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest


def git_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, run_real_git: bool) -> Path:
    """Put a `git` first on PATH that appends its arguments (one line a call) to the returned log,
    then runs the real git, or fails (exit 1) without running anything."""
    then = f'exec "{shutil.which("git")}" "$@"' if run_real_git else "exit 1"
    folder = tmp_path / "bin"
    folder.mkdir()
    log = tmp_path / "git-calls.log"
    wrapper = folder / "git"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\n{then}\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return log
