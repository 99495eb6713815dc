"""A change to what the wiki generator writes must bump its writer's generator version.

Stored pages are reused while they were made by the same generator version (`rag.wiki.freshness`): a
change to the offline pages that does not bump `OFFLINE_GENERATOR_VERSION`, or to the model's prompts,
diagram repair or citation linking that does not bump `MODEL_GENERATOR_VERSION`, leaves every user with
the old pages; a bump of the model's version where only offline pages changed makes every model-written
wiki pay for a rewrite. This test fingerprints what the generator makes from the fixture repository
(tests/support/wiki_fingerprint.py says what and why: `offline/` parts and the model's `llm/` parts) and
compares it with the one recorded at these versions in tests/support/wiki_fingerprint.json. The
fingerprint is made in a fresh interpreter under two PYTHONHASHSEEDs: one that changes with the seed is a
generator that is not deterministic.
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
from rag.wiki import freshness
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


# Which version a changed part asks to bump, by the part's name (`tests.support.wiki_fingerprint`).
VERSION_OF_PART = {"offline/": "OFFLINE_GENERATOR_VERSION", "llm/": "MODEL_GENERATOR_VERSION"}


def current_versions() -> dict[str, int]:
    return {"offline": freshness.OFFLINE_GENERATOR_VERSION, "model": freshness.MODEL_GENERATOR_VERSION}


def versions_to_bump(parts: list[str]) -> list[str]:
    return sorted(
        {version for prefix, version in VERSION_OF_PART.items() for part in parts if part.startswith(prefix)}
    )


def verdict(recorded: dict[str, Any], made: dict[str, Any], versions: dict[str, int]) -> str | None:
    """What the developer must do (None: nothing), given the recorded fingerprint and the one made now."""
    now = {"generator": versions, **made}
    update = f"update {FINGERPRINT_FILE.relative_to(ROOT)} to:\n{json.dumps(now, indent=2, sort_keys=True)}"
    if recorded["generator"] != versions:
        return (
            f"the generator versions are {versions}, the fingerprint is of {recorded['generator']}: {update}"
        )
    parts = changed(recorded["parts"], made["parts"])
    if recorded["inputs"] != made["inputs"]:
        inputs = ", ".join(changed(recorded["inputs"], made["inputs"]))
        return (
            f"the fixture repository or the code graph changed ({inputs}), so the wiki made from it did "
            f"({len(parts)} parts): bump a generator version only if the wiki generator changed too, "
            f"and {update}"
        )
    if parts:
        return (
            f"the wiki generator changed: bump {' and '.join(versions_to_bump(parts))} in "
            "rag/wiki/freshness.py and update the fingerprint (stored pages are reused until it is "
            f"bumped). Changed: {', '.join(parts)}; {update}"
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
    problem = verdict(recorded, made[0], current_versions())
    assert problem is None, problem


def test_the_verdict_tells_a_generator_change_from_a_fixture_change() -> None:
    versions = {"offline": 1, "model": 1}
    parts = {"offline/page/a": "1", "llm/page/a": "2"}
    recorded = {"generator": versions, "inputs": {"files": "a", "graph_version": 3}, "parts": parts}
    same = {"inputs": recorded["inputs"], "parts": parts}
    assert verdict(recorded, same, versions) is None
    offline = verdict(recorded, {**same, "parts": {**parts, "offline/page/a": "9"}}, versions)
    assert offline is not None
    assert offline.startswith("the wiki generator changed: bump OFFLINE_GENERATOR_VERSION in") and (
        "Changed: offline/page/a;" in offline
    )  # a change to the offline pages alone costs no model-written page a rewrite
    both = verdict(recorded, {**same, "parts": {"offline/page/a": "9", "llm/page/a": "9"}}, versions)
    assert both is not None
    assert both.startswith(
        "the wiki generator changed: bump MODEL_GENERATOR_VERSION and OFFLINE_GENERATOR_VERSION"
    )
    fixture = verdict(recorded, {"inputs": {"files": "b", "graph_version": 3}, "parts": parts}, versions)
    assert fixture is not None and fixture.startswith(
        "the fixture repository or the code graph changed (files)"
    )
    bumped = verdict(
        recorded, {**same, "parts": {**parts, "offline/page/a": "9"}}, {"offline": 2, "model": 1}
    )
    assert bumped is not None and bumped.startswith(
        "the generator versions are {'offline': 2, 'model': 1}, "
        "the fingerprint is of {'offline': 1, 'model': 1}"
    )
    assert '"offline": 2' in bumped
