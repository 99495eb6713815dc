"""Citations in an answer: find them, check them against what the model was shown, and link them.

A citation that points at a file or at lines the prompt never contained is flagged
(`in_context: false`): the model may have guessed, and the reader should know.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from rag.types import RepoRecord, SearchHit

# A path segment: word characters, `.`, `-`, and the routing forms of web frameworks' file names:
# `[id]`, `[...slug]`, `[[...slug]]`, `(group)` (Next.js), `@modal`, `+page.svelte` (SvelteKit), `~`.
_SEGMENT = r"(?:[\w.\-@+~]|\[\[?[\w.\-]+\]?\]|\([\w.\-]+\))+"
# path, then `:10-20`, `:10`, `:L10-L20`, `#L10-L20` or `#L10` (en dashes too). Linear in the text: a
# start inside a word is refused at once, and no part of the pattern rescans what another matched.
_CITATION = re.compile(
    rf"(?<![\w/.\-@+~])(?P<path>(?:{_SEGMENT}/)*{_SEGMENT})"
    r"(?:(?::L?(?P<start>\d+)(?:\s?[-–]\s?L?(?P<end>\d+))?)|(?:#L(?P<hstart>\d+)(?:-L?(?P<hend>\d+))?))"
    r"(?![\w])"
)


@dataclass(frozen=True, slots=True)
class Citation:
    path: str
    start_line: int
    end_line: int
    url: str | None = None
    in_context: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "start_line": self.start_line,
            "end_line": self.end_line,
            "url": self.url,
            "in_context": self.in_context,
        }


@dataclass(frozen=True, slots=True)
class Span:
    """Lines of a file that were in the prompt."""

    path: str
    start_line: int
    end_line: int


def _looks_like_path(path: str) -> bool:
    """Rules out `http:80`, times and plain words followed by a number (`step:2`): a file name holds a
    letter, and a path has a folder or an extension."""
    if not re.search(r"[A-Za-z]", path.rsplit("/", 1)[-1]):
        return False
    return "/" in path or bool(re.search(r"\.[A-Za-z0-9]+$", path)) or path in {"Makefile", "Dockerfile"}


def extract_citations(answer: str) -> list[Citation]:
    """Every distinct `path:start-end`, `path:line` or `path#L10-L20` in `answer`, in order."""
    seen: set[tuple[str, int, int]] = set()
    found: list[Citation] = []
    for match in _CITATION.finditer(answer):
        path = match.group("path").removeprefix("./")
        if not _looks_like_path(path) or "://" in answer[max(0, match.start() - 3) : match.start() + 1]:
            continue
        start = int(match.group("start") or match.group("hstart"))
        end = int(match.group("end") or match.group("hend") or start)
        if start < 1:
            continue
        start, end = min(start, end), max(start, end)
        if (path, start, end) not in seen:
            seen.add((path, start, end))
            found.append(Citation(path, start, end))
    return found


def spans_of(hits: Iterable[SearchHit]) -> list[Span]:
    return [Span(hit.path, hit.start_line, hit.end_line) for hit in hits]


def _resolve_path(path: str, known: Sequence[str]) -> str | None:
    """The context path a citation means: exact, or the one context path ending in `/path`."""
    if path in known:
        return path
    candidates = [candidate for candidate in known if candidate.endswith("/" + path.lstrip("/"))]
    return candidates[0] if len(candidates) == 1 else None


def _covered(start: int, end: int, spans: Sequence[Span]) -> bool:
    """True when every line start..end lies in the union of `spans`."""
    line = start
    for span in sorted(spans, key=lambda span: span.start_line):
        if span.start_line > line:
            break
        line = max(line, span.end_line + 1)
        if line > end:
            return True
    return line > end


def covers(spans: Sequence[Span], path: str, start: int, end: int) -> bool:
    """True when lines start..end of `path` lie in the union of `spans`."""
    return _covered(start, end, [span for span in spans if span.path == path])


def check_citations(citations: Sequence[Citation], context: Sequence[SearchHit | Span]) -> list[Citation]:
    """Citations with `in_context` set, and their path completed when the model shortened it. Two
    spellings of the same lines (`httpx/_client.py:1-12` and `_client.py:1-12`) are one citation: a
    reader would otherwise get the same chip twice."""
    spans = [Span(item.path, item.start_line, item.end_line) for item in context]
    known = sorted({span.path for span in spans})
    checked: dict[tuple[str, int, int], Citation] = {}
    for citation in citations:
        path = _resolve_path(citation.path, known)
        if path is None:
            resolved = replace(citation, in_context=False)
        else:
            file_spans = [span for span in spans if span.path == path]
            inside = _covered(citation.start_line, citation.end_line, file_spans)
            resolved = replace(citation, path=path, in_context=inside)
        checked.setdefault((resolved.path, resolved.start_line, resolved.end_line), resolved)
    return list(checked.values())


def _web_base(record: RepoRecord) -> str:
    """The repository's web address; ssh remotes have none, so it comes from the id (host/path@ref)."""
    parts = urlsplit(record.url.rstrip("/").removesuffix(".git"))
    if parts.scheme in ("http", "https"):
        return f"{parts.scheme}://{parts.netloc}{parts.path}"
    host_and_path = record.id.rsplit("@", 1)[0] if "@" in record.id else record.id
    return f"https://{host_and_path}"


def source_url(record: RepoRecord, path: str, start: int, end: int) -> str:
    """A link to the lines at the indexed commit: the host's blob view, or our file API for others."""
    revision = quote(record.commit or record.ref or "HEAD", safe="")
    quoted = quote(path)
    if record.platform == "github":
        anchor = f"#L{start}" if start == end else f"#L{start}-L{end}"
        return f"{_web_base(record)}/blob/{revision}/{quoted}{anchor}"
    if record.platform == "gitlab":
        anchor = f"#L{start}" if start == end else f"#L{start}-{end}"
        return f"{_web_base(record)}/-/blob/{revision}/{quoted}{anchor}"
    if record.platform == "bitbucket":
        anchor = f"#lines-{start}" if start == end else f"#lines-{start}:{end}"
        return f"{_web_base(record)}/src/{revision}/{quoted}{anchor}"
    query = urlencode({"path": path, "start": start, "end": end})
    return f"/api/repos/{quote(record.id, safe='/:@')}/file?{query}"


def link(citations: Sequence[Citation], record: RepoRecord) -> list[Citation]:
    return [replace(c, url=source_url(record, c.path, c.start_line, c.end_line)) for c in citations]
