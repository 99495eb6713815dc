"""Facts about source files that a wiki can state without a language model, each with its exact lines.

Read from the stored file text (never the disk): what a module says it does (its docstring or leading
comment), its definitions (name, kind, lines, the first sentence of their docs), what it imports among the
indexed files, and whether it is an entry point. Line-based and syntactic on purpose: cheap, predictable,
and every fact points at lines that really say it.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any

from rag.js_paths import module_target

CODE_LANGUAGES = {
    "python",
    "javascript",
    "typescript",
    "tsx",
    "go",
    "rust",
    "java",
    "c",
    "cpp",
    "csharp",
    "ruby",
    "php",
    "kotlin",
    "swift",
    "scala",
}
DOC_LANGUAGES = {"markdown", "rst"}
MAX_DEFINITION_LINES = 400
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
# A full stop after these, or inside parentheses, does not end the sentence ("(i.e. at the endpoint)").
_ABBREVIATIONS = ("e.g.", "i.e.", "cf.", "vs.", "approx.")


@dataclass(frozen=True, slots=True)
class Definition:
    name: str
    kind: str  # "class" | "function" | "method"
    start_line: int
    end_line: int
    doc: str = ""

    @property
    def is_public(self) -> bool:
        return not self.name.startswith("_")


@dataclass(frozen=True, slots=True)
class Summary:
    """A file's own description of itself, at `start_line..end_line`."""

    text: str
    start_line: int
    end_line: int


def first_sentence(text: str, limit: int = 220) -> str:
    flat = " ".join(text.split())
    sentence = flat
    for end in _SENTENCE_END.finditer(flat):
        candidate = flat[: end.end()]
        if not candidate.lower().endswith(_ABBREVIATIONS) and candidate.count("(") <= candidate.count(")"):
            sentence = candidate
            break
    return sentence if len(sentence) <= limit else sentence[: limit - 1].rstrip() + "…"


# --- summaries --------------------------------------------------------------------------------------

_PY_DOC_START = re.compile(r'^\s*[rRbBuU]?("""|\'\'\')')


def _python_docstring(lines: list[str], index: int) -> Summary | None:
    """The docstring starting at `lines[index]` (0-based), if one does."""
    match = _PY_DOC_START.match(lines[index]) if index < len(lines) else None
    if not match:
        return None
    quote = match.group(1)
    rest = lines[index][match.end() :]
    if quote in rest:
        return Summary(rest[: rest.index(quote)].strip(), index + 1, index + 1)
    parts = [rest]
    for end in range(index + 1, min(len(lines), index + 200)):
        if quote in lines[end]:
            parts.append(lines[end][: lines[end].index(quote)])
            return Summary("\n".join(parts).strip(), index + 1, end + 1)
        parts.append(lines[end])
    return None


def _comment_block(lines: list[str], start: int, step: int) -> Summary | None:
    """A run of `//`, `///`, `#` or `/** */` comment lines from `start` going `step` (+1 down, -1 up).
    Rust's inner doc comments (`//!`, `/*!`) are a module's own description: their `!` is a marker, not
    text (left in, `//! HTTP body utilities.` was summarised as `!`). Going up from a definition, Rust's
    attributes between it and its docs (`#[inline]`, `#[track_caller]`) are stepped over, not read as `#`
    comments (axum's `Path::new` was documented as "[inline]"); going down, one ends the block (an example's
    summary ended "[cfg(unix)] tokio::main"). A `/** */` block one blank line above a definition documents it:
    express writes them so, and none of its functions had a description."""
    taken: list[int] = []
    index = start
    while 0 <= index < len(lines):
        stripped = lines[index].strip()
        if (
            step == -1
            and not taken
            and not stripped
            and index > 0
            and lines[index - 1].strip().endswith("*/")
        ):
            index += step  # a `/** */` block a blank line above its definition is still its doc (express's)
            continue
        if stripped.startswith("#["):  # an attribute, no comment: it ends a block it follows
            if step == -1 and not taken:
                index += step
                continue
            break
        if not stripped.startswith(("//", "/*", "*", "#")) or stripped.startswith("#!") or stripped == "*/":
            if stripped == "*/" and step == -1:
                taken.append(index)
                index += step
                continue
            break
        taken.append(index)
        index += step
    if not taken:
        return None
    first, last = min(taken), max(taken)
    text = " ".join(
        re.sub(r"^(//[/!]?|/\*[*!]?|\*/?|#)\s?", "", lines[i].strip()).removesuffix("*/")
        for i in range(first, last + 1)
    )
    text = text.strip()
    return Summary(text, first + 1, last + 1) if text else None


def module_summary(language: str, text: str) -> Summary | None:
    """What a file says about itself: its module docstring, leading comment, or (docs) first paragraph."""
    lines = text.splitlines()
    if language == "python":
        index = 0
        while index < len(lines) and (not lines[index].strip() or lines[index].startswith("#")):
            index += 1
        docstring = _python_docstring(lines, index)
        if docstring is None:
            return None
        return Summary(_drop_rst_title(docstring.text), docstring.start_line, docstring.end_line)
    if language in DOC_LANGUAGES:
        return first_paragraph(lines)
    if language in CODE_LANGUAGES:
        index = 0
        for _ in range(_MAX_HEADER_BLOCKS):
            while index < len(lines) and lines[index].strip() in ("", "*/"):  # a header's closing `*/` too
                index += 1
            block = _comment_block(lines, index, 1)
            if block is None or not _is_notice(block.text):
                if block and language == "go" and not _precedes_package(lines, block.end_line):
                    return None  # a Go package comment sits right above `package`
                if block:
                    block = Summary(_shown(language, block.text), block.start_line, block.end_line)
                return block
            index = block.end_line  # a license header: the description, if any, comes next
    return None


# A rustdoc intra-doc link, `[`axum`]` or `[Router]` (its target defined elsewhere or resolved by rustdoc):
# its text is what rustdoc shows; kept whole, axum-macros' summary read "Macros for [ axum ]." A Markdown
# link `[text](url)` or `[text][ref]` is left alone.
_RUSTDOC_LINK = re.compile(r"\[(`[^`\]\[]+`|[\w:]+)\](?![(\[:])")


def _shown(language: str, text: str) -> str:
    """A doc comment's text as its docs show it: a Rust one without rustdoc's link brackets."""
    return _RUSTDOC_LINK.sub(r"\1", text) if language == "rust" else text


def _is_notice(text: str) -> bool:
    """A license header or a tool's directive, not what the file is about. A header that names the project
    first (express's `/*! express Copyright(c) 2009-2013 TJ Holowaychuk ... MIT Licensed */`) is one too:
    it was every express module's description."""
    lowered = text.lower()
    return lowered.startswith(_NOT_A_DESCRIPTION) or re.search(r"\bcopyright\b", lowered) is not None


_NOT_A_DESCRIPTION = ("copyright", "license", "spdx", "eslint", "@ts-", "go:build", "+build")
_MAX_HEADER_BLOCKS = 3


def _precedes_package(lines: list[str], end_line: int) -> bool:
    return end_line < len(lines) and lines[end_line].startswith("package ")


_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+:.])\1{2,}\s*$")


def headings(lines: list[str]) -> list[tuple[int, int, str]]:
    """`(line, level, title)` of Markdown (`## Title`) and reStructuredText (underlined) headings."""
    found: list[tuple[int, int, str]] = []
    rst_levels: list[str] = []
    fenced = False
    for index, line in enumerate(lines):
        if line.strip().startswith("```"):
            fenced = not fenced
        if fenced:
            continue
        match = _MD_HEADING.match(line)
        if match:
            found.append((index + 1, len(match.group(1)), match.group(2)))
            continue
        underline = _RST_UNDERLINE.match(lines[index + 1]) if index + 1 < len(lines) else None
        title = line.strip()
        if (
            underline
            and title
            and not _RST_UNDERLINE.match(line)
            and len(lines[index + 1].strip()) >= len(title)
        ):
            char = underline.group(1)
            if char not in rst_levels:
                rst_levels.append(char)
            found.append((index + 1, rst_levels.index(char) + 1, title))
    return found


def _drop_rst_title(text: str) -> str:
    """`requests.models\n~~~~~~~\n\nThe primary objects...` → `The primary objects...`."""
    lines = text.strip().splitlines()
    if len(lines) > 1 and _RST_UNDERLINE.match(lines[1].strip()):
        return "\n".join(lines[2:]).strip()
    return text


def first_paragraph(lines: list[str], start: int = 0) -> Summary | None:
    """The first prose paragraph from `start` (headings, badges, code fences and HTML skipped)."""
    index, fenced = start, False
    while index < len(lines):
        stripped = lines[index].strip()
        if stripped.startswith("```"):
            fenced = not fenced
        elif (
            not fenced
            and stripped
            and not stripped.startswith(("#", "<", "![", "[![", "=", "-", "|", ">", "..", ":"))
            and not (index + 1 < len(lines) and _RST_UNDERLINE.match(lines[index + 1]))
            and not _RST_UNDERLINE.match(stripped)
        ):
            break
        index += 1
    if index >= len(lines):
        return None
    end = index
    while (
        end + 1 < len(lines)
        and lines[end + 1].strip()
        and not lines[end + 1].lstrip().startswith(("#", "```"))
    ):
        end += 1
    text = " ".join(line.strip() for line in lines[index : end + 1])
    return Summary(_inline_reference_links(text, lines), index + 1, end + 1)


# Link text holds no bracket: with `[^\]\n]+` a line of `[[[[` was rescanned from every `[`.
_REFERENCE_LINK = re.compile(r"\[([^\[\]\n]+)\]\[([^\[\]\n]*)\]")
_LINK_DEFINITION = re.compile(r"^\s{0,3}\[([^\]]+)\]:\s*(\S+)")


def _inline_reference_links(text: str, lines: list[str]) -> str:
    """`[ASGI][asgi]` (its URL defined elsewhere in the file, `[asgi]: https://...`) as `[ASGI](https://...)`;
    a quoted paragraph loses the definitions, which left the brackets as typed. Undefined: the text alone."""
    urls = {
        match[1].strip().lower(): match[2].strip("<>")
        for line in lines
        if (match := _LINK_DEFINITION.match(line))
    }

    def inline(match: re.Match[str]) -> str:
        label = match[1]
        url = urls.get((match[2] or label).strip().lower())
        return f"[{label}]({url})" if url else label

    return _REFERENCE_LINK.sub(inline, text)


# --- definitions ------------------------------------------------------------------------------------

_PY_DEF = re.compile(r"^(?P<indent>[ \t]*)(?:async\s+)?(?P<kind>def|class)\s+(?P<name>\w+)")
_BRACE_DEFS: dict[str, list[tuple[re.Pattern[str], str]]] = {
    "javascript": [
        (
            re.compile(r"^\s*(?:export\s+)?(?:default\s+)?(?:async\s+)?function\s*\*?\s*(?P<name>\w+)"),
            "function",
        ),
        (re.compile(r"^\s*(?:export\s+)?(?:default\s+)?class\s+(?P<name>\w+)"), "class"),
        (
            re.compile(r"^\s*(?:export\s+)?const\s+(?P<name>\w+)\s*=\s*(?:async\s*)?(?:\([^)]*\)|\w+)\s*=>"),
            "function",
        ),
    ],
    "go": [
        (re.compile(r"^func\s+(?:\([^)]*\)\s*)?(?P<name>\w+)"), "function"),
        (re.compile(r"^type\s+(?P<name>\w+)\s+(?:struct|interface)\b"), "class"),
    ],
    "rust": [
        (
            re.compile(r"^\s*(?:pub(?:\([\w:]+\))?\s+)?(?:async\s+)?(?:unsafe\s+)?fn\s+(?P<name>\w+)"),
            "function",
        ),
        (re.compile(r"^\s*(?:pub(?:\([\w:]+\))?\s+)?(?:struct|enum|trait)\s+(?P<name>\w+)"), "class"),
    ],
    "java": [
        (
            re.compile(
                r"^\s*(?:public\s+|protected\s+|private\s+)?(?:abstract\s+|final\s+)*(?:class|interface|enum)\s+(?P<name>\w+)"
            ),
            "class",
        ),
    ],
}
_BRACE_DEFS["typescript"] = _BRACE_DEFS["tsx"] = _BRACE_DEFS["javascript"]
_BRACE_DEFS["csharp"] = _BRACE_DEFS["kotlin"] = _BRACE_DEFS["java"]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _python_definitions(lines: list[str]) -> list[Definition]:
    found = []
    classes: list[int] = []  # indents of enclosing classes
    for index, line in enumerate(lines):
        match = _PY_DEF.match(line)
        if not match:
            continue
        indent = len(match.group("indent").expandtabs())
        while classes and classes[-1] >= indent:
            classes.pop()
        if indent > 0 and not (classes and indent > classes[-1]):
            continue  # a nested function: not part of the module's surface
        if len(classes) > 1:
            continue
        end = index
        for after in range(index + 1, min(len(lines), index + MAX_DEFINITION_LINES)):
            text = lines[after]
            if (
                text.strip()
                and _indent(text.expandtabs()) <= indent
                and not text.lstrip().startswith(("#", ")"))
            ):
                break
            if text.strip():
                end = after
        body = index + 1
        while body < len(lines) and not lines[body - 1].rstrip().endswith(":") and body <= end:
            body += 1
        doc = _python_docstring(lines, body) if body <= end else None
        kind = "class" if match.group("kind") == "class" else ("method" if classes else "function")
        found.append(
            Definition(match.group("name"), kind, index + 1, end + 1, first_sentence(doc.text) if doc else "")
        )
        if kind == "class":
            classes.append(indent)
    return found


def _brace_end(lines: list[str], index: int) -> int:
    depth, opened = 0, False
    for end in range(index, min(len(lines), index + MAX_DEFINITION_LINES)):
        code = re.sub(r"(\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'|`[^`]*`|//.*$)", "", lines[end])
        depth += code.count("{") - code.count("}")
        opened = opened or "{" in code
        if opened and depth <= 0:
            return end
        if not opened and end > index and code.rstrip().endswith(";"):
            return end
    return index


def definition_doc(language: str, lines: list[str], start_line: int) -> str:
    """The first sentence of the docs of the definition starting at `start_line` (1-based)."""
    index = start_line - 1
    if language == "python":
        body = index + 1
        while body < len(lines) and body - index < 20 and not lines[body - 1].rstrip().endswith(":"):
            body += 1
        doc = _python_docstring(lines, body)
    else:
        doc = _comment_block(lines, index - 1, -1) if index else None
    return first_sentence(_shown(language, doc.text)) if doc else ""


def graph_definitions(language: str, text: str, found: list[Any]) -> list[Definition]:
    """The code graph's definitions of a file (tree-sitter lines) as `Definition`s: top level and methods."""
    lines = text.splitlines()
    kept = []
    for item in found:
        if item.kind not in ("class", "function", "method") or item.qualname.count(".") > 1:
            continue
        kind = "method" if item.parent else item.kind
        kept.append(
            Definition(
                item.name,
                kind,
                item.start_line,
                item.end_line,
                definition_doc(language, lines, item.start_line),
            )
        )
    return kept


def definitions(language: str, text: str) -> list[Definition]:
    """Top-level functions and classes (and Python methods), with their lines and doc sentence."""
    lines = text.splitlines()
    if language == "python":
        return _python_definitions(lines)
    patterns = _BRACE_DEFS.get(language)
    if not patterns:
        return []
    found = []
    for index, line in enumerate(lines):
        for pattern, kind in patterns:
            match = pattern.match(line)
            if match:
                doc = _comment_block(lines, index - 1, -1) if index else None
                end = _brace_end(lines, index)
                sentence = first_sentence(_shown(language, doc.text)) if doc else ""
                found.append(Definition(match.group("name"), kind, index + 1, end + 1, sentence))
                break
    return found


# --- imports ----------------------------------------------------------------------------------------

_PY_IMPORT = re.compile(
    r"^\s*(?:from\s+(?P<from>\.*[\w.]*)\s+import\s+(?P<names>[\w, ]+)|import\s+(?P<mod>[\w.]+))"
)
_JS_IMPORT = re.compile(r"""(?:\bfrom\s*|\brequire\(\s*|^\s*import\s*)['"](?P<mod>\.{1,2}/[^'"]+)['"]""")
_GO_IMPORT = re.compile(r'^\s*(?:import\s+)?(?:\w+\s+)?"(?P<mod>[\w./-]+)"')


def _python_targets(path: str, module: str, names: list[str], known: set[str]) -> list[str]:
    if module.startswith("."):
        dots = len(module) - len(module.lstrip("."))
        base = posixpath.dirname(path)
        for _ in range(dots - 1):
            base = posixpath.dirname(base)
        dotted = module.lstrip(".")
        stem = posixpath.join(base, *dotted.split(".")) if dotted else base
        candidates = [stem]
    else:
        stem = module.replace(".", "/")
        candidates = [stem, f"src/{stem}"]
    found = []
    for candidate in candidates:
        for name in names or [""]:
            for option in (f"{candidate}/{name}.py", f"{candidate}.py", f"{candidate}/__init__.py"):
                option = option.replace("//", "/").lstrip("/")
                if option in known:
                    found.append(option)
                    break
    return list(dict.fromkeys(found))


def imports(
    path: str, language: str, text: str, known: set[str], go_module: str | None = None
) -> list[tuple[int, str]]:
    """`(line, imported indexed file)` for the imports of `path` that name other indexed files."""
    found: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        targets: list[str] = []
        if language == "python":
            match = _PY_IMPORT.match(line)
            if match:
                module = match.group("from") if match.group("from") is not None else match.group("mod")
                names = [name.strip() for name in (match.group("names") or "").split(",") if name.strip()]
                targets = _python_targets(path, module, names, known)
        elif language in ("javascript", "typescript", "tsx"):
            match = _JS_IMPORT.search(line)
            if match:
                target = module_target(path, match.group("mod"), (), known.__contains__)
                targets = [target] if target else []
        elif language == "go" and go_module:
            match = _GO_IMPORT.match(line)
            if match and match.group("mod").startswith(go_module + "/"):
                folder = match.group("mod")[len(go_module) + 1 :]
                targets = sorted(p for p in known if posixpath.dirname(p) == folder and p.endswith(".go"))[:1]
        found.extend((number, target) for target in targets if target != path)
    return found


def go_module_path(go_mod: str | None) -> str | None:
    if not go_mod:
        return None
    match = re.search(r"^module\s+(\S+)", go_mod, re.MULTILINE)
    return match.group(1) if match else None


_MAIN_GUARD = re.compile(r"^if\s+__name__\s*==\s*['\"]__main__['\"]")


def entry_point_lines(language: str, text: str, defs: list[Definition]) -> list[Definition]:
    """Definitions a program starts from: a top-level `main`, `cli`, `app` (not one nested in a function,
    like starlette's per-request `app` closures), an `if __name__ == "__main__"` block."""
    lines = text.splitlines()

    def top_level(definition: Definition) -> bool:
        line = lines[definition.start_line - 1] if 0 < definition.start_line <= len(lines) else ""
        return not line[:1].isspace()

    entries = [
        d for d in defs if d.name in ("main", "cli", "run_cli", "app") and d.kind != "method" and top_level(d)
    ]
    if language == "python":
        for number, line in enumerate(text.splitlines(), 1):
            if _MAIN_GUARD.match(line):
                entries.append(
                    Definition("__main__", "function", number, number, "runs when executed as a script")
                )
    return entries
