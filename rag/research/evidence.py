"""What research has seen so far: spans of files, and the findings written about them.

"No new evidence" means a turn added no span that was not already covered, which is the signal
that the model is going in circles. Findings are rendered for each turn's prompt in full while
they fit, and older ones are compacted (down to their citations) when they do not, so nothing
found is ever silently dropped from the model's view.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from rag.research.tools import Evidence, ToolResult
from rag.tokens import count_tokens, truncate_to_tokens

MERGE_GAP = 3


class EvidenceSet:
    """The union of spans shown by tools, per file, in order of discovery."""

    def __init__(self) -> None:
        self._spans: dict[str, list[tuple[int, int]]] = {}
        self._meta: dict[str, Evidence] = {}

    def __len__(self) -> int:
        return sum(len(spans) for spans in self._spans.values())

    def covered(self, item: Evidence) -> bool:
        return any(
            start <= item.start_line and item.end_line <= end for start, end in self._spans.get(item.path, [])
        )

    def add(self, item: Evidence) -> bool:
        """Record `item`; True if it shows lines not seen before."""
        if self.covered(item):
            return False
        self._spans.setdefault(item.path, []).append((item.start_line, item.end_line))
        self._meta.setdefault(item.path, item)
        return True

    @property
    def files(self) -> list[str]:
        return list(self._spans)

    def merged(self) -> list[Evidence]:
        """Spans of each file merged when they overlap or nearly touch; files in discovery order."""
        result = []
        for path, spans in self._spans.items():
            meta = self._meta[path]
            current: list[int] | None = None
            for start, end in sorted(spans):
                if current and start <= current[1] + MERGE_GAP:
                    current[1] = max(current[1], end)
                    continue
                if current:
                    result.append(Evidence(path, current[0], current[1], None, meta.language))
                current = [start, end]
            if current:
                result.append(Evidence(path, current[0], current[1], None, meta.language))
        return result


@dataclass
class Finding:
    """One investigation turn: what the model said and what its tool calls returned."""

    turn: int
    note: str
    results: list[ToolResult] = field(default_factory=list)
    new_refs: list[str] = field(default_factory=list)

    def full(self) -> str:
        lines = [f"Turn {self.turn}: {self.note.strip() or '(no comment)'}"]
        for result in self.results:
            args = json.dumps(result.args, ensure_ascii=False)
            lines.append(f"- {result.tool}({args}) -> {result.summary}")
        return "\n".join(lines)

    def compact(self) -> str:
        note = " ".join(self.note.split())
        note = note if len(note) <= 200 else note[:200] + " …"
        tools = ", ".join(result.tool for result in self.results)
        refs = ", ".join(self.new_refs) or "nothing new"
        return f"Turn {self.turn} (summarised): {note or '(no comment)'} [tools: {tools}; saw: {refs}]"


def render_findings(findings: list[Finding], budget: int) -> str:
    """The findings within `budget` tokens: newest in full, older ones compacted first."""
    if not findings:
        return "(none yet)"
    for compacted in range(len(findings) + 1):
        parts = [f.compact() if index < compacted else f.full() for index, f in enumerate(findings)]
        text = "\n".join(parts)
        if count_tokens(text) <= budget:
            return text
    refs = [ref for finding in findings for ref in finding.new_refs]
    text = f"{len(findings)} turns summarised; spans seen: " + ", ".join(refs)
    if count_tokens(text) <= budget:
        return text
    kept = truncate_to_tokens(text, max(budget - 20, 1))
    return f"{kept} … (list cut to fit the context; {len(refs)} spans in total)"
