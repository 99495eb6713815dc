"""Indexes outlive a change of the default local model: they are read and updated with the model
they were built with (every local model runs offline), and `--reindex` moves them to the new one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingest.pipeline import IngestOptions, ingest
from rag.embedders import get_embedder
from rag.embedders.local import DEFAULT_MODEL, LEGACY_INT8_MODEL
from rag.errors import EmbedderMismatchError
from rag.retrieval import Retriever
from rag.settings import Settings
from rag.store import Store, open_store

pytestmark = pytest.mark.filterwarnings("error")


def settings(**env: str) -> Settings:
    environ = {"REPOLENS_HOME": os.environ["REPOLENS_HOME"], **env}
    return Settings.from_env(environ=environ, dotenv=Path("/nonexistent/.env"))


def write_repo(root: Path, body: str) -> Path:
    root.mkdir(exist_ok=True)
    (root / "shapes.py").write_text(
        "def circle_area(radius):\n"
        '    """Area of a circle."""\n'
        f"    return {body}\n\n\n"
        "def square_area(side):\n"
        "    return side * side\n"
    )
    return root


def embedder_of(store: Store, repo_id: str) -> str:
    record = store.get(repo_id)
    assert record is not None
    return record.embedder


def test_an_index_of_the_previous_default_model_is_searched_updated_and_reindexed(tmp_path: Path) -> None:
    assert DEFAULT_MODEL != LEGACY_INT8_MODEL
    repo = write_repo(tmp_path / "shapes", "3.14159 * radius * radius")
    store = open_store(settings())
    legacy = get_embedder(settings(REPOLENS_EMBEDDING_MODEL=LEGACY_INT8_MODEL))
    repo_id = ingest(str(repo), store=store, embedder=legacy).record.id
    assert embedder_of(store, repo_id) == LEGACY_INT8_MODEL

    default = get_embedder(settings())  # what every query and update gets after the upgrade
    assert default.name == DEFAULT_MODEL
    hits = Retriever(store.open(repo_id), default).search("area of a circle", 2, mode="dense")
    assert hits and hits[0].path == "shapes.py"

    write_repo(repo, "math.pi * radius ** 2")
    ingest(str(repo), store=store, embedder=default)
    assert embedder_of(store, repo_id) == LEGACY_INT8_MODEL  # the update kept the index's model
    assert "math.pi" in (store.open(repo_id).file_text("shapes.py") or "")

    ingest(str(repo), IngestOptions(reindex=True), store=store, embedder=default)
    assert embedder_of(store, repo_id) == DEFAULT_MODEL


def test_an_embedder_that_cannot_serve_the_index_model_is_still_refused(tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "shapes", "3.14159 * radius * radius")
    store = open_store(settings())
    legacy = get_embedder(settings(REPOLENS_EMBEDDING_MODEL=LEGACY_INT8_MODEL))
    repo_id = ingest(str(repo), store=store, embedder=legacy).record.id
    plain = get_embedder(settings(), cache_vectors=False)  # serves only its own model
    with pytest.raises(EmbedderMismatchError):
        Retriever(store.open(repo_id), plain).search("area of a circle", 2, mode="dense")
