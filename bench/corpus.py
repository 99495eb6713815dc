"""Real repositories for the quality benchmarks, pinned by commit and never committed here.

Each corpus is a public repository brought onto the machine with the search tool's `fetch`
(a bare mirror under `/work/.mirror/<owner>+<name>/repo`, or `REPOLENS_BENCH_MIRRORS`). A
benchmark asks for a working copy with `working_copy(name)`: the pinned commit is exported
from the mirror with `git archive` into `build/bench/corpora/<name>/` (gitignored), once.
A missing mirror or commit raises `CorpusUnavailable` with what to do, and benchmarks report
the corpus as skipped instead of failing.

Not used for benchmarks or tuning, by project rule: click, httpx, werkzeug, gin, flask (they
are kept for independent measurement).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPORA_DIR = ROOT / "build" / "bench" / "corpora"
DEFAULT_MIRRORS = Path("/work/.mirror")
RESERVED = frozenset({"pallets/click", "encode/httpx", "pallets/werkzeug", "gin-gonic/gin", "pallets/flask"})


class CorpusUnavailable(RuntimeError):
    """The mirror or the pinned commit is not on this machine."""


@dataclass(frozen=True)
class Corpus:
    name: str
    repo: str  # owner/name on GitHub
    commit: str
    language: str

    @property
    def mirror_name(self) -> str:
        return self.repo.replace("/", "+")


CORPORA: dict[str, Corpus] = {
    corpus.name: corpus
    for corpus in (
        Corpus("starlette", "encode/starlette", "cb8f84f5284dc301ca7a31eb732b9e140769dd48", "python"),
        Corpus("requests", "psf/requests", "1f6589ec3a1ee910f9a65cc3ceac60b26677bc0e", "python"),
        Corpus("rich", "Textualize/rich", "42899d8a0a96b121a514516f4be9db44ff7aeaf3", "python"),
        Corpus("cobra", "spf13/cobra", "adbc8813901bba65827259daa8e22ff94ec1f30e", "go"),
        Corpus("express", "expressjs/express", "a3714473feb3d2908add734d340e7755fd85e0a3", "javascript"),
        Corpus("axum", "tokio-rs/axum", "3d78036dcac289d6c1d54934708acb6a5bd73686", "rust"),
    )
}
assert not RESERVED & {corpus.repo for corpus in CORPORA.values()}


def mirrors_dir() -> Path:
    return Path(os.environ.get("REPOLENS_BENCH_MIRRORS") or DEFAULT_MIRRORS)


def mirror(corpus: Corpus) -> Path:
    """The bare git directory of `corpus`'s mirror."""
    path = mirrors_dir() / corpus.mirror_name / "repo"
    if not (path / "HEAD").is_file():
        raise CorpusUnavailable(
            f"no mirror of {corpus.repo} under {mirrors_dir()}: bring it in with the search tool's "
            f"`fetch github:{corpus.repo}` (or point REPOLENS_BENCH_MIRRORS at a folder of mirrors)"
        )
    return path


def working_copy(name: str) -> Path:
    """A read-only-by-convention working copy of corpus `name` at its pinned commit."""
    corpus = CORPORA[name]
    dest = CORPORA_DIR / f"{name}-{corpus.commit[:12]}"
    if dest.is_dir():
        return dest
    git_dir = mirror(corpus)
    CORPORA_DIR.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=CORPORA_DIR))
    try:
        archive = subprocess.run(
            ["git", f"--git-dir={git_dir}", "archive", "--format=tar", corpus.commit],
            capture_output=True,
            check=False,
        )
        if archive.returncode != 0:
            raise CorpusUnavailable(
                f"the mirror of {corpus.repo} lacks commit {corpus.commit}: "
                f"{archive.stderr.decode(errors='replace').strip()}"
            )
        subprocess.run(["tar", "-x", "-C", str(staging)], input=archive.stdout, check=True)
        staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def available() -> list[str]:
    """Names of the corpora whose mirrors are on this machine."""
    names = []
    for name, corpus in CORPORA.items():
        try:
            mirror(corpus)
        except CorpusUnavailable:
            continue
        names.append(name)
    return names
