"""The answer RepoLens gives without any LLM: the retrieved code itself, arranged to be read.

It lists the most relevant spans (path, lines, symbol) with the lines that best match the question,
and which of those symbols reference each other. Everything it says is taken from the index, so it
cannot invent code; it is labelled so nobody mistakes it for a model's explanation. Deterministic.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence

from rag.providers.base import ChatRequest, StreamEvent, TextDelta, Usage
from rag.tokens import count_tokens
from rag.types import SearchHit

LABEL = "Offline answer (no LLM configured)"
MAX_SPANS = 6
EXCERPT_LINES = 8
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STOPWORDS = frozenset(
    re.findall(
        r"\w+",
        "the a an and or of to in on for is are was be how what where which who why does do did this that "
        "with from by it its as at can i you we use used using when into there their about code file files "
        "function class method work works",
    )
)


def question_terms(question: str) -> set[str]:
    """Lower-cased identifiers and words worth matching, with snake/camel parts split out."""
    terms: set[str] = set()
    for word in _WORD.findall(question):
        parts = [word, *re.split(r"_|(?<=[a-z0-9])(?=[A-Z])", word)]
        terms.update(part.lower() for part in parts if len(part) > 2)
    return terms - _STOPWORDS


def _line_score(line: str, terms: set[str]) -> int:
    words = {word.lower() for word in _WORD.findall(line)}
    return sum(1 for term in terms if term in words or any(term in word for word in words))


def key_excerpt(hit: SearchHit, terms: set[str], max_lines: int = EXCERPT_LINES) -> list[tuple[int, str]]:
    """The span's first line (usually the signature) plus the window that matches the question best."""
    lines = hit.text.splitlines()
    if len(lines) <= max_lines:
        return [(hit.start_line + offset, line) for offset, line in enumerate(lines)]
    window = max_lines - 1
    best_start, best_score = 1, -1
    for start in range(1, len(lines) - window + 1):
        score = sum(_line_score(line, terms) for line in lines[start : start + window])
        if score > best_score:
            best_start, best_score = start, score
    chosen = [0, *range(best_start, best_start + window)]
    return [(hit.start_line + offset, lines[offset]) for offset in chosen]


def _leaf(symbol: str | None) -> str | None:
    if not symbol:
        return None
    leaf = re.split(r"[.:#/]", symbol)[-1]
    return leaf if _WORD.fullmatch(leaf) and len(leaf) > 2 else None


def connections(hits: Sequence[SearchHit]) -> list[tuple[SearchHit, SearchHit]]:
    """(a, b) pairs where span a mentions the symbol defined by span b."""
    pairs = []
    for target in hits:
        leaf = _leaf(target.symbol)
        if leaf is None:
            continue
        pattern = re.compile(rf"\b{re.escape(leaf)}\b")
        for source in hits:
            if source is target or source.symbol == target.symbol:
                continue
            body = source.text.splitlines()[1:] if source.symbol else source.text.splitlines()
            if pattern.search("\n".join(body)):
                pairs.append((source, target))
    return pairs


def _where(hit: SearchHit) -> str:
    return f"{hit.path}:{hit.start_line}-{hit.end_line}"


def _name(hit: SearchHit) -> str:
    return f"`{hit.symbol}`" if hit.symbol else f"`{hit.path}`"


def offline_answer(question: str, hits: Sequence[SearchHit]) -> str:
    """The full offline answer in Markdown, citing every span as `path:start-end`."""
    header = (
        f"**{LABEL}** — this lists the code RepoLens retrieved for your question, without a language "
        "model's explanation. Configure a provider (e.g. `OPENAI_API_KEY` or `GOOGLE_API_KEY`) "
        "for a written answer.\n"
    )
    if not hits:
        return header + "\nNo indexed code matched the question. Try naming a file, function or class.\n"
    shown = list(hits[:MAX_SPANS])
    terms = question_terms(question)
    parts = [header, f"\n### Most relevant code for: {question.strip()[:200]}\n"]
    for number, hit in enumerate(shown, 1):
        symbol = f" — {_name(hit)}" if hit.symbol else ""
        parts.append(f"\n{number}. `{_where(hit)}`{symbol} ({hit.language})\n")
        excerpt = key_excerpt(hit, terms)
        width = len(str(excerpt[-1][0]))
        body = []
        previous = None
        for line_number, line in excerpt:
            if previous is not None and line_number != previous + 1:
                body.append(" " * width + " | ...")
            body.append(f"{line_number:>{width}} | {line}")
            previous = line_number
        parts.append(f"```{hit.language}\n" + "\n".join(body) + "\n```\n")
    links = connections(shown)
    if links:
        parts.append("\n### How they connect\n")
        parts.extend(f"- {_name(a)} (`{_where(a)}`) uses {_name(b)} (`{_where(b)}`)\n" for a, b in links)
    files = sorted({hit.path for hit in shown})
    parts.append("\n### Files\n" + "".join(f"- `{path}`\n" for path in files))
    return "".join(parts)


class OfflineProvider:
    """A ChatProvider that answers from `ChatRequest.context` (the retrieved spans) instead of a model."""

    name = "offline"
    model = "grounded-excerpts"

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        question = request.question or next(
            (m.content for m in reversed(request.messages) if m.role == "user"), ""
        )
        text = offline_answer(question, request.context)
        for line in text.splitlines(keepends=True):
            yield TextDelta(line)
        yield Usage(prompt_tokens=0, completion_tokens=count_tokens(text))
