"""A whole answer gathered from the typed chat events, for transports that return text, not frames.

MCP's `ask_question` and the OpenAI-compatible `/v1/chat/completions` both read the events of
`api.chat_session.chat_events` and hand the client the answer's text followed by a list of
source links; this module is the one place that turns events into that text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

if TYPE_CHECKING:  # the CLI imports this module at start-up: keep it light
    from rag.events import Event

MAX_SOURCE_LINKS = 12


@dataclass
class CollectedAnswer:
    """Everything a client needs from one answer; feed it every event with `add`."""

    text: str = ""
    sources: list[dict[str, Any]] = field(default_factory=list)
    citations: list[dict[str, Any]] = field(default_factory=list)
    error: Event | None = None
    done: Event | None = None

    def add(self, event: Event) -> None:
        kind = event.get("type")
        if kind == "token":
            self.text += event["text"]
        elif kind == "sources":
            self.sources = list(event["sources"])
        elif kind == "citations":
            self.citations = list(event["citations"])
        elif kind == "error" and self.error is None:
            self.error = event
        elif kind == "done":
            self.done = event

    @property
    def usage(self) -> dict[str, int]:
        usage = (self.done or {}).get("usage") or {}
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def links(self, base_url: str | None = None) -> list[dict[str, Any]]:
        """Sources the answer cites first, then the other retrieved ones; links made absolute."""
        cited = {(c["path"], c["start_line"], c["end_line"]) for c in self.citations if c.get("in_context")}
        ordered = sorted(self.sources, key=lambda s: (s["path"], s["start_line"], s["end_line"]) not in cited)
        return [
            {**source, "url": absolute_url(source.get("url"), base_url)}
            for source in ordered[:MAX_SOURCE_LINKS]
        ]

    def sources_markdown(self, base_url: str | None = None) -> str:
        """`**Sources**` and one markdown link per source, or "" when nothing was retrieved."""
        lines = []
        for source in self.links(base_url):
            where = f"{source['path']}:{source['start_line']}-{source['end_line']}"
            label = f"[{where}]({source['url']})" if source.get("url") else where
            symbol = f" `{source['symbol']}`" if source.get("symbol") else ""
            lines.append(f"- {label}{symbol}")
        return "\n\n**Sources**\n" + "\n".join(lines) if lines else ""


def progress_line(event: Event) -> str | None:
    """One human line for a `status` or `research` event (the CLI's progress line, MCP's progress
    message), or None for other events."""
    if event.get("type") == "status":
        counts = ""
        if event.get("chunks_total"):
            counts = f" {event['chunks_done']}/{event['chunks_total']} chunks"
        elif event.get("files_total"):
            counts = f" {event['files_done']}/{event['files_total']} files"
        message = event.get("message") or ""
        # "indexing /tmp/x" is not said as "indexing indexing /tmp/x"
        stage = "" if message.startswith(event["stage"]) and not counts else event["stage"]
        return f"{stage}{counts} {message}".strip()
    if event.get("type") == "research":
        step = f"[{event.get('iteration', '?')}/{event.get('max_iterations', '?')}] {event.get('phase', '')}"
        detail = event.get("summary") or event.get("tool") or event.get("event", "")
        return f"research {step}: {detail}"
    return None


def absolute_url(url: str | None, base_url: str | None) -> str | None:
    """A server-relative link (`/api/repos/...`, for local repositories) made absolute, given the base."""
    if not url or not base_url or not url.startswith("/"):
        return url
    return urljoin(base_url, url)
