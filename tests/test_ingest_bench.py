"""The ingest bench's side-by-side setting and summary (the runs themselves are `python -m bench ingest`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import ingest_bench
from bench.compare import over_repeats


@pytest.mark.parametrize("setting", ["yesterday", "tree:{tmp}"])
def test_the_comparison_setting_names_a_source_tree(
    setting: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPOLENS_BENCH_INGEST_COMPARE", setting.format(tmp=tmp_path))
    with pytest.raises(SystemExit, match="use tree:<dir>|not a RepoLens source tree"):
        ingest_bench.run()


def test_rounds_are_summarised_by_medians_and_their_ratio() -> None:
    figure = over_repeats({"this_tree": [9.0, 8.514, 12.0], "baseline_tree": [11.0, 10.0, 13.0]}, 2)
    assert figure["this_tree"] == [9.0, 8.514, 12.0]
    assert figure["this_tree_median"] == 9.0 and figure["baseline_tree_median"] == 11.0
    assert figure["ratio_of_medians"] == 0.82
    assert over_repeats({"a": [], "b": [1.0]})["ratio_of_medians"] is None
