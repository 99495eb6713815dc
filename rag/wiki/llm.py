"""The wiki written by a language model: a JSON plan checked by a schema, then pages grounded in code.

The plan is asked for as JSON and validated with pydantic. A reply that is not valid JSON is first
repaired (`json_repair`: code fences, trailing commas, missing quotes or brackets), then, if it still does
not fit the schema, asked for again with the validation error (up to `PLAN_ATTEMPTS` times); if every
attempt fails the offline plan is used. A wiki never fails on the model's formatting.

Each page is written from the code retrieved for it (hybrid search on its title and description plus the
start of its files), shown with line numbers; its citations are then checked against exactly that context
(`rag.citations.check_citations`), and its Mermaid diagrams are validated, repaired or dropped
(`rag.wiki.mermaid`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import json_repair
from pydantic import BaseModel, Field, ValidationError

from rag.prompt import language_name, render_context
from rag.providers.base import ChatProvider, ChatRequest, Message, TextDelta
from rag.tokens import count_tokens
from rag.types import SearchHit
from rag.wiki.model import Importance, WikiPage, WikiSection, WikiStructure
from rag.wiki.offline import RepoFacts, slug

PLAN_ATTEMPTS = 3
PLAN_MAX_TOKENS = 4096
PAGE_MAX_TOKENS = {True: 3000, False: 1200}
PAGE_COUNT = {True: "8 to 14", False: "4 to 6"}
TREE_MAX_PATHS = 400
README_MAX_TOKENS = 2500
CONTEXT_MAX_TOKENS = 6000
_FENCED = re.compile(r"```(?:json)?\s*\n(.*?)```", re.DOTALL)


class PlannedPage(BaseModel):
    id: str = Field(min_length=1, max_length=120)
    title: str = Field(min_length=1, max_length=200)
    description: str = ""
    filePaths: list[str] = Field(default_factory=list)
    importance: Importance = "medium"
    relatedPages: list[str] = Field(default_factory=list)


class PlannedSection(BaseModel):
    id: str = Field(min_length=1, max_length=120)
    title: str = Field(min_length=1, max_length=200)
    pages: list[str] = Field(default_factory=list)


class WikiPlan(BaseModel):
    """The schema the model's plan must follow."""

    title: str = Field(min_length=1, max_length=200)
    description: str = ""
    pages: list[PlannedPage] = Field(min_length=1, max_length=40)
    sections: list[PlannedSection] = Field(default_factory=list)


class PlanError(ValueError):
    pass


@dataclass
class ParsedPlan:
    plan: WikiPlan
    repaired: bool


def parse_plan(text: str) -> ParsedPlan:
    """The plan in a model's reply: strict JSON first, then the repaired JSON; `PlanError` says why not."""
    fenced = _FENCED.search(text)
    candidate = fenced.group(1) if fenced else text
    start, end = candidate.find("{"), candidate.rfind("}")
    strict = candidate[start : end + 1] if 0 <= start < end else candidate
    try:
        return ParsedPlan(WikiPlan.model_validate(json.loads(strict)), repaired=False)
    except (json.JSONDecodeError, ValidationError):
        pass
    data = json_repair.loads(candidate)
    if not isinstance(data, dict):
        raise PlanError("the reply holds no JSON object")
    try:
        return ParsedPlan(WikiPlan.model_validate(data), repaired=True)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, item['loc'])) or 'plan'}: {item['msg']}"
            for item in error.errors(include_input=False, include_url=False)
        )
        raise PlanError(f"the JSON does not follow the schema: {problems}") from None


_SCHEMA_EXAMPLE = {
    "title": "Project wiki",
    "description": "One sentence about the project",
    "pages": [
        {
            "id": "overview",
            "title": "Overview",
            "description": "What this page explains",
            "filePaths": ["README.md", "src/main.py"],
            "importance": "high",
            "relatedPages": ["architecture"],
        }
    ],
    "sections": [{"id": "getting-started", "title": "Getting started", "pages": ["overview"]}],
}


def plan_messages(facts: RepoFacts, comprehensive: bool, language: str) -> list[Message]:
    paths = sorted(facts.texts)
    tree = "\n".join(paths[:TREE_MAX_PATHS]) + (
        f"\n... ({len(paths) - TREE_MAX_PATHS} more)" if len(paths) > TREE_MAX_PATHS else ""
    )
    readme = facts.texts.get(facts.readme or "", "")
    while readme and count_tokens(readme) > README_MAX_TOKENS:
        readme = readme[: int(len(readme) * 0.8)]
    modules = "\n".join(
        f"- {name}: {len(files)} files"
        + (f" ({facts.summaries[files[0]].text[:150]})" if files[0] in facts.summaries else "")
        for name, files in facts.modules.items()
    )
    system = (
        "You plan the wiki of a code repository: pages that explain its architecture, modules, data flows "
        "and "
        "how to use it. Reply with one JSON object and nothing else, following exactly this shape:\n"
        + json.dumps(_SCHEMA_EXAMPLE, indent=2)
        + "\nRules: `id` is lowercase-with-dashes and unique; every page lists 1 to 8 `filePaths` taken from "
        "the file tree; `importance` is high, medium or low; every page belongs to one section; "
        f"write titles and descriptions in {language_name(language)}."
    )
    user = (
        f"Repository: {facts.repo_id}\n\nFile tree:\n{tree}\n\nModules:\n{modules or '(none)'}\n\n"
        f"README:\n{readme or '(none)'}\n\nPlan {PAGE_COUNT[comprehensive]} pages."
    )
    return [Message("system", system), Message("user", user)]


async def complete(chat: ChatProvider, messages: list[Message], max_tokens: int) -> str:
    parts = []
    async for event in chat.stream(
        ChatRequest(messages, model=chat.model, max_tokens=max_tokens, temperature=0.2)
    ):
        if isinstance(event, TextDelta):
            parts.append(event.text)
    return "".join(parts)


async def plan_with_model(
    chat: ChatProvider, facts: RepoFacts, comprehensive: bool, language: str, notes: list[str]
) -> WikiStructure | None:
    """The model's plan as a structure (None after `PLAN_ATTEMPTS` unusable replies).

    `notes` receives what happened (repairs, retries) for the progress events."""
    messages = plan_messages(facts, comprehensive, language)
    for attempt in range(1, PLAN_ATTEMPTS + 1):
        reply = await complete(chat, messages, PLAN_MAX_TOKENS)
        try:
            parsed = parse_plan(reply)
        except PlanError as error:
            notes.append(f"plan attempt {attempt} was not usable ({error}); asking again")
            messages = [
                *messages,
                Message("assistant", reply[:4000]),
                Message(
                    "user", f"That reply was not usable: {error}. Reply again with only the JSON object."
                ),
            ]
            continue
        if parsed.repaired:
            notes.append(f"plan attempt {attempt} was repaired into valid JSON")
        return structure_from_plan(parsed.plan, set(facts.texts))
    notes.append(f"no usable plan after {PLAN_ATTEMPTS} attempts; using the offline plan")
    return None


def structure_from_plan(plan: WikiPlan, known: set[str]) -> WikiStructure:
    """Unique ids, file paths that exist, related pages and sections that name real pages."""
    pages: list[WikiPage] = []
    ids: dict[str, str] = {}
    for planned in plan.pages:
        page_id = base = slug(planned.id)
        number = 2
        while page_id in ids.values():
            page_id, number = f"{base}-{number}", number + 1
        ids[planned.id] = page_id
        paths = [path.strip().lstrip("./") for path in planned.filePaths]
        pages.append(
            WikiPage(
                id=page_id,
                title=planned.title,
                description=planned.description,
                filePaths=[path for path in dict.fromkeys(paths) if path in known][:8],
                importance=planned.importance,
            )
        )
    for page, planned in zip(pages, plan.pages, strict=True):
        page.relatedPages = [ids[ref] for ref in planned.relatedPages if ref in ids and ids[ref] != page.id]
    sections = [
        WikiSection(
            id=slug(section.id), title=section.title, pages=[ids[ref] for ref in section.pages if ref in ids]
        )
        for section in plan.sections
    ]
    sections = [section for section in sections if section.pages]
    placed = {page_id for section in sections for page_id in section.pages}
    loose = [page.id for page in pages if page.id not in placed]
    if loose:
        sections.append(WikiSection(id="section-other", title="Other pages", pages=loose))
    return WikiStructure(
        id="wiki",
        title=plan.title,
        description=plan.description,
        pages=pages,
        sections=sections,
        rootSections=[section.id for section in sections],
    )


def fit_context(hits: Sequence[SearchHit], budget: int = CONTEXT_MAX_TOKENS) -> list[SearchHit]:
    kept, used = [], 0
    for hit in hits:
        cost = count_tokens(hit.text) + 20
        if used + cost > budget:
            continue
        kept.append(hit)
        used += cost
    return kept


def page_messages(
    page: WikiPage, structure: WikiStructure, hits: Sequence[SearchHit], comprehensive: bool, language: str
) -> list[Message]:
    others = "\n".join(f"- {other.id}: {other.title}" for other in structure.pages if other.id != page.id)
    length = "about 500 to 900 words" if comprehensive else "about 200 to 400 words"
    system = (
        "You write one page of a wiki about a code repository, in Markdown, for engineers new to the code. "
        "Use only the code shown in <context>. After every statement about the code, cite the lines it comes "
        "from as path:start-end, with paths and line numbers exactly as shown in the context; never cite "
        "lines you were not shown. Include at most one Mermaid diagram in a ```mermaid block, a flowchart "
        '(`graph TD`) whose node labels are in double quotes, e.g. A["Client"] --> B["Server"]. '
        f"Write {length} in {language_name(language)}. Do not repeat the page title as a heading."
    )
    user = (
        f"Wiki: {structure.title}\nPage: {page.title}\nAbout: {page.description or page.title}\n"
        f"Files: {', '.join(page.filePaths) or '(any)'}\n"
        f"Other pages (link as [title](#id)):\n{others or '(none)'}"
        f"\n\n<context>\n{render_context(hits) or '(no code was retrieved)'}\n</context>"
    )
    return [Message("system", system), Message("user", user)]


def page_query(page: WikiPage) -> str:
    return f"{page.title}\n{page.description}"


def file_hits(index: Any, paths: Sequence[str], per_file: int = 2) -> list[SearchHit]:
    """The first chunks of each of the page's files, so a page always sees the code it is about."""
    hits: list[SearchHit] = []
    for path in paths[:6]:
        hits.extend(chunk.to_hit(0.0) for chunk in index.chunks_for_file(path)[:per_file])
    return hits


def merge_hits(*groups: Sequence[SearchHit]) -> list[SearchHit]:
    seen: set[tuple[str, int, int]] = set()
    merged = []
    for group in groups:
        for hit in group:
            key = (hit.path, hit.start_line, hit.end_line)
            if key not in seen:
                seen.add(key)
                merged.append(hit)
    return merged


def plan_summary(structure: WikiStructure) -> dict[str, Any]:
    return {
        "title": structure.title,
        "pages": [{"id": page.id, "title": page.title} for page in structure.pages],
    }
