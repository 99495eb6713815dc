"""`Services` builds its job pool and embedder once, however many server threads ask for them at once.

The builds are slow stand-ins that count their calls (the real embedder loads a model, the real pool
starts workers): what is tested is the first use by racing threads, which needs a build that takes long
enough for the race to happen on every run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from api import services as services_module
from api.services import Services
from rag.settings import Settings
from rag.store import Store

WAIT = 10.0


def new_services(home: Path) -> Services:
    settings = Settings.from_env({"REPOLENS_HOME": str(home), "REPOLENS_INGEST_ISOLATION": "thread"})
    return Services(settings=settings, store=Store(home))


class SlowBuild:
    """Stands in for a build: counts its calls, each taking `seconds` or until `release` is set."""

    def __init__(self, seconds: float = 0.3, release: threading.Event | None = None) -> None:
        self.calls = 0
        self.seconds = seconds
        self.release = release
        self.started = threading.Event()

    def __call__(self, *args: Any, **kwargs: Any) -> object:
        self.calls += 1
        self.started.set()
        if self.release is not None:
            assert self.release.wait(3 * WAIT)  # longer than the test waits for anything else
        else:
            time.sleep(self.seconds)
        return object()


def race(get: Callable[[], object], threads: int = 4) -> list[object]:
    """`get()` from `threads` threads released together."""
    start = threading.Barrier(threads)

    def first_use() -> object:
        start.wait(WAIT)
        return get()

    with ThreadPoolExecutor(threads) as pool:
        return [future.result(WAIT) for future in [pool.submit(first_use) for _ in range(threads)]]


@pytest.mark.parametrize(("attribute", "builder"), [("embedder", "get_embedder"), ("jobs", "JobPool")])
def test_threads_racing_at_first_use_get_one_object_built_once(
    attribute: str, builder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = SlowBuild()
    monkeypatch.setattr(services_module, builder, build)
    services = new_services(tmp_path)
    got = race(lambda: getattr(services, attribute))
    assert build.calls == 1
    assert all(value is got[0] for value in got) and getattr(services, attribute) is got[0]


def test_one_services_building_its_embedder_holds_up_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock is the instance's: another app's (a test's) embedder is not held up by this one's load,
    nor is this instance's job pool."""
    release = threading.Event()
    slow = SlowBuild(release=release)
    monkeypatch.setattr(services_module, "get_embedder", slow)
    monkeypatch.setattr(services_module, "JobPool", SlowBuild(seconds=0))
    loading, other = new_services(tmp_path / "a"), new_services(tmp_path / "b")
    with ThreadPoolExecutor(2) as pool:
        blocked = pool.submit(lambda: loading.embedder)
        assert slow.started.wait(WAIT)
        try:
            assert pool.submit(lambda: loading.jobs).result(WAIT) is loading.jobs
            monkeypatch.setattr(services_module, "get_embedder", SlowBuild(seconds=0))
            try:
                assert pool.submit(lambda: other.embedder).result(WAIT) is other.embedder
            except TimeoutError:
                pytest.fail("another Services' embedder waited for this one's to load")
            assert not blocked.done()
        finally:
            release.set()
        assert blocked.result(WAIT) is loading.embedder


class ShutDownPool:
    """Stands in for the job pool: records whether it was shut down."""

    def __init__(self) -> None:
        self.shut_down = False

    def shutdown(self) -> None:
        self.shut_down = True


def test_stop_shuts_down_a_job_pool_that_was_being_built_when_shutdown_began(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request's first use of `jobs` may still be building the pool (starting its workers) when the
    server stops: `stop` waits for that build and shuts the pool down, rather than finding nothing built
    and leaving its workers running past the server."""
    release = threading.Event()
    slow = SlowBuild(release=release)
    pool_built = ShutDownPool()

    def build_pool(*args: Any, **kwargs: Any) -> ShutDownPool:
        slow()
        return pool_built

    monkeypatch.setattr(services_module, "JobPool", build_pool)
    services = new_services(tmp_path)
    with ThreadPoolExecutor(2) as pool:
        first_use = pool.submit(lambda: services.jobs)
        assert slow.started.wait(WAIT)
        stopping = pool.submit(services.stop)
        time.sleep(0.2)
        assert not stopping.done(), "stop returned before the pool under way was built"
        release.set()
        stopping.result(WAIT)
        assert first_use.result(WAIT) is pool_built
    assert pool_built.shut_down


def test_stop_builds_no_job_pool_that_was_never_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = SlowBuild(seconds=0)
    monkeypatch.setattr(services_module, "JobPool", built)
    new_services(tmp_path).stop()
    assert built.calls == 0
