"""The describing-to-code benchmark's span figures (bench/retrieval_bench.py): what counts as a span
hit, and how wide the span hits are."""

from __future__ import annotations

import pytest

from bench import questions
from bench.retrieval_bench import LabelledQuery, first_relevant, span_precision, span_width
from rag.types import SearchHit

QUERY = LabelledQuery("pause the stream", "src/stream.js", 100, 109)


def hit(path: str, start: int, end: int) -> SearchHit:
    return SearchHit(path, "javascript", start, end, None, "", 0.5)


def test_a_span_hit_covers_half_the_function_and_its_width_is_measured() -> None:
    hits = [
        hit("src/other.js", 100, 109),
        hit("src/stream.js", 1, 102),  # the right file, 3 of the function's 10 lines: not a span hit
        hit("src/stream.js", 90, 129),  # covers it: 40 lines for a 10-line function
    ]
    assert first_relevant(hits, QUERY, span=False) == 2
    assert first_relevant(hits, QUERY, span=True) == 3
    assert span_width(hits, QUERY) == (40, 4.0)
    assert span_width(hits[:2], QUERY) is None


def test_span_precision_reports_median_and_p90_of_lines_and_ratios() -> None:
    widths = [(10 * n, float(n)) for n in range(1, 11)]  # 10..100 lines, 1x..10x
    assert span_precision(widths) == {
        "lines_p50": 50.0,
        "lines_p90": 90.0,
        "ratio_p50": 5.0,
        "ratio_p90": 9.0,
    }
    assert span_precision([]) == {}


def test_a_split_selects_one_part_and_a_wrong_one_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tuning run never evaluates the frozen questions or the held-out queries."""
    assert questions.selected_parts() == ("tuning", "dev", "frozen")
    monkeypatch.setenv("REPOLENS_BENCH_SPLIT", "tuning")
    assert questions.selected_parts() == ("tuning",)
    monkeypatch.setenv("REPOLENS_BENCH_SPLIT", "held-out")
    with pytest.raises(ValueError, match="REPOLENS_BENCH_SPLIT"):
        questions.selected_parts()
