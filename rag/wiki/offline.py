"""The offline wiki: pages written from the indexed code and docs alone, with no language model.

An overview (the README's own words, the modules, entry points, a module diagram), one page per module
(what its files say they do, entry points, key classes and functions, an import diagram, who uses it) and
one how-to page per document. Every statement quotes or points at the lines it comes from
(`path:start-end`), and each page says it was generated without a language model.

Modules are folders of code files (two levels deep in comprehensive mode, one in concise mode). Imports
come from the code graph when the index has one (`RepoIndex.imports_of`), else from the import lines.
"""

from __future__ import annotations

import posixpath
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from rag.plural import plural
from rag.roles import file_role
from rag.wiki.codefacts import (
    CODE_LANGUAGES,
    DOC_LANGUAGES,
    Definition,
    Summary,
    definitions,
    entry_point_lines,
    first_paragraph,
    first_sentence,
    go_module_path,
    graph_definitions,
    headings,
    imports,
    module_summary,
)
from rag.wiki.mermaid import label, node_id
from rag.wiki.model import WikiPage, WikiSection, WikiStructure

ROOT_MODULE = "top-level files"
MAX_MODULES = {True: 20, False: 6}
MAX_GUIDES = {True: 10, False: 3}
MAX_DEFINITIONS = {True: 25, False: 10}
MAX_DIAGRAM_NODES = 24
MAX_GRAPH_DEFINITIONS_PER_FILE = 60
MAX_CALLS_LISTED = 30
# Documents that are no guide: histories, legal texts, and the forms a host shows with a new issue or pull
# request (`.github/ISSUE_TEMPLATE/bug_report.md`, `PULL_REQUEST_TEMPLATE.md`): axum's wiki had "Pull
# Request Template", "Bug Report" and "Feature Request" among its guides.
_SKIPPED_DOCS = re.compile(
    r"(^|/)((CHANGELOG|CHANGES|HISTORY|LICENSE|LICENCE|CODE_OF_CONDUCT|NOTICE|PULL_REQUEST_TEMPLATE|"
    r"ISSUE_TEMPLATE|MERGE_REQUEST_TEMPLATE)[^/]*$|(ISSUE|PULL_REQUEST|MERGE_REQUEST)_TEMPLATES?/)",
    re.I,
)
# A translation of another document beside it: `README.zh-tw.md` next to `README.md`.
_TRANSLATION = re.compile(r"^(?P<stem>.+)\.[a-z]{2}(?:[-_][A-Za-z]{2,4})?(?P<ext>\.(?:md|mdx|rst|txt))$")
_TEST_DIR = re.compile(r"(^|/)(tests?|testing|spec|__tests__)(/|$)")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "root"


def cite(path: str, start: int, end: int | None = None) -> str:
    """`path:start-end` in backticks, so Markdown leaves names like `__init__.py` alone."""
    end = end or start
    return f"`{path}:{start}`" if end == start else f"`{path}:{start}-{end}`"


def cite_span(path: str, summary: Summary) -> str:
    return cite(path, summary.start_line, summary.end_line)


@dataclass
class RepoFacts:
    """What the offline writer knows about one indexed version."""

    repo_id: str
    commit: str | None
    languages: dict[str, str]
    texts: dict[str, str]
    summaries: dict[str, Summary] = field(default_factory=dict)
    defs: dict[str, list[Definition]] = field(default_factory=dict)
    imports: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    modules: dict[str, list[str]] = field(default_factory=dict)
    # (caller qualname, caller path, call line, callee qualname, callee path) from the code graph
    calls: list[tuple[str, str, int, str, str]] = field(default_factory=list)
    docs: list[str] = field(default_factory=list)
    readme: str | None = None

    def module_of(self, path: str) -> str | None:
        return next((name for name, paths in self.modules.items() if path in paths), None)


def module_name(path: str, comprehensive: bool) -> str:
    """The module a code file belongs to: its top two folders (`src/requests`), or one folder when not
    comprehensive. A top-level examples or tests folder is one module: twenty `examples/<name>` pages
    of one small file each read worse than one page of the examples."""
    folder = posixpath.dirname(path)
    if not folder:
        return ROOT_MODULE
    parts = folder.split("/")
    whole = not comprehensive or file_role(f"{parts[0]}/x") in ("example", "test")
    return "/".join(parts[: 1 if whole else 2])


def collect_facts(index: Any, comprehensive: bool = True) -> RepoFacts:
    """Read every indexed file once and extract what the pages will say (blocking: run in a thread)."""
    files = index.list_files()
    texts = {info.path: index.file_text(info.path) or "" for info in files}
    languages = {info.path: info.language for info in files}
    facts = RepoFacts(index.record.id, index.record.commit, languages, texts)
    known = set(texts)
    go_module = go_module_path(texts.get("go.mod"))
    use_graph = bool(getattr(index, "has_graph", False))
    grouped: dict[str, list[str]] = defaultdict(list)
    for path, language in languages.items():
        text = texts[path]
        summary = module_summary(language, text)
        if summary is not None and summary.text:
            facts.summaries[path] = summary
        if language in CODE_LANGUAGES:
            if use_graph:
                found = index.definitions_in(path)
                facts.defs[path] = (
                    graph_definitions(language, text, found) if found else definitions(language, text)
                )
                facts.calls.extend(_calls(index, found))
                facts.imports[path] = [
                    (line, target) for line, _, target in index.imports_of(path) if target != path
                ]
            else:
                facts.defs[path] = definitions(language, text)
                facts.imports[path] = imports(path, language, text, known, go_module)
            grouped[module_name(path, comprehensive)].append(path)
        elif language in DOC_LANGUAGES:
            if posixpath.basename(path).lower() in ("readme.md", "readme.rst") and "/" not in path:
                facts.readme = path
            elif _is_guide(path, known):
                facts.docs.append(path)
    size = Counter({name: sum(len(texts[p]) for p in paths) for name, paths in grouped.items()})
    ranked = sorted(grouped, key=lambda name: (bool(_TEST_DIR.search(name)), -size[name], name))
    facts.modules = {name: sorted(grouped[name]) for name in ranked[: MAX_MODULES[comprehensive]]}
    facts.docs = sorted(facts.docs, key=lambda p: (not p.startswith(("docs/", "doc/")), p.count("/"), p))
    facts.docs = facts.docs[: MAX_GUIDES[comprehensive]]
    return facts


def _is_guide(path: str, known: set[str]) -> bool:
    """A document (not the top README) worth a guide page: not skipped (`_SKIPPED_DOCS`), no translation."""
    return not _SKIPPED_DOCS.search(path) and not _is_translation(path, known)


def _is_translation(path: str, known: set[str]) -> bool:
    """A copy of a document in another language (`README.ja.md` beside `README.md`): as guides, nine
    translations of the README took nine of the ten places and all had the README's title."""
    match = _TRANSLATION.match(path)
    return match is not None and match.group("stem") + match.group("ext") in known


def _calls(index: Any, found: list[Any]) -> list[tuple[str, str, int, str, str]]:
    calls = []
    for definition in found[:MAX_GRAPH_DEFINITIONS_PER_FILE]:
        for edge in index.callees(definition, ("call",)):
            if (edge.target.path, edge.target.qualname) != (definition.path, definition.qualname):
                calls.append(
                    (definition.qualname, definition.path, edge.line, edge.target.qualname, edge.target.path)
                )
    return calls


# A heading that is a template's placeholder (`# {title}`, `{{ page.title }}`, `<%= title %>`, `${name}`).
_PLACEHOLDER = re.compile(r"\{\{?\s*[\w.]+\s*\}\}?|<%|\$\{")
_NAMELESS_DOCS = frozenset({"index", "readme"})  # named by their folder: `views/index.md` -> "Views"


def _doc_title(facts: RepoFacts, path: str) -> str:
    """The document's H1, else a heading on its first line, else its file name (`database.md` ->
    "Database"): a sub-heading further down ("Users", "Queries") names one section, not the document,
    and a template's placeholder (`# {title}`) names nothing."""
    lines = facts.texts[path].splitlines()
    found = [
        (number, level, title) for number, level, title in headings(lines) if not _PLACEHOLDER.search(title)
    ]
    first_line = next((number for number, line in enumerate(lines, 1) if line.strip()), None)
    title = next((title for _, level, title in found if level == 1), None)
    title = title or next((title for number, _, title in found if number == first_line), None)
    if title:
        return title
    stem = posixpath.splitext(posixpath.basename(path))[0]
    if stem.lower() in _NAMELESS_DOCS and posixpath.dirname(path):
        stem = posixpath.basename(posixpath.dirname(path))
    return stem.replace("-", " ").replace("_", " ").title()


# README headings that name a section, not the project (cobra's README starts with "# Overview").
_SECTION_TITLES = frozenset({"overview", "introduction", "about", "readme", "contents", "table of contents"})


def _repo_title(facts: RepoFacts) -> str:
    """The README's first H1 when it names the project, else the repository's name."""
    if facts.readme:
        for line in facts.texts[facts.readme].splitlines():
            if line.startswith("# "):
                title = line[2:].strip()
                if title.lower() not in _SECTION_TITLES and not _PLACEHOLDER.search(title):
                    return title
                break
    return facts.repo_id.split("@")[0].rstrip("/").split("/")[-1]


def plan(facts: RepoFacts) -> WikiStructure:
    """The pages of the offline wiki, without content."""
    overview_files = [p for p in [facts.readme, *_entry_files(facts)] if p]
    pages = [
        WikiPage(
            id="overview",
            title="Overview",
            description="What the repository is, its modules and where programs start.",
            filePaths=list(dict.fromkeys(overview_files)),
            importance="high",
            relatedPages=[f"module-{slug(name)}" for name in facts.modules][:6],
        )
    ]
    for name, paths in facts.modules.items():
        test_module = bool(_TEST_DIR.search(name))
        pages.append(
            WikiPage(
                id=f"module-{slug(name)}",
                title=f"Module {name}" if name != ROOT_MODULE else "Top-level files",
                description=f"The {len(paths)} code files of {name}: roles, entry points, key definitions.",
                filePaths=paths,
                importance="low" if test_module else "medium",
                relatedPages=["overview"],
            )
        )
    titles = {path: _doc_title(facts, path) for path in facts.docs}
    shared = {title for title, count in Counter(titles.values()).items() if count > 1}
    for path in facts.docs:
        pages.append(
            WikiPage(
                id=f"guide-{slug(path)}",
                title=f"{titles[path]} ({path})" if titles[path] in shared else titles[path],
                description=f"A guide to {path}, section by section.",
                filePaths=[path],
                importance="low",
                relatedPages=["overview"],
            )
        )
    sections = [WikiSection(id="section-overview", title="Overview", pages=["overview"])]
    module_ids = [page.id for page in pages if page.id.startswith("module-")]
    guide_ids = [page.id for page in pages if page.id.startswith("guide-")]
    if module_ids:
        sections.append(WikiSection(id="section-modules", title="Modules", pages=module_ids))
    if guide_ids:
        sections.append(WikiSection(id="section-guides", title="Guides", pages=guide_ids))
    return WikiStructure(
        id="wiki",
        title=f"{_repo_title(facts)} wiki",
        description=_description(facts),
        pages=pages,
        sections=sections,
        rootSections=[section.id for section in sections],
    )


def _readme_paragraph(facts: RepoFacts) -> Summary | None:
    """The README's first paragraph from its title on: before an H1 come logos, badges and links
    ("**Documentation**: <a href=...>"), not what the project is."""
    if not facts.readme:
        return None
    readme = facts.texts[facts.readme].splitlines()
    title = next((number for number, level, _ in headings(readme) if level == 1), 0)
    return first_paragraph(readme, title)


def _description(facts: RepoFacts) -> str:
    paragraph = _readme_paragraph(facts)
    if paragraph:
        return first_sentence(paragraph.text)
    return f"The code of {facts.repo_id}."


def _entry_files(facts: RepoFacts) -> list[str]:
    return [path for path, _ in _entry_points(facts)][:8]


def _entry_points(facts: RepoFacts, paths: list[str] | None = None) -> list[tuple[str, Definition]]:
    found: list[tuple[str, Definition]] = []
    for path in paths if paths is not None else sorted(facts.defs):
        if paths is None and _TEST_DIR.search(path):
            continue
        found.extend(
            (path, entry)
            for entry in entry_point_lines(facts.languages[path], facts.texts[path], facts.defs[path])
        )
    return found


def label_line(facts: RepoFacts) -> str:
    source = f"at commit `{facts.commit[:12]}`" if facts.commit else "of a folder with no git commit"
    return (
        f"> Generated without a language model, from the code and docs {source}. "
        "Every statement quotes or points at the lines it comes from."
    )


def write_page(facts: RepoFacts, page: WikiPage) -> str:
    """The Markdown of one planned page."""
    if page.id == "overview":
        return _overview(facts)
    if page.id.startswith("guide-"):
        return _guide(facts, page.filePaths[0])
    name = next(name for name in facts.modules if f"module-{slug(name)}" == page.id)
    return _module(facts, name)


def _overview(facts: RepoFacts) -> str:
    lines = [label_line(facts), ""]
    paragraph = _readme_paragraph(facts)
    if facts.readme and paragraph:
        lines += [f"{paragraph.text} ({cite(facts.readme, paragraph.start_line, paragraph.end_line)})", ""]
        if paragraph.text.endswith(":"):
            readme = facts.texts[facts.readme].splitlines()
            items = _list_after(readme, paragraph.end_line)
            lines += [
                f"{marker} {text} ({cite(facts.readme, number, number)})" for number, marker, text in items
            ]
            lines += [""] if items else []
    if facts.modules:
        lines += ["## Modules", ""]
        for name, paths in facts.modules.items():
            summary = _module_summary(facts, paths)
            what = (
                f": {first_sentence(summary[1].text)} ({cite_span(summary[0], summary[1])})"
                if summary
                else ""
            )
            title = name if name != ROOT_MODULE else "top-level files"
            lines.append(f"- **{title}** ({plural(len(paths), 'file')}){what}")
        lines.append("")
        lines += ["## How the modules depend on each other", "", *_module_diagram(facts), ""]
    entries = _entry_points(facts)
    if entries:
        lines += ["## Entry points", ""]
        for path, entry in entries[:12]:
            what = f": {entry.doc}" if entry.doc else ""
            name = "the `__main__` block" if entry.name == "__main__" else f"`{entry.name}`"
            lines.append(f"- {name} in `{path}`{what} ({cite(path, entry.start_line, entry.end_line)})")
        lines.append("")
    counts = Counter(facts.languages[path] for path in facts.defs)
    if counts:
        lines += [
            "## Languages",
            "",
            ", ".join(f"{language}: {plural(n, 'file')}" for language, n in counts.most_common()),
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


_LIST_ITEM = re.compile(r"^(?P<marker>\d{1,3}[.)]|[-*+])\s+(?P<text>\S.*)$")
MAX_LIST_ITEMS = 10


def _list_after(lines: list[str], end_line: int) -> list[tuple[int, str, str]]:
    """The list a paragraph ending in ":" introduces ("DeepWiki will:" then "1. Analyze the code"):
    (line number, marker, text) of its first items, so the quote does not stop at the colon."""
    number = end_line + 1
    while number <= len(lines) and not lines[number - 1].strip():
        number += 1
    items: list[tuple[int, str, str]] = []
    while number <= len(lines) and len(items) < MAX_LIST_ITEMS:
        match = _LIST_ITEM.match(lines[number - 1].strip())
        if not match:
            break
        marker = match["marker"] if match["marker"][0].isdigit() else "-"
        items.append((number, marker.replace(")", "."), match["text"]))
        number += 1
    return items


_PACKAGE_FILES = ("__init__.py", "mod.rs", "lib.rs", "index.js", "index.ts", "doc.go")


def _module_summary(facts: RepoFacts, paths: list[str]) -> tuple[str, Summary] | None:
    """What describes a whole module: its package file's docstring (`__init__.py`, `mod.rs`, `doc.go`...),
    a Go package comment (it documents the package, whichever file holds it), or the file named after
    the folder. Another file's docstring describes only that file (`starlette/status.py` is not starlette),
    and a package file in a sub-folder only that sub-folder: axum's `axum/src` was described by
    `axum/src/body/mod.rs` ("HTTP body utilities."), which sorts before its `lib.rs`."""
    root = posixpath.commonpath([posixpath.dirname(path) for path in paths]) if paths else ""
    folder = posixpath.basename(root)

    def describes_module(path: str) -> bool:
        name = posixpath.basename(path)
        stem = posixpath.splitext(name)[0]
        return posixpath.dirname(path) == root and (
            name in _PACKAGE_FILES or facts.languages.get(path) == "go" or (bool(folder) and stem == folder)
        )

    ordered = sorted(paths, key=lambda p: (posixpath.basename(p) not in _PACKAGE_FILES, p))
    for path in ordered:
        if path in facts.summaries and describes_module(path):
            return path, facts.summaries[path]
    return None


def _module(facts: RepoFacts, name: str) -> str:
    paths = facts.modules[name]
    lines = [label_line(facts), ""]
    language_counts = Counter(facts.languages[path] for path in paths)
    languages = ", ".join(language for language, _ in language_counts.most_common())
    lines += [f"`{name}` has {plural(len(paths), 'code file')} ({languages}).", ""]
    described = [path for path in paths if path in facts.summaries]
    if described:
        lines += ["## Responsibilities", ""]
        for path in described:
            summary = facts.summaries[path]
            lines.append(f"- `{path}`: {first_sentence(summary.text)} ({cite_span(path, summary)})")
        lines.append("")
    entries = _entry_points(facts, paths)
    if entries:
        lines += ["## Entry points", ""]
        for path, entry in entries:
            name_text = "the `__main__` block" if entry.name == "__main__" else f"`{entry.name}()`"
            what = f": {entry.doc}" if entry.doc else ""
            lines.append(f"- {name_text} in `{path}`{what} ({cite(path, entry.start_line, entry.end_line)})")
        lines.append("")
    key = _key_definitions(facts, paths)
    if key:
        lines += ["## Key classes and functions", ""]
        for path, definition in key:
            what = f": {definition.doc}" if definition.doc else ""
            lines.append(
                f"- `{definition.name}` ({definition.kind} in `{path}`){what} "
                f"({cite(path, definition.start_line, definition.end_line)})"
            )
        lines.append("")
    calls = [call for call in facts.calls if call[1] in paths]
    if calls:
        lines += ["## Calls", "", *_call_diagram(facts, name, calls), ""]
        for caller, path, line, callee, target in calls[:MAX_CALLS_LISTED]:
            where = "" if target in paths else f" in `{target}`"
            lines.append(f"- `{caller}` calls `{callee}`{where} ({cite(path, line)})")
        lines.append("")
    lines += ["## Imports", "", *_import_diagram(facts, name), ""]
    outgoing = [(path, line, target) for path in paths for line, target in facts.imports.get(path, [])]
    if outgoing:
        for path, line, target in outgoing[:30]:
            lines.append(f"- `{path}` imports `{target}` ({cite(path, line)})")
        lines.append("")
    users = [
        (path, line, target)
        for path, found in sorted(facts.imports.items())
        if path not in paths
        for line, target in found
        if target in paths
    ]
    if users:
        lines += ["## Used by", ""]
        for path, line, target in users[:20]:
            lines.append(f"- `{path}` imports `{target}` ({cite(path, line)})")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _merge_overloads(found: list[Definition]) -> list[Definition]:
    """Consecutive definitions of one name are one: `@overload` signatures and their implementation, a
    property's getter and setter, TypeScript overload declarations. Cited from the first line to the
    last, with the first doc; `A.send` and a later `B.send` (a class between them) stay two."""
    merged: list[Definition] = []
    for definition in found:
        last = merged[-1] if merged else None
        if last is not None and (last.kind, last.name) == (definition.kind, definition.name):
            merged[-1] = replace(
                last, end_line=max(last.end_line, definition.end_line), doc=last.doc or definition.doc
            )
        else:
            merged.append(definition)
    return merged


def _key_definitions(facts: RepoFacts, paths: list[str]) -> list[tuple[str, Definition]]:
    """The module's definitions most worth a newcomer's time, in file order.

    Each file's best first, then each file's second best, and so on: ranked by path alone, the first
    file of deepwiki-open's `api` (`api/api.py`) filled all 25 places and `RAG` was missing. Within a
    file and a round: the most used (distinct callers in the code graph), functions and classes before
    methods, documented before not.
    """
    callers: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    for caller, caller_path, _, target, target_path in facts.calls:
        callers[(target_path, target.rsplit(".", 1)[-1])].add((caller_path, caller))

    def merit(item: tuple[str, Definition]) -> tuple[int, bool, bool, int]:
        path, definition = item
        return (
            -len(callers[(path, definition.name)]),
            definition.kind == "method",
            not definition.doc,
            definition.start_line,
        )

    candidates = [
        (path, d) for path in paths for d in _merge_overloads(facts.defs.get(path, [])) if d.is_public
    ]
    by_file: dict[str, list[tuple[str, Definition]]] = defaultdict(list)
    for item in sorted(candidates, key=merit):
        by_file[item[0]].append(item)
    round_of = {id(item): number for items in by_file.values() for number, item in enumerate(items)}
    ranked = sorted(candidates, key=lambda item: (round_of[id(item)], merit(item), item[0]))
    limit = MAX_DEFINITIONS[True] if len(paths) > 3 else MAX_DEFINITIONS[False]
    chosen = set(map(id, ranked[:limit]))
    return [item for item in candidates if id(item) in chosen]


def _import_diagram(facts: RepoFacts, name: str) -> list[str]:
    """A Mermaid flowchart of the module's files, their imports inside it, and the other modules they use."""
    paths = facts.modules[name][:MAX_DIAGRAM_NODES]
    ids = {path: node_id(number) for number, path in enumerate(paths, 1)}
    lines = ["```mermaid", "graph LR"]
    for path in paths:
        lines.append(f"    {ids[path]}[{label(posixpath.basename(path))}]")
    others: dict[str, str] = {}
    edges: set[tuple[str, str, str]] = set()
    for path in paths:
        for _, target in facts.imports.get(path, []):
            if target in ids:
                edges.add((ids[path], "-->", ids[target]))
                continue
            other = facts.module_of(target)
            if other is None or other == name or len(others) >= MAX_DIAGRAM_NODES // 2:
                continue
            if other not in others:
                others[other] = f"m{len(others) + 1}"
                lines.append(f"    {others[other]}([{label(other)}])")
            edges.add((ids[path], "-.->", others[other]))
    lines += [f"    {source} {arrow} {target}" for source, arrow, target in sorted(edges)]
    lines.append("```")
    return lines


def _call_diagram(facts: RepoFacts, name: str, calls: list[tuple[str, str, int, str, str]]) -> list[str]:
    """A Mermaid flowchart of who calls whom, from the code graph: the module's definitions, and the
    definitions of other modules they call (rounded)."""
    ids: dict[tuple[str, str], str] = {}
    lines = ["```mermaid", "graph LR"]
    edges: set[tuple[str, str]] = set()
    for caller, path, _, callee, target in calls:
        ends = []
        for qualname, where in ((caller, path), (callee, target)):
            key = (qualname, where)
            if key not in ids:
                if len(ids) >= MAX_DIAGRAM_NODES:
                    break
                ids[key] = node_id(len(ids) + 1)
                text = label(qualname if facts.module_of(where) == name else f"{qualname} ({where})")
                shape = f"[{text}]" if facts.module_of(where) == name else f"([{text}])"
                lines.append(f"    {ids[key]}{shape}")
            ends.append(ids[key])
        if len(ends) == 2 and ends[0] != ends[1]:
            edges.add((ends[0], ends[1]))
    lines += [f"    {source} --> {target}" for source, target in sorted(edges)]
    lines.append("```")
    return lines


def _module_diagram(facts: RepoFacts) -> list[str]:
    ids = {name: node_id(number) for number, name in enumerate(facts.modules, 1)}
    lines = ["```mermaid", "graph TD"]
    lines += [f"    {ids[name]}[{label(name)}]" for name in facts.modules]
    edges = set()
    for path, found in facts.imports.items():
        source = facts.module_of(path)
        for _, target in found:
            destination = facts.module_of(target)
            if source and destination and source != destination:
                edges.add((ids[source], ids[destination]))
    lines += [f"    {source} --> {target}" for source, target in sorted(edges)]
    lines.append("```")
    return lines


def _guide(facts: RepoFacts, path: str) -> str:
    """A document's outline: each section's heading, its first sentence and its lines."""
    lines_of_doc = facts.texts[path].splitlines()
    sections = headings(lines_of_doc)
    lines = [label_line(facts), "", f"This guide follows `{path}`.", ""]
    page_title = _doc_title(facts, path)
    for position, (number, level, title) in enumerate(sections):
        end = sections[position + 1][0] - 1 if position + 1 < len(sections) else len(lines_of_doc)
        paragraph = first_paragraph(lines_of_doc[:end], number)
        if (level, title) != (1, page_title):  # the page already has the document's title
            lines += [f"{'#' * min(level + 1, 6)} {title}", ""]
        if paragraph:
            lines.append(f"{first_sentence(paragraph.text, 400)} ({cite_span(path, paragraph)})")
        else:
            lines.append(f"See {cite(path, number, max(number, end))}.")
        lines.append("")
    if not sections:
        paragraph = first_paragraph(lines_of_doc)
        if paragraph:
            lines.append(f"{paragraph.text} ({cite(path, paragraph.start_line, paragraph.end_line)})")
    return "\n".join(lines).rstrip() + "\n"
