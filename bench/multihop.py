"""The multi-hop research benchmark: questions whose answer spans 2-4 files, on real repositories.

`bench/research_questions.json` holds, per corpus of `bench/corpus.py`, hand-written questions with
the ordered gold chain of files an answer must draw on (read from the code at the pinned commit).
About a third are `"frozen": true`: never looked at while tuning, reported separately.

Methods, each judged on the files it finally cites (its `sources`):
- `bm25_top10` / `hybrid_top10`: one-shot retrieval, the files of the top 10 hits.
- `offline_research`: deep research without a model (`provider="offline"`).
- `llm_loop_scripted`: the LLM research loop against the fake OpenAI-style provider on loopback,
  driven by a policy that calls the tools the prompt suggests (search, then the code-graph tools on
  the definitions the results name) and cites what it was shown (`scripted_policy`).

Metrics: sources recall (gold files cited / gold files), whole-chain rate (every gold file cited),
source precision (cited files that are gold / cited files), turns, tool calls and seconds.

Each corpus is ingested once with the default embedder into `build/bench/research-data/<corpus>`
(reused by later runs; an unchanged corpus is only re-scanned), niced by the caller.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import time
from pathlib import Path
from typing import Any

from bench import corpus
from ingest import ingest
from rag.embedders import get_embedder
from rag.research import ResearchOptions, run_research
from rag.retrieval import Retriever
from rag.settings import Settings
from rag.store import Store

QUESTIONS_FILE = Path(__file__).with_name("research_questions.json")
DATA_DIR = Path(
    os.environ.get("REPOLENS_BENCH_RESEARCH_DATA") or corpus.ROOT / "build" / "bench" / "research-data"
)
TOP_K = 10
METHODS = ("bm25_top10", "hybrid_top10", "offline_research", "llm_loop_scripted")


class Services:
    """What `run_research` needs (an `api.services.Services` look-alike)."""

    def __init__(self, store: Store, embedder: Any, settings: Settings) -> None:
        self.store, self.embedder, self.settings = store, embedder, settings


def load_questions() -> dict[str, list[dict[str, Any]]]:
    data = json.loads(QUESTIONS_FILE.read_text())
    return {name: items for name, items in data.items() if not name.startswith("_")}


def score(sources: list[str], chain: list[str]) -> dict[str, float]:
    cited = list(dict.fromkeys(sources))
    found = [path for path in chain if path in cited]
    return {
        "recall": len(found) / len(chain),
        "whole_chain": float(len(found) == len(chain)),
        "precision": (len(set(found)) / len(cited)) if cited else 0.0,
    }


def _services(name: str, env: dict[str, str] | None = None) -> tuple[Services, str, dict[str, float]]:
    home = DATA_DIR / name
    settings = Settings(home=home, env={"REPOLENS_HOME": str(home), **(env or {})})
    store = Store(home)
    embedder = get_embedder(settings)
    report = ingest(str(corpus.working_copy(name)), store=store, embedder=embedder)
    return Services(store, embedder, settings), report.repo_id, report.timings


async def _research(services: Services, repo_id: str, question: str, provider: str) -> dict[str, Any]:
    sources: list[str] = []
    done: dict[str, Any] = {}
    async for event in run_research(
        services, repo_id=repo_id, question=question, provider=provider, options=ResearchOptions()
    ):
        if event["type"] == "sources":
            sources = [item["path"] for item in event["sources"]]
        elif event["type"] == "done":
            done = event.get("research", {})
        elif event["type"] == "error":
            raise RuntimeError(event["message"])
    return {"sources": sources, "turns": done.get("turns", 0), "tool_calls": done.get("tool_calls", 0)}


def _one_shot(services: Services, repo_id: str, question: str, mode: str) -> dict[str, Any]:
    index = services.store.open(repo_id)
    hits = Retriever(index, services.embedder).search(question, TOP_K, mode=mode)  # type: ignore[arg-type]
    return {"sources": [hit.path for hit in hits], "turns": 0, "tool_calls": 1}


_DEFINITION_LINE = re.compile(r"`([\w.]+)` \((?:function|method)\) at ([^\s:]+):(\d+)-(\d+)")
_SPAN = re.compile(r"^## ([^\s:]+):(\d+)-(\d+)(?: \(([^)]*)\))?", re.MULTILINE)


def scripted_policy(request: Any) -> Any:
    """The fake model's next reply, from what the conversation so far showed it.

    Follows the investigate prompt's advice: first `search` for the question; then `callees` and
    `callers` of the definitions the results named (the code-graph tools), at most two rounds; then
    finish, and in the conclusion cite the spans of the definitions it followed.
    """
    from tests.support.fake_provider import FakeResponse

    body = request.body
    messages = body.get("messages", [])
    text = "\n".join(str(m.get("content") or "") for m in messages)
    question = next((str(m.get("content")) for m in messages if m.get("role") == "user"), "")
    tool_names = {t.get("function", {}).get("name") for t in body.get("tools") or []}
    if not tool_names:
        if "Write a short research plan" in text or "research plan" in str(messages[0].get("content", "")):
            return FakeResponse(
                text="1. Find the entry point. 2. Follow its callees to the code doing the work."
            )
        cited = _DEFINITION_LINE.findall(text)
        refs = list(dict.fromkeys(f"{path}:{start}-{end}" for _, path, start, end in cited))[:4]
        if not refs:
            refs = [f"{p}:{a}-{b}" for p, a, b, _ in _SPAN.findall(text)][:3]
        return FakeResponse(text="The path through the code: " + ", ".join(refs) + ".")
    rounds = text.count("## callees of")
    if (
        "## " not in text
        or rounds == 0
        and "spans:" not in text
        and "(function)" not in text
        and not _SPAN.search(text)
    ):
        return FakeResponse(
            text="Searching first.",
            tool_calls=[{"name": "search", "arguments": {"query": question[:200], "k": 6}}],
        )
    if rounds >= 2:
        return FakeResponse(text="The evidence is enough.")
    names = [symbol for _, _, _, symbol in _SPAN.findall(text) if symbol and "," not in symbol][:2]
    names += [name for name, *_ in _DEFINITION_LINE.findall(text)][-2:]
    calls = [
        {"name": "callees", "arguments": {"name": name, "max_results": 8}} for name in dict.fromkeys(names)
    ]
    if not calls:
        return FakeResponse(text="The evidence is enough.")
    return FakeResponse(text="Following the calls.", tool_calls=calls[:3])


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    if not rows:
        return {}
    return {
        "questions": len(rows),
        "recall": round(statistics.mean(r["recall"] for r in rows), 3),
        "whole_chain": round(statistics.mean(r["whole_chain"] for r in rows), 3),
        "precision": round(statistics.mean(r["precision"] for r in rows), 3),
        "turns": round(statistics.mean(r["turns"] for r in rows), 2),
        "tool_calls": round(statistics.mean(r["tool_calls"] for r in rows), 2),
        "seconds": round(statistics.mean(r["seconds"] for r in rows), 3),
    }


def run(methods: tuple[str, ...] = METHODS, corpora: list[str] | None = None) -> dict[str, Any]:
    """Per method: the summary over the tuning and the frozen questions, and per corpus."""
    questions = load_questions()
    fake = None
    if "llm_loop_scripted" in methods:
        from tests.support.fake_provider import FakeProvider

        fake = FakeProvider()
        fake.start()
        fake.policy = scripted_policy
    rows: dict[str, list[dict[str, Any]]] = {method: [] for method in methods}
    ingest_timings: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    try:
        for name in corpora or list(questions):
            try:
                services, repo_id, timings = _services(name, fake.openai_env() if fake else None)
            except corpus.CorpusUnavailable as error:
                skipped[name] = str(error)
                continue
            ingest_timings[name] = {key: round(value, 2) for key, value in timings.items()}
            for item in questions[name]:
                for method in methods:
                    started = time.perf_counter()
                    if method == "bm25_top10":
                        result = _one_shot(services, repo_id, item["question"], "lexical")
                    elif method == "hybrid_top10":
                        result = _one_shot(services, repo_id, item["question"], "hybrid")
                    else:
                        provider = "offline" if method == "offline_research" else "openai"
                        result = asyncio.run(_research(services, repo_id, item["question"], provider))
                    rows[method].append(
                        {
                            "corpus": name,
                            "frozen": bool(item.get("frozen")),
                            "question": item["question"],
                            "sources": list(dict.fromkeys(result["sources"])),
                            "seconds": time.perf_counter() - started,
                            "turns": result["turns"],
                            "tool_calls": result["tool_calls"],
                            **score(result["sources"], item["chain"]),
                        }
                    )
    finally:
        if fake is not None:
            fake.stop()
    return {
        "methods": {
            method: {
                "tuning": _summary([r for r in method_rows if not r["frozen"]]),
                "frozen": _summary([r for r in method_rows if r["frozen"]]),
                "per_corpus": {
                    name: _summary([r for r in method_rows if r["corpus"] == name and not r["frozen"]])
                    for name in dict.fromkeys(r["corpus"] for r in method_rows)
                },
            }
            for method, method_rows in rows.items()
        },
        "ingest_timings": ingest_timings,
        "skipped": skipped,
        "rows": rows,
    }


if __name__ == "__main__":
    import sys

    selected = tuple(arg for arg in sys.argv[1:] if arg in METHODS) or METHODS
    names = [arg for arg in sys.argv[1:] if arg not in METHODS and not arg.startswith("-")] or None
    result = run(selected, names)
    if "--rows" not in sys.argv:
        result.pop("rows")
    print(json.dumps(result, indent=2))
