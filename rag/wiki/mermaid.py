"""Mermaid diagrams in generated pages: check them, repair the common breakages, or drop them.

A diagram that does not parse makes Mermaid draw an error box in the reader's page (deepwiki-open's
pages often show one). Flowcharts (what the wiki writes, and what models write most) are checked line by
line against a strict subset of the grammar; the usual model mistakes (unquoted labels with brackets or
parentheses, spaces in node ids) are repaired by quoting; lines that still do not parse are dropped, and a
diagram left with no statement is removed from the page. Other diagram types get a structural check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FENCE = re.compile(r"```mermaid[ \t]*\n(?P<body>.*?)```", re.DOTALL)
_FLOW_HEADER = re.compile(r"^(?:graph|flowchart)(?:\s+(?:TB|TD|BT|RL|LR))?\s*;?$")
_OTHER_HEADERS = (
    "sequenceDiagram",
    "classDiagram",
    "stateDiagram",
    "stateDiagram-v2",
    "erDiagram",
    "gantt",
    "pie",
    "mindmap",
    "timeline",
    "journey",
    "gitGraph",
)
_ID = re.compile(r"[A-Za-z0-9_][\w.]*")
_SHAPES = (
    ("([", "])"),
    ("[[", "]]"),
    ("[(", ")]"),
    ("((", "))"),
    ("{{", "}}"),
    ("[/", "/]"),
    ("[\\", "\\]"),
    ("[", "]"),
    ("(", ")"),
    ("{", "}"),
    (">", "]"),
)
_PLAIN_LABEL = re.compile(r'[^\[\](){}|"<>]*')
_QUOTED_LABEL = re.compile(r'"[^"]*"')
_ARROW = re.compile(r"\s*<?(?:-{2,}|={2,}|-\.+-)[->ox]?\s*(?:\|[^|\n]*\|\s*)?")
_TEXT_ARROW = re.compile(r"\s*--\s+[^-|>\n]+?\s+-->\s*")
_DIRECTIVES = re.compile(r"^(?:classDef|class|style|linkStyle|click|direction)\b")
_AMPERSAND = re.compile(r"\s*&\s*")  # joins nodes; applied with `match` at one position
_KEYWORDS = {"end", "graph", "subgraph", "flowchart"}


@dataclass(frozen=True)
class Checked:
    """`text` is the diagram to keep (None: drop it); `repaired` says whether it was changed."""

    text: str | None
    repaired: bool = False
    problem: str = ""


def _node(line: str, at: int) -> int | None:
    """End offset of a node (`id`, optional shape with a label, optional `:::class`) at `at`, or None."""
    match = _ID.match(line, at)
    if not match or match.group() in _KEYWORDS:
        return None
    at = match.end()
    for opener, closer in _SHAPES:
        if line.startswith(opener, at):
            inner = at + len(opener)
            label = _QUOTED_LABEL.match(line, inner) or _PLAIN_LABEL.match(line, inner)
            end = label.end() if label else inner
            if not line.startswith(closer, end):
                return None
            at = end + len(closer)
            break
    if line.startswith(":::", at):
        cls = _ID.match(line, at + 3)
        if not cls:
            return None
        at = cls.end()
    return at


def _group(line: str, at: int) -> int | None:
    """Nodes joined by `&`."""
    end = _node(line, at)
    while end is not None:
        amp = _AMPERSAND.match(line, end)
        if not amp:
            return end
        end = _node(line, amp.end())
    return None


def statement_ok(line: str) -> bool:
    """Whether one flowchart line parses (node/edge statements, subgraph/end, styling directives)."""
    stripped = line.strip().removesuffix(";").strip()
    if not stripped or stripped.startswith("%%") or stripped == "end" or _DIRECTIVES.match(stripped):
        return True
    if stripped.startswith("subgraph"):
        rest = stripped[len("subgraph") :].strip()
        return bool(rest) and (_node(rest, 0) == len(rest) or '"' not in rest and "[" not in rest)
    at = _group(stripped, 0)
    while at is not None and at < len(stripped):
        arrow = _TEXT_ARROW.match(stripped, at) or _ARROW.match(stripped, at)
        if not arrow or arrow.end() == at:
            return False
        at = _group(stripped, arrow.end())
    return at == len(stripped)


# An arrow with the spaces around it; it starts where a run of spaces starts (`(?<!\s)`), so a long run
# is not rescanned from each of its spaces.
_EDGE_SPLIT = re.compile(r"((?<!\s)\s*+<?(?:-{2,}|={2,}|-\.+-)[->ox]?\s*+(?:\|[^|\n]*\|\s*+)?)")
_PART = re.compile(
    r"^(?P<id>[A-Za-z0-9_][\w .-]*?)\s*(?P<open>\(\[|\[\[|\[\(|\(\(|\{\{|\[|\(|\{)(?P<label>.*)$"
)
_CLOSERS = dict(_SHAPES)


def _repair_part(part: str) -> str:
    """One node: spaces or dashes in its id become `_`, an unquoted label is quoted
    (`A[foo(bar)]` → `A["foo(bar)"]`; quoted labels may hold any character but `"`)."""
    stripped = part.strip()
    match = _PART.match(stripped)
    if match is None:
        return re.sub(r"[ -]+", "_", stripped) if re.fullmatch(r"[\w][\w -]*", stripped) else stripped
    closer = _CLOSERS[match.group("open")]
    rest = match.group("label")
    suffix = ""
    if ":::" in rest:
        rest, _, cls = rest.rpartition(":::")
        suffix = ":::" + cls
    if not rest.endswith(closer):
        return stripped
    text = rest[: -len(closer)].strip()
    if len(text) > 1 and text[0] == text[-1] == '"':
        text = text[1:-1]
    text = text.replace('"', "'")
    node = re.sub(r"[ -]+", "_", match.group("id").strip())
    return f'{node}{match.group("open")}"{text}"{closer}{suffix}'


def _repair(line: str) -> str:
    parts = _EDGE_SPLIT.split(line.strip())
    return "".join(part if index % 2 else _repair_part(part) for index, part in enumerate(parts))


def check_diagram(text: str) -> Checked:
    """Validate (and if needed repair) one diagram's source."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return Checked(None, problem="empty diagram")
    header = lines[0].strip()
    if header.split()[0] in _OTHER_HEADERS:
        body = "\n".join(lines[1:])
        balanced = (
            all(body.count(a) == body.count(b) for a, b in ("()", "[]", "{}")) and body.count('"') % 2 == 0
        )
        return (
            Checked(text.strip())
            if len(lines) > 1 and balanced
            else Checked(None, problem=f"malformed {header}")
        )
    if not _FLOW_HEADER.match(header):
        return Checked(None, problem=f"unknown diagram type: {header[:40]}")
    kept, repaired = [lines[0].strip()], False
    depth = 0
    for line in lines[1:]:
        candidate = line.rstrip()
        if not statement_ok(candidate):
            candidate = _repair(candidate)
            repaired = True
            if not statement_ok(candidate):
                continue  # an unparseable line is dropped, the rest of the diagram kept
        stripped = candidate.strip()
        depth += stripped.startswith("subgraph") - (stripped == "end")
        if depth < 0:
            depth, repaired = 0, True
            continue
        kept.append("    " + stripped if not candidate.startswith(" ") else candidate)
    kept.extend(["    end"] * depth)
    repaired = repaired or depth > 0
    statements = [
        line for line in kept[1:] if line.strip() not in ("end",) and not line.strip().startswith("%%")
    ]
    if not statements:
        return Checked(None, repaired=True, problem="no valid statement left")
    return Checked("\n".join(kept), repaired=repaired)


def diagrams(markdown: str) -> list[str]:
    return [match.group("body") for match in _FENCE.finditer(markdown)]


def clean_diagrams(markdown: str) -> tuple[str, int, int]:
    """`markdown` with every Mermaid block valid: (text, repaired count, dropped count)."""
    repaired = dropped = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal repaired, dropped
        checked = check_diagram(match.group("body"))
        if checked.text is None:
            dropped += 1
            return "_(A diagram was removed here because it was not valid Mermaid.)_\n"
        repaired += checked.repaired
        return f"```mermaid\n{checked.text}\n```"

    return _FENCE.sub(replace, markdown), repaired, dropped


def node_id(index: int) -> str:
    return f"n{index}"


def label(text: str) -> str:
    """A node label safe inside `["..."]`."""
    return '"' + text.replace('"', "'").replace("\n", " ") + '"'
