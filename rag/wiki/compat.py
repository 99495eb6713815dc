"""deepwiki-open's own wiki generation, answered without a language model.

Its front end writes a wiki by sending two kinds of chat requests over `/ws/chat`: one asking for the
structure as `<wiki_structure>` XML, then one per page ("You are an expert technical writer..."). With a
configured model those go to the model like any question. With none, the offline answer would not be the
XML it parses ("No valid XML found in response"), so these two requests are recognised and answered from
the offline wiki instead: the structure as the XML its parser reads, each page as the offline page of that
title. Everything else is a normal question.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator
from typing import Any
from xml.sax.saxutils import escape

from rag.errors import RepoLensError
from rag.events import done_event, error_event, token_event
from rag.providers.catalog import provider_or_offline
from rag.research.services import ResearchServices
from rag.settings import Settings
from rag.wiki import offline
from rag.wiki.model import WikiPage, WikiStructure

_STRUCTURE_MARKERS = ("<wiki_structure>", "Return your analysis in the following XML format")
_PAGE_MARKERS = ("You are an expert technical writer and software architect.", "[WIKI_PAGE_TOPIC]")
_PAGE_TITLE = re.compile(r"H1 Markdown heading: `# (?P<title>[^`\n]+)`")
_PAGE_FILE = re.compile(r"^- \[(?P<path>[^\]\n]+)\]\(", re.MULTILINE)


def wiki_request_kind(text: str) -> str | None:
    """`structure`, `page`, or None for an ordinary question."""
    if all(marker in text for marker in _STRUCTURE_MARKERS):
        return "structure"
    if all(marker in text for marker in _PAGE_MARKERS):
        return "page"
    return None


def answers_offline(settings: Settings, provider: str | None, model: str | None) -> bool:
    """Whether a request naming `provider` would be answered by the offline provider."""
    try:
        chat, _ = provider_or_offline(provider, settings, model)
    except RepoLensError:
        return False
    return chat.name == "offline"


def structure_xml(structure: WikiStructure) -> str:
    """The structure in the XML deepwiki-open's front end parses (sections, pages, files, related pages)."""
    section_of = {page_id: section.id for section in structure.sections or [] for page_id in section.pages}
    lines = [
        "<wiki_structure>",
        f"  <title>{escape(structure.title)}</title>",
        f"  <description>{escape(structure.description)}</description>",
        "  <sections>",
    ]
    for section in structure.sections or []:
        lines.append(f'    <section id="{escape(section.id)}">')
        lines.append(f"      <title>{escape(section.title)}</title>")
        lines.append("      <pages>")
        lines += [f"        <page_ref>{escape(page_id)}</page_ref>" for page_id in section.pages]
        lines += ["      </pages>", "    </section>"]
    lines += ["  </sections>", "  <pages>"]
    for page in structure.pages:
        lines.append(f'    <page id="{escape(page.id)}">')
        lines.append(f"      <title>{escape(page.title)}</title>")
        lines.append(f"      <description>{escape(page.description)}</description>")
        lines.append(f"      <importance>{page.importance}</importance>")
        lines.append("      <relevant_files>")
        lines += [f"        <file_path>{escape(path)}</file_path>" for path in page.filePaths]
        lines.append("      </relevant_files>")
        lines.append("      <related_pages>")
        lines += [f"        <related>{escape(ref)}</related>" for ref in page.relatedPages]
        lines.append("      </related_pages>")
        if page.id in section_of:
            lines.append(f"      <parent_section>{escape(section_of[page.id])}</parent_section>")
        lines.append("    </page>")
    lines += ["  </pages>", "</wiki_structure>"]
    return "\n".join(lines)


def _page_for(structure: WikiStructure, title: str, paths: list[str]) -> WikiPage:
    """The offline page the front end asks for: by title, else the one sharing the most files."""
    for page in structure.pages:
        if page.title.strip().lower() == title.strip().lower():
            return page
    return max(structure.pages, key=lambda page: len(set(page.filePaths) & set(paths)))


def page_markdown(facts: offline.RepoFacts, structure: WikiStructure, text: str) -> str:
    match = _PAGE_TITLE.search(text)
    title = match.group("title").strip() if match else structure.pages[0].title
    page = _page_for(structure, title, _PAGE_FILE.findall(text))
    files = "\n".join(f"- {path}" for path in page.filePaths)
    details = f"<details>\n<summary>Relevant source files</summary>\n\n{files}\n</details>\n\n"
    return f"{details}# {page.title}\n\n{offline.write_page(facts, page)}"


def _answer(services: ResearchServices, repo_id: str, kind: str, text: str) -> str:
    index = services.store.open(repo_id)
    comprehensive = "Create 4-6 pages" not in text
    facts = offline.collect_facts(index, comprehensive)
    structure = offline.plan(facts)
    return structure_xml(structure) if kind == "structure" else page_markdown(facts, structure, text)


async def compat_wiki_events(
    services: ResearchServices, repo_id: str, kind: str, text: str
) -> AsyncGenerator[dict[str, Any], None]:
    """The answer as `token` frames (the compatible transports forward their text), then `done`."""
    try:
        answer = await asyncio.to_thread(_answer, services, repo_id, kind, text)
    except RepoLensError as error:
        yield error_event(error.code, str(error))
    else:
        yield token_event(answer)
    yield done_event(provider="offline", model="offline")
