"""A server process freezes its startup heap before serving (`api.server.freeze_startup_heap`), so
the garbage collector's full collections do not walk it while answers stream. What that buys is a
timing (`python -m bench chat`, `REPOLENS_BENCH_CHAT_PROBE=1`); these tests prove the behaviour: the
heap is frozen when uvicorn starts serving, startup's garbage is collected rather than kept, and
what requests make later is still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from api import server
from tests.support.live_server import free_port


class _Cycle:
    """Garbage only the cyclic collector can free (it refers to itself)."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Each test starts and ends with nothing frozen and the collector's own thresholds (the test
    process is not a server)."""
    thresholds = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_serve_freezes_the_startup_heap_and_collects_fully_less_often_before_uvicorn_serves(
    monkeypatch: pytest.MonkeyPatch, unfrozen: None
) -> None:
    thresholds = gc.get_threshold()
    garbage = _Cycle()
    dropped = weakref.ref(garbage)
    del garbage
    seen: dict[str, Any] = {}

    def run(self: uvicorn.Server, sockets: Any = None) -> None:
        seen["frozen"] = gc.get_freeze_count()
        seen["thresholds"] = gc.get_threshold()
        seen["app"] = self.config.app
        seen["garbage_alive"] = dropped() is not None

    monkeypatch.setattr(uvicorn.Server, "run", run)
    server.serve("127.0.0.1", free_port(), log_level="warning")  # serve refuses a port in use

    assert seen["frozen"] > 1000  # modules, the app and its routes
    assert seen["app"].state.services is not None  # frozen once the app is built
    assert not seen["garbage_alive"]  # collected before the freeze, not kept for good
    young, middle, _ = thresholds
    assert seen["thresholds"] == (young, middle, server.FULL_COLLECTION_AFTER)  # young ones as before


def test_each_worker_process_freezes_its_heap_once_its_app_is_built(unfrozen: None) -> None:
    app = server.create_worker_app()
    assert gc.get_freeze_count() > 1000
    assert gc.get_threshold()[2] == server.FULL_COLLECTION_AFTER
    assert app.state.services is not None


def test_garbage_made_after_the_freeze_is_still_collected(unfrozen: None) -> None:
    server.freeze_startup_heap()
    later = _Cycle()
    dropped = weakref.ref(later)
    del later
    gc.collect()
    assert dropped() is None
