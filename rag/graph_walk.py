"""Finding the chain of code that answers a question, by walking the code graph with a purpose.

Start from the definitions the retrieved spans (and the identifiers the question names) land in,
expand along resolved calls, callers and overrides, score every definition by how much of the
question it explains, and keep the best path: from the entry point the question implies (code
nothing else in the explored graph calls) down to the code that does the work. Used by offline
research (`rag.research.offline`) and by the offline answer (`rag.providers.offline`); needs only
the index's graph queries (`rag.store.RepoIndex`), so it is deterministic and cannot invent code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rag.terms import question_terms

SEED_HITS = 10
MAX_EXPLORED = 160
MAX_FANOUT = 14
MAX_DEPTH = 3
MAX_CHAIN = 5
BEAM = 60
STEP_COST = 0.3
FILE_BONUS = 0.25
SEED_SHARE = 0.3
USE_THRESHOLD = 1.0
MIN_GAIN = 0.01
RELATED_HITS = 1
MAX_USES = 2
MAX_FLOWS = 2
MAX_FLOW_READS = 3
ENTRY_BONUS = 1.0
_PROSE = frozenset({"markdown", "rst", "text", "json", "yaml", "toml", "html", "css"})
_TEST_PATH = re.compile(
    r"(^|/)(tests?|testing|spec|__tests__|examples?|benchmarks?)(/|$)|_test\.|\.test\.|test_"
)
_IDENTIFIER = re.compile(r"`([^`]+)`|\b([A-Za-z_][A-Za-z0-9_]*(?:(?:\.|::)[A-Za-z_][A-Za-z0-9_]*)*)\b")
_SPLIT = re.compile(r"[._:/\-]|(?<=[a-z0-9])(?=[A-Z])")
# Docstrings and comments, then what an abstract method's body is left with.
_ABSTRACT_NOISE = re.compile(r'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|#[^\n]*|//[^\n]*|/\*[\s\S]*?\*/')
_ABSTRACT_LINE = re.compile(r":\s*(pass|\.\.\.)\s*(#.*)?$|;\s*$")
_ABSTRACT_BODY = re.compile(
    r"(pass|\.\.\.|raise NotImplementedError(\(.*\))?|throw new Error\(.*\);?|[{}\s])*"
)


@dataclass(frozen=True, slots=True)
class Link:
    """One step of a chain: `definition`, reached from the previous step by `how` at `path:line`."""

    definition: Any  # rag.store.CodeDefinition
    how: str = ""  # "call" | "override" | "" (the first step)
    line: int = 0

    @property
    def ref(self) -> str:
        result: str = self.definition.ref
        return result


@dataclass(frozen=True, slots=True)
class Flow:
    """A constructor argument: stored on the instance by `constructor` at `path:line` (`self.timeout =
    timeout`), read back at `reads` (reader's qualname, path, line)."""

    name: str
    constructor: str
    path: str
    line: int
    reads: list[tuple[str, str, int]]


@dataclass
class Chain:
    """The answer's skeleton: `links` from the entry point to the worker, plus what the worker reads."""

    links: list[Link] = field(default_factory=list)
    reads: list[tuple[str, str, int]] = field(default_factory=list)  # (name, path, line)
    flows: list[Flow] = field(default_factory=list)  # constructor arguments the question names
    uses: list[Link] = field(default_factory=list)  # code in other files the steps call or build
    explored: int = 0
    lookups: int = 0

    @property
    def worker(self) -> Any | None:
        return self.links[-1].definition if self.links else None

    @property
    def entry(self) -> Any | None:
        return self.links[0].definition if len(self.links) > 1 else None

    @property
    def files(self) -> list[str]:
        return list(dict.fromkeys(link.definition.path for link in [*self.links, *self.uses]))


def stem(word: str) -> str:
    """A crude English stem, so `matching`, `matches` and `match` meet (`directories` -> `directory`)."""
    if word.endswith("ies") and len(word) > 5:
        return word[:-3] + "y"
    for suffix in ("ing", "es", "ed", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def _words(text: str) -> set[str]:
    return {stem(part.lower()) for part in _SPLIT.split(text) if len(part) > 2}


def named_identifiers(question: str) -> list[str]:
    """Identifiers the question names in code form: `quoted`, snake_case, CamelCase, dotted or call()."""
    found = []
    for match in _IDENTIFIER.finditer(question):
        text = (match.group(1) or match.group(2) or "").strip().rstrip("()")
        looks_like_code = (
            bool(match.group(1))
            or "_" in text
            or "." in text
            or "::" in text
            or (re.search(r"[a-z][A-Z]", text) is not None)
            or (text[:1].isupper() and text[1:].lower() != text[1:] and len(text) > 2)
        )
        if looks_like_code and re.fullmatch(r"[\w.:]+", text):
            found.append(text)
    return list(dict.fromkeys(found))


class ChainFinder:
    """One question over one index: seeds, a bounded exploration, the best chain."""

    def __init__(self, index: Any, question: str) -> None:
        self.index = index
        self.question = question
        # "file" is a stopword for excerpts, but often the subject here (static files, file responses).
        self.terms = {stem(term) for term in question_terms(question)} | {
            w for w in re.findall(r"[a-z]+", question.lower()) if w in ("file", "files")
        }
        self.names = [name.replace("::", ".") for name in named_identifiers(question)]
        self.tails = {name.rsplit(".", 1)[-1] for name in self.names}
        self.wants_tests = "test" in question.lower()
        self.lookups = 0
        self._weights: dict[int, dict[str, float]] = {}

    # scoring --------------------------------------------------------------------------------------

    def term_weights(self, definition: Any) -> dict[str, float]:
        """How strongly each question term is explained by a definition: its name (2, or 1 for a
        part of it), its file (0.7) or its first lines (0.4)."""
        cached = self._weights.get(definition.id)
        if cached is not None:
            return cached
        own = _words(definition.qualname)
        place = _words(definition.path)
        text = self.index.file_text(definition.path) or ""
        end = min(definition.end_line, definition.start_line + 12)
        body = _words(" ".join(text.splitlines()[definition.start_line - 1 : end]))
        weights: dict[str, float] = {}
        for term in self.terms:
            if term in own:
                weights[term] = 2.0
            elif any(term in word for word in own):
                weights[term] = 1.0
            elif term in place:
                weights[term] = 0.7
            elif term in body:
                weights[term] = 0.4
        self._weights[definition.id] = weights
        return weights

    def wanted(self, path: str) -> bool:
        """Tests, examples and docs are not where things are done, unless the question is about tests."""
        return self.wants_tests or not _TEST_PATH.search(path)

    def bonus(self, definition: Any) -> float:
        """What a definition is worth apart from the terms: named by the question, a test, a class."""
        score = 0.0
        if definition.qualname in self.names or any(
            name.endswith("." + definition.qualname) for name in self.names
        ):
            score += 3.0
        elif definition.name in self.tails:
            score += 1.5
        return score

    def relevance(self, definition: Any) -> float:
        """How much of the question one definition explains on its own."""
        return sum(self.term_weights(definition).values()) + self.bonus(definition)

    # seeds and exploration ------------------------------------------------------------------------

    def seeds(self, hits: Sequence[Any]) -> dict[int, tuple[Any, float]]:
        """Definitions the best hits sit in (weighted by rank) and the ones the question names."""
        seeds: dict[int, tuple[Any, float]] = {}
        code_hits = [hit for hit in hits if hit.language not in _PROSE and self.wanted(hit.path)][:SEED_HITS]
        for rank, hit in enumerate(code_hits):
            self.lookups += 1
            inside = [
                d
                for d in self.index.definitions_in(hit.path)
                if d.start_line <= hit.end_line and d.end_line >= hit.start_line and d.kind != "class"
            ]
            inside = sorted(inside, key=self.relevance, reverse=True)[:3]
            if not inside:
                enclosing = self.index.definition_at(hit.path, hit.start_line)
                inside = [enclosing] if enclosing is not None else []
            for definition in inside:
                bonus = 2.0 / (1 + rank)
                seeds.setdefault(definition.id, (definition, bonus))
        for name in self.names:
            self.lookups += 1
            for definition in self.index.definition(name)[:4]:
                if not self.wanted(definition.path):
                    continue
                if definition.kind == "attribute":  # a stored constructor argument: where it is read
                    for edge in self.index.callers(definition, ("read",))[:4]:
                        if edge.source is not None and self.wanted(edge.source.path):
                            seeds.setdefault(edge.source.id, (edge.source, 1.5))
                    continue
                if definition.kind != "class":
                    seeds[definition.id] = (definition, 3.0)
                    continue
                methods = [
                    d for d in self.index.definitions_in(definition.path) if d.parent == definition.qualname
                ]
                for method in sorted(methods, key=self.relevance, reverse=True)[:3]:
                    seeds.setdefault(method.id, (method, 1.5))
        return seeds

    def explore(self, seeds: dict[int, tuple[Any, float]]) -> tuple[dict[int, Any], dict[int, list[Link]]]:
        """Definitions within `MAX_DEPTH` calls/callers/overrides of a seed, and the edges between them."""
        nodes: dict[int, Any] = {key: value[0] for key, value in seeds.items()}
        out: dict[int, list[Link]] = {}
        frontier = sorted(nodes.values(), key=lambda d: -(seeds[d.id][1] + self.relevance(d)))
        for _ in range(MAX_DEPTH):
            reached: list[Any] = []
            for node in frontier:
                for link_from, link in self._neighbours(node):
                    out.setdefault(link_from.id, [])
                    if all(existing.definition.id != link.definition.id for existing in out[link_from.id]):
                        out[link_from.id].append(link)
                    for end in (link_from, link.definition):
                        if end.id not in nodes and len(nodes) < MAX_EXPLORED:
                            nodes[end.id] = end
                            reached.append(end)
            frontier = sorted(reached, key=self.relevance, reverse=True)[: MAX_EXPLORED // 4]
            if not frontier:
                break
        for key in out:
            out[key] = [link for link in out[key] if link.definition.id in nodes]
        return nodes, out

    def _neighbours(self, node: Any) -> list[tuple[Any, Link]]:
        """(from, link) pairs around `node`: what it calls, who calls it, and overrides of a method."""
        self.lookups += 3
        pairs: list[tuple[Any, Link]] = []
        callees = [
            e
            for e in self.index.callees(node, ("call",))
            if (e.target.kind != "class" or e.exact) and self.wanted(e.target.path)
        ]
        callees = sorted(callees, key=lambda e: -(self.relevance(e.target) - (0 if e.exact else 0.5)))[
            :MAX_FANOUT
        ]
        pairs += [(node, Link(edge.target, "call", edge.line)) for edge in callees]
        callers = [e for e in self.index.callers(node) if e.source is not None and self.wanted(e.source.path)]
        callers = sorted(callers, key=lambda e: -(self.relevance(e.source) - (0 if e.exact else 0.5)))[
            :MAX_FANOUT
        ]
        pairs += [(edge.source, Link(node, "call", edge.line)) for edge in callers]
        if node.kind == "method" and node.parent:
            for parent in self.index.definition(node.parent)[:2]:
                for sub in self.index.subclasses(parent)[:MAX_FANOUT]:
                    if not self.wanted(sub.path):
                        continue
                    override = [
                        d
                        for d in self.index.definitions_in(sub.path)
                        if d.parent == sub.qualname and d.name == node.name
                    ]
                    pairs += [(node, Link(item, "override", item.start_line)) for item in override[:1]]
        return pairs

    # the chain ------------------------------------------------------------------------------------

    def path_score(self, path: Sequence[Any], seeds: dict[int, tuple[Any, float]], called: set[int]) -> float:
        """How much of the question a path explains: each term counted once (at the step explaining it
        best), plus the steps' own bonuses and seed weights, a bonus for starting at an entry point
        (nothing explored calls it), and a cost per step so a short chain beats a long wander."""
        covered: dict[str, float] = {}
        extra = 0.0
        seeded = sorted((seeds[d.id][1] for d in path if d.id in seeds), reverse=True)
        for definition in path:
            for term, weight in self.term_weights(definition).items():
                covered[term] = max(covered.get(term, 0.0), weight)
            extra += self.bonus(definition)
        if seeded:
            extra += seeded[0] + SEED_SHARE * (len(seeded) - 1)
        entry = ENTRY_BONUS if len(path) > 1 and path[0].id not in called else 0.0
        files = len({definition.path for definition in path})
        return sum(covered.values()) + extra + entry + FILE_BONUS * (files - 1) - STEP_COST * len(path)

    def best_chain(
        self, nodes: dict[int, Any], out: dict[int, list[Link]], seeds: dict[int, tuple[Any, float]]
    ) -> list[Link]:
        """The best-scoring path through the explored graph (`path_score`), by beam search."""
        called = {link.definition.id for links in out.values() for link in links if link.how == "call"}
        beam: list[tuple[float, list[Link]]] = [
            (self.path_score([node], seeds, called), [Link(node)]) for node in nodes.values()
        ]
        best = max(beam, key=lambda item: item[0], default=(float("-inf"), []))
        for _ in range(MAX_CHAIN - 1):
            grown: list[tuple[float, list[Link]]] = []
            for _, links in beam:
                seen = {link.definition.id for link in links}
                for link in out.get(links[-1].definition.id, []):
                    if link.definition.id in seen:
                        continue
                    path = [*links, link]
                    grown.append((self.path_score([step.definition for step in path], seeds, called), path))
            if not grown:
                break
            beam = sorted(grown, key=lambda item: -item[0])[:BEAM]
            if beam[0][0] > best[0]:
                best = beam[0]
        return _trim(best[1], lambda path: self.path_score(path, seeds, called))

    def reads(self, definition: Any) -> list[tuple[str, str, int]]:
        """Settings the worker reads (`read` edges, not those to stored attributes): (name, path, line)."""
        edges = self.index.callees(definition, ("read",))
        return [(e.name, e.path, e.line) for e in edges if e.target.kind != "attribute"][:4]

    def flows(self, links: Sequence[Link]) -> list[Flow]:
        """The constructor arguments the question names that the chain touches (stored by a class on
        the chain, or read by a step), each with where it is stored and where it is read."""
        attributes: dict[int, Any] = {}
        for link in links:
            definition = link.definition
            self.lookups += 1
            if definition.kind == "class":
                found = self.index.attributes_of(definition)
            else:
                edges = self.index.callees(definition, ("read",))
                found = [e.target for e in edges if e.target.kind == "attribute"]
            for attribute in found:
                if _words(attribute.name) & self.terms:
                    attributes.setdefault(attribute.id, attribute)
        flows = []
        for attribute in list(attributes.values())[:MAX_FLOWS]:
            self.lookups += 1
            edges = self.index.references(attribute)
            store = next((e for e in edges if e.kind == "store" and e.source is not None), None)
            reads = [(e.source.qualname, e.path, e.line) for e in edges if e.kind == "read" and e.source]
            if store is not None and store.source is not None:
                flows.append(
                    Flow(
                        attribute.name, store.source.qualname, store.path, store.line, reads[:MAX_FLOW_READS]
                    )
                )
        return flows

    def concrete(self, links: list[Link]) -> list[Link]:
        """A chain ending at an abstract method (`raise NotImplementedError`, `pass`, no body) goes on
        to the override that explains most of the question: that is where the work is done."""
        worker = links[-1].definition if links else None
        if worker is None or worker.kind != "method" or not worker.parent or not self.abstract(worker):
            return links
        overrides = [
            d
            for parent in self.index.definition(worker.parent)
            if parent.kind == "class" and parent.path == worker.path
            for sub in self.index.subclasses(parent)[:MAX_FANOUT]
            if self.wanted(sub.path)
            for d in self.index.definitions_in(sub.path)
            if d.parent == sub.qualname and d.name == worker.name and not self.abstract(d)
        ]
        self.lookups += 2
        if not overrides:
            return links
        best = max(overrides, key=self.relevance)  # the first of equals: definition order
        return [*links, Link(best, "override", best.start_line)]

    def abstract(self, definition: Any) -> bool:
        """True for a body that only documents, passes or raises NotImplementedError."""
        lines = (self.index.file_text(definition.path) or "").splitlines()
        if definition.start_line >= definition.end_line:  # `def f(self): ...`, `abstract void run();`
            line = lines[definition.start_line - 1] if definition.start_line <= len(lines) else ""
            return "{" not in line and bool(_ABSTRACT_LINE.search(line))
        body = lines[definition.start_line : definition.end_line]
        code = _ABSTRACT_NOISE.sub("", "\n".join(body))
        return not code.strip() or bool(_ABSTRACT_BODY.fullmatch(code.strip()))

    def uses(self, links: Sequence[Link]) -> list[Link]:
        """What the chain leans on in other files: the callees (or classes it builds) outside the chain's
        files that explain part of the question themselves, best first."""
        on_chain = {link.definition.path for link in links}
        found: dict[int, tuple[float, Link]] = {}
        for link in links:
            for edge in self.index.callees(link.definition, ("call",)):
                target = edge.target
                if not edge.exact or target.path in on_chain or not self.wanted(target.path):
                    continue
                weight = sum(self.term_weights(target).values())
                if weight >= USE_THRESHOLD and target.id not in found:
                    found[target.id] = (weight, Link(target, "uses", edge.line))
        ranked = sorted(found.values(), key=lambda item: -item[0])
        chosen: list[Link] = []
        for _, link in ranked:
            if link.definition.path not in {c.definition.path for c in chosen}:
                chosen.append(link)
        return chosen[:MAX_USES]

    def find(self, hits: Sequence[Any]) -> Chain:
        if not getattr(self.index, "has_graph", False):
            return Chain()
        seeds = self.seeds(hits)
        if not seeds:
            return Chain(lookups=self.lookups)
        nodes, out = self.explore(seeds)
        links = self.best_chain(nodes, out, seeds)
        chain = Chain(self.concrete(links), explored=len(nodes))
        if chain.worker is not None:
            chain.reads = self.reads(chain.worker)
            chain.flows = self.flows(chain.links)
            chain.uses = self.uses(chain.links)
        chain.lookups = self.lookups
        return chain


def _trim(links: list[Link], score: Any) -> list[Link]:
    """Drop trailing steps that add little to the score (a chain ends at the worker)."""
    while len(links) > 1:
        shorter = links[:-1]
        if (
            score([step.definition for step in links]) - score([step.definition for step in shorter])
            >= MIN_GAIN
        ):
            break
        links = shorter
    return links


def code_hits(hits: Sequence[Any]) -> list[Any]:
    """The hits in code outside tests, examples and docs."""
    return [hit for hit in hits if hit.language not in _PROSE and not _TEST_PATH.search(hit.path)]


def related_hits(chain: Chain, hits: Sequence[Any], limit: int = RELATED_HITS) -> list[Any]:
    """The best retrieved code outside the chain's files, one hit per file: what an answer cites
    beside the chain (retrieval's direct evidence for what the graph could not connect)."""
    on_chain = set(chain.files)
    related: list[Any] = []
    for hit in code_hits(hits):
        if hit.path not in on_chain and all(hit.path != other.path for other in related):
            related.append(hit)
    return related[:limit]


def find_chain(index: Any, question: str, hits: Sequence[Any]) -> Chain:
    """The chain of code that answers `question`, starting from the retrieved `hits`."""
    return ChainFinder(index, question).find(hits)
