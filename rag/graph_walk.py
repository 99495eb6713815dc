"""Finding the chain of code that answers a question, by walking the code graph with a purpose.

Start from the definitions the retrieved spans (and the identifiers the question names) land in,
expand along resolved calls, callers and overrides, score every definition by how much of the
question it explains, and keep the best path: from the entry point the question implies (code
nothing else in the explored graph calls) down to the code that does the work. Used by offline
research (`rag.research.offline`) and by the offline answer (`rag.providers.offline`); needs only
the index's graph queries (`rag.store.RepoIndex`), so it is deterministic and cannot invent code.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from rag.roles import file_role, inline_test_modules, may_hold_inline_tests
from rag.terms import question_terms

SEED_HITS = 10
# The hits a chain is found from, whoever asks (chat's offline answer, offline deep research, the `trace`
# tool): one retrieval of this many hits, so that every mode names the same subject.
CHAIN_HITS = 30
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
# A call matched by name only (`params.items()` -> the one `items` method in the repository) is a guess:
# a chain pays for each one, so it follows a guess only where the guess explains more of the question.
GUESS_COST = 0.6
# A retrieved hit names the chain's step that spans at least this share of its lines as the subject.
PINPOINT = 0.5
# Of the first this many steps the best source hits pinpoint, one whose own name holds a question term
# (`Find` for "how does cobra find the subcommand...") is the subject before the first one.
NAMED_WINDOW = 3
# What a chain that must go through a definition (`best_chain(through=...)`) pays for missing it: more
# than any path scores, so every path holding it ranks first.
UNHELD_COST = 1000.0
# Scores are rounded to this many places: equal sums are equal whatever order their terms came in.
SCORE_PLACES = 6
_PROSE = frozenset({"markdown", "rst", "text", "json", "yaml", "toml", "html", "css"})
_IDENTIFIER = re.compile(r"`([^`]+)`|\b([A-Za-z_][A-Za-z0-9_]*(?:(?:\.|::)[A-Za-z_][A-Za-z0-9_]*)*)\b")
_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_ALNUM_RUN = re.compile(r"[A-Za-z0-9]+")  # a name's letters and digits (its humps are `_HUMP`)
# Docstrings and comments, then what an abstract method's body is left with.
_ABSTRACT_NOISE = re.compile(r'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|#[^\n]*|//[^\n]*|/\*[\s\S]*?\*/')
_ABSTRACT_LINE = re.compile(r":\s*(pass|\.\.\.)\s*(#.*)?$|;\s*$")
_ABSTRACT_BODY = re.compile(
    r"(pass|\.\.\.|raise NotImplementedError(\(.*\))?|throw new Error\(.*\);?|[{}\s])*"
)
# Tests inside a source file: a Rust inline test module (`rag.roles.inline_test_modules`), and a
# function marked `#[test]` / `#[tokio::test]` just above its definition.
_TEST_ATTRIBUTE = re.compile(r"^\s*#\[(?:[\w:]+::)?test\b")
_NOT_IMPLEMENTATION = frozenset({"test", "example"})
_EXCEPTION = re.compile(r"(Error|Exception|Warning)$")


@dataclass(frozen=True, slots=True)
class Link:
    """One step of a chain: `definition`, reached from the previous step by `how` at `path:line`."""

    definition: Any  # rag.store.CodeDefinition
    how: str = ""  # "call" | "override" | "member" (a method of the class before) | "" (the first step)
    line: int = 0
    exact: bool = True  # False for a call resolved by name only (`rag.store.graph`)

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


class CitedSpan(NamedTuple):
    """Lines an answer from a chain cites: a definition, or one line where a value is read or stored."""

    path: str
    start_line: int
    end_line: int
    symbol: str | None = None


@dataclass
class Chain:
    """The answer's skeleton: `links` from the entry point to the worker, plus what the worker reads."""

    links: list[Link] = field(default_factory=list)
    reads: list[tuple[str, str, int]] = field(default_factory=list)  # (name, path, line)
    flows: list[Flow] = field(default_factory=list)  # constructor arguments the question names
    uses: list[Link] = field(default_factory=list)  # code in other files the steps call or build
    explored: int = 0
    lookups: int = 0
    subject_step: int = -1  # the step the answer is about (`ChainFinder.subject_step`); -1: the last

    @property
    def worker(self) -> Any | None:
        return self.links[-1].definition if self.links else None

    @property
    def subject(self) -> Any | None:
        """What the answer names as doing the work: the step retrieval ranked first (the worker when
        retrieval ranked no step)."""
        return self.links[self.subject_step].definition if self.links else None

    @property
    def entry(self) -> Any | None:
        return self.links[0].definition if len(self.links) > 1 else None

    @property
    def files(self) -> list[str]:
        return list(dict.fromkeys(link.definition.path for link in [*self.links, *self.uses]))

    def cited(self) -> list[CitedSpan]:
        """Every span an answer explaining the chain cites (`rag.providers.offline.explained_answer`),
        in order: the steps, the code they use, the subject's reads, and where each constructor
        argument is stored and read. Chat, deep research and the `trace` tool send these as sources
        and check the answer's citations against them, so the graph's lines are never flagged."""
        spans = [
            CitedSpan(d.path, d.start_line, d.end_line, d.qualname)
            for d in (link.definition for link in [*self.links, *self.uses])
        ]
        spans += [CitedSpan(path, line, line) for _, path, line in self.reads]
        for flow in self.flows:
            spans.append(CitedSpan(flow.path, flow.line, flow.line, flow.constructor))
            spans += [CitedSpan(path, line, line, who) for who, path, line in flow.reads]
        return list(dict.fromkeys(spans))


def stem(word: str) -> str:
    """A crude English stem, so `matching`, `matches` and `match` meet (`directories` -> `directory`),
    and so do `parse`, `parsed` and `parses` (a final e goes too: `validate` meets `validated`)."""
    if word.endswith("ies") and len(word) > 5:
        return word[:-3] + "y"
    for suffix in ("ing", "es", "ed", "s", "e"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def _words(text: str) -> set[str]:
    """The stemmed words of a name or text: snake_case and camelCase parts, and each two neighbouring
    camelCase parts joined, as a question writes a compound split at its capital (`MultiPartParser`:
    multipart; `WebSocket`: websocket)."""
    words = {part.lower() for part in _SPLIT.split(text) if len(part) > 2}
    for name in _ALNUM_RUN.findall(text):
        # Each run apart, then its humps: one pattern for a run holding a hump rescanned the rest of a
        # run without one from each of its starts (59 s on 100,000 letters).
        humps = [hump.lower() for hump in _HUMP.split(name)]
        words.update(a + b for a, b in zip(humps, humps[1:], strict=False))
    return {stem(word) for word in words}


def named_identifiers(question: str) -> list[str]:
    """Identifiers the question names in code form: `quoted`, snake_case, CamelCase, dotted or call().
    A bare all-capitals word is an acronym of the sentence ("build a URL", "the RAG prompt"), not a
    name: quoted (`URL`) it is one."""
    found = []
    for match in _IDENTIFIER.finditer(question):
        text = (match.group(1) or match.group(2) or "").strip().rstrip("()")
        looks_like_code = (
            bool(match.group(1))
            or "_" in text
            or "." in text
            or "::" in text
            or (re.search(r"[a-z][A-Z]", text) is not None)
            or (text[:1].isupper() and text[1:].lower() != text[1:] and len(text) > 2 and not text.isupper())
        )
        if looks_like_code and re.fullmatch(r"[\w.:]+", text):
            found.append(text)
    return list(dict.fromkeys(found))


class ChainFinder:
    """One question over one index: seeds, a bounded exploration, the best chain."""

    def __init__(self, index: Any, question: str) -> None:
        self.index = index
        self.question = question
        # "file" is a stopword for excerpts, but often the subject here (static files, file responses);
        # stemmed like every term, as `_words` stems names ("files" meets `_encode_files`).
        # Sorted: a set's order changes with PYTHONHASHSEED, and so would the scores' float sums.
        self.terms = tuple(
            sorted(
                {stem(term) for term in question_terms(question)}
                | {stem(w) for w in re.findall(r"[a-z]+", question.lower()) if w in ("file", "files")}
            )
        )
        self.names = [name.replace("::", ".") for name in named_identifiers(question)]
        self.tails = {name.rsplit(".", 1)[-1] for name in self.names}
        self.said = frozenset(re.findall(r"[a-z_][a-z0-9_]*", question.lower()))
        self.wants_tests = "test" in question.lower()
        self.lookups = 0
        self._weights: dict[int, dict[str, float]] = {}
        self._test_lines: dict[str, _RustTests] = {}
        self._code_hits: list[Any] = []
        self._places: dict[int, tuple[int, int, str, int]] = {}

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

    def wanted(self, path: str, line: int) -> bool:
        """Tests and examples are not where things are done, unless the question is about tests:
        neither test files nor the tests inside a source file (`test_code`)."""
        return self.wants_tests or not self.test_code(path, line)

    def test_code(self, path: str, line: int) -> bool:
        """True for a line of test code: in a test or example file (`rag.roles`), in a Rust inline
        `#[cfg(test)]` module, or a definition marked `#[test]`."""
        if file_role(path) in _NOT_IMPLEMENTATION:
            return True
        if not may_hold_inline_tests(path):
            return False
        tests = self._test_lines.get(path)
        if tests is None:  # read and scan each Rust file once: the walk asks about every edge
            tests = self._test_lines[path] = _rust_tests(path, self.index.file_text(path) or "")
        return line in tests.marked or any(start <= line <= end for start, end in tests.modules)

    def exception(self, definition: Any) -> bool:
        """A class named like an exception, or deriving (through up to 3 bases) from one."""
        level = [definition] if definition.kind == "class" else []
        for _ in range(4):
            if any(_EXCEPTION.search(cls.name) for cls in level):
                return True
            self.lookups += len(level)
            level = [edge.target for cls in level for edge in self.index.callees(cls, ("inherit",))]
        return False

    def implementation(self, definition: Any) -> bool:
        """Code that does work: outside tests (whatever the question) and not an exception class."""
        return not self.test_code(definition.path, definition.start_line) and not self.exception(definition)

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
        return _total([*self.term_weights(definition).values(), self.bonus(definition)])

    def place(self, definition: Any) -> tuple[int, int, str, int]:
        """Where retrieval puts a definition, to break ties between equal scores: the rank of the first
        code hit holding it (the hit's own symbol first: its best-ranked chunk), then path and line."""
        cached = self._places.get(definition.id)
        if cached is None:
            rank, named = next(
                (
                    (rank, int(not _named_by(hit.symbol, definition)))
                    for rank, hit in enumerate(self._code_hits)
                    if hit.path == definition.path and _overlap(definition, hit) > 0
                ),
                (len(self._code_hits), 1),
            )
            cached = self._places[definition.id] = (rank, named, definition.path, definition.start_line)
        return cached

    def order(self, links: Sequence[Link]) -> tuple[tuple[int, int, str, int], ...]:
        """A chain's place among chains of equal score: its steps' `place`s, first step first."""
        return tuple(self.place(link.definition) for link in links)

    # seeds and exploration ------------------------------------------------------------------------

    def seeds(self, hits: Sequence[Any]) -> dict[int, tuple[Any, float]]:
        """Definitions the best hits sit in (weighted by rank) and the ones the question names."""
        seeds: dict[int, tuple[Any, float]] = {}
        code_hits = [
            hit
            for hit in hits
            if hit.language not in _PROSE
            and self.wanted(hit.path, hit.start_line)
            and (self.wants_tests or not self.named_test(hit))
        ][:SEED_HITS]
        self._code_hits = code_hits
        for rank, hit in enumerate(code_hits):
            self.lookups += 1
            inside = [
                d
                for d in self.index.definitions_in(hit.path)
                if d.start_line <= hit.end_line
                and d.end_line >= hit.start_line
                and d.kind != "class"
                and self.wanted(d.path, d.start_line)
            ]
            inside = sorted(inside, key=self.relevance, reverse=True)[:3]
            if not inside:
                enclosing = self.index.definition_at(hit.path, hit.start_line)
                wanted = enclosing is not None and self.wanted(enclosing.path, enclosing.start_line)
                inside = [enclosing] if wanted else []
            for definition in inside:
                bonus = 2.0 / (1 + rank)
                seeds.setdefault(definition.id, (definition, bonus))
        for name in self.names:
            self.lookups += 1
            for definition in self.index.definition(name)[:4]:
                if not self.wanted(definition.path, definition.start_line):
                    continue
                if definition.kind == "attribute":  # a stored constructor argument: where it is read
                    for edge in self.index.callers(definition, ("read",))[:4]:
                        if edge.source is not None and self.wanted(edge.source.path, edge.source.start_line):
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
            if (e.target.kind != "class" or e.exact) and self.wanted(e.target.path, e.target.start_line)
        ]
        callees = sorted(callees, key=lambda e: -(self.relevance(e.target) - (0 if e.exact else 0.5)))[
            :MAX_FANOUT
        ]
        pairs += [(node, Link(edge.target, "call", edge.line, edge.exact)) for edge in callees]
        callers = [
            e
            for e in self.index.callers(node)
            if e.source is not None and self.wanted(e.source.path, e.source.start_line)
        ]
        callers = sorted(callers, key=lambda e: -(self.relevance(e.source) - (0 if e.exact else 0.5)))[
            :MAX_FANOUT
        ]
        pairs += [(edge.source, Link(node, "call", edge.line, edge.exact)) for edge in callers]
        if node.kind == "method" and node.parent:
            for parent in self.index.definition(node.parent)[:2]:
                for sub in self.index.subclasses(parent)[:MAX_FANOUT]:
                    if not self.wanted(sub.path, sub.start_line):
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
        return _total([*covered.values(), extra, entry, FILE_BONUS * (files - 1), -STEP_COST * len(path)])

    def best_chain(
        self,
        nodes: dict[int, Any],
        out: dict[int, list[Link]],
        seeds: dict[int, tuple[Any, float]],
        through: int | None = None,
    ) -> list[Link]:
        """The best-scoring path through the explored graph (`path_score`), by beam search; with
        `through`, the best of the paths holding that definition."""
        called = {link.definition.id for links in out.values() for link in links if link.how == "call"}

        def score(links: Sequence[Link]) -> float:
            guesses = sum(not link.exact for link in links)
            held = through is None or any(link.definition.id == through for link in links)
            return _total(
                [
                    self.path_score([link.definition for link in links], seeds, called),
                    -GUESS_COST * guesses,
                    0.0 if held else -UNHELD_COST,
                ]
            )

        def rank(item: tuple[float, list[Link]]) -> tuple[float, tuple[tuple[int, int, str, int], ...]]:
            return -item[0], self.order(item[1])  # the best score; of equals, retrieval's `order`

        beam: list[tuple[float, list[Link]]] = sorted(
            ((score([Link(node)]), [Link(node)]) for node in nodes.values()), key=rank
        )
        best = beam[0] if beam else (float("-inf"), [])
        for _ in range(MAX_CHAIN - 1):
            grown: list[tuple[float, list[Link]]] = []
            for _, links in beam:
                seen = {link.definition.id for link in links}
                for link in out.get(links[-1].definition.id, []):
                    if link.definition.id in seen:
                        continue
                    path = [*links, link]
                    grown.append((score(path), path))
            if not grown:
                break
            beam = sorted(grown, key=rank)[:BEAM]
            if beam[0][0] > best[0]:
                best = beam[0]
        return _trim(best[1], score)

    def direct(
        self, links: list[Link], step: int, nodes: dict[int, Any], out: dict[int, list[Link]]
    ) -> tuple[list[Link], int]:
        """The way to the subject takes the direct call, not a detour through another file: a step
        before the subject, in a file other than the steps around it, goes when the step before it
        calls the step after it itself (`ExecuteC` -> `initCompleteCmd` (completions.go) -> `Find`
        becomes `ExecuteC` -> `Find`: `ExecuteC` calls `Find` to run the command, `initCompleteCmd`
        only to check for a completion request). A first step gives way, the same way, to an explored
        caller of it that calls the next step itself from the next step's file. Returns the chain
        and its subject's step."""
        steps = list(links)
        number = 0
        while number < step:
            here, after = steps[number].definition, steps[number + 1]
            if after.how != "call" or here.path == after.definition.path or self.bonus(here) >= 3.0:
                number += 1
                continue
            if number > 0:
                before = [steps[number - 1].definition]
            else:  # the explored callers of the first step, not on the chain already
                on_chain = {link.definition.id for link in steps}
                before = [
                    nodes[source]
                    for source, edges in out.items()
                    if source in nodes and source not in on_chain and _call(edges, here.id) is not None
                ]
            direct = [
                (caller, shortcut)
                for caller in before
                if caller.path == after.definition.path
                for shortcut in [_call(out.get(caller.id, []), after.definition.id)]
                if shortcut is not None
            ]
            if not direct:
                number += 1
                continue
            caller, shortcut = max(direct, key=lambda item: self.relevance(item[0]))
            if number > 0:
                steps[number : number + 2] = [shortcut]
                step -= 1
                number -= 1
            else:  # the new first step is in the next step's file: the loop moves on
                steps[0:2] = [Link(caller), shortcut]
        return steps, step

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
                if _words(attribute.name).intersection(self.terms):
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
            if self.wanted(sub.path, sub.start_line)
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
                if not edge.exact or target.path in on_chain or not self.implementation(target):
                    continue
                weight = _total(self.term_weights(target).values())
                if weight >= USE_THRESHOLD and target.id not in found:
                    found[target.id] = (weight, Link(target, "uses", edge.line))
        ranked = sorted(found.values(), key=lambda item: -item[0])
        chosen: list[Link] = []
        for _, link in ranked:
            if link.definition.path not in {c.definition.path for c in chosen}:
                chosen.append(link)
        return chosen[:MAX_USES]

    def subject_step(self, links: Sequence[Link], hits: Sequence[Any]) -> int | None:
        """The step the answer names as doing the work: the one the best-ranked retrieved source code
        pinpoints (retrieval ranks better than the walk's scores): the step the hit's symbol names
        (a merged span is named after its best-ranked chunk), else a step holding at least `PINPOINT`
        of the hit's lines (a hit on a whole small file or class says little about which of its
        definitions), the deepest of equals; an abstract step gives way to the override after it.
        Of the first `NAMED_WINDOW` steps so pinpointed, the first whose own name holds a question
        term comes first (`Find` for "find the subcommand", though a better hit pinpoints `legacyArgs`).
        The entry point of a longer chain usually only reaches the work (`main()`), so it is left out,
        unless the hits pinpoint it before any other step and it explains more of the question than
        the step chosen without it (`SessionMiddleware.__call__` loads the session, then calls on to
        the accessor `HTTPConnection.session`); an entry the question says by name ("where does main
        start ...") is where the question starts, never the subject. When the hits pinpoint the entry
        and no later step, those steps are the walk's guess: the entry is the subject when it explains
        more of the question than the chain's last step, by its name and first lines and by all of its
        lines (a handler building the prompt itself, calling on to a class and a formatter). A step the
        question names (`Router::route`) comes before all of them; None when no hit pinpoints a step."""
        named = [number for number, link in enumerate(links) if self.bonus(link.definition) >= 3.0]
        if named:
            return named[-1]
        step = self._pinpointed(links, hits, entry=False)
        entry = links[0].definition if len(links) > 1 else None
        if entry is None or self.says(entry.name) or self._pinpointed(links, hits, entry=True) != 0:
            return step
        if step is not None:
            return 0 if self.relevance(entry) > self.relevance(links[step].definition) else step
        last = links[-1].definition
        held = len(self.words_held(entry)) > len(self.words_held(last))
        return 0 if held and self.relevance(entry) > self.relevance(last) else None

    def says(self, name: str) -> bool:
        """True when the question says `name` as a word of its own ("Where does main start ...")."""
        return name.lower() in self.said

    def _pinpointed(self, links: Sequence[Link], hits: Sequence[Any], entry: bool) -> int | None:
        pinpointed: list[int] = []
        for hit in self.source_hits(hits):
            step = self._pinpointed_step(links, hit, entry)
            if step is not None and step not in pinpointed:
                pinpointed.append(step)
                if len(pinpointed) == NAMED_WINDOW:
                    break
        termed = [step for step in pinpointed if _words(links[step].definition.name).intersection(self.terms)]
        return next(iter(termed or pinpointed), None)

    def _pinpointed_step(self, links: Sequence[Link], hit: Any, entry: bool) -> int | None:
        inside = [
            number
            for number, link in enumerate(links)
            if (number > 0 or len(links) == 1 or entry)
            and link.definition.path == hit.path
            and link.definition.start_line <= hit.end_line
            and link.definition.end_line >= hit.start_line
            and self.implementation(link.definition)
        ]
        named = [number for number in inside if links[number].definition.qualname == hit.symbol]
        inside = named or [
            number
            for number in inside
            if _overlap(links[number].definition, hit) >= PINPOINT * (hit.end_line - hit.start_line + 1)
        ]
        if not inside:
            return None
        step = max(reversed(inside), key=lambda number: _overlap(links[number].definition, hit))
        while step + 1 < len(links) and links[step + 1].how == "override":
            step += 1
        if named and self._caller_says_more(links, step, hit, entry):
            return step - 1
        return step

    def _caller_says_more(self, links: Sequence[Link], step: int, hit: Any, entry: bool) -> bool:
        """A merged hit is named after its best chunk, often a small helper whose name matches a word of
        the question (`postRun` for "pre-run and post-run hooks"): the step calling it from inside the
        same hit is what the hit is about when it holds more of the question's words (`execute`, which
        runs the pre-run, run and post-run hooks in turn)."""
        if step == 0 or links[step].how != "call" or (step == 1 and not entry):
            return False
        caller = links[step - 1].definition
        return (
            caller.path == hit.path
            and caller.start_line <= hit.end_line
            and caller.end_line >= hit.start_line
            and self.implementation(caller)
            and len(self.words_held(caller)) > len(self.words_held(links[step].definition))
        )

    def words_held(self, definition: Any) -> set[str]:
        """The question's terms a definition's name or any of its lines hold."""
        lines = (self.index.file_text(definition.path) or "").splitlines()
        text = " ".join(lines[definition.start_line - 1 : definition.end_line])
        return (_words(definition.name) | _words(text)).intersection(self.terms)

    def source_hits(self, hits: Sequence[Any]) -> list[Any]:
        """The hits in source code (not docs, tests, examples, nor a source file's inline tests)."""
        return [
            hit
            for hit in hits
            if hit.language not in _PROSE
            and file_role(hit.path) == "source"
            and not self.test_code(hit.path, hit.start_line)
            and not self.named_test(hit)
        ]

    def named_test(self, hit: Any) -> bool:
        """True for a hit named after test code: its best chunk (its symbol) is a test, though the hit
        starts in the code above (a Rust source file's `#[cfg(test)]` module merged with the function
        before it, named `tests.extracting_on_handler_in_nested_router`). Its ranking says how well the
        test matches the question, not the code: it seeds no chain and pinpoints no subject."""
        named = [
            d
            for d in self.index.definitions_in(hit.path)
            if hit.symbol
            and (d.qualname == hit.symbol or hit.symbol.endswith(f".{d.qualname}"))
            and _overlap(d, hit) > 0
        ]
        return bool(named) and all(self.test_code(d.path, d.start_line) for d in named)

    def large(self, hit: Any) -> bool:
        """A hit on a whole class or file: no function it holds spans `PINPOINT` of it, and its symbol
        (its best-ranked chunk) names none of them."""
        lines = hit.end_line - hit.start_line + 1
        return not any(
            d.kind not in ("class", "attribute")
            and (d.qualname == hit.symbol or _overlap(d, hit) >= PINPOINT * lines)
            for d in self.index.definitions_in(hit.path)
            if d.start_line <= hit.end_line and d.end_line >= hit.start_line
        )

    def coverage(self, definition: Any) -> float:
        """How many of the question's terms a definition's own name (2 each) or its text (1) holds:
        all of its lines, docstring and comments included, not the class around it."""
        own = _words(definition.name)
        lines = (self.index.file_text(definition.path) or "").splitlines()
        text = _words(" ".join(lines[definition.start_line - 1 : definition.end_line]))
        return sum(2.0 if term in own else 1.0 if term in text else 0.0 for term in self.terms)

    def focus(self, hit: Any) -> Any | None:
        """The code a class- or file-sized hit is about: of the functions it holds (not tests,
        exceptions or abstract stubs), the one whose name and text hold most of the question's
        terms (`coverage`); the first of equals; None when none holds one."""
        self.lookups += 1
        held = [
            d
            for d in self.index.definitions_in(hit.path)
            if d.kind not in ("class", "attribute")
            and 2 * _overlap(d, hit) >= d.end_line - d.start_line + 1
            and self.wanted(d.path, d.start_line)
            and self.implementation(d)
            and not self.abstract(d)
        ]
        scored = [(self.coverage(d), d) for d in held]
        best = max(scored, key=lambda item: item[0], default=(0.0, None))
        return best[1] if best[0] > 0 else None

    def through_focus(
        self,
        links: list[Link],
        hits: Sequence[Any],
        nodes: dict[int, Any],
        out: dict[int, list[Link]],
        seeds: dict[int, tuple[Any, float]],
    ) -> tuple[list[Link], int]:
        """When no hit pinpoints a step and retrieval's best source hit is class- or file-sized, it still
        says where to look: its `focus` is the subject, on the best chain holding it, unless the chain's
        last step holds as many of the question's terms. Otherwise the chain as it was, its last step."""
        best = next(iter(self.source_hits(hits)), None)
        anchor = self.focus(best) if best is not None and self.large(best) else None
        if anchor is None or (links and self.coverage(links[-1].definition) >= self.coverage(anchor)):
            return links, len(links) - 1
        on_chain = [n for n, link in enumerate(links) if link.definition.id == anchor.id]
        if on_chain:
            return links, on_chain[-1]
        rerouted = self.rerouted(anchor, nodes, out, seeds)
        step = next(n for n, link in enumerate(rerouted) if link.definition.id == anchor.id)
        return rerouted, step

    def through_best_hit(
        self,
        links: list[Link],
        hits: Sequence[Any],
        nodes: dict[int, Any],
        out: dict[int, list[Link]],
        seeds: dict[int, tuple[Any, float]],
    ) -> list[Link]:
        """The chain goes through the function retrieval's best source hit pinpoints (named by its
        symbol, or spanning `PINPOINT` of it): a walk that covers more of the question's words across
        other steps (`RichHandler.emit` -> `Traceback.from_exception` for "How does rich install its
        traceback handler?") has left out the code the question is about (`install`)."""
        best = next(iter(self.source_hits(hits)), None)
        if best is None or any(
            self.bonus(link.definition) >= 3.0
            or (link.definition.path == best.path and _overlap(link.definition, best) > 0)
            for link in links
        ):
            return links  # the chain holds a step the question names, or code of the best hit
        lines = best.end_line - best.start_line + 1
        pinned = [
            d
            for d in self.index.definitions_in(best.path)
            if d.kind not in ("class", "attribute")
            and self.implementation(d)
            and (_named_by(best.symbol, d) or _overlap(d, best) >= PINPOINT * lines)
            and _overlap(d, best) > 0
        ]
        if not pinned:
            return links
        anchor = max(pinned, key=lambda d: (_named_by(best.symbol, d), _overlap(d, best)))
        return self.rerouted(anchor, nodes, out, seeds)

    def rerouted(
        self,
        anchor: Any,
        nodes: dict[int, Any],
        out: dict[int, list[Link]],
        seeds: dict[int, tuple[Any, float]],
    ) -> list[Link]:
        """The best concrete chain through `anchor` (if the walk never reached it, a chain of its own)."""
        nodes = {**nodes, anchor.id: anchor}
        return self.concrete(self.best_chain(nodes, out, seeds, through=anchor.id))

    def into_class(self, links: list[Link], step: int) -> tuple[list[Link], int]:
        """A class is built, not run: a subject that is a class gives way to its method holding most of
        the question's terms (`focus` over the class), a step of its own after it (`how="member"`)."""
        if not links or links[step].definition.kind != "class":
            return links, step
        method = self.focus(links[step].definition)
        if method is None:
            return links, step
        on_chain = [number for number, link in enumerate(links) if link.definition.id == method.id]
        if on_chain:
            return links, on_chain[-1]
        return [*links[: step + 1], Link(method, "member", method.start_line)], step + 1

    def find(self, hits: Sequence[Any]) -> Chain:
        if not getattr(self.index, "has_graph", False):
            return Chain()
        seeds = self.seeds(hits)
        if not seeds:
            return Chain(lookups=self.lookups)
        nodes, out = self.explore(seeds)
        links = self.concrete(self.best_chain(nodes, out, seeds))
        links = self.through_best_hit(links, hits, nodes, out, seeds)
        step = self.subject_step(links, hits)
        if step is None:
            links, step = self.through_focus(links, hits, nodes, out, seeds)
        links, step = self.into_class(links, step)
        links, step = self.direct(links, step, nodes, out)
        chain = Chain(links, explored=len(nodes), subject_step=step)
        if chain.subject is not None:
            chain.reads = self.reads(chain.subject)
            chain.flows = self.flows(chain.links)
            chain.uses = self.uses(chain.links)
        chain.lookups = self.lookups
        return chain


def _named_by(symbol: str | None, definition: Any) -> bool:
    """True when a hit's symbol names `definition`: its qualname, or its tail (`sendStatus` names
    `res.sendStatus`)."""
    qualname: str = definition.qualname
    return bool(symbol) and (qualname == symbol or qualname.endswith(f".{symbol}"))


def _total(values: Any) -> float:
    """The sum of scores, the same whatever their order (`math.fsum`, rounded to `SCORE_PLACES`)."""
    return round(math.fsum(values), SCORE_PLACES)


def _trim(links: list[Link], score: Any) -> list[Link]:
    """Drop trailing steps that add little to the score (a chain ends at the worker)."""
    while len(links) > 1 and score(links) - score(links[:-1]) < MIN_GAIN:
        links = links[:-1]
    return links


def _call(edges: Sequence[Link], target: int) -> Link | None:
    """The exact call among `edges` (one definition's explored links) to the definition `target`."""
    return next((e for e in edges if e.how == "call" and e.exact and e.definition.id == target), None)


def _overlap(definition: Any, hit: Any) -> int:
    """How many of `hit`'s lines `definition` spans."""
    return int(min(definition.end_line, hit.end_line) - max(definition.start_line, hit.start_line) + 1)


class _RustTests(NamedTuple):
    """Where a Rust file holds tests: its inline test modules, and the lines a definition marked
    `#[test]` can start on (1-3 lines below the attribute)."""

    modules: list[tuple[int, int]]
    marked: frozenset[int]


def _rust_tests(path: str, text: str) -> _RustTests:
    attributes = [number for number, line in enumerate(text.splitlines(), 1) if _TEST_ATTRIBUTE.match(line)]
    marked = frozenset(number + below for number in attributes for below in (1, 2, 3))
    return _RustTests(inline_test_modules(path, text), marked)


def code_hits(hits: Sequence[Any]) -> list[Any]:
    """The hits in code outside tests, examples (`rag.roles`, as the index records them) and docs."""
    return [
        hit for hit in hits if hit.language not in _PROSE and file_role(hit.path) not in _NOT_IMPLEMENTATION
    ]


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


def traced_chain(index: Any, retriever: Any, question: str, query: str = "") -> tuple[Chain, list[Any]]:
    """The chain for `question` and the hits it is found from: `CHAIN_HITS` hits `retriever` (a
    `rag.retrieval.Retriever`) finds for `query` (the question itself by default; chat searches a short
    follow-up with the question before it). The one rule chat, deep research and the `trace` tool share,
    so they name the same subject for the same question."""
    hits = list(retriever.search(query or question, k=CHAIN_HITS))
    return find_chain(index, question, hits), hits
