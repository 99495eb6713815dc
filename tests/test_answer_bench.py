"""The offline-answer bench's question parts (bench/answer_bench.py): the frozen part lives in its own
file, each part is selected alone by `REPOLENS_BENCH_ANSWER_PART`, and no run returns the frozen
part's rows (whoever tunes reads the rows)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import answer_bench, corpus, multihop


def test_the_frozen_file_holds_two_questions_per_corpus_with_their_qualnames() -> None:
    data = json.loads(answer_bench.FROZEN_FILE.read_text())
    questions = {name: items for name, items in data.items() if not name.startswith("_")}
    assert set(questions) == set(corpus.CORPORA)
    for items in questions.values():
        assert len(items) == 2
        for item in items:
            assert set(item) == {"question", "subject"}
            assert item["question"].strip() and item["subject"]
            assert all(isinstance(name, str) and name for name in item["subject"])


def test_each_part_is_selected_alone_and_the_old_frozen_questions_are_seen() -> None:
    everything = answer_bench.load_questions()
    by_part: dict[str, set[str]] = {part: set() for part in answer_bench.PARTS}
    for items in everything.values():
        for item in items:
            by_part[item["part"]].add(item["question"])
    assert all(by_part.values())
    for part in answer_bench.PARTS:
        alone = answer_bench.load_questions(part)
        assert {i["question"] for items in alone.values() for i in items} == by_part[part]
    tuning_file = json.loads(answer_bench.QUESTIONS_FILE.read_text())
    corpora = [items for name, items in tuning_file.items() if not name.startswith("_")]
    old_frozen = {item["question"] for items in corpora for item in items if item.get("frozen")}
    assert by_part["seen"] == old_frozen
    others = by_part["tuning"] | by_part["dev"] | by_part["seen"]
    assert not {q.casefold() for q in by_part["frozen"]} & {q.casefold() for q in others}
    with pytest.raises(ValueError, match="REPOLENS_BENCH_ANSWER_PART"):
        answer_bench.load_questions("held-out")


def test_a_run_reports_the_frozen_part_but_returns_none_of_its_rows(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(multihop, "_services", lambda name: (None, f"local/{name}", {}))
    monkeypatch.setattr(corpus, "working_copy", lambda name: tmp_path)

    def ask(services: Any, repo_id: str, question: str, mode: str) -> tuple[str, list[dict[str, Any]]]:
        return "**In short:** `Nothing.here` at `src/app.py:1-2`.\n", []

    monkeypatch.setattr(answer_bench, "ask", ask)
    monkeypatch.setenv("REPOLENS_BENCH_ANSWER_CORPORA", "starlette,axum")
    for part in ("frozen", ""):
        monkeypatch.setenv("REPOLENS_BENCH_ANSWER_PART", part)
        result = answer_bench.run()
        assert result["modes"]["chat"]["frozen"]["questions"] == 4
        assert result["modes"]["deep"]["frozen"]["subject"] == 0.0
        assert {row["part"] for row in result["rows"]} == ({"tuning", "dev", "seen"} if part == "" else set())
