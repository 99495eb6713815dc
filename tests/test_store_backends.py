"""`rag.store.open_store`: the one place that picks the store backend from the settings."""

from __future__ import annotations

from pathlib import Path

from rag.settings import Settings
from rag.store import Store, open_store


def test_local_store_is_the_default(tmp_path: Path) -> None:
    store = open_store(Settings.from_env(environ={"REPOLENS_HOME": str(tmp_path)}))
    assert type(store) is Store
    assert store.home == tmp_path
