"""The chat bench's reading aids (`bench.loop_probe`, the side-by-side summaries): how samples become
figures. The figures themselves are timings, measured by `python -m bench chat`, never asserted."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest

from bench import chat_bench
from bench.loop_probe import LoopProbe, summary


def test_a_probe_sees_a_blocked_loop_and_a_collection() -> None:
    async def blocked() -> LoopProbe:
        probe = LoopProbe(interval_s=0.001)
        probe.start()
        await asyncio.sleep(0.02)
        sum(range(3_000_000))  # the loop is busy: the next timer fires late
        gc.collect()
        await asyncio.sleep(0.02)
        probe.stop()
        return probe

    probe = asyncio.run(blocked())
    samples = probe.dump()
    figures = summary(samples, float("-inf"), float("inf"))
    busy = max(samples["lags"], key=lambda sample: sample[2])  # CPU time, whatever the machine's load
    assert busy[2] >= 5 and busy[1] >= busy[2] - 1  # the loop's own thread ran, so the timer was late
    assert figures["loop_lag_ms"]["max"] >= round(busy[1], 1)
    assert any(generation == 2 and on_loop for _, _, generation, on_loop, _ in samples["collections"])
    assert figures["gc"]["2"]["count"] >= 1
    assert probe.tracked["start"] > 0 and probe.tracked["stop"] > 0


def test_stalls_split_into_the_loop_thread_other_threads_and_waiting_for_a_core() -> None:
    samples = {
        "interval_ms": 5.0,
        # (stamp, lag, loop thread CPU, process CPU), all ms but the stamp
        "lags": [
            (1.0, 1.0, 0.5, 0.5),
            (2.0, 45.0, 30.0, 30.0),
            (3.0, 25.0, 0.0, 20.0),
            (4.0, 95.0, 0.0, 0.0),
        ],
        "collections": [(1.5, 3.0, 0, True, 2.0), (3.5, 40.0, 2, False, 25.0), (9.0, 80.0, 2, True, 70.0)],
    }
    figures = summary(samples, 0.0, 5.0)
    stalls = figures["stalls_over_20ms"]
    assert stalls["count"] == 3 and stalls["total_ms"] == 165.0
    assert stalls["loop_thread_cpu_ms"] == 30.0  # a long callback
    assert stalls["other_threads_cpu_ms"] == 20.0  # the retrieval pool held the GIL
    assert stalls["waiting_for_a_core_ms"] == 20.0 + 10.0 + 100.0  # nobody here ran: the machine's load
    assert figures["gc"] == {
        "0": {"count": 1, "total_ms": 3.0, "max_ms": 3.0, "max_cpu_ms": 2.0, "off_loop_thread": 0},
        # the one at 9.0 is outside the window
        "2": {"count": 1, "total_ms": 40.0, "max_ms": 40.0, "max_cpu_ms": 25.0, "off_loop_thread": 1},
    }


def test_repeated_levels_are_summarised_by_their_medians() -> None:
    labels = ("this_tree", "baseline_tree")

    def level(added_p95: float, gen2_ms: float | None) -> dict[str, object]:
        probe = {
            "loop_lag_ms": {"p99": 5.0, "max": 9.0},
            "gc": {} if gen2_ms is None else {"2": {"max_ms": gen2_ms}},
        }
        return {"streams": 200, "errors": {}, "added_p95_ms": added_p95, "server_probe": probe}

    ours = [level(40.0, None), level(90.0, 20.0), level(50.0, None)]
    theirs = [level(100.0, 120.0), level(300.0, 110.0), level(80.0, None)]
    rows = chat_bench._side_by_side(ours, theirs, labels)
    assert rows[0]["added_p95_ms"] == {"this_tree": 40.0, "baseline_tree": 100.0, "ratio": 0.4}
    assert rows[0]["server_gc_gen2_max_ms"] == {"this_tree": 0.0, "baseline_tree": 120.0, "ratio": 0.0}
    assert "added_p50_ms" not in rows[0]  # not measured on either side
    (summary_200,) = chat_bench._over_repeats(rows, labels)
    added = summary_200["added_p95_ms"]
    assert summary_200["repeats"] == 3
    assert added["this_tree"] == [40.0, 90.0, 50.0] and added["this_tree_median"] == 50.0
    assert added["baseline_tree_median"] == 100.0 and added["ratio_of_medians"] == 0.5


def test_the_comparison_setting_names_a_source_tree_or_the_retrieval_pool(tmp_path: Path) -> None:
    assert chat_bench._baseline("") is None
    assert chat_bench._baseline("retrieval_pool") == chat_bench.Baseline(
        "retrieval_pool_side_by_side", ("pool", "default_executor"), without_pool=True
    )
    tree = chat_bench._baseline(f"tree:{chat_bench.ROOT}")
    assert tree is not None and tree.tree == chat_bench.ROOT and tree.name == "tree_side_by_side"
    with pytest.raises(SystemExit, match="not a RepoLens source tree"):
        chat_bench._baseline(f"tree:{tmp_path}")
    with pytest.raises(SystemExit, match="retrieval_pool or tree:<dir>"):
        chat_bench._baseline("yesterday")
