"""The offline answer's quality: does its "In short" line name the code that implements what was asked,
does the call chain it shows stay out of tests, and does every line it cites validate?

Questions come per corpus of `bench/corpus.py`, each with the qualnames of the implementing code (read
from the code at the pinned commit), in four parts reported apart:

- `tuning` (`bench/answer_questions.json`): the questions the offline answer is tuned on;
- `dev` (same file, `"dev": true`): added later to check that a rule generalises beyond them;
- `seen` (same file, `"frozen": true`): the first frozen set, written before any tuning; two of its
  questions were seen in a diff during tuning, so it is kept for continuity only, no longer as frozen;
- `frozen` (`bench/answer_questions_frozen.json`): a fresh set written by an engineer who did not tune
  and did not read the other file's questions. It lives in its own file so that diffs of the tuning
  file never show it: do not open it, or its rows, while tuning.

Each question is asked twice without a model, as a user would: the chat answer (`AnswerService`,
provider `offline`) and offline deep research (`run_research`). Per mode and part:

- `subject`: share of answers whose "In short" line names one of the expected qualnames;
- `subject_in_tests`: answers whose "In short" subject is test code;
- `chain_through_tests`: answers whose "In short" or "reached from" line cites test code (a test
  file by `rag.roles`, or a Rust `#[cfg(test)]` module of a source file);
- `unverified_citations`: citations the answer's own `citations` frame flags `in_context: false`
  (the page shows them with a warning sign), and `answers_with_unverified`.

Indexes are shared with the multi-hop bench (`bench/multihop.py`: `build/bench/research-data`).
`REPOLENS_BENCH_ANSWER_CORPORA=starlette,requests` limits the corpora, `REPOLENS_BENCH_ANSWER_PART`
(`tuning`, `frozen`, `dev`, `seen`; default all) the questions; `--rows` (module run) prints each
answer's subject; `run()` never returns the frozen part's rows."""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import time
from pathlib import Path
from typing import Any

from bench import corpus, multihop
from rag.answer import AnswerRequest, AnswerService
from rag.research import ResearchOptions, run_research
from rag.roles import file_role

QUESTIONS_FILE = Path(__file__).with_name("answer_questions.json")
FROZEN_FILE = Path(__file__).with_name("answer_questions_frozen.json")
MODES = ("chat", "deep")
PARTS = ("tuning", "frozen", "dev", "seen")
_SUMMARY = re.compile(r"^\*\*In short:\*\*[^`]*`([^`]+)`", re.MULTILINE)
_CHAIN_LINES = re.compile(r"^(?:\*\*In short:\*\*|- It is reached from ).*$", re.MULTILINE)
_REF = re.compile(r"`([^`\s]+):(\d+)-(\d+)`")
# An inline test module (`#[cfg(test)] mod tests { ... }`), not a `#[cfg(test)] mod tests;` declaration.
_CFG_TEST = re.compile(r"^\s*#\[cfg\(test\)\]\s*\n\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{", re.MULTILINE)


def _corpora(path: Path) -> dict[str, list[dict[str, Any]]]:
    data = json.loads(path.read_text())
    return {name: items for name, items in data.items() if not name.startswith("_")}


def part_of(item: dict[str, Any]) -> str:
    """The part of a question of `answer_questions.json`: its old frozen questions are now `seen`."""
    return "seen" if item.get("frozen") else "dev" if item.get("dev") else "tuning"


def load_questions(part: str = "") -> dict[str, list[dict[str, Any]]]:
    """Per corpus, the questions of `part` (all when empty), each with its `part` key set; the
    frozen file is read only when its part is wanted."""
    if part and part not in PARTS:
        raise ValueError(f"REPOLENS_BENCH_ANSWER_PART must be one of {', '.join(PARTS)}, not {part!r}")
    questions: dict[str, list[dict[str, Any]]] = {}
    if part != "frozen":
        for name, items in _corpora(QUESTIONS_FILE).items():
            questions[name] = [{**i, "part": part_of(i)} for i in items if part in ("", part_of(i))]
    if part in ("", "frozen"):
        for name, items in _corpora(FROZEN_FILE).items():
            questions.setdefault(name, []).extend({**item, "part": "frozen"} for item in items)
    return questions


def summary_subject(answer: str) -> str | None:
    """The qualname the "In short" line names (`Route.matches()` -> `Route.matches`)."""
    match = _SUMMARY.search(answer)
    return match.group(1).removesuffix("()") if match else None


def in_tests(root: Path, path: str, line: int) -> bool:
    """Test code: a test or example file, or lines after a Rust inline `#[cfg(test)]` module (they end
    source files) in a source file."""
    if file_role(path) in ("test", "example"):
        return True
    if not path.endswith(".rs"):
        return False
    try:
        text = (root / path).read_text(errors="replace")
    except OSError:
        return False
    marker = _CFG_TEST.search(text)
    return marker is not None and text.count("\n", 0, marker.start()) + 1 < line


def judge(answer: str, citations: list[dict[str, Any]], expected: list[str], root: Path) -> dict[str, Any]:
    subject = summary_subject(answer)
    summary = _SUMMARY.search(answer)
    subject_ref = _REF.search(answer, summary.end()) if summary else None
    chain_refs = [ref for line in _CHAIN_LINES.findall(answer) for ref in _REF.findall(line)]
    unverified = [f"{c['path']}:{c['start_line']}-{c['end_line']}" for c in citations if not c["in_context"]]
    return {
        "subject": subject,
        "subject_ok": subject in expected,
        "subject_in_tests": bool(
            subject_ref and in_tests(root, subject_ref.group(1), int(subject_ref.group(2)))
        ),
        "chain_through_tests": any(in_tests(root, path, int(start)) for path, start, _ in chain_refs),
        "unverified": unverified,
    }


async def _collect(events: Any) -> tuple[str, list[dict[str, Any]]]:
    text: list[str] = []
    citations: list[dict[str, Any]] = []
    async for event in events:
        if event["type"] == "token":
            text.append(event["text"])
        elif event["type"] == "citations":
            citations = event["citations"]
        elif event["type"] == "error":
            raise RuntimeError(event["message"])
    return "".join(text), citations


def ask(services: Any, repo_id: str, question: str, mode: str) -> tuple[str, list[dict[str, Any]]]:
    if mode == "chat":
        service = AnswerService(services.store, services.embedder, services.settings)
        events = service.answer(AnswerRequest(repo_id, question, provider="offline"))
    else:
        events = run_research(
            services, repo_id=repo_id, question=question, provider="offline", options=ResearchOptions()
        )
    return asyncio.run(_collect(events))


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    if not rows:
        return {}
    return {
        "questions": len(rows),
        "subject": round(statistics.mean(r["subject_ok"] for r in rows), 3),
        "subject_in_tests": sum(r["subject_in_tests"] for r in rows),
        "chain_through_tests": sum(r["chain_through_tests"] for r in rows),
        "unverified_citations": sum(len(r["unverified"]) for r in rows),
        "answers_with_unverified": sum(bool(r["unverified"]) for r in rows),
        "seconds": round(statistics.mean(r["seconds"] for r in rows), 3),
    }


def run() -> dict[str, Any]:
    """Per mode: each part's figures, and per corpus (tuning)."""
    questions = load_questions(os.environ.get("REPOLENS_BENCH_ANSWER_PART", ""))
    wanted = os.environ.get("REPOLENS_BENCH_ANSWER_CORPORA")
    names = [name.strip() for name in wanted.split(",")] if wanted else list(questions)
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for name in names:
        try:
            services, repo_id, _ = multihop._services(name)
        except corpus.CorpusUnavailable as error:
            skipped[name] = str(error)
            continue
        root = corpus.working_copy(name)
        for item in questions.get(name, []):
            kind = item["part"]
            for mode in MODES:
                started = time.perf_counter()
                answer, citations = ask(services, repo_id, item["question"], mode)
                rows.append(
                    {
                        "corpus": name,
                        "mode": mode,
                        "part": kind,
                        "question": item["question"],
                        "seconds": time.perf_counter() - started,
                        **judge(answer, citations, item["subject"], root),
                    }
                )
    tuning = [r for r in rows if r["part"] == "tuning"]
    return {
        "modes": {
            mode: {
                **{
                    kind: _summary([r for r in rows if r["mode"] == mode and r["part"] == kind])
                    for kind in PARTS
                },
                "per_corpus": {
                    name: _summary([r for r in tuning if r["mode"] == mode and r["corpus"] == name])
                    for name in dict.fromkeys(r["corpus"] for r in rows)
                },
            }
            for mode in MODES
        },
        "skipped": skipped,
        # Each answer's subject, but the frozen part's: whoever tunes reads these rows.
        "rows": [row for row in rows if row["part"] != "frozen"],
    }


if __name__ == "__main__":
    import sys

    result = run()
    if "--rows" not in sys.argv:
        result.pop("rows")
    print(json.dumps(result, indent=2))
