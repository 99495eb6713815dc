"""Hostile URLs and refs are refused before any git process starts.

Two layers stand in front of git: the project's own URL validation (`resolve_source`) and,
for sources that reach `ingest.git` some other way, GitPython's unsafe-protocol and
unsafe-option checks. A `git` first on PATH records every invocation, so "no process
started" is checked, not assumed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from ingest.errors import InvalidSourceError
from ingest.git import checkout, ls_remote
from ingest.sources import RepoSource, resolve_source
from tests.support.git_wrapper import git_on_path

HOSTILE_URLS = [
    "ext::sh -c touch% {marker}",
    "ext://sh -c touch% {marker}",
    "fd::17/repo",
    "transport::https://example.com/repo.git",
]
HOSTILE_REFS = ["--upload-pack=touch {marker}", "-utouch {marker}", "--upl=touch {marker}"]


@pytest.fixture
def git_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `git` on PATH that only records that it was started (and never runs anything)."""
    return git_on_path(tmp_path, monkeypatch, run_real_git=False)


def _source(**changes: Any) -> RepoSource:
    """A well-formed source with some fields replaced, as a caller bypassing `resolve_source` could."""
    return dataclasses.replace(resolve_source("https://git.example.com/team/app.git"), **changes)


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_the_project_validation_refuses_remote_helper_urls(url: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidSourceError):
        resolve_source(url.format(marker=tmp_path / "pwned"))


@pytest.mark.parametrize("url", HOSTILE_URLS)
@pytest.mark.parametrize("ref", [None, "ab" * 20])
def test_gitpython_refuses_remote_helper_urls_before_git_starts(
    url: str, ref: str | None, tmp_path: Path, git_calls: Path
) -> None:
    marker = tmp_path / "pwned"
    source = _source(clone_url=url.format(marker=marker), ref=ref)
    with pytest.raises(
        InvalidSourceError, match="refusing to run git (clone|fetch).*protocol looks suspicious"
    ):
        checkout(source, tmp_path / "clones" / "app", token="rl-some-token-value")
    assert not git_calls.exists() and not marker.exists()
    assert list((tmp_path / "clones").iterdir()) == []


@pytest.mark.parametrize("ref", HOSTILE_REFS)
def test_gitpython_refuses_options_smuggled_in_a_ref(ref: str, tmp_path: Path, git_calls: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(InvalidSourceError, match="refusing to run git clone.* is not allowed"):
        checkout(_source(ref=ref.format(marker=marker)), tmp_path / "clones" / "app")
    assert not git_calls.exists() and not marker.exists()


def test_a_ref_that_looks_like_an_option_is_refused_by_the_project_too() -> None:
    with pytest.raises(InvalidSourceError):
        resolve_source("https://github.com/acme/app", ref="--upload-pack=touch /tmp/pwned")


def test_ls_remote_refuses_a_remote_helper_url(tmp_path: Path, git_calls: Path) -> None:
    source = _source(clone_url="ext::sh -c touch% /tmp/pwned")
    with pytest.raises(InvalidSourceError):
        ls_remote(source, "rl-some-token-value")
    assert not git_calls.exists()
