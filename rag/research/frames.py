"""The typed event frames research yields (docs/ARCHITECTURE.md, "Typed events"), and run totals."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rag.citations import Span, check_citations, extract_citations, link, source_url
from rag.events import Event, citations_event, done_event, research_event, sources_event
from rag.research.tools import Evidence, RepoTools


@dataclass
class Stats:
    """Totals of one run, reported in the `done` frame."""

    max_iterations: int
    turns: int = 0
    tool_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    started: float = field(default_factory=time.monotonic)
    stopped_because: str = ""

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def research(self) -> dict[str, Any]:
        return {
            "turns": self.turns,
            "tool_calls": self.tool_calls,
            "tokens": self.tokens,
            "seconds": round(self.seconds, 3),
            "stopped_because": self.stopped_because,
            "max_iterations": self.max_iterations,
        }


def done_frame(stats: Stats) -> Event:
    return done_event(
        usage=(stats.prompt_tokens, stats.completion_tokens),
        timings={"total_ms": round(stats.seconds * 1000, 1)},
        research=stats.research(),
    )


def research_frame(stats: Stats, phase: str, kind: str, *, summary: str = "", **extra: Any) -> Event:
    """A progress frame; the plan is iteration 0, investigation turns count from 1."""
    return research_event(
        iteration=0 if phase == "plan" else stats.turns,
        max_iterations=stats.max_iterations,
        phase=phase,
        event=kind,
        summary=summary,
        **{key: value for key, value in extra.items() if value is not None},
    )


def sources_frame(tools: RepoTools, spans: Sequence[Evidence]) -> Event:
    """The union of evidence as `sources`, in order of discovery (scores only reflect that order)."""
    record = tools.index.record
    sources = []
    for rank, item in enumerate(spans):
        sources.append(
            {
                "path": item.path,
                "start_line": item.start_line,
                "end_line": item.end_line,
                "symbol": item.symbol or tools.enclosing(item.path, item.start_line).symbol,
                "language": item.language or tools.language(item.path),
                "score": round(1.0 / (1 + rank), 6),
                "url": source_url(record, item.path, item.start_line, item.end_line),
            }
        )
    return sources_event(sources)


def citations_frame(tools: RepoTools, spans: Sequence[Evidence], answer: str) -> Event:
    """The answer's `path:start-end` citations, each flagged whether research actually saw those lines."""
    seen = [Span(item.path, item.start_line, item.end_line) for item in spans]
    checked = link(check_citations(extract_citations(answer), seen), tools.index.record)
    return citations_event([citation.to_json() for citation in checked])
