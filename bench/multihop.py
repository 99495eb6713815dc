"""The multi-hop research benchmark: questions whose answer spans 2-4 files, on real repositories.

`bench/research_questions.json` holds, per corpus of `bench/corpus.py`, hand-written questions with
the ordered gold chain of files an answer must draw on (read from the code at the pinned commit).
About a third are `"frozen": true`: never looked at while tuning, reported separately.

Methods, each judged on the files it finally cites (its `sources`):
- `bm25_top10` / `hybrid_top10`: one-shot retrieval, the files of the top 10 hits.
- `offline_research`: deep research without a model (`provider="offline"`).
- `llm_loop_scripted`: the LLM research loop against the fake OpenAI-style provider on loopback,
  driven by a scripted model that calls the tools the prompt suggests (search, then the code-graph
  tools on the definitions the results name) and cites what it was shown (`ScriptedModel`).

Metrics: sources recall (gold files cited / gold files), whole-chain rate (every gold file cited),
source precision (cited files that are gold / cited files), turns, tool calls and seconds.

Each corpus is ingested once with the default embedder into `build/bench/research-data/<corpus>`
(reused by later runs: each run is an update, so an unchanged corpus is only re-scanned, and is
re-chunked after a `CHUNKER_VERSION` change), niced by the caller.
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

# Measured with the researcher before the code graph (commit f48cf1d: identifier walk, every span
# examined cited) on the same indexes, side by side with `hybrid_top10` / `bm25_top10` of that run.
BEFORE = {
    "offline_research": {
        "tuning": {
            "recall": 0.842,
            "whole_chain": 0.65,
            "precision": 0.216,
            "turns": 2.8,
            "tool_calls": 93.95,
        },
        "frozen": {
            "recall": 0.958,
            "whole_chain": 0.917,
            "precision": 0.254,
            "turns": 2.67,
            "tool_calls": 100.92,
        },
    },
}
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
    settings = Settings.from_env({"REPOLENS_HOME": str(home), **(env or {})}, dotenv=home / "no.env")
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


# What the tools print: `## path:a-b (symbol)` spans (search, definition) and
# "`Qual.name` (kind) at path:a-b" definitions (callers, callees, subclasses).
_SPAN = re.compile(r"^## ([^\s:]+):(\d+)-(\d+)(?: \(([^)]*)\))?", re.MULTILINE)
_DEFINITION_LINE = re.compile(r"`([^`]+)` \((?:function|method|class|code)\) at ([^\s:]+):(\d+)-(\d+)")
_NOT_CODE = re.compile(r"\.(md|rst|txt)$|(^|/)(tests?|docs?|examples?)/|_test\.go$|(^|/)test_")
_LEAD = re.compile(r"Code graph chain for the question.*?\n(.*?)\nCheck a step with", re.DOTALL)
MAX_CITED = 5


def _words(text: str) -> set[str]:
    return {w.lower() for w in re.split(r"[^A-Za-z0-9]+|(?<=[a-z])(?=[A-Z])", text) if len(w) > 2}


def _relevant(question: str, found: list[tuple[str, str, str, str]]) -> list[tuple[str, str, str, str]]:
    """(symbol, path, start, end) found in tool output, code only, most question words first."""
    wanted = _words(question)
    code = [item for item in dict.fromkeys(found) if item[0] and not _NOT_CODE.search(item[1])]
    return sorted(code, key=lambda item: -len(wanted & _words(f"{item[0]} {item[1]}")))


class ScriptedModel:
    """The scripted model of `llm_loop_scripted`: its next reply, chosen from what the tools showed.

    It follows the prompts' advice: the plan prompt carries the `trace` tool's chain for the question
    (the loop runs it first); turn 1 `search`es for the question; turn 2 asks the code graph for the
    `callees` and `callers` of the two ends of that chain (else of the two code spans that share most
    words with the question); turn 3 follows the `callees` of the most relevant definition found;
    then it stops. Its conclusion cites the chain it was offered with what it uses and the code
    beside it, then the definitions that share most words with the question (five in all unless
    the chain alone is longer), as a model answering from the evidence would. One run at a time
    (state is per run).
    """

    def __init__(self) -> None:
        self.found: list[tuple[str, str, str, str]] = []
        self.turn = 0
        self.followed: set[str] = set()
        self.question = ""
        self.chain: list[str] = []
        self.lead: list[tuple[str, str, str, str]] = []

    def __call__(self, request: Any) -> Any:
        from tests.support.fake_provider import FakeResponse

        body = request.body
        messages = body.get("messages", [])
        system = str(messages[0].get("content", "")) if messages else ""
        text = "\n".join(str(m.get("content") or "") for m in messages[1:])
        if not body.get("tools"):
            if "research plan" in system.lower():
                self.__init__()  # type: ignore[misc]
                asked = next((str(m.get("content")) for m in messages if m.get("role") == "user"), "")
                self.question = asked.split("Question: ", 1)[-1].split("\n", 1)[0]
                lead = _LEAD.search(asked)
                self.lead = list(dict.fromkeys(_DEFINITION_LINE.findall(lead.group(1)))) if lead else []
                self.chain = [sym for sym, *_ in self.lead]
                return FakeResponse(text="1. Find the entry point. 2. Follow its callees to the work.")
            others = [item for item in _relevant(self.question, self.found) if item not in self.lead]
            cited = [*self.lead, *others][: max(MAX_CITED, len(self.lead))]
            refs = ", ".join(f"`{sym}` ({path}:{a}-{b})" for sym, path, a, b in cited)
            return FakeResponse(text=f"The path through the code: {refs}.")
        self.found += [(sym or "", path, a, b) for path, a, b, sym in _SPAN.findall(text)]
        self.found += list(_DEFINITION_LINE.findall(text))
        self.turn += 1
        if self.turn == 1:
            call = {"name": "search", "arguments": {"query": self.question[:200], "k": 8}}
            return FakeResponse(text="Searching first.", tool_calls=[call])
        if self.turn == 2:
            ranked = [sym.split(", ")[0] for sym, *_ in _relevant(self.question, self.found)]
            names = list(dict.fromkeys([*self.chain[-1:], *self.chain[:1], *ranked]))[:2]
            self.followed.update(names)
            calls = [
                {"name": tool, "arguments": {"name": name, "max_results": 8}}
                for name in names
                for tool in ("callees", "callers")
            ]
            if calls:
                return FakeResponse(text="Following the code graph.", tool_calls=calls)
        if self.turn == 3:
            fresh = [sym for sym, *_ in _relevant(self.question, self.found) if sym not in self.followed][:1]
            if fresh:
                self.followed.update(fresh)
                call = {"name": "callees", "arguments": {"name": fresh[0], "max_results": 8}}
                return FakeResponse(text="One step further.", tool_calls=[call])
        return FakeResponse(text="The evidence is enough.")


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
        fake.policy = ScriptedModel()
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
