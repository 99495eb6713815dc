"""Complexity guards that hold on a loaded machine: no wall-clock bound, a growth ratio.

A test that wants "linear, not quadratic" times the same work on an input of size n and of size
k·n in one process and compares the two. It counts this thread's CPU time, not wall-clock time:
on a loaded machine a long run is preempted more often than a short one, which would pass for
superlinear growth. Runs are interleaved, best of several (other processes only ever add time).
Linear work grows about k times and quadratic work k² times; the bound sits between them, at
k^1.5. Speed itself is measured in `make bench`, never asserted in a test.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def growth(work: Callable[[int], object], small: int, factor: int = 8, repeats: int = 5) -> float:
    """How many times longer `work(factor * small)` takes than `work(small)`, best of `repeats` each."""
    best = {small: float("inf"), small * factor: float("inf")}
    for _ in range(repeats):
        for size in best:
            started = time.thread_time()
            work(size)
            best[size] = min(best[size], time.thread_time() - started)
    return best[small * factor] / max(best[small], 1e-9)


def assert_linear(work: Callable[[int], object], small: int, factor: int = 8, repeats: int = 5) -> None:
    """Fail if `work` grows faster than linearly between sizes `small` and `factor * small`."""
    ratio = growth(work, small, factor, repeats)
    assert ratio < factor**1.5, f"{factor}x the input took {ratio:.0f}x the time: not linear"
