"""The research tools: read-only views of one indexed repository, safe to hand to a model.

Every tool reads the store (`RepoIndex.file_text`, `list_files`, `chunks_for_file`), never the
file system, so a model can only ever see what was indexed. Paths are normalised and anything
absolute, containing `..`, or not in the index is refused with a `ToolError` whose message is
returned to the model as the tool's result. Outputs are bounded in tokens and say when they
were truncated and how to narrow the call.
"""

from __future__ import annotations

import copy
import difflib
import functools
import itertools
import json
import posixpath
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import regex
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rag.errors import ErrorCode, RepoLensError
from rag.graph_walk import Chain, code_hits, related_hits, traced_chain
from rag.lexical import path_matches
from rag.plural import plural
from rag.tokens import count_tokens, truncate_to_tokens

if TYPE_CHECKING:
    from rag.retrieval import Retriever
    from rag.store import RepoIndex
    from rag.store.schema import CodeDefinition

MAX_PATTERN_LENGTH = 500
GREP_SECONDS = 2.0
MAX_READ_LINES = 200
MAX_LINE_CHARS = 240
MAX_DEFINITION_LINES = 300
MAX_DEFINITIONS = 20
MAX_WORD_LINES = 2_000
FLOW_READS_LISTED = 6
TRACE_BODY_LINES = 6


class ToolError(RepoLensError):
    """A refused or malformed tool call; its message goes back to the model, research goes on."""

    code = ErrorCode.TOOL_ERROR


@dataclass(frozen=True, slots=True)
class Evidence:
    """A span of a file a tool showed: what the conclusion may cite."""

    path: str
    start_line: int
    end_line: int
    symbol: str | None = None
    language: str = ""

    @property
    def ref(self) -> str:
        return f"{self.path}:{self.start_line}-{self.end_line}"


@dataclass(slots=True)
class ToolResult:
    tool: str
    args: dict[str, Any]
    output: str
    summary: str
    evidence: list[Evidence] = field(default_factory=list)
    is_error: bool = False

    @property
    def files(self) -> list[str]:
        return list(dict.fromkeys(item.path for item in self.evidence))


@dataclass(frozen=True, slots=True)
class Trace:
    """The code graph's chain for a question, the retrieved hits it started from, and the best
    retrieved code beside it (`RepoTools.trace_evidence` lists what an answer from it cites)."""

    chain: Chain
    hits: list[Any]
    beside: list[Evidence]  # the best retrieved code outside the chain's files


@dataclass(frozen=True, slots=True)
class Definition:
    name: str
    path: str
    start_line: int
    end_line: int
    symbol: str | None


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchArgs(_Args):
    query: str = Field(min_length=1, description="What to look for, in words or identifiers.")
    k: int = Field(8, ge=1, le=20, description="How many spans to return.")
    path_glob: str | None = Field(None, description="Only files matching this glob, e.g. 'src/**/*.py'.")
    language: str | None = Field(None, description="Only files of this language, e.g. 'python'.")


class GrepArgs(_Args):
    pattern: str = Field(min_length=1, max_length=MAX_PATTERN_LENGTH, description="A regular expression.")
    path_glob: str | None = Field(None, description="Only files matching this glob, e.g. '*.py'.")
    ignore_case: bool = Field(False, description="Match case-insensitively.")
    max_matches: int = Field(50, ge=1, le=200, description="Stop after this many matching lines.")


class GlobArgs(_Args):
    pattern: str = Field(
        min_length=1, description="A gitignore-style glob, e.g. 'src/**/*.ts' or '*client*'."
    )


class ListDirArgs(_Args):
    path: str = Field("", description="A directory relative to the repository root; '' is the root.")


class ReadFileArgs(_Args):
    path: str = Field(min_length=1, description="A file path relative to the repository root.")
    start_line: int = Field(1, ge=1, description="First line to read (1-based).")
    end_line: int | None = Field(
        None, ge=1, description=f"Last line (inclusive); at most {MAX_READ_LINES} lines."
    )


class FindSymbolArgs(_Args):
    name: str = Field(
        min_length=1, description="A function, class or method name, e.g. 'send' or 'Client.send'."
    )
    max_references: int = Field(30, ge=0, le=100, description="How many reference lines to list.")


class GraphArgs(_Args):
    name: str = Field(
        min_length=1,
        description="A function, method or class: 'send', 'Client.send' or 'pkg/client.py:Client.send'.",
    )
    max_results: int = Field(20, ge=1, le=60, description="How many edges or definitions to list.")


class TraceArgs(_Args):
    question: str = Field(
        min_length=1, description="The question or a sub-question, in words and the identifiers it names."
    )


_ARG_MODELS: dict[str, type[_Args]] = {
    "search": SearchArgs,
    "grep": GrepArgs,
    "glob": GlobArgs,
    "list_dir": ListDirArgs,
    "read_file": ReadFileArgs,
    "find_symbol": FindSymbolArgs,
    "definition": GraphArgs,
    "callers": GraphArgs,
    "callees": GraphArgs,
    "references": GraphArgs,
    "subclasses": GraphArgs,
    "trace": TraceArgs,
}
GRAPH_TOOLS = ("definition", "callers", "callees", "references", "subclasses", "trace")

TOOL_DESCRIPTIONS: dict[str, str] = {
    "search": "Hybrid (semantic + keyword) search over the repository's code; returns line-numbered spans.",
    "grep": "Regular-expression search over every indexed file; returns path:line: text for matching lines.",
    "glob": "List indexed file paths matching a glob.",
    "list_dir": "List the files and sub-directories of one directory of the repository.",
    "read_file": f"Read a line range of one file (line-numbered, at most {MAX_READ_LINES} lines per call).",
    "find_symbol": "Find where a function/class/method is defined and the lines that reference it.",
    "definition": "Code graph: where a function/method/class is defined (qualified name, file:lines, code).",
    "callers": "Code graph: the functions that call a function/method (resolved through imports and self).",
    "callees": "Code graph: what a function/method calls, the settings and stored constructor arguments "
    "it reads, and what a constructor stores, in order, resolved.",
    "references": "Code graph: every resolved use of a definition: calls, reads, subclasses; for a class, "
    "where its constructor arguments are stored (`self.timeout = timeout`) and read; for an attribute "
    "(`Client.timeout`), its stores and reads.",
    "subclasses": "Code graph: classes extending/implementing a class, and their overrides of its methods.",
    "trace": "Code graph: the chain of code that answers a question, from the entry point down to the "
    "code that does the work, what it uses in other files and the settings it reads (offline research's "
    "answer; verify the steps with callees/callers).",
}


def _portable_property(prop: dict[str, Any]) -> dict[str, Any]:
    """A property schema both OpenAI and Gemini accept: only widely supported keywords, no anyOf-null."""
    variants = [v for v in prop.get("anyOf", [prop]) if v.get("type") != "null"]
    result = {key: value for key, value in variants[0].items() if key in _PORTABLE_KEYWORDS}
    description = prop.get("description", "")
    if prop.get("default") is not None:
        description = f"{description} Default: {json.dumps(prop['default'])}.".strip()
    return {**result, "description": description}


_PORTABLE_KEYWORDS = ("type", "minimum", "maximum", "enum", "items")


@functools.cache
def _schemas() -> tuple[dict[str, Any], ...]:
    schemas = []
    for name, model in _ARG_MODELS.items():
        raw = model.model_json_schema()
        parameters: dict[str, Any] = {
            "type": "object",
            "properties": {key: _portable_property(prop) for key, prop in raw.get("properties", {}).items()},
        }
        if raw.get("required"):
            parameters["required"] = raw["required"]
        schemas.append({"name": name, "description": TOOL_DESCRIPTIONS[name], "parameters": parameters})
    return tuple(schemas)


def tool_schemas() -> list[dict[str, Any]]:
    """Name, description and JSON-schema parameters of every tool (for native tool calling and prompts)."""
    return copy.deepcopy(list(_schemas()))


def normalize_path(raw: str) -> str:
    """The repository-relative posix form of `raw`, refusing anything that could leave the repository."""
    text = raw.strip().replace("\\", "/")
    if text.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", text):
        raise ToolError(f"refused: {raw!r} is an absolute path; use a path relative to the repository root")
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ToolError(f"refused: {raw!r} points outside the repository ('..' is not allowed)")
    return posixpath.join(*parts) if parts else ""


_OWNER = re.compile(
    r"\s*(?:export\s+)?(?:pub\s+)?(?:abstract\s+)?(?:class|struct|impl|interface|trait)\s+(\w+)"
)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _clip_line(line: str) -> str:
    return line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + " …"


def numbered(lines: Iterable[str], first_line: int) -> str:
    """Lines prefixed with their 1-based number, the way prompts show code so models can cite it."""
    return "\n".join(f"{number:>5}| {_clip_line(line)}" for number, line in enumerate(lines, first_line))


@functools.lru_cache(maxsize=256)
def _word_regex(identifier: str) -> regex.Pattern[str]:
    return regex.compile(rf"\b{re.escape(identifier)}\b")


@functools.lru_cache(maxsize=256)
def _definition_regex(name: str) -> re.Pattern[str]:
    """Lines that define `name` in the common languages (def/class/function/func/fn/struct/...).

    Built by us from an escaped identifier, so plain `re` (twice as fast here as `regex`) is safe.
    """
    keyword = r"(?:def|class|function|func|fn|struct|interface|trait|enum|type|module|record)"
    assign = rf"(?:const|let|var)\s+{re.escape(name)}\s*=\s*(?:async\s*)?(?:function\b|\()"
    modifiers = r"(?:(?:public|private|protected|static|async|override|virtual)\s+)*"
    method = rf"^[ \t]*{modifiers}{re.escape(name)}\s*\([^;\n]*$"
    return re.compile(rf"\b{keyword}\s+(?:\([^)]*\)\s*)?{re.escape(name)}\b|{assign}|{method}", re.MULTILINE)


class RepoTools:
    """The tools bound to one opened index; safe to call from several threads at once.

    `retriever` is a `rag.retrieval.Retriever` (or anything with its `search`); texts, paths and
    the symbol table are loaded lazily once per instance, i.e. once per research run.
    """

    def __init__(
        self,
        index: RepoIndex,
        retriever: Retriever,
        *,
        output_tokens: int = 1_500,
        grep_seconds: float = GREP_SECONDS,
    ) -> None:
        self.index = index
        self.grep_seconds = grep_seconds
        self.retriever = retriever
        self.output_tokens = output_tokens
        self._lock = threading.Lock()
        self._texts: dict[str, str] = {}
        self._chunk_cache: dict[str, list[Any]] = {}

    @functools.cached_property
    def _files(self) -> dict[str, Any]:
        return {info.path: info for info in self.index.list_files()}

    @property
    def paths(self) -> list[str]:
        return sorted(self._files)

    def language(self, path: str) -> str:
        return getattr(self._files.get(path), "language", "") or ""

    def text(self, path: str) -> str:
        with self._lock:
            cached = self._texts.get(path)
        if cached is None:
            cached = self.index.file_text(path) or ""
            with self._lock:
                self._texts[path] = cached
        return cached

    def lines(self, path: str) -> list[str]:
        return self.text(path).splitlines()

    def chunks(self, path: str) -> list[Any]:
        """The indexed chunks of `path` in line order (cached)."""
        with self._lock:
            cached = self._chunk_cache.get(path)
        if cached is None:
            cached = self.index.chunks_for_file(path)
            with self._lock:
                self._chunk_cache[path] = cached
        return cached

    def enclosing(self, path: str, line: int) -> Evidence:
        """The innermost indexed chunk of `path` containing `line` (the line itself if none does)."""
        best: Any = None
        for chunk in self.chunks(path):
            inside = chunk.start_line <= line <= chunk.end_line
            if inside and (
                best is None or chunk.end_line - chunk.start_line < best.end_line - best.start_line
            ):
                best = chunk
        if best is None:
            return Evidence(path, line, line, None, self.language(path))
        return Evidence(path, best.start_line, best.end_line, best.symbol, self.language(path))

    def resolve_file(self, raw: str) -> str:
        path = normalize_path(raw)
        if path in self._files:
            return path
        base = posixpath.basename(path)
        similar = [p for p in self.paths if posixpath.basename(p) == base] or difflib.get_close_matches(
            path, self.paths, n=3
        )
        hint = f"; did you mean {', '.join(similar[:3])}?" if similar else ""
        raise ToolError(f"refused: {raw!r} is not a file of the indexed repository{hint}")

    def run(self, name: str, args: Mapping[str, Any] | None) -> ToolResult:
        """Execute one tool call; a refused or malformed call becomes an error result, never an exception."""
        raw_args = dict(args or {})
        model = _ARG_MODELS.get(name)
        try:
            if model is None:
                raise ToolError(f"unknown tool {name!r}; available: {', '.join(_ARG_MODELS)}")
            try:
                parsed = model.model_validate(raw_args)
            except ValidationError as error:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in item['loc']) or 'args'}: {item['msg']}"
                    for item in error.errors()
                )
                raise ToolError(f"bad arguments for {name}: {problems}") from error
            result: ToolResult = getattr(self, f"_{name}")(parsed)
        except ToolError as error:
            return ToolResult(name, raw_args, f"ERROR: {error.message}", error.message, is_error=True)
        result.args = raw_args
        return result

    def _bounded(self, body: str, note: str) -> str:
        """`body` cut to the output budget, with `note` (how to narrow the call) if anything was cut."""
        if count_tokens(body) <= self.output_tokens:
            return body
        kept = truncate_to_tokens(body, self.output_tokens)
        kept = kept[: kept.rfind("\n")] if "\n" in kept else kept
        return f"{kept}\n[output truncated to {self.output_tokens} tokens: {note}]"

    def _search(self, args: SearchArgs) -> ToolResult:
        hits = self.retriever.search(args.query, k=args.k, path_glob=args.path_glob, language=args.language)
        if not hits:
            return ToolResult("search", {}, f"No results for {args.query!r}.", "no results")
        blocks = []
        for hit in hits:
            label = f"{hit.path}:{hit.start_line}-{hit.end_line}" + (f" ({hit.symbol})" if hit.symbol else "")
            blocks.append(f"## {label}\n{numbered(hit.text.splitlines(), hit.start_line)}")
        evidence = [Evidence(h.path, h.start_line, h.end_line, h.symbol, h.language) for h in hits]
        output = self._bounded("\n\n".join(blocks), "lower k, or use read_file on one span")
        summary = f"{len(hits)} spans: " + ", ".join(item.ref for item in evidence[:4])
        return ToolResult("search", {}, output, summary, evidence)

    def _grep(self, args: GrepArgs) -> ToolResult:
        flags = regex.MULTILINE | (regex.IGNORECASE if args.ignore_case else 0)
        try:
            compiled = regex.compile(args.pattern, flags)
        except regex.error as error:
            raise ToolError(f"invalid regular expression {args.pattern!r}: {error}") from error
        matches, truncated = self.grep_lines(compiled, args.path_glob, args.max_matches)
        if not matches:
            return ToolResult("grep", {}, f"No lines match {args.pattern!r}.", "no matches")
        rendered = "\n".join(f"{path}:{line}: {_clip_line(text.strip())}" for path, line, text in matches)
        if truncated:
            rendered += f"\n[stopped at {args.max_matches} matching lines: narrow the pattern or path_glob]"
        evidence = [Evidence(path, line, line, None, self.language(path)) for path, line, _ in matches]
        files = list(dict.fromkeys(path for path, _, _ in matches))
        output = self._bounded(rendered, "narrow the pattern or path_glob")
        summary = f"{plural(len(matches), 'line')} in {plural(len(files), 'file')}: " + ", ".join(files[:4])
        return ToolResult("grep", {}, output, summary, evidence)

    def grep_lines(
        self, compiled: regex.Pattern[str], path_glob: str | None, max_matches: int
    ) -> tuple[list[tuple[str, int, str]], bool]:
        """(path, line, text) of lines matching `compiled`, one per line; True if `max_matches` cut it."""
        found = list(itertools.islice(self.iter_lines(compiled, path_glob), max_matches + 1))
        return found[:max_matches], len(found) > max_matches

    def iter_lines(
        self, compiled: regex.Pattern[str], path_glob: str | None
    ) -> Iterator[tuple[str, int, str]]:
        """Matching lines in path order, lazily; the whole scan must finish within `grep_seconds`."""
        deadline = time.monotonic() + self.grep_seconds
        for path in self.paths:
            if path_glob and not path_matches(path, path_glob):
                continue
            text = self.text(path)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ToolError(
                    f"grep took longer than {self.grep_seconds:g}s: use a simpler pattern or a path_glob"
                )
            line, scanned = 1, 0
            try:
                for match in compiled.finditer(text, timeout=remaining):
                    start = match.start()
                    if start < scanned:
                        continue
                    line += text.count("\n", scanned, start)
                    line_start = text.rfind("\n", 0, start) + 1
                    line_end = text.find("\n", start)
                    scanned = line_end + 1 if line_end >= 0 else len(text) + 1
                    yield path, line, text[line_start : scanned - 1]
                    line += 1
            except TimeoutError as error:
                raise ToolError(
                    f"the pattern {compiled.pattern!r} is too expensive "
                    f"(timed out after {self.grep_seconds:g}s):"
                    " avoid nested repetition like (a+)+"
                ) from error

    def _glob(self, args: GlobArgs) -> ToolResult:
        paths = [path for path in self.paths if path_matches(path, args.pattern)]
        if not paths:
            return ToolResult("glob", {}, f"No indexed files match {args.pattern!r}.", "no files")
        output = self._bounded("\n".join(paths), "use a narrower pattern")
        return ToolResult("glob", {}, output, f"{len(paths)} files", [])

    def _list_dir(self, args: ListDirArgs) -> ToolResult:
        folder = normalize_path(args.path)
        prefix = f"{folder}/" if folder else ""
        subdirs: dict[str, int] = {}
        files: list[str] = []
        for path in self.paths:
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix) :]
            head, _, tail = rest.partition("/")
            if tail:
                subdirs[head] = subdirs.get(head, 0) + 1
            else:
                files.append(head)
        if not subdirs and not files:
            raise ToolError(f"{args.path!r} is not a directory of the indexed repository")
        listing = [f"{name}/  ({count} files)" for name, count in sorted(subdirs.items())] + files
        output = self._bounded("\n".join(listing), "list a sub-directory instead")
        summary = f"{len(subdirs)} directories, {len(files)} files in {folder or '/'}"
        return ToolResult("list_dir", {}, output, summary, [])

    def _read_file(self, args: ReadFileArgs) -> ToolResult:
        path = self.resolve_file(args.path)
        lines = self.lines(path)
        if not lines:
            return ToolResult("read_file", {}, f"{path} is empty.", f"{path} is empty")
        first = args.start_line
        if first > len(lines):
            raise ToolError(f"{path} has {len(lines)} lines; start_line {first} is past the end")
        wanted_end = min(args.end_line or len(lines), len(lines))
        if wanted_end < first:
            raise ToolError(f"end_line {wanted_end} is before start_line {first}")
        budget = self.output_tokens - 40
        end = first - 1
        for line in lines[first - 1 : min(wanted_end, first + MAX_READ_LINES - 1)]:
            budget -= count_tokens(_clip_line(line)) + 3
            if budget < 0 and end >= first:
                break
            end += 1
        body = f"{path} (lines {first}-{end} of {len(lines)})\n" + numbered(lines[first - 1 : end], first)
        if end < wanted_end:
            body += f"\n[output stopped at line {end}: read from line {end + 1} in another call]"
        evidence = [Evidence(path, first, end, None, self.language(path))]
        return ToolResult("read_file", {}, body, f"read {evidence[0].ref}", evidence)

    def definitions(self, name: str) -> list[Definition]:
        """Where `name` (a bare or dotted symbol) is defined: chunk symbols first, then definition lines."""
        short = name.rsplit(".", 1)[-1]
        found = [
            Definition(short, chunk.path, chunk.start_line, chunk.end_line, chunk.symbol)
            for chunk in self.index.find_symbol(name)
        ]
        if found or not re.fullmatch(r"\w+", short):
            return found
        define = _definition_regex(short)
        lines = [(path, line) for path, line, text in self.word_lines(short) if define.search(text)]
        found = [self._definition_at(short, path, line) for path, line in lines[:MAX_DEFINITIONS]]
        return [d for d in found if "." not in name or (d.symbol or "").endswith(name)]

    def word_lines(self, identifier: str, limit: int = MAX_WORD_LINES) -> list[tuple[str, int, str]]:
        """Lines containing `identifier` as a whole word: a cheap first pass the finer patterns filter."""
        matches, _ = self.grep_lines(_word_regex(identifier), None, limit)
        return matches

    def _definition_at(self, name: str, path: str, line: int) -> Definition:
        """The extent of a definition whose chunk holds more than it (small definitions get merged).

        Its body is the following lines indented deeper than the definition line (plus a closing
        bracket at the same depth); its owner is the class-like line it is indented under.
        """
        lines = self.lines(path)
        indent = _indent(lines[line - 1])
        end = line
        for number in range(line + 1, min(len(lines), line + MAX_DEFINITION_LINES) + 1):
            text = lines[number - 1]
            if not text.strip():
                continue
            if _indent(text) <= indent:
                end = number if text.strip()[0] in ")]}" else end
                break
            end = number
        owner = None
        for number in range(line - 1, 0, -1):
            text = lines[number - 1]
            if text.strip() and _indent(text) < indent:
                match = _OWNER.match(text)
                owner = match.group(1) if match else None
                break
        return Definition(name, path, line, end, f"{owner}.{name}" if owner else name)

    def references(self, name: str, limit: int) -> list[tuple[str, int, str]]:
        """Lines using identifier `name` outside its own definition lines (the first `limit`)."""
        short = name.rsplit(".", 1)[-1]
        if not re.fullmatch(r"\w+", short):
            raise ToolError(f"{name!r} is not an identifier")
        def_lines = {(d.path, d.start_line) for d in self.definitions(name)}
        define = _definition_regex(short)
        uses = (
            (path, line, text)
            for path, line, text in self.iter_lines(_word_regex(short), None)
            if (path, line) not in def_lines and not define.search(text)
        )
        return list(itertools.islice(uses, limit))

    def _find_symbol(self, args: FindSymbolArgs) -> ToolResult:
        definitions = self.definitions(args.name)
        references = self.references(args.name, args.max_references) if args.max_references else []
        if not definitions and not references:
            return ToolResult("find_symbol", {}, f"No definition or reference of {args.name!r}.", "not found")
        parts = ["Definitions:"]
        for item in definitions:
            lines = self.lines(item.path)[item.start_line - 1 : item.end_line]
            label = f"{item.path}:{item.start_line}-{item.end_line}" + (
                f" ({item.symbol})" if item.symbol else ""
            )
            parts.append(f"## {label}\n{numbered(lines[:40], item.start_line)}")
        if not definitions:
            parts.append("(none found in the index)")
        parts.append("References:")
        parts.extend(f"{path}:{line}: {_clip_line(text.strip())}" for path, line, text in references)
        evidence = [
            Evidence(d.path, d.start_line, d.end_line, d.symbol, self.language(d.path)) for d in definitions
        ]
        evidence += [Evidence(path, line, line, None, self.language(path)) for path, line, _ in references]
        output = self._bounded("\n".join(parts), "lower max_references")
        summary = f"{len(definitions)} definitions, {len(references)} references"
        return ToolResult("find_symbol", {}, output, summary, evidence)

    # code graph ---------------------------------------------------------------------------------

    def _require_graph(self) -> None:
        if not getattr(self.index, "has_graph", False):
            raise ToolError(
                "this index has no code graph (it was built before the graph existed): update it with "
                "`repolens update REPO`, or use find_symbol and grep"
            )

    def graph_definitions(self, name: str) -> list[CodeDefinition]:
        """Definitions `name` denotes: `path:qualname`, a qualified name, or a short name."""
        self._require_graph()
        path, _, qualname = name.rpartition(":")
        found = self.index.definition(qualname.strip())
        if path:
            found = [d for d in found if d.path == normalize_path(path)]
        if not found:
            raise ToolError(f"no definition named {name!r} in the code graph; try search or find_symbol")
        return found

    def _evidence(self, definition: CodeDefinition) -> Evidence:
        return Evidence(
            definition.path, definition.start_line, definition.end_line, definition.qualname,
            self.language(definition.path),
        )  # fmt: skip

    def _label(self, definition: CodeDefinition) -> str:
        return f"`{definition.qualname}` ({definition.kind}) at {definition.ref}"

    def _graph_result(
        self, tool: str, parts: list[str], evidence: list[Evidence], summary: str
    ) -> ToolResult:
        output = self._bounded("\n".join(parts), "lower max_results or name a qualified definition")
        return ToolResult(tool, {}, output, summary, evidence)

    def _definition(self, args: GraphArgs) -> ToolResult:
        found = self.graph_definitions(args.name)[: args.max_results]
        parts = []
        for item in found:
            body = self.lines(item.path)[item.start_line - 1 : min(item.end_line, item.start_line + 39)]
            parts.append(f"## {self._label(item)}\n{numbered(body, item.start_line)}")
        summary = ", ".join(self._label(item) for item in found[:3])
        return self._graph_result("definition", parts, [self._evidence(d) for d in found], summary)

    def _edges_tool(self, tool: str, args: GraphArgs) -> ToolResult:
        parts, evidence, count = [], [], 0
        for definition in self.graph_definitions(args.name)[:5]:
            if tool == "callers":
                edges = self.index.callers(definition)
            elif tool == "callees":
                edges = self.index.callees(definition)
            else:
                edges = self.index.references(definition)
            parts.append(f"## {tool} of {self._label(definition)}")
            evidence.append(self._evidence(definition))
            for edge in edges[: args.max_results - count]:
                other = edge.target if tool == "callees" else edge.source
                where = self._label(other) if other is not None else "module-level code"
                guess = "" if edge.exact else " (matched by name only)"
                text = self.lines(edge.path)[edge.line - 1].strip() if edge.line else ""
                parts.append(
                    f"- {edge.kind} at {edge.path}:{edge.line}: {where}{guess}\n    {_clip_line(text)}"
                )
                if other is not None:
                    evidence.append(self._evidence(other))
                count += 1
            if not edges:
                parts.append("(none resolved)")
            if tool == "references" and definition.kind == "class":
                parts += self._argument_flow(definition, evidence)
        summary = f"{count} {tool} edges" + (f": {parts[1][2:60]}" if count else "")
        return self._graph_result(tool, parts, evidence, summary)

    def _argument_flow(self, definition: CodeDefinition, evidence: list[Evidence]) -> list[str]:
        """Where a class's constructor arguments go: each stored attribute, its store and its reads."""
        parts = []
        for attribute in self.index.attributes_of(definition):
            edges = self.index.references(attribute)
            stores = [e for e in edges if e.kind == "store"]
            reads = [
                f"{e.path}:{e.line} (`{e.source.qualname}`)" for e in edges if e.kind == "read" and e.source
            ]
            where = ", ".join(f"{e.path}:{e.line}" for e in stores) or attribute.ref
            listed = ", ".join(reads[:FLOW_READS_LISTED]) + (" …" if len(reads) > FLOW_READS_LISTED else "")
            parts.append(
                f"- constructor argument stored as {self._label(attribute)} (at {where}); "
                f"read at: {listed or 'nowhere resolved'}"
            )
            evidence.append(self._evidence(attribute))
            evidence += [self._evidence(e.source) for e in edges if e.kind == "read" and e.source][
                :FLOW_READS_LISTED
            ]
        return parts

    def _callers(self, args: GraphArgs) -> ToolResult:
        return self._edges_tool("callers", args)

    def _callees(self, args: GraphArgs) -> ToolResult:
        return self._edges_tool("callees", args)

    def _references(self, args: GraphArgs) -> ToolResult:
        return self._edges_tool("references", args)

    def _subclasses(self, args: GraphArgs) -> ToolResult:
        parts, evidence = [], []
        for base in self.graph_definitions(args.name)[:5]:
            parts.append(f"## subclasses of {self._label(base)}")
            evidence.append(self._evidence(base))
            methods = {d.name for d in self.index.definitions_in(base.path) if d.parent == base.qualname}
            for sub in self.index.subclasses(base)[: args.max_results]:
                overrides = [
                    d
                    for d in self.index.definitions_in(sub.path)
                    if d.parent == sub.qualname and d.name in methods
                ]
                listed = ", ".join(f"`{d.qualname}` ({d.ref})" for d in overrides) or "no overrides"
                parts.append(f"- {self._label(sub)}; overrides: {listed}")
                evidence += [self._evidence(sub), *(self._evidence(d) for d in overrides)]
        summary = f"{len(evidence) - 1} subclasses and overrides"
        return self._graph_result("subclasses", parts, evidence, summary)

    def trace(self, question: str) -> Trace:
        """The chain for `question` from a fresh retrieval, and what an answer from it cites: the one
        computation behind offline research, the `trace` tool and the research loop's first finding."""
        chain, hits = traced_chain(self.index, self.retriever, question)
        beside = related_hits(chain, hits) if chain.links else code_hits(hits)[:3]
        return Trace(
            chain, hits, [Evidence(h.path, h.start_line, h.end_line, h.symbol, h.language) for h in beside]
        )

    def trace_evidence(self, trace: Trace) -> list[Evidence]:
        """The spans an answer from `trace` cites, in order: steps, uses, the worker's reads, code beside."""
        evidence = [
            Evidence(span.path, span.start_line, span.end_line, span.symbol, self.language(span.path))
            for span in trace.chain.cited()
        ]
        return evidence + trace.beside

    def _trace(self, args: TraceArgs) -> ToolResult:
        """The steps first (one line each), then the advice, then each step's first lines: a tight
        output budget cuts code, never the chain."""
        self._require_graph()
        trace = self.trace(args.question)
        chain, parts, code = trace.chain, [], []
        if chain.links:
            parts.append("Chain from the entry point to the code that does the work:")
            for number, link in enumerate(chain.links, 1):
                definition = link.definition
                how = ""
                if link.how == "call":
                    how = f" (called at {chain.links[number - 2].definition.path}:{link.line})"
                elif link.how == "override":
                    how = " (overrides the step before)"
                elif link.how == "member":
                    how = " (the method of the class before that does the work)"
                parts.append(f"{number}. {self._label(definition)}{how}")
                end = min(definition.end_line, definition.start_line + TRACE_BODY_LINES - 1)
                lines = self.lines(definition.path)[definition.start_line - 1 : end]
                code.append(f"## {definition.ref}\n{numbered(lines, definition.start_line)}")
            parts += [f"- uses {self._label(link.definition)}" for link in chain.uses]
            parts += [f"- reads `{name}` at {path}:{line}" for name, path, line in chain.reads]
            for flow in chain.flows:
                reads = ", ".join(f"`{who}` at {path}:{line}" for who, path, line in flow.reads) or "nowhere"
                parts.append(
                    f"- constructor argument `{flow.name}`: stored by `{flow.constructor}` at "
                    f"{flow.path}:{flow.line}; read by {reads}"
                )
        else:
            parts.append("No chain in the code graph for this question; the best retrieved code:")
        parts += [
            f"- also relevant: `{item.symbol or item.path}` (code) at {item.ref}" for item in trace.beside
        ]
        parts.append(
            "Check a step with callees/callers/definition; cite the spans you rely on as path:start-end."
        )
        steps = " → ".join(link.definition.qualname for link in chain.links) or "no chain"
        return self._graph_result("trace", parts + code, self.trace_evidence(trace), f"chain: {steps}")
