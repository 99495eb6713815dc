"""Whether a page of the previous wiki can stand for a page planned now, and if not, why.

A page is reused only when writing it again would give the same page:

- the files it was written from (`WikiPage.sources`, their sha256) and its planned files are unchanged;
- it was made by this version of its writer's generator (`OFFLINE_GENERATOR_VERSION` for offline pages,
  `MODEL_GENERATOR_VERSION` for a model's), so an upgrade of RepoLens that writes pages differently
  rewrites them without `--force`, and one that changes only the offline pages costs no model a page;
- by the same writer (`WikiPage.made_by.writer`): offline, or the same provider and model. Who asks
  for a wiki with another model expects that model's pages, not the old model's kept beside them;
- an offline page, from a code graph of the same version (`RepoIndex.graph_version`): its definitions,
  calls and imports come from the graph, so an update that rebuilt the graph with a new extractor changes
  them where no file changed. A model's page reads retrieved code, not the graph: a graph rebuild is no
  reason to pay for it again (its `made_by.graph` is None).

A page with no `made_by` was written before RepoLens recorded it and is written again. Each reason is
said, never silently acted on: on the page's `page` event (`reason`), counted in the `done` summary
(`reasons`), in `repolens wiki`'s and `repolens update`'s output, in the Wiki tab (`stale_reasons`), and
page by page in MCP's `read_wiki_structure` (`stale_reason`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rag.graph_types import graph_change
from rag.wiki.model import OFFLINE_WRITER, PageMaker, Wiki, WikiPage

OFFLINE_GENERATOR_VERSION = 9
"""The version of how offline pages are made from the same code and index. Bump it with any change that
makes an offline page or plan come out differently (`rag.wiki.offline`, `rag.wiki.codefacts`, and the
shared diagram checks of `rag.wiki.mermaid` and citation linking of `rag.wiki.generate`): the next
offline generation writes every offline page again and says why; without the bump users keep the old
pages until `--force`."""

MODEL_GENERATOR_VERSION = 9
"""The version of how a model's pages are made: its plan and page prompts (`rag.wiki.llm`, which include
the offline facts of `rag.wiki.offline.collect_facts`), how its replies are parsed, diagram checks and
citation linking. Apart from `OFFLINE_GENERATOR_VERSION` because a bump rewrites every model-written
page at the model's cost: a change to the offline pages alone is no reason to pay for that.
tests/test_wiki_fingerprint.py fails when what either generator makes from its fixture repository
changes and its version does not (the offline parts and the model's parts are fingerprinted apart)."""

NEW = "they are new"
FORCED = "a rewrite of every page was asked for"
UNRECORDED = "an older RepoLens wrote them without recording how"


def page_maker(writer: str, index: Any) -> PageMaker:
    """How a page is made now by `writer` (`OFFLINE_WRITER` or `<provider>/<model>`) from `index`."""
    graph = index.graph_version if writer == OFFLINE_WRITER else None
    return PageMaker(generator=generator_version(writer), writer=writer, graph=graph)


def generator_version(writer: str) -> int:
    """The generator version of `writer`'s pages: `OFFLINE_GENERATOR_VERSION` or `MODEL_GENERATOR_VERSION`."""
    return OFFLINE_GENERATOR_VERSION if writer == OFFLINE_WRITER else MODEL_GENERATOR_VERSION


def wiki_writer(wiki: Wiki) -> str:
    """Who wrote a stored wiki's pages: `OFFLINE_WRITER` or `<provider>/<model>`."""
    return OFFLINE_WRITER if wiki.mode == "offline" else f"{wiki.provider}/{wiki.model}"


def stale_reason(
    previous: WikiPage | None, planned: WikiPage, hashes: Mapping[str, str], now: PageMaker
) -> str | None:
    """Why `previous` cannot stand for `planned`, made `now` from files with sha256 `hashes`; None when
    it can (see the module docstring). Phrased to follow "N pages written again because"."""
    if previous is None or not previous.content or not previous.sources:
        return NEW
    made = previous.made_by
    if made is None:
        return UNRECORDED
    if made.generator != now.generator:
        return f"the wiki generator changed (version {made.generator} -> {now.generator})"
    if made.writer != now.writer:
        return f"another writer makes them ({made.writer} -> {now.writer})"
    if (change := graph_change(made.graph, now.graph)) is not None:
        return f"the code graph was rebuilt ({change})"
    if sorted(previous.filePaths) != sorted(planned.filePaths):
        return "their planned files changed"
    if any(hashes.get(path) != sha for path, sha in previous.sources.items()):
        return "their files changed"
    return None


def stale_pages(wiki: Wiki, index: Any) -> dict[str, str]:
    """`page id -> reason` for the pages of a stored wiki that its writer would write again from `index`
    now (the Wiki tab's `stale_pages`, MCP's `read_wiki_structure`, `repolens update`'s word on a model's
    wiki)."""
    now = page_maker(wiki_writer(wiki), index)
    hashes = index.file_hashes()
    found = ((page.id, stale_reason(page, page, hashes, now)) for page in wiki.ordered_pages())
    return {page_id: reason for page_id, reason in found if reason is not None}


def because(reasons: Mapping[str, int]) -> str:
    """`12 because the wiki generator changed (version 1 -> 2), 3 because their files changed`: why pages
    were (or would be) written again, most first; "" when they are only new."""
    said = sorted(((count, reason) for reason, count in reasons.items() if reason != NEW), reverse=True)
    return ", ".join(f"{count} because {reason}" for count, reason in said)
