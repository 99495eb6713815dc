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


_DEFINITION = re.compile(
    r"^\s*(?:export\s+)?(?:pub\s+)?(?:async\s+)?"
    r"(?:def|class|func|function|fn|interface|struct|type|enum|trait)\s+(?:\([^)]*\)\s*)?([A-Za-z_]\w*)"
)
_IMPORT = re.compile(r"^\s*(?:import|from|using|require|#include|package)\b")
_PROSE = frozenset({"markdown", "rst", "text", "json", "yaml", "toml"})
MAX_CONNECTIONS = 12


def defined_names(hit: SearchHit) -> set[str]:
    """Names the span defines: its symbol's last part and every def/class/func line inside it."""
    names = {match.group(1) for match in map(_DEFINITION.match, hit.text.splitlines()) if match}
    if hit.symbol:
        leaf = re.split(r"[.:#/]", hit.symbol)[-1]
        if _WORD.fullmatch(leaf) and hit.language not in _PROSE:
            names.add(leaf)
    return {name for name in names if len(name) > 2 and not name.startswith("__")}


def _line_score(line: str, terms: set[str]) -> int:
    if _IMPORT.match(line):
        return 0
    words = {word.lower() for word in _WORD.findall(line)}
    return sum(1 for term in terms if term in words or any(term in word for word in words))


def key_excerpt(hit: SearchHit, terms: set[str], max_lines: int = EXCERPT_LINES) -> list[tuple[int, str]]:
    """The span's first line (usually the signature) plus the window that matches `terms` best."""
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


def connections(hits: Sequence[SearchHit]) -> list[tuple[SearchHit, SearchHit, list[str]]]:
    """(a, b, names): span a uses (or, for docs, mentions) the names that span b defines."""
    defined = [defined_names(hit) for hit in hits]
    links = []
    for a_index, source in enumerate(hits):
        body = "\n".join(line for line in source.text.splitlines() if not _IMPORT.match(line))
        used_words = set(_WORD.findall(body))
        for b_index, target in enumerate(hits):
            if a_index == b_index:
                continue
            names = sorted((defined[b_index] - defined[a_index]) & used_words)
            if names:
                links.append((source, target, names))
    return links


def _where(hit: SearchHit) -> str:
    return f"{hit.path}:{hit.start_line}-{hit.end_line}"


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
    names = set().union(*(defined_names(hit) for hit in shown))
    parts = [header, f"\n### Most relevant code for: {question.strip()[:200]}\n"]
    for number, hit in enumerate(shown, 1):
        symbol = f" — `{hit.symbol}`" if hit.symbol else ""
        parts.append(f"\n{number}. `{_where(hit)}`{symbol} ({hit.language})\n")
        others = {name.lower() for name in names - defined_names(hit)}
        excerpt = key_excerpt(hit, question_terms(question) | others)
        width = len(str(excerpt[-1][0]))
        body = []
        previous = None
        for line_number, line in excerpt:
            if previous is not None and line_number != previous + 1:
                body.append(" " * width + " | ...")
            body.append(f"{line_number:>{width}} | {line}")
            previous = line_number
        parts.append(f"```{hit.language}\n" + "\n".join(body) + "\n```\n")
    # Code calling code says more about how things connect than documentation naming them.
    links = sorted(connections(shown), key=lambda link: link[0].language in _PROSE)[:MAX_CONNECTIONS]
    if links:
        parts.append("\n### How they connect\n")
        for source, target, used in links:
            verb = "mentions" if source.language in _PROSE else "uses"
            listed = ", ".join(f"`{name}`" for name in used)
            parts.append(f"- `{_where(source)}` {verb} {listed} from `{_where(target)}`\n")
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
