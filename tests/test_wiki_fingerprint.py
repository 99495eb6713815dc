"""A change to what the wiki generator writes must bump `WIKI_GENERATOR_VERSION`.

Stored pages are reused while they were made by this generator version (`rag.wiki.freshness`): a change
to the offline pages, the model's prompts, diagram repair or citation linking that does not bump it
leaves every user with the old pages. This test fingerprints what the generator makes from the fixture
repository (tests/support/wiki_fingerprint.py says what and why) and compares it with the one recorded
at this version in tests/support/wiki_fingerprint.json. The fingerprint is made in a fresh interpreter
under two PYTHONHASHSEEDs: one that changes with the seed is a generator that is not deterministic.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ingest import ingest
from rag.embedders import Embedder
from rag.settings import Settings
from rag.store import Store
from rag.wiki.freshness import WIKI_GENERATOR_VERSION
from tests.support.repos import make_fixture_repo
from tests.support.wiki_fingerprint import FINGERPRINT_FILE

ROOT = Path(__file__).resolve().parent.parent


def made_fingerprint(home: Path, repo_id: str, seed: str) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-m", "tests.support.wiki_fingerprint", str(home), repo_id],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": seed},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    made: dict[str, Any] = json.loads(run.stdout)
    return made


def changed(recorded: dict[str, str], made: dict[str, str]) -> list[str]:
    return sorted(name for name in {*recorded, *made} if recorded.get(name) != made.get(name))


def verdict(recorded: dict[str, Any], made: dict[str, Any], version: int) -> str | None:
    """What the developer must do (None: nothing), given the recorded fingerprint and the one made now."""
    now = {"generator": version, **made}
    update = f"update {FINGERPRINT_FILE.relative_to(ROOT)} to:\n{json.dumps(now, indent=2, sort_keys=True)}"
    if recorded["generator"] != version:
        at = recorded["generator"]
        return f"WIKI_GENERATOR_VERSION is {version}, the fingerprint is of version {at}: {update}"
    parts = changed(recorded["parts"], made["parts"])
    if recorded["inputs"] != made["inputs"]:
        inputs = ", ".join(changed(recorded["inputs"], made["inputs"]))
        return (
            f"the fixture repository or the code graph changed ({inputs}), so the wiki made from it did "
            f"({len(parts)} parts): bump WIKI_GENERATOR_VERSION only if the wiki generator changed too, "
            f"and {update}"
        )
    if parts:
        return (
            "the wiki generator changed: bump WIKI_GENERATOR_VERSION and update the fingerprint (stored "
            f"pages are reused until it is bumped). Changed: {', '.join(parts)}; {update}"
        )
    return None


@pytest.mark.slow
def test_a_change_to_the_wiki_generator_bumps_its_version(tmp_path: Path, shared_embedder: Embedder) -> None:
    home = Settings.from_env().home
    report = ingest(
        str(make_fixture_repo(tmp_path / "weatherline")), store=Store(home), embedder=shared_embedder
    )
    made = [made_fingerprint(home, report.repo_id, seed) for seed in ("0", "1")]
    assert made[0] == made[1], (
        "the wiki generator's output depends on PYTHONHASHSEED (a set's order?): "
        + ", ".join(changed(made[0]["parts"], made[1]["parts"]))
    )
    recorded = json.loads(FINGERPRINT_FILE.read_text(encoding="utf-8"))
    problem = verdict(recorded, made[0], WIKI_GENERATOR_VERSION)
    assert problem is None, problem


def test_the_verdict_tells_a_generator_change_from_a_fixture_change() -> None:
    recorded = {"generator": 1, "inputs": {"files": "a", "graph_version": 3}, "parts": {"x": "1", "y": "2"}}
    same = {"inputs": recorded["inputs"], "parts": recorded["parts"]}
    assert verdict(recorded, same, 1) is None
    generator = verdict(recorded, {**same, "parts": {"x": "1", "y": "9"}}, 1)
    assert generator is not None
    assert (
        generator.startswith("the wiki generator changed: bump WIKI_GENERATOR_VERSION")
        and "Changed: y;" in generator
    )
    fixture = verdict(recorded, {"inputs": {"files": "b", "graph_version": 3}, "parts": {"x": "7"}}, 1)
    assert fixture is not None and fixture.startswith(
        "the fixture repository or the code graph changed (files)"
    )
    bumped = verdict(recorded, {**same, "parts": {"x": "1", "y": "9"}}, 2)
    assert bumped is not None and bumped.startswith(
        "WIKI_GENERATOR_VERSION is 2, the fingerprint is of version 1"
    )
    assert '"generator": 2' in bumped
