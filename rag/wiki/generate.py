"""Generate (or bring up to date) the wiki of an indexed repository, reporting progress as typed events.

`generate_wiki(services, repo_id, options)` is an async generator of event dicts:

- `{"type": "status", "stage": "wiki", "message": ...}` while reading the code and planning;
- `{"type": "wiki", "event": "structure", "title", "pages": [{id, title}], "total", "mode"}` once planned;
- `{"type": "wiki", "event": "note", "message"}` for what the reader should know (a repaired plan, a
  fallback to the offline plan, diagrams repaired or dropped);
- `{"type": "wiki", "event": "page", "index": k, "total": n, "page_id", "title", "reused", "reason"}` per
  page (`reason`: why the previous wiki's page was written again, `rag.wiki.freshness.stale_reason`);
- `{"type": "error", "code", "message"}` on failure; always last, one `{"type": "done", "wiki": {...}}`
  with the summary, `regenerated`/`reused` counts and `reasons` (`{reason: pages}` of the pages written
  again; new pages have none).

Pages are written concurrently (at most `options.concurrency` at once). A page of the previous wiki of the
same repository, language and detail is reused when the files it was written from (`WikiPage.sources`,
their sha256 at generation) and its planned files are unchanged, and it was made the way it would be made
now (`WikiPage.made_by`: generator version, writer, code graph version; `rag.wiki.freshness`); so after
`repolens update` only pages whose cited files changed are written again, and after an upgrade of RepoLens
that writes pages differently every page is. With no provider configured (or `offline=True`) the wiki is
written without a language model (`rag.wiki.offline`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rag.citations import Span, check_citations, extract_citations, link
from rag.embedders.base import embedder_for
from rag.errors import ErrorCode, RepoLensError
from rag.events import failure_event, status_event, wiki_done_event, wiki_event
from rag.providers.base import ChatProvider
from rag.providers.catalog import provider_or_offline
from rag.research.services import ResearchServices
from rag.retrieval import Retriever
from rag.wiki import llm, offline
from rag.wiki.freshness import FORCED, NEW, page_maker, stale_reason
from rag.wiki.mermaid import clean_diagrams
from rag.wiki.model import OFFLINE_WRITER, PageMaker, Wiki, WikiMode, WikiPage, WikiStructure
from rag.wiki.store import WikiStore, summary

logger = logging.getLogger(__name__)
Event = dict[str, Any]
DEFAULT_CONCURRENCY = 3


@dataclass
class WikiOptions:
    offline: bool = False
    language: str = "en"
    comprehensive: bool = True
    provider: str | None = None
    model: str | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    force: bool = False  # write every page again, even unchanged ones


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def finish_page(
    planned: WikiPage,
    content: str,
    context: list[Span],
    record: Any,
    hashes: dict[str, str],
    made_by: PageMaker,
) -> tuple[WikiPage, int, int]:
    """Diagrams checked, citations checked against `context` and linked, sources and maker recorded."""
    cleaned, repaired, dropped = clean_diagrams(content)
    citations = link(check_citations(extract_citations(cleaned), context), record)
    cited = [c.path for c in citations if c.in_context]
    sources = {path: hashes[path] for path in dict.fromkeys([*planned.filePaths, *cited]) if path in hashes}
    update = {
        "content": cleaned,
        "citations": [c.to_json() for c in citations],
        "sources": sources,
        "made_by": made_by,
    }
    return planned.model_copy(update=update), repaired, dropped


class _Run:
    """One generation: shared state of the page tasks."""

    def __init__(self, services: ResearchServices, repo_id: str, options: WikiOptions) -> None:
        self.services = services
        self.repo_id = repo_id
        self.options = options
        self.wikis = WikiStore(services.store)
        self.notes: list[str] = []

    def load(self) -> tuple[Any, offline.RepoFacts, dict[str, str]]:
        index = self.services.store.open(self.repo_id)
        facts = offline.collect_facts(index, self.options.comprehensive)
        return index, facts, index.file_hashes()

    def chat(self) -> ChatProvider | None:
        if self.options.offline:
            return None
        chat, note = provider_or_offline(self.options.provider, self.services.settings, self.options.model)
        if note:
            self.notes.append(
                note.replace("answering offline from the retrieved code", "writing the wiki offline")
            )
        return None if chat.name == "offline" else chat

    async def structure(
        self, chat: ChatProvider | None, facts: offline.RepoFacts, previous: Wiki | None, made_by: PageMaker
    ) -> WikiStructure:
        if chat is None:
            return offline.plan(facts)
        # A model's plan is kept (an interrupted run resumes) only if this generator and model made it.
        made_now = ("llm", made_by.generator, chat.name, chat.model)
        if (
            previous is not None
            and (previous.mode, previous.generator, previous.provider, previous.model) == made_now
        ):
            return previous.structure
        planned = await llm.plan_with_model(
            chat, facts, self.options.comprehensive, self.options.language, self.notes
        )
        return planned or offline.plan(facts)

    async def write(
        self,
        chat: ChatProvider | None,
        index: Any,
        facts: offline.RepoFacts,
        structure: WikiStructure,
        page: WikiPage,
    ) -> tuple[str, list[Span]]:
        if chat is None:
            whole_files = [Span(path, 1, max(1, text.count("\n") + 1)) for path, text in facts.texts.items()]
            return await asyncio.to_thread(offline.write_page, facts, page), whole_files
        hits = await asyncio.to_thread(self._retrieve, index, page)
        messages = llm.page_messages(page, structure, hits, self.options.comprehensive, self.options.language)
        text = await llm.complete(chat, messages, llm.PAGE_MAX_TOKENS[self.options.comprehensive])
        return text, [Span(hit.path, hit.start_line, hit.end_line) for hit in hits]

    def _retrieve(self, index: Any, page: WikiPage) -> list[Any]:
        embedder = embedder_for(self.services.embedder, index.record.embedder)
        index.check_embedder(embedder)
        found = Retriever(index, embedder).search(llm.page_query(page), 8)
        return llm.fit_context(llm.merge_hits(llm.file_hits(index, page.filePaths), found))


async def generate_wiki(
    services: ResearchServices,
    repo_id: str,
    options: WikiOptions | None = None,
    cancel: asyncio.Event | None = None,
) -> AsyncGenerator[Event, None]:
    """See the module docstring."""
    options = options or WikiOptions()
    counts = {"regenerated": 0, "reused": 0}
    reasons: Counter[str] = Counter()  # why the regenerated pages were written again
    result: dict[str, Any] = {}
    try:
        async for event in _generate(services, repo_id, options, cancel, counts, reasons, result):
            yield event
    except Exception as error:
        yield failure_event(error, logger, "wiki generation")
    yield wiki_done_event({**result, **counts, "reasons": dict(reasons)})


async def _generate(
    services: ResearchServices,
    repo_id: str,
    options: WikiOptions,
    cancel: asyncio.Event | None,
    counts: dict[str, int],
    reasons: Counter[str],
    result: dict[str, Any],
) -> AsyncGenerator[Event, None]:
    run = _Run(services, repo_id, options)
    yield status_event("wiki", f"reading the code of {repo_id}")
    index, facts, hashes = await asyncio.to_thread(run.load)
    record = index.record
    chat = run.chat()
    previous = None if options.force else run.wikis.latest(repo_id, options.language, options.comprehensive)
    mode: WikiMode = "offline" if chat is None else "llm"
    made_by = page_maker(OFFLINE_WRITER if chat is None else f"{chat.name}/{chat.model}", index)
    if chat is not None:
        yield {
            "type": "status",
            "stage": "wiki",
            "message": f"planning the wiki with {chat.name} ({chat.model})",
        }
    structure = await run.structure(chat, facts, previous, made_by)
    for note in run.notes:
        yield wiki_event(event="note", message=note)
    shown = len(run.notes)
    total = len(structure.pages)
    yield wiki_event(event="structure", **llm.plan_summary(structure), total=total, mode=mode)

    pages: dict[str, WikiPage] = {}
    old = previous.pages if previous is not None else {}
    limit = asyncio.Semaphore(max(1, options.concurrency))

    async def produce(planned: WikiPage) -> tuple[WikiPage, str | None, int, int]:
        """The page, and why it was written again (None: the previous one is reused)."""
        reason = FORCED if options.force else stale_reason(old.get(planned.id), planned, hashes, made_by)
        if reason is None:
            return old[planned.id], None, 0, 0
        async with limit:
            if cancel is not None and cancel.is_set():
                raise RepoLensError("the wiki generation was cancelled", code=ErrorCode.CANCELLED)
            content, context = await run.write(chat, index, facts, structure, planned)
        page, repaired, dropped = finish_page(planned, content, context, record, hashes, made_by)
        return page, reason, repaired, dropped

    skeleton = structure.model_copy(
        update={"pages": [page.model_copy(update={"content": ""}) for page in structure.pages]}
    )

    def snapshot(complete: bool) -> Wiki:
        return Wiki(
            repo_id=repo_id,
            commit=record.commit,
            language=options.language,
            comprehensive=options.comprehensive,
            mode=mode,
            provider=None if chat is None else chat.name,
            model=None if chat is None else chat.model,
            generated_at=_now(),
            complete=complete,
            generator=made_by.generator,
            structure=skeleton,
            pages=dict(pages),
        )

    tasks = [asyncio.ensure_future(produce(page)) for page in structure.pages]
    try:
        for done_number, finished in enumerate(asyncio.as_completed(tasks), 1):
            page, reason, repaired, dropped = await finished
            pages[page.id] = page
            if reason is not None and chat is not None:
                # Saved page by page: an interrupted run resumes from here (the next run reuses these).
                await asyncio.to_thread(run.wikis.save, snapshot(complete=False))
            counts["reused" if reason is None else "regenerated"] += 1
            replaced = None if reason == NEW else reason  # a previous page was there: why it went is news
            if replaced is not None:
                reasons[replaced] += 1
            if repaired or dropped:
                message = f"{page.title}: {repaired} diagram(s) repaired, {dropped} dropped (invalid Mermaid)"
                yield wiki_event(event="note", message=message)
            said = {"reused": reason is None, **({} if replaced is None else {"reason": replaced})}
            yield wiki_event(
                event="page", index=done_number, total=total, page_id=page.id, title=page.title, **said
            )
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.gather(*tasks, return_exceptions=True)
    for note in run.notes[shown:]:
        yield wiki_event(event="note", message=note)
    wiki = snapshot(complete=True)
    await asyncio.to_thread(run.wikis.save, wiki)
    result.update(summary(wiki))
