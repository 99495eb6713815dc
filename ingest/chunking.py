"""Splitting files into chunks that respect syntax and fit the embedder's window.

Code is parsed with tree-sitter. The file's top-level nodes partition its lines; a part that is
over the token budget is partitioned again by its own children (a class by its methods, a function
by its statements), and a part with no usable children falls back to line windows; a single line
that is still too long is cut by tokens. Small neighbouring parts are merged up to the budget, except
that two definitions never share a chunk: each function, method or class gets chunks of its own (a
search for what one small method does finds that method, under its own name, not a chunk of six
neighbours named after their class), and lines that define nothing (imports, statements, a class's
first line) join the definition beside them.
Markdown and reStructuredText are partitioned the same way by their heading levels, then by
paragraphs. Everything else is cut into line windows (`DEFAULT_OVERLAP_LINES`: none overlap; overlap only
repeated lines, 2.5-4.6% of the embedded tokens, for no retrieval gain). A window is filled to the
budget by exact counts, not by the characters-per-token estimate alone (which left windows of
indented code about a third short).
Test files (`rag.roles.file_role`) are cut into such windows too, whatever their language: a test is
rarely what a question wants, and one chunk per test function paid a header, its names and context
lines for every few lines of test (7-9 % of the embedded tokens on cobra and requests, retrieval
unchanged: docs/retrieval.md, "Packing chunks closer to the window").

Because parts always partition their parent's lines, every line of a file lands in a chunk (the
only exception: blank lines caught between two pieces of cut lines, which no chunk can take).
Sizes are planned from estimates and counted exactly only near the budget; every finished chunk is
counted exactly, header included, and re-split if it is over, so
`count_tokens(chunk.embed_text) <= max_tokens` always holds.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from tree_sitter import Node, Parser, Tree

from ingest.languages import grammar
from rag import tokens
from rag.errors import ErrorCode, RepoLensError
from rag.identifiers import name_words
from rag.roles import file_role
from rag.types import Chunk

# The version of what chunking makes of a file, stored in each index's record (`RepoRecord.chunker_version`).
# Bump it with ANY change to what a file's chunks are: chunk boundaries or sizes (the budget's use,
# packing, overlap, windows), symbols (labels), headers, context lines, anything else in the
# embedded text, or which chunks stay lexical-only (`ingest.lexical_only`). An update of an index
# built with another version then re-chunks every file, not only the changed ones (chunk texts that
# came out the same keep their vectors); without a bump, unchanged files keep their old chunks until
# `--reindex`. (The code graph has its own `rag.graph_types.GRAPH_VERSION`.)
# 1: the first recorded version (camelCase words in headers, no window overlap; records from before
#    have none, read as 0, and are re-chunked).
# 2: test files as line windows; windows filled to the budget by exact counts.
CHUNKER_VERSION = 2


def outdated_chunker(version: int, current: int = CHUNKER_VERSION) -> str | None:
    """`chunker version 1 -> 2` when an index built by chunker `version` is not chunked the way this
    RepoLens chunks (`current`: its next plain update re-chunks every file), None when it is."""
    if version == current:
        return None
    was = f"{version}" if version else "0 (not recorded)"
    return f"chunker version {was} -> {current}"


DEFAULT_OVERLAP_LINES = 0
MIN_MAX_TOKENS = 16
# A token is rarely longer than this many characters; it bounds how much of an over-long line is
# tried at once when cutting it (a wrong guess only makes a piece shorter, never over budget).
_MAX_CHARS_PER_TOKEN = 8
# Relative error allowed for an estimate from characters; within it, the text is counted.
_ESTIMATE_ERROR = 0.3
# Prior for a file's chars-per-token ratio, worth this many counted tokens.
_PRIOR_CHARS_PER_TOKEN = 3.0
_PRIOR_WEIGHT = 500

Symbol = tuple[str, ...]


class ChunkingError(RepoLensError):
    """A chunk cannot fit the budget at all (the header alone is too long for it)."""

    code = ErrorCode.CHUNK_BUDGET


class SourceText(Protocol):
    """What the chunker needs from a file (`ingest.reader.SourceFile` fits)."""

    @property
    def path(self) -> str: ...
    @property
    def language(self) -> str: ...
    @property
    def text(self) -> str: ...


@dataclass(frozen=True, slots=True)
class _Context:
    """A definition's rows (0-based: its comments' first, its own first, its last) and its header line
    ("signature — doc line")."""

    top: int
    first: int
    last: int
    text: str


@dataclass(frozen=True, slots=True)
class _Part:
    """A range of lines [start, end) (0-based) with its symbol, and how to partition it further.

    `defines`: the part is one definition (a function, method or class), which no other shares a chunk with.
    """

    start: int
    end: int
    symbol: Symbol
    split: Callable[[], list[_Part]] | None = None
    defines: bool = False


@dataclass(frozen=True, slots=True)
class _Span:
    """A planned chunk: lines [start, end) or, for a piece of a cut line, that piece's `text`.

    `tokens` is an estimate of the text's tokens, off by at most about `slack` (0 once counted);
    `leaves` are the parts a merged span was made of, to split it again if it turns out too long;
    `defines`: it holds a definition (so the next definition starts a span of its own).
    """

    start: int
    end: int
    symbol: Symbol
    tokens: float
    slack: float = 0.0
    text: str | None = None
    leaves: tuple[_Span, ...] = ()
    defines: bool = False


class Chunker:
    """Chunks files for one embedder: `max_tokens` is its window, `count_tokens` its tokenizer."""

    def __init__(
        self,
        max_tokens: int,
        count_tokens: Callable[[str], int] = tokens.count_tokens,
        overlap_lines: int = DEFAULT_OVERLAP_LINES,
    ) -> None:
        if max_tokens < MIN_MAX_TOKENS:
            raise ValueError(f"max_tokens must be at least {MIN_MAX_TOKENS}, got {max_tokens}")
        self.max_tokens = max_tokens
        self.count_tokens = count_tokens
        self.overlap_lines = max(0, overlap_lines)
        self._parsers: dict[str, Parser] = {}

    def chunk(self, file: SourceText, tree: Tree | None = None) -> list[Chunk]:
        """The chunks of `file` in line order; every line with content is in at least one.

        `tree` is the file already parsed with `parse` (the ingest pipeline shares it with the graph).
        """
        return _FileChunker(self, file, tree).run()

    def parse(self, file: SourceText) -> Tree | None:
        """The syntax tree of `file`, or None if its language has no grammar."""
        parser = self.parser(file.language)
        return parser.parse(file.text.encode("utf-8")) if parser is not None else None

    def parser(self, language: str) -> Parser | None:
        """One parser per language, reused for every file (they are cheap to keep, slow to build)."""
        if language not in self._parsers:
            loaded = grammar(language)
            if loaded is None:
                return None
            self._parsers[language] = Parser(loaded)
        return self._parsers[language]


class _FileChunker:
    """The state of chunking one file: its lines, their offsets and the header costs already paid for.

    Planning works on estimates (characters divided by the chars-per-token ratio observed so far in
    this file, so a file always chunks the same way whatever came before it) and counts exactly only
    when an estimate is close to the budget; every finished chunk is counted exactly once.
    """

    def __init__(self, chunker: Chunker, file: SourceText, tree: Tree | None = None) -> None:
        self.chunker = chunker
        self.tree = tree
        self.path = file.path
        self.language = file.language
        self.text = file.text
        lines = file.text.split("\n")
        if lines and lines[-1] == "" and file.text.endswith("\n"):
            lines.pop()
        self.lines = lines
        self._offsets = [0, *itertools.accumulate(len(line) + 1 for line in lines)]
        self.separator = " > " if file.language in _HEADING_PARSERS else "."
        self._header_tokens: dict[Symbol, int] = {}
        # symbol -> (first row, last row, "signature — doc line") of each of its definitions, filled by
        # the tree splitter: a getter and its setter share a name, so a piece takes the one it is in.
        self.contexts: dict[Symbol, list[_Context]] = {}
        # Symbols of functions (not classes or modules), filled by the tree splitter: a function's own
        # lines are its body, so a piece of it that also holds a nested definition keeps its name.
        self.functions: set[Symbol] = set()
        self._counted: dict[tuple[int, int, Symbol], int] = {}
        self._observed_chars = _PRIOR_CHARS_PER_TOKEN * _PRIOR_WEIGHT
        self._observed_tokens = float(_PRIOR_WEIGHT)
        digits = str(max(len(lines), 1))
        self._header_template = f"# {self.path}:{digits}-{digits}"

    def run(self) -> list[Chunk]:
        if not self.text.strip():
            return []
        parts = self._root_parts()
        whole = self._fits(
            self._measure(0, len(self.lines), _merged_symbol([part.symbol for part in parts], self.functions))
        )
        spans = [whole] if whole is not None else self._fold_blank_spans(self._arrange(parts))
        emitted = [chunk for span in spans for chunk in self._emit(span)]
        return self._absorb_blank_chunks(emitted)

    def _absorb_blank_chunks(self, emitted: list[Chunk]) -> list[Chunk]:
        """Blank lines a re-split left on their own join the chunk before (or after) them, if it fits."""
        chunks: list[Chunk] = []
        stray: Chunk | None = None
        for chunk in emitted:
            if chunk.text.strip():
                if stray is not None and chunk.start_line == stray.end_line + 1:
                    chunk = self._widened(chunk, stray.start_line, chunk.end_line) or chunk
                chunks.append(chunk)
                stray = None
                continue
            widened = None
            if chunks and chunks[-1].end_line + 1 >= chunk.start_line:
                widened = self._widened(
                    chunks[-1], chunks[-1].start_line, max(chunks[-1].end_line, chunk.end_line)
                )
            if widened is not None:
                chunks[-1] = widened
            else:
                stray = chunk
        return chunks

    def _widened(self, chunk: Chunk, start: int, end: int) -> Chunk | None:
        """`chunk` over lines start..end (1-based), if it is made of whole lines and still fits."""
        if chunk.text != "\n".join(self.lines[chunk.start_line - 1 : chunk.end_line]):
            return None
        text = "\n".join(self.lines[start - 1 : end])
        widened = replace(
            chunk, start_line=start, end_line=end, text=text, context=self._context(chunk, start)
        )
        return widened if self._count(widened.embed_text) <= self.chunker.max_tokens else None

    def _fold_blank_spans(self, spans: list[_Span]) -> list[_Span]:
        """Blank lines that would make a chunk of their own join a neighbouring chunk instead."""
        folded: list[_Span] = []
        waiting: _Span | None = None
        for span in spans:
            previous = folded[-1] if folded else None
            if span.text is None and not any(line.strip() for line in self.lines[span.start : span.end]):
                if previous is not None and previous.text is None and previous.end >= span.start:
                    folded[-1] = replace(previous, end=max(previous.end, span.end))
                else:
                    waiting = span
                continue
            if waiting is not None and span.text is None and waiting.end >= span.start:
                span = replace(span, start=min(waiting.start, span.start))
            elif waiting is not None:
                folded.append(waiting)
            waiting = None
            folded.append(span)
        if waiting is not None:
            folded.append(waiting)
        return folded

    # planning -----------------------------------------------------------------------------------

    def _root_parts(self) -> list[_Part]:
        if file_role(self.path, self.text) == "test":
            return [_Part(0, len(self.lines), ())]
        tree = self.tree or self.chunker.parse(self)
        if tree is not None:
            return _TreeSplitter(self, _RULES.get(self.language, _Rules())).root_parts(tree.root_node)
        heading_parser = _HEADING_PARSERS.get(self.language)
        if heading_parser is not None:
            splitter = _DocumentSplitter(self.lines, heading_parser(self.lines))
            return splitter.parts(0, len(self.lines), (), False)
        return [_Part(0, len(self.lines), ())]

    def _arrange(self, parts: Sequence[_Part]) -> list[_Span]:
        """Spans for consecutive parts: small ones merged up to the budget, big ones split."""
        spans: list[_Span] = []
        group: _Span | None = None
        for part in parts:
            leaf = self._fits(self._measure(part.start, part.end, part.symbol))
            if leaf is not None and part.defines:
                leaf = replace(leaf, defines=True)
            if leaf is None:
                pieces = self._split(part)
                if group is not None and not group.defines and pieces:
                    pieces[0], group = self._joined_head(group, pieces[0])
                if group is not None:
                    spans.append(group)
                group = None
                spans.extend(pieces)
                continue
            if group is not None and group.defines and leaf.defines:
                spans.append(group)
            elif group is not None:
                leaves = (*(group.leaves or (group,)), leaf)
                merged = _Span(
                    group.start,
                    leaf.end,
                    _merged_symbol([piece.symbol for piece in leaves], self.functions),
                    group.tokens + leaf.tokens + 1,
                    group.slack + leaf.slack,
                    leaves=leaves,
                    defines=group.defines or leaf.defines,
                )
                fitting = self._fits(merged)
                if fitting is not None:
                    group = fitting
                    continue
                spans.append(group)
            group = leaf
        if group is not None:
            spans.append(group)
        return spans

    def _joined_head(self, head: _Span, first: _Span) -> tuple[_Span, _Span | None]:
        """`head` (lines that define nothing, such as a class's own first line) joined to `first`,
        the first piece of the part after it that had to be split, if that fits; else both as they are.

        So `class Route(BaseRoute):` opens the chunk of its `__init__` instead of a one-line chunk.
        """
        if first.text is not None or first.start != head.end:
            return first, head
        joined = self._fits(
            self._measure(head.start, first.end, _merged_symbol((head.symbol, first.symbol), self.functions))
        )
        if joined is None:
            return first, head
        return replace(joined, leaves=(head, *(first.leaves or (first,))), defines=first.defines), None

    def _split(self, part: _Part) -> list[_Span]:
        children = part.split() if part.split is not None else []
        while len(children) == 1 and children[0].split is not None:
            children = children[0].split()
        if len(children) > 1:
            return self._arrange(children)
        return self._windows(part.start, part.end, part.symbol)

    def _windows(self, start: int, end: int, symbol: Symbol) -> list[_Span]:
        """Windows of whole lines, each as long as fits; a line too long on its own is cut by tokens."""
        budget = self._budget(symbol)
        ratio = self._chars_per_token()
        spans: list[_Span] = []
        first = start
        while first < end:
            if not self._fits(self._measure(first, first + 1, symbol)):
                spans.extend(self._cut_line(first, symbol))
                first += 1
                continue
            total = len(self.lines[first]) / ratio
            stop = first + 1
            while stop < end and total + 1 + len(self.lines[stop]) / ratio <= budget:
                total += 1 + len(self.lines[stop]) / ratio
                stop += 1
            stop = self._filled(first, stop, end, symbol)
            spans.append(self._measure(first, stop, symbol))
            if stop >= end:
                break
            overlap = min(self.chunker.overlap_lines, (stop - first) // 2)
            next_fits = self._fits(self._measure(stop, stop + 1, symbol))
            first = max(stop - overlap, first + 1) if next_fits else stop
        return spans

    def _filled(self, first: int, stop: int, end: int, symbol: Symbol) -> int:
        """The end of the longest window of whole lines from `first` (before `end`) that fits, found
        by exact counts from the estimated end `stop`: galloping out from it, then halving."""
        low, high = first + 1, end + 1  # low fits (its one line was checked), high does not
        if self._window_fits(first, stop, symbol):
            low, step = stop, 1
            while low < end:
                probe = min(end, low + step)
                if not self._window_fits(first, probe, symbol):
                    high = probe
                    break
                low, step = probe, step * 2
        else:
            high = stop
        while low < high - 1 and low < end:
            middle = (low + high) // 2
            if self._window_fits(first, middle, symbol):
                low = middle
            else:
                high = middle
        return low

    def _window_fits(self, first: int, stop: int, symbol: Symbol) -> bool:
        """Whether lines [first, stop) fit as one chunk; the count is kept for `_emit`."""
        key = (first, stop, symbol)
        if key not in self._counted:
            text = "\n".join(self.lines[first:stop])
            self._counted[key] = self._count(self._chunk(first, stop, symbol, text).embed_text)
        return self._counted[key] <= self.chunker.max_tokens

    def _cut_line(self, index: int, symbol: Symbol) -> list[_Span]:
        """Pieces of one over-long line, each checked exactly against the budget."""
        line = self.lines[index]
        spans: list[_Span] = []
        offset = 0
        while offset < len(line):
            size = self._longest_fitting_prefix(index, line[offset:], symbol)
            if size == 0 and symbol:
                symbol = ()
                continue
            if size == 0:
                raise ChunkingError(
                    f"cannot chunk {self.path}: its chunk header alone exceeds the embedder's "
                    f"{self.chunker.max_tokens}-token budget"
                )
            piece = line[offset : offset + size]
            spans.append(_Span(index, index + 1, symbol, 0, text=piece))
            offset += size
        return spans

    def _longest_fitting_prefix(self, index: int, rest: str, symbol: Symbol) -> int:
        def fits(size: int) -> bool:
            return self._exact_tokens(index, index + 1, symbol, rest[:size]) <= self.chunker.max_tokens

        high = min(len(rest), self.chunker.max_tokens * _MAX_CHARS_PER_TOKEN)
        if fits(high):
            return high
        low = 0
        while low < high - 1:
            middle = (low + high) // 2
            if fits(middle):
                low = middle
            else:
                high = middle
        return low

    # emitting -----------------------------------------------------------------------------------

    def _emit(self, span: _Span) -> list[Chunk]:
        """The span as chunks, re-split until each fits exactly (estimates can be low)."""
        text = span.text if span.text is not None else "\n".join(self.lines[span.start : span.end])
        chunk = self._chunk(span.start, span.end, span.symbol, text)
        key = (span.start, span.end, span.symbol)
        counted = self._counted.get(key) if span.text is None else None
        excess = (counted if counted is not None else self._count(chunk.embed_text)) - self.chunker.max_tokens
        if excess <= 0:
            return [chunk]
        if len(span.leaves) > 1:
            half = len(span.leaves) // 2
            pieces = [self._join(span.leaves[:half]), self._join(span.leaves[half:])]
        elif span.end - span.start == 1:
            pieces = self._cut_line(span.start, span.symbol)
        else:
            # The estimate was wrong; the count just made has corrected the ratio windows use.
            pieces = self._windows(span.start, span.end, span.symbol)
            if len(pieces) == 1 and pieces[0].text is None:
                middle = (span.start + span.end) // 2
                pieces = [
                    self._measure(span.start, middle, span.symbol),
                    self._measure(middle, span.end, span.symbol),
                ]
        return [piece for sub in pieces for piece in self._emit(sub)]

    def _join(self, leaves: Sequence[_Span]) -> _Span:
        symbol = _merged_symbol([leaf.symbol for leaf in leaves], self.functions)
        joined = self._measure(leaves[0].start, leaves[-1].end, symbol)
        return replace(joined, leaves=tuple(leaves))

    # counting -----------------------------------------------------------------------------------

    def _measure(self, start: int, end: int, symbol: Symbol) -> _Span:
        """A span for lines [start, end) with its estimated tokens (characters / observed ratio)."""
        chars = self._offsets[end] - self._offsets[start] - 1
        tokens = chars / self._chars_per_token()
        return _Span(start, end, symbol, tokens, tokens * _ESTIMATE_ERROR + 2)

    def _fits(self, span: _Span) -> _Span | None:
        """`span` if it fits (with exact tokens if they had to be counted), else None.

        Counts only when the estimate and its error cannot tell, and remembers the count so a span
        emitted as it is is never counted twice.
        """
        budget = self._budget(span.symbol)
        if span.tokens + span.slack <= budget:
            return span
        if span.tokens - span.slack > budget:
            return None
        key = (span.start, span.end, span.symbol)
        if key not in self._counted:
            text = "\n".join(self.lines[span.start : span.end])
            self._counted[key] = self._count(self._chunk(span.start, span.end, span.symbol, text).embed_text)
        counted = self._counted[key]
        if counted > self.chunker.max_tokens:
            return None
        return replace(span, tokens=counted - self._header(span.symbol), slack=0.0)

    def _count(self, text: str) -> int:
        count = self.chunker.count_tokens(text)
        self._observed_chars += len(text)
        self._observed_tokens += count
        return count

    def _chars_per_token(self) -> float:
        return self._observed_chars / self._observed_tokens

    def _header(self, symbol: Symbol) -> int:
        """Tokens of the longest header a chunk of `symbol` can get (widest line numbers, every
        context line) and its newline: budgets planned with it always leave room for the header."""
        header = self._header_tokens.get(symbol)
        if header is None:
            named = self._symbol_text(symbol)
            template = (
                f"{self._header_template} {named}{name_words(named)}" if named else self._header_template
            )
            context = self._context_lines(symbol, -1)
            if context:
                template += "\n" + "\n".join(context)
            header = self._header_tokens[symbol] = self.chunker.count_tokens(template + "\n")
        return header

    def _chunk(self, start: int, end: int, symbol: Symbol, text: str) -> Chunk:
        """The chunk of lines [start, end) (0-based) with its header context."""
        lines = self._context_lines(symbol, start)
        return Chunk(
            self.path,
            self.language,
            start + 1,
            end,
            self._symbol_text(symbol),
            text,
            "\n".join(lines) or None,
        )

    def _context(self, chunk: Chunk, start_line: int) -> str | None:
        # A name may hold the separator itself (`Minipass.[Symbol.iterator]`): look the text up first.
        known = (key for key in self.contexts if self._symbol_text(key) == chunk.symbol)
        symbol = next(known, None) or (tuple(chunk.symbol.split(self.separator)) if chunk.symbol else ())
        return "\n".join(self._context_lines(symbol, start_line - 1)) or None

    def _context_lines(self, symbol: Symbol, start: int) -> list[str]:
        """Signature and doc line of each enclosing definition of `symbol` that starts above row
        `start` (its text would not show them), outermost first, the innermost `_CONTEXT_DEPTH`;
        every context line (the longest of each name) when `start` is negative, for header budgets.

        A name can have several definitions. A function's own is the one holding `start` (a
        setter's piece shows the setter, not the getter above it); a type's is its first (the Rust
        struct and its doc line, not the `impl` block that holds the chunk)."""
        lines: list[str] = []
        for depth in range(1, len(symbol) + 1):
            found = self.contexts.get(symbol[:depth], [])
            if start < 0:
                chosen = sorted(found, key=lambda context: len(context.text))[-1:]
            elif depth == len(symbol) and symbol in self.functions:
                chosen = [context for context in found if context.top <= start <= context.last]
            else:
                chosen = found
            lines.extend(context.text for context in chosen[:1] if start < 0 or context.first < start)
        return lines[-_CONTEXT_DEPTH:]

    def _budget(self, symbol: Symbol) -> int:
        """Tokens left for the text of a chunk with this symbol."""
        return self.chunker.max_tokens - self._header(symbol)

    def _exact_tokens(self, start: int, end: int, symbol: Symbol, text: str) -> int:
        return self.chunker.count_tokens(self._chunk(start, end, symbol, text).embed_text)

    def _symbol_text(self, symbol: Symbol) -> str | None:
        return self.separator.join(symbol) if symbol else None


_LISTED_NAMES = 3
# Enclosing definitions named in a chunk's header, innermost first, and the characters kept of each.
_CONTEXT_DEPTH = 2
_CONTEXT_CHARS = 160
_DOCSTRING_QUOTES = ('"""', "'''", 'r"""')
_COMMENT_MARKS = re.compile(r"^\s*(?:///?|/\*\*?|\*|#|--|r?\"\"\"|''')\s?")


def _merged_symbol(symbols: Sequence[Symbol], functions: Collection[Symbol] = ()) -> Symbol:
    """The symbol of merged parts: the most specific name they share.

    Parts outside a definition's body (imports, a class's own header and fields) only give context,
    so they do not widen the symbol: `import x` + `def foo` is `foo`, the header of `class Client` +
    `Client.send` is `Client.send`. A function's own lines are its body, not a header: the first
    piece of a split `Inspect._render` that also holds its nested `sort_items` is `Inspect._render`
    (`functions` lists the function symbols). Two definitions give their common scope: `Client.send` +
    `Client.close` is `Client`. Definitions with no common scope are listed, so the header still names
    them for search: `foo` + `bar` is `foo, bar` (at most three names, then `…`).
    """
    distinct = list(dict.fromkeys(symbols))
    named = [
        s
        for s in distinct
        if s and (s in functions or not any(len(o) > len(s) and o[: len(s)] == s for o in distinct))
    ]
    if not named:
        return ()
    common = named[0]
    for symbol in named[1:]:
        size = 0
        while size < min(len(common), len(symbol)) and common[size] == symbol[size]:
            size += 1
        common = common[:size]
    if common or len(named) == 1:
        return common
    names = [symbol[-1] for symbol in named]
    listed = ", ".join(names[:_LISTED_NAMES]) + (", …" if len(names) > _LISTED_NAMES else "")
    return (listed,)


# code ---------------------------------------------------------------------------------------------

# Nodes that belong to the definition below them when nothing separates them.
_PREFIX_TYPES = frozenset(
    {
        "comment",
        "line_comment",
        "block_comment",
        "doc_comment",
        "decorator",
        "attribute_item",
        "attribute_list",
    }
)
_FUNCTION_VALUES = frozenset(
    {"arrow_function", "function_expression", "function", "generator_function", "class", "class_expression"}
)
_NAME_LEAVES = frozenset(
    {
        "identifier", "field_identifier", "qualified_identifier", "destructor_name", "operator_name",
        "type_identifier", "template_function", "scoped_identifier",
    }
)  # fmt: skip
_CLASS_VALUES = frozenset({"class", "class_expression"})
_GENERIC_TAIL = re.compile(r"[<\[(].*$", re.DOTALL)


def _clean_name(raw: str) -> Symbol:
    """`*Reader[T]` -> `Reader`, `Foo::bar` -> (`Foo`, `bar`), `std::vector<int>` -> (`std`, `vector`)."""
    name = _GENERIC_TAIL.sub("", raw).strip().lstrip("*&").strip()
    parts = [part for part in re.split(r"::|\.|\\", name) if part]
    return tuple(parts)


def _text(node: Node | None) -> str:
    return node.text.decode("utf-8", "replace") if node is not None and node.text is not None else ""


def _field_name(node: Node) -> Symbol:
    name = node.child_by_field_name("name")
    if name is not None and name.type == "computed_property_name":
        # `[Symbol.iterator]() {...}`, `[kConnect]() {...}`: one name, brackets kept (as in the code graph).
        return (" ".join(_text(name).split()),)
    return _clean_name(_text(name))


def _go_method_name(node: Node) -> Symbol:
    receiver = node.child_by_field_name("receiver")
    method = _field_name(node)
    for parameter in receiver.named_children if receiver is not None else []:
        receiver_type = _clean_name(_text(parameter.child_by_field_name("type")))
        if receiver_type:
            return receiver_type[-1:] + method
    return method


def _go_type_name(node: Node) -> Symbol:
    specs = [child for child in node.named_children if child.type == "type_spec"]
    return _field_name(specs[0]) if len(specs) == 1 else ()


def _declarator_name(node: Node) -> Symbol:
    """The name inside a C/C++ declarator chain (`*bar(int)` -> `bar`, `Foo::go() const` -> `Foo.go`)."""
    current = node.child_by_field_name("declarator")
    while current is not None and current.type not in _NAME_LEAVES:
        inner = current.child_by_field_name("declarator")
        current = inner if inner is not None else _last_named(current)
    return _clean_name(_text(current))


def _tagged_type_name(node: Node) -> Symbol:
    """`struct foo { ... }` is a definition; a bare `struct foo` reference is not."""
    return _field_name(node) if node.child_by_field_name("body") is not None else ()


def _rust_impl_name(node: Node) -> Symbol:
    return _clean_name(_text(node.child_by_field_name("type")))


def _variable_function_name(node: Node) -> Symbol:
    """`const foo = () => {...}` names a function; other declarations are plain statements."""
    declarators = [child for child in node.named_children if child.type == "variable_declarator"]
    if len(declarators) != 1:
        return ()
    value = declarators[0].child_by_field_name("value")
    if value is None or value.type not in _FUNCTION_VALUES:
        return ()
    return _field_name(declarators[0])


def _assigned_function_name(node: Node) -> Symbol:
    """`res.send = function send(body) {...}` or `exports.parse = (text) => {...}` names a function:
    its own name, else the last property it is assigned to."""
    right = node.child_by_field_name("right")
    if right is None or right.type not in _FUNCTION_VALUES:
        return ()
    own = right.child_by_field_name("name")
    if own is not None:
        return _clean_name(_text(own))
    left = node.child_by_field_name("left")
    target = left.child_by_field_name("property") if left is not None else None
    return _clean_name(_text(target if target is not None else left))


def _field_function_name(node: Node) -> Symbol:
    value = node.child_by_field_name("value")
    if value is None or value.type not in _FUNCTION_VALUES:
        return ()
    name = node.child_by_field_name("name") or node.child_by_field_name("property")
    return _clean_name(_text(name))


def _typedef_name(node: Node) -> Symbol:
    kind = node.child_by_field_name("type")
    has_body = kind is not None and kind.child_by_field_name("body") is not None
    return _clean_name(_text(node.child_by_field_name("declarator"))) if has_body else ()


NameRule = Callable[[Node], Symbol]


@dataclass(frozen=True)
class _Rules:
    """How one language names its definitions and which nodes merely wrap one."""

    names: dict[str, NameRule] | None = None
    wrappers: dict[str, Callable[[Node], Node | None]] | None = None

    def unwrap(self, node: Node) -> Node:
        wrappers = self.wrappers or {}
        while node.type in wrappers:
            inner = wrappers[node.type](node)
            if inner is None:
                break
            node = inner
        return node

    def symbol(self, node: Node) -> Symbol:
        """The name `node` defines (unwrapping decorators, exports, templates), or ()."""
        inner = self.unwrap(node)
        rule = (self.names or {}).get(inner.type)
        return rule(inner) if rule is not None else ()


def _named(*types: str, rule: NameRule = _field_name) -> dict[str, NameRule]:
    return dict.fromkeys(types, rule)


def _field(name: str) -> Callable[[Node], Node | None]:
    return lambda node: node.child_by_field_name(name)


def _last_named(node: Node) -> Node | None:
    return node.named_children[-1] if node.named_children else None


def _only_named(node: Node) -> Node | None:
    return node.named_children[0] if len(node.named_children) == 1 else None


_JS_NAMES = {
    **_named(
        "function_declaration", "generator_function_declaration", "class_declaration", "class",
        "abstract_class_declaration", "method_definition", "interface_declaration", "enum_declaration",
        "internal_module", "module", "function_signature", "abstract_method_signature",
    ),
    **_named("lexical_declaration", "variable_declaration", rule=_variable_function_name),
    **_named("public_field_definition", "field_definition", rule=_field_function_name),
    **_named("assignment_expression", rule=_assigned_function_name),
}  # fmt: skip
_JS_WRAPPERS: dict[str, Callable[[Node], Node | None]] = {
    "export_statement": lambda node: (
        node.child_by_field_name("declaration") or node.child_by_field_name("value")
    ),
    "expression_statement": _only_named,
    # `module.exports = class Cache {...}` is the class (a function assigned is named by
    # `_assigned_function_name`).
    "assignment_expression": lambda node: (
        right
        if (right := node.child_by_field_name("right")) is not None and right.type in _CLASS_VALUES
        else None
    ),
}
_C_NAMES = {
    **_named("function_definition", rule=_declarator_name),
    **_named(
        "struct_specifier", "union_specifier", "enum_specifier", "class_specifier", rule=_tagged_type_name
    ),
    **_named("type_definition", rule=_typedef_name),
}

_RULES: dict[str, _Rules] = {
    "python": _Rules(
        _named("function_definition", "class_definition"), {"decorated_definition": _field("definition")}
    ),
    "javascript": _Rules(_JS_NAMES, _JS_WRAPPERS),
    "typescript": _Rules(_JS_NAMES, _JS_WRAPPERS),
    "tsx": _Rules(_JS_NAMES, _JS_WRAPPERS),
    "go": _Rules(
        {
            **_named("function_declaration", "type_spec"),
            **_named("method_declaration", rule=_go_method_name),
            **_named("type_declaration", rule=_go_type_name),
        }
    ),
    "java": _Rules(
        _named(
            "class_declaration",
            "interface_declaration",
            "enum_declaration",
            "record_declaration",
            "annotation_type_declaration",
            "method_declaration",
            "constructor_declaration",
        )
    ),  # fmt: skip
    "rust": _Rules(
        {
            **_named(
                "function_item",
                "function_signature_item",
                "struct_item",
                "enum_item",
                "union_item",
                "trait_item",
                "mod_item",
                "macro_definition",
            ),
            **_named("impl_item", rule=_rust_impl_name),
        }
    ),  # fmt: skip
    "c": _Rules(_C_NAMES),
    "cpp": _Rules(_C_NAMES, {"template_declaration": _last_named}),
    "ruby": _Rules(_named("class", "module", "method", "singleton_method")),
    "php": _Rules(
        _named(
            "class_declaration",
            "interface_declaration",
            "trait_declaration",
            "enum_declaration",
            "function_definition",
            "method_declaration",
        )
    ),  # fmt: skip
    "csharp": _Rules(
        _named(
            "class_declaration",
            "struct_declaration",
            "interface_declaration",
            "enum_declaration",
            "record_declaration",
            "record_struct_declaration",
            "method_declaration",
            "constructor_declaration",
            "destructor_declaration",
            "property_declaration",
        )
    ),  # fmt: skip
}


_FUNCTION_WORDS = ("function", "method", "constructor", "destructor")


def _is_function(node: Node) -> bool:
    """Whether a definition (unwrapped) is a function or method, not a class, module or type: by its
    node type (`function_definition`, `method_declaration`, `function_item`, ...) or, for a JavaScript
    declaration, field or assignment, by the value it binds (`const f = () => {...}`)."""
    value: Node | None = node
    if node.type in {"lexical_declaration", "variable_declaration"}:
        declarators = [child for child in node.named_children if child.type == "variable_declarator"]
        value = declarators[0].child_by_field_name("value") if len(declarators) == 1 else None
    elif node.type == "assignment_expression":
        value = node.child_by_field_name("right")
    elif node.type in {"public_field_definition", "field_definition"}:
        value = node.child_by_field_name("value")
    if value is None or value.type in _CLASS_VALUES:
        return False
    return value.type in _FUNCTION_VALUES or any(word in value.type for word in _FUNCTION_WORDS)


def _last_row(node: Node) -> int:
    """The last line a node occupies (a node ending at column 0 ends on the line before)."""
    row = node.end_point.row
    return row - 1 if node.end_point.column == 0 and row > node.start_point.row else row


class _TreeSplitter:
    """Partitions line ranges by the syntax tree: definitions and statements become parts."""

    def __init__(self, file: _FileChunker, rules: _Rules) -> None:
        self.file = file
        self.rules = rules

    def root_parts(self, root: Node) -> list[_Part]:
        return self._parts(root.named_children, 0, len(self.file.lines), ())

    def node_parts(self, node: Node, start: int, end: int, scope: Symbol) -> list[_Part]:
        """The parts of a part owned by `node`: its children, inside the scope `node` defines."""
        inner = self.rules.unwrap(node)
        return self._parts(self._candidates(inner), start, end, scope + self.rules.symbol(inner))

    def _candidates(self, node: Node) -> list[Node]:
        """Children that can start a part; bodies (`{...}`, blocks) are looked through."""
        candidates: list[Node] = []
        named = node.named_children
        for child in named:
            multiline = _last_row(child) > child.start_point.row
            is_body = child.start_point.row == node.start_point.row or child == named[-1]
            if multiline and is_body and child.named_child_count and not self.rules.symbol(child):
                candidates.extend(self._candidates(child))
            else:
                candidates.append(child)
        return candidates

    def _parts(self, children: Sequence[Node], start: int, end: int, scope: Symbol) -> list[_Part]:
        groups: list[tuple[int, list[Node]]] = [(start, [])]
        for row, owner in self._starts(children):
            row = max(row, start)
            if row >= end:
                continue
            if row == groups[-1][0]:
                groups[-1][1].extend(owner)
            else:
                groups.append((row, owner))
        parts: list[_Part] = []
        for index, (row, owners) in enumerate(groups):
            stop = groups[index + 1][0] if index + 1 < len(groups) else end
            defined = [symbol for owner in owners if (symbol := self.rules.symbol(owner))]
            symbol = scope + defined[0] if len(defined) == 1 else scope
            if len(defined) == 1:
                self.file.contexts.setdefault(symbol, []).append(
                    self._context(self.rules.unwrap(owners[0]), row)
                )
            if len(defined) == 1 and _is_function(self.rules.unwrap(owners[0])):
                self.file.functions.add(symbol)
            split = (
                functools.partial(self.node_parts, owners[0], row, stop, scope) if len(owners) == 1 else None
            )
            parts.append(_Part(row, stop, symbol, split, len(defined) == 1))
        return parts

    def _context(self, node: Node, part_row: int) -> _Context:
        """The definition's rows, its signature line and first doc line, for chunk headers.

        The doc line is the comment right above the definition (decorators and attributes
        skipped) or, failing that, the first line of a docstring right below the signature.
        """
        lines = self.file.lines
        row = node.start_point.row
        last = _last_row(node)
        doc = next((text for text in (_comment_text(lines[r]) for r in range(part_row, row)) if text), None)
        if doc is None:
            below = [line.strip() for line in lines[_last_signature_row(lines, row, last) + 1 : last + 1][:3]]
            if below and below[0].startswith(_DOCSTRING_QUOTES):
                doc = next((text for text in map(_comment_text, below) if text), None)
        signature = " ".join(line.strip() for line in lines[row : _last_signature_row(lines, row, last) + 1])
        context = f"{signature} — {doc}" if doc else signature
        return _Context(min(part_row, row), row, last, context[:_CONTEXT_CHARS])

    @staticmethod
    def _starts(children: Sequence[Node]) -> list[tuple[int, list[Node]]]:
        """(first row, owning node) of each child.

        Comments and decorators join the node right below them; a comment at the end of a line stays
        with the code it follows.
        """
        starts: list[tuple[int, list[Node]]] = []
        pending: int | None = None
        pending_last = previous_last = -1
        for child in children:
            first, last = child.start_point.row, _last_row(child)
            trailing = first <= previous_last
            previous_last = max(previous_last, last)
            if child.type in _PREFIX_TYPES and trailing:
                continue
            if child.type in _PREFIX_TYPES:
                if pending is not None and first > pending_last + 1:
                    starts.append((pending, []))
                    pending = None
                if pending is None:
                    pending, pending_last = first, last
                else:
                    pending_last = max(pending_last, last)
                continue
            if pending is not None:
                if first <= pending_last + 1:
                    starts.append((pending, [child]))
                    pending = None
                    continue
                starts.append((pending, []))
                pending = None
            starts.append((first, [child]))
        if pending is not None:
            starts.append((pending, []))
        return starts


def _comment_text(line: str) -> str:
    """A comment or docstring line without its markers (`/// Foo` -> `Foo`); '' for other lines."""
    stripped = line.strip()
    if stripped.startswith(("@", "#[", "#!")) or not _COMMENT_MARKS.match(stripped):
        return ""
    text = _COMMENT_MARKS.sub("", stripped, count=1)
    for quote in _DOCSTRING_QUOTES:
        text = text.removesuffix(quote)
    return text.removesuffix("*/").strip()


def _last_signature_row(lines: Sequence[str], row: int, last: int) -> int:
    """The row where a definition's signature ends: the first ending in `:`, `{` or `=>` (else `row`)."""
    for current in range(row, min(last, row + 8) + 1):
        if lines[current].rstrip().endswith((":", "{", "=>")):
            return current
    return row


# documents ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Heading:
    row: int
    level: int
    title: str


_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t#]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_RST_ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1+\s*$")


def _fenced_rows(lines: Sequence[str]) -> list[bool]:
    """Which lines are inside (or open/close) a fenced code block or the YAML front matter."""
    inside: list[bool] = []
    fence: str | None = None
    if lines and lines[0].rstrip() == "---":
        closing = next((row for row in range(1, len(lines)) if lines[row].rstrip() in ("---", "...")), None)
        if closing is not None:
            inside = [True] * (closing + 1)
            lines = lines[closing + 1 :]
    for line in lines:
        match = _FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
            inside.append(True)
        elif fence is not None:
            inside.append(True)
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
                fence = None
        else:
            inside.append(False)
    return inside


def _markdown_headings(lines: Sequence[str]) -> tuple[list[_Heading], list[bool]]:
    fenced = _fenced_rows(lines)
    headings: list[_Heading] = []
    for row, line in enumerate(lines):
        if fenced[row]:
            continue
        atx = _ATX.match(line)
        if atx:
            headings.append(_Heading(row, len(atx.group(1)), (atx.group(2) or "").strip()))
            continue
        underline = _SETEXT.match(line)
        previous = lines[row - 1].strip() if row > 0 else ""
        if underline and previous and not fenced[row - 1] and not _ATX.match(lines[row - 1]):
            if headings and headings[-1].row == row - 1:
                continue
            level = 1 if underline.group(1)[0] == "=" else 2
            headings.append(_Heading(row - 1, level, previous))
    return headings, fenced


def _rst_headings(lines: Sequence[str]) -> tuple[list[_Heading], list[bool]]:
    """Titles underlined (and optionally overlined); levels follow the order styles first appear in."""
    styles: list[tuple[str, bool]] = []
    headings: list[_Heading] = []
    row = 0
    while row < len(lines) - 1:
        title, underline = lines[row], lines[row + 1]
        adornment = _RST_ADORNMENT.match(underline)
        if (
            title.strip()
            and not _RST_ADORNMENT.match(title)
            and adornment
            and len(underline.rstrip()) >= len(title.strip())
        ):
            overline = row > 0 and lines[row - 1].rstrip() == underline.rstrip()
            style = (adornment.group(1), overline)
            if style not in styles:
                styles.append(style)
            headings.append(_Heading(row - 1 if overline else row, styles.index(style) + 1, title.strip()))
            row += 2
            continue
        row += 1
    return headings, [False] * len(lines)


_HEADING_PARSERS: dict[str, Callable[[Sequence[str]], tuple[list[_Heading], list[bool]]]] = {
    "markdown": _markdown_headings,
    "rst": _rst_headings,
}


class _DocumentSplitter:
    """Partitions a document by its highest heading level inside a range, then by paragraphs."""

    def __init__(self, lines: Sequence[str], parsed: tuple[list[_Heading], list[bool]]) -> None:
        self.lines = lines
        self.headings, self.fenced = parsed

    def parts(self, start: int, end: int, path: Symbol, own_heading: bool) -> list[_Part]:
        first = start + 1 if own_heading else start
        inside = [heading for heading in self.headings if first <= heading.row < end]
        if not inside:
            return self._paragraphs(start, end, path)
        level = min(heading.level for heading in inside)
        tops = [heading for heading in inside if heading.level == level]
        parts: list[_Part] = []
        if tops[0].row > start:
            parts.append(
                _Part(
                    start,
                    tops[0].row,
                    path,
                    functools.partial(self.parts, start, tops[0].row, path, own_heading),
                )
            )
        for index, heading in enumerate(tops):
            stop = tops[index + 1].row if index + 1 < len(tops) else end
            section = (*path, heading.title) if heading.title else path
            parts.append(
                _Part(
                    heading.row,
                    stop,
                    section,
                    functools.partial(self.parts, heading.row, stop, section, True),
                )
            )
        return parts

    def _paragraphs(self, start: int, end: int, path: Symbol) -> list[_Part]:
        rows = [start] + [
            row
            for row in range(start + 1, end)
            if self.lines[row].strip() and not self.lines[row - 1].strip() and not self.fenced[row]
        ]
        return [_Part(row, rows[i + 1] if i + 1 < len(rows) else end, path) for i, row in enumerate(rows)]
