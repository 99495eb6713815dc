"""Research without a model: follow the code graph out from the retrieved code.

Starting from the spans retrieval finds for the question, each hop looks at the identifiers a span
calls (callees: their definitions, found through the chunk symbols) and at the places that call
the span's own symbol (callers: references, found by identifier grep, lifted to their enclosing
chunk). After a few hops the visited spans form a small call graph; the conclusion lays out its
longest paths ("`main` calls `run` calls `send`") with `path:start-end` citations, plus the other
connections found. Everything comes from the index, so it cannot invent code. Deterministic.
"""

from __future__ import annotations

import asyncio
import builtins
import keyword
import re
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

from rag.errors import ErrorCode
from rag.events import error_event, token_event
from rag.providers.offline import explained_answer
from rag.research.frames import (
    Stats,
    citations_frame,
    done_frame,
    research_frame,
    sources_frame,
)
from rag.research.options import ResearchOptions
from rag.research.tools import Evidence, RepoTools
from rag.terms import question_terms

OFFLINE_LABEL = "Offline research (no LLM configured)"
# Hits retrieved to seed the graph walk (its seeds are the best code hits outside tests and docs).
MAX_HOPS = 4
SEEDS = 4
MAX_NODES = 24
MAX_DEFINITIONS = 2
MAX_TREE_DEPTH = 4
MAX_TREE_LINES = 40
GENERIC_NAME_DEFINITIONS = 6
_CALL = re.compile(r"\b([A-Za-z_]\w*)\s*\(")
_DEFINING = re.compile(r"\b(?:def|class|function|func|fn)\s+([A-Za-z_]\w*)")
_PROSE_LANGUAGES = frozenset({"markdown", "rst", "text", "json", "yaml", "toml", "html", "css"})
_IGNORED = frozenset(
    {*keyword.kwlist, *dir(builtins), "self", "cls", "super", "this", "new", "function", "func", "return"}
    | {"if", "for", "while", "switch", "catch", "sizeof", "typeof", "require", "console", "make", "append"}
)


@dataclass(frozen=True, slots=True)
class Node:
    """A span of code in the graph: a chunk with its symbol."""

    path: str
    start_line: int
    end_line: int
    symbol: str | None

    @property
    def ref(self) -> str:
        return f"{self.path}:{self.start_line}-{self.end_line}"

    @property
    def name(self) -> str:
        return self.symbol or "(module code)"

    @property
    def size(self) -> int:
        return self.end_line - self.start_line + 1

    @property
    def short(self) -> str | None:
        """The name callers use; None for module code and for chunks that list several definitions."""
        if not self.symbol or ", " in self.symbol:
            return None
        return self.symbol.rsplit(".", 1)[-1]


@dataclass(frozen=True, slots=True)
class Edge:
    caller: Node
    callee: Node
    identifier: str


@dataclass
class Graph:
    nodes: dict[Node, int] = field(default_factory=dict)
    edges: set[Edge] = field(default_factory=set)

    def add(self, node: Node, hop: int) -> bool:
        if node in self.nodes:
            return False
        self.nodes[node] = hop
        return True

    def callees(self, node: Node) -> list[Edge]:
        """Edges out of `node`, the most specific callee (smallest span) first: a method before its class;
        then by place and name, never by the edge set's order (it changes with PYTHONHASHSEED)."""
        edges = [e for e in self.edges if e.caller == node]
        return sorted(edges, key=lambda e: (e.callee.size, e.callee.path, e.callee.start_line, e.identifier))

    def roots(self) -> list[Node]:
        """Nodes that call something and that nothing in the graph calls: where the code paths start."""
        called = {edge.callee for edge in self.edges}
        return [node for node in self.nodes if node not in called and self.callees(node)]

    def best_path(self, relevance: Callable[[Node], int]) -> list[Edge]:
        """The longest call chain from a root; among equally long ones the most relevant to the
        question, then the most specific (fewest lines: a method rather than its whole class)."""

        def walk(node: Node, seen: frozenset[Node]) -> tuple[tuple[int, int, int], list[Edge]]:
            own = (0, relevance(node), -node.size)
            best: tuple[tuple[int, int, int], list[Edge]] = (own, [])
            for edge in self.callees(node):
                if edge.callee in seen:
                    continue
                (length, score, size), chain = walk(edge.callee, seen | {edge.callee})
                key = (length + 1, score + own[1], size + own[2])
                if key > best[0]:
                    best = (key, [edge, *chain])
            return best

        results = [walk(root, frozenset({root})) for root in self.roots()]
        return max(results, key=lambda result: result[0], default=((0, 0, 0), []))[1]


class CodeGraphWalker:
    """Explores callers and callees hop by hop over one repository's tools (blocking calls)."""

    def __init__(self, tools: RepoTools) -> None:
        self.tools = tools
        self.graph = Graph()
        self.lookups = 0

    def node_at(self, path: str, line: int) -> Node:
        span = self.tools.enclosing(path, line)
        return Node(span.path, span.start_line, span.end_line, span.symbol)

    def seeds(self, question: str) -> list[Node]:
        hits = self.tools.retriever.search(question, k=SEEDS * 3)
        seeds: list[Node] = []
        for hit in hits:
            if hit.language in _PROSE_LANGUAGES:
                continue
            node = self.node_at(hit.path, hit.start_line)
            if node.symbol is None:
                node = Node(hit.path, hit.start_line, hit.end_line, hit.symbol)
            if node not in seeds:
                seeds.append(node)
            if len(seeds) >= SEEDS:
                break
        return seeds

    def node_text(self, node: Node) -> str:
        return "\n".join(self.tools.lines(node.path)[node.start_line - 1 : node.end_line])

    def _rank(self, caller: Node, candidates: list[Evidence]) -> list[Evidence]:
        """Definitions in files the caller imports or names come first."""
        caller_text = self.tools.text(caller.path)

        def score(item: Evidence) -> tuple[int, str]:
            module = item.path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            return (
                0 if item.path == caller.path or re.search(rf"\b{re.escape(module)}\b", caller_text) else 1,
                item.path,
            )

        return sorted(candidates, key=score)

    def called_names(self, node: Node) -> list[str]:
        """Identifiers `node` calls, without keywords, builtins and what `node` defines itself."""
        text = self.node_text(node)
        own = {*_DEFINING.findall(text), node.short}
        return [
            name for name in dict.fromkeys(_CALL.findall(text)) if name not in _IGNORED and name not in own
        ]

    def callees(self, node: Node) -> list[Edge]:
        edges = []
        for name in self.called_names(node):
            self.lookups += 1
            definitions = self.tools.definitions(name)
            if not definitions or len(definitions) > GENERIC_NAME_DEFINITIONS:
                continue
            spans = [Evidence(d.path, d.start_line, d.end_line, d.symbol) for d in definitions]
            for item in self._rank(node, spans)[:MAX_DEFINITIONS]:
                target = Node(item.path, item.start_line, item.end_line, item.symbol)
                if target != node:
                    edges.append(Edge(node, target, name))
        return edges

    def callers(self, node: Node) -> list[Edge]:
        name = node.short
        if not name or name in _IGNORED:
            return []
        self.lookups += 1
        call = re.compile(rf"\b{re.escape(name)}\s*\(")
        edges = []
        for path, line, text in self.tools.references(name, 40):
            if not call.search(text) or self.tools.language(path) in _PROSE_LANGUAGES:
                continue
            caller = self.node_at(path, line)
            if caller != node and not (caller.path == node.path and node.start_line <= line <= node.end_line):
                edges.append(Edge(caller, node, name))
        return edges

    def hop(self, frontier: list[Node], hop: int) -> list[Node]:
        """Expand `frontier` one step in both directions; returns the nodes reached for the first time."""
        reached: list[Node] = []
        for node in frontier:
            for edge in [*self.callees(node), *self.callers(node)]:
                if len(self.graph.nodes) >= MAX_NODES and (
                    edge.caller not in self.graph.nodes or edge.callee not in self.graph.nodes
                ):
                    continue
                self.graph.edges.add(edge)
                for end in (edge.caller, edge.callee):
                    if self.graph.add(end, hop):
                        reached.append(end)
        return reached


def _first_doc_line(walker: CodeGraphWalker, node: Node) -> str:
    for line in walker.tools.lines(node.path)[node.start_line - 1 : node.end_line]:
        stripped = line.strip().strip("\"'/*# ").strip()
        if stripped and not _DEFINING.search(line) and not stripped.startswith(("@", "import", "from")):
            return stripped[:160]
    return ""


def _call_tree(graph: Graph) -> list[str]:
    """Every root's callees as a nested list, each node expanded once (later mentions point back)."""
    lines: list[str] = []
    expanded: set[Node] = set()

    def visit(edge: Edge, depth: int) -> None:
        node = edge.callee
        again = node in expanded
        suffix = " (expanded above)" if again and graph.callees(node) else ""
        lines.append(f"{'  ' * depth}- calls `{edge.identifier}` → `{node.name}` at {node.ref}{suffix}")
        if again or depth >= MAX_TREE_DEPTH or len(lines) >= MAX_TREE_LINES:
            return
        expanded.add(node)
        for child in graph.callees(node):
            visit(child, depth + 1)

    for root in graph.roots():
        if len(lines) >= MAX_TREE_LINES:
            lines.append("- … (tree cut here)")
            break
        lines.append(f"- `{root.name}` at {root.ref}")
        expanded.add(root)
        for edge in graph.callees(root):
            visit(edge, 1)
    return lines


def write_conclusion(question: str, walker: CodeGraphWalker, hops: int, *, title: bool = True) -> str:
    """The structured offline answer: paths through the code, other connections, key spans."""
    graph = walker.graph
    files = sorted({node.path for node in graph.nodes})
    lines = [f"## {OFFLINE_LABEL}", ""] if title else [f"*{OFFLINE_LABEL}*", ""]
    lines += [
        f"Question: {question}",
        "",
        f"Followed the code graph for {hops} hops from the retrieved code: {len(graph.nodes)} spans in "
        f"{len(files)} files, {len(graph.edges)} call edges. No model was used; every line below is taken "
        "from the index.",
        "",
    ]
    terms = question_terms(question)

    def relevance(node: Node) -> int:
        text = f"{node.symbol or ''} {_first_doc_line(walker, node)}".lower()
        return sum(term in text for term in terms)

    path = graph.best_path(relevance)
    if path:
        lines += ["### Path through the code", ""]
        for step, node in enumerate([path[0].caller, *(edge.callee for edge in path)], 1):
            via = f" — calls `{path[step - 1].identifier}` ↓" if step <= len(path) else ""
            lines.append(f"{step}. `{node.name}` at {node.ref}{via}")
        lines += ["", "### Call tree", ""]
        lines += _call_tree(graph)
        lines.append("")
    if graph.nodes:
        lines += ["### Spans examined", ""]
        for node in sorted(graph.nodes, key=lambda n: (graph.nodes[n], n.path, n.start_line)):
            doc = _first_doc_line(walker, node)
            lines.append(f"- {node.ref} `{node.name}`" + (f": {doc}" if doc else ""))
    else:
        lines.append("No code matching the question was found in the index.")
    return "\n".join(lines) + "\n"


async def walk_hops(
    walker: CodeGraphWalker, seeds: list[Node], hops: int, stats: Stats, cancel: asyncio.Event | None
) -> AsyncGenerator[list[Node], None]:
    """Expand from `seeds` hop by hop, yielding each hop's new nodes; sets `stats.stopped_because`."""
    for node in seeds:
        walker.graph.add(node, 0)
    frontier = seeds
    while frontier and stats.turns < hops:
        if cancel is not None and cancel.is_set():
            stats.stopped_because = "cancelled"
            return
        stats.turns += 1
        frontier = await asyncio.to_thread(walker.hop, frontier, stats.turns)
        stats.tool_calls = walker.lookups
        yield frontier
    stats.stopped_because = "max_iterations" if frontier else "no_new_evidence"


async def graph_events(
    tools: RepoTools, *, question: str, language: str, cancel: asyncio.Event | None, stats: Stats
) -> AsyncGenerator[dict[str, Any], None]:
    """Offline research over the index's code graph: the chain from the entry point to the worker.

    Its sources are the chain (what the answer cites), not every definition the walk looked at.
    """
    trace = await asyncio.to_thread(tools.trace, question)
    chain, hits = trace.chain, trace.hits
    start = ", ".join(f"{hit.path}:{hit.start_line}-{hit.end_line}" for hit in hits[:4]) or "nothing"
    yield research_frame(stats, "plan", "plan", summary=f"offline: walk the code graph from {start}")
    stats.turns = 1
    stats.tool_calls = chain.lookups + 1
    if cancel is not None and cancel.is_set():
        stats.stopped_because = "cancelled"
        yield error_event(ErrorCode.CANCELLED, "research cancelled")
        yield done_frame(stats)
        return
    steps = " → ".join(f"{link.definition.qualname} ({link.ref})" for link in chain.links) or "no chain"
    yield research_frame(
        stats, "investigate", "finding", summary=f"explored {chain.explored} definitions: {steps}",
        files=chain.files,
    )  # fmt: skip
    stats.stopped_because = "chain_found" if chain.links else "no_new_evidence"
    answer = explained_answer(question, chain, hits, tools.text, language)
    spans = tools.trace_evidence(trace)
    yield research_frame(stats, "conclude", "note", summary="writing the chain through the code")
    yield sources_frame(tools, spans)
    for line in answer.splitlines(keepends=True):
        yield token_event(line)
    yield citations_frame(tools, spans + [Evidence(h.path, h.start_line, h.end_line) for h in hits], answer)
    yield done_frame(stats)


async def offline_events(
    tools: RepoTools,
    *,
    question: str,
    options: ResearchOptions,
    cancel: asyncio.Event | None,
    language: str = "en",
) -> AsyncGenerator[dict[str, Any], None]:
    """Events-mode offline research: the code graph's chain when the index has a graph; otherwise
    (an index built before the graph) the older walk over identifiers, progress per hop."""
    stats = Stats(options.max_iterations)
    if getattr(tools.index, "has_graph", False):
        async for frame in graph_events(
            tools, question=question, language=language, cancel=cancel, stats=stats
        ):
            yield frame
        return
    walker = CodeGraphWalker(tools)
    seeds = await asyncio.to_thread(walker.seeds, question)
    start = ", ".join(f"{n.ref} ({n.name})" for n in seeds) or "nothing"
    yield research_frame(stats, "plan", "plan", summary=f"offline: follow callers and callees from {start}")
    hops = min(options.max_iterations, MAX_HOPS)
    async for reached in walk_hops(walker, seeds, hops, stats, cancel):
        files = list(dict.fromkeys(n.path for n in reached))
        summary = f"{len(reached)} new spans: " + ", ".join(f"{n.name} ({n.ref})" for n in reached[:6])
        yield research_frame(stats, "investigate", "finding", summary=summary, files=files)
    if stats.stopped_because == "cancelled":
        yield error_event(ErrorCode.CANCELLED, "research cancelled")
        yield done_frame(stats)
        return
    answer = await asyncio.to_thread(write_conclusion, question, walker, stats.turns)
    spans = [
        Evidence(n.path, n.start_line, n.end_line, n.symbol, tools.language(n.path))
        for n in walker.graph.nodes
    ]
    yield research_frame(stats, "conclude", "note", summary="writing the path through the code")
    yield sources_frame(tools, spans)
    for line in answer.splitlines(keepends=True):
        yield token_event(line)
    yield citations_frame(tools, spans, answer)
    yield done_frame(stats)
