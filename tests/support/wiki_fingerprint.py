"""A fingerprint of what the wiki generator makes from a fixed repository, so a change to it asks for a
bump of its writer's generator version (tests/test_wiki_fingerprint.py checks it against
`FINGERPRINT_FILE`): `offline/` parts ask for `OFFLINE_GENERATOR_VERSION`, `llm/` parts for
`MODEL_GENERATOR_VERSION`.

Pages are reused while `WikiPage.made_by.generator` equals `rag.wiki.freshness.generator_version(writer)`:
a change to how pages come out that does not bump it leaves every user with the old pages. What is
fingerprinted is the generator's output, not its source text (a comment or a refactor that writes the
same pages asks for nothing):

- the offline wiki (`rag.wiki.offline`, `rag.wiki.codefacts`, `rag.wiki.mermaid`, the page model),
  through `generate_wiki` itself;
- what a model is sent (`rag.wiki.llm`'s plan and page prompts), what is kept of a fixed plan reply,
  and what `rag.wiki.generate.finish_page` makes of a fixed page reply (diagram repair, citations).

The page prompts' context is each page's files, whole: retrieval and chunking have their own versions
and tests, and a change there is no reason to bump the wiki's. What the parts were made from, the
indexed files and the code graph's version, is recorded beside them (`inputs`): when those change the
parts change too, and the test says so instead of asking for a bump.

Run as `python -m tests.support.wiki_fingerprint HOME REPO_ID`: prints `{"inputs", "parts"}` as JSON for
the repository indexed in the store at HOME (the test runs it once per PYTHONHASHSEED).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from rag.citations import Span
from rag.graph_types import GRAPH_VERSION
from rag.settings import Settings
from rag.store import Store
from rag.types import SearchHit
from rag.wiki import llm, offline
from rag.wiki.freshness import page_maker
from rag.wiki.generate import WikiOptions, finish_page, generate_wiki
from rag.wiki.model import Wiki
from rag.wiki.store import WikiStore

FINGERPRINT_FILE = Path(__file__).with_name("wiki_fingerprint.json")

# A model's plan reply, fenced and with a trailing comma (the repair path), naming a file that is not
# there and a related page that does not exist.
PLAN_REPLY = """Here is the plan:
```json
{"title": "Weatherline", "description": "Forecasts in the terminal",
 "pages": [
  {"id": "Overview", "title": "Overview", "description": "What it does", "importance": "high",
   "filePaths": ["README.md", "./weatherline/cli.py"], "relatedPages": ["client", "nowhere"]},
  {"id": "client", "title": "HTTP client", "description": "Retries and backoff",
   "filePaths": ["weatherline/client.py", "missing/file.py"], "relatedPages": []},
  {"id": "web", "title": "Charts", "importance": "low", "filePaths": ["web/chart.js", "server/main.go"]},
 ],
 "sections": [{"id": "Start here", "title": "Start here", "pages": ["Overview", "client"]}],}
```"""

# A model's page reply: a citation of shown lines and one of lines it was not shown, a diagram to
# repair and one to drop.
PAGE_REPLY = """Weatherline fetches forecasts (README.md:3-4) and retries (weatherline/client.py:1-5).

```mermaid
graph TD
A[send(method, path)] --> B[backoff_delay]
```

It also invents lines (weatherline/client.py:900-901).

```mermaid
not a diagram at all
```
"""


def _offline_wiki(store: Store, repo_id: str) -> Wiki:
    """The offline wiki, generated afresh (`force`: no page reused). Only the comprehensive one: the
    concise one of so small a repository is the same."""
    settings = Settings.from_env(dotenv=store.home / "no.env")  # no developer .env in the way
    services = SimpleNamespace(store=store, embedder=None, settings=settings)

    async def run() -> list[dict[str, Any]]:
        options = WikiOptions(offline=True, force=True)
        return [event async for event in generate_wiki(services, repo_id, options)]

    failed = [event for event in asyncio.run(run()) if event["type"] == "error"]
    assert not failed, failed
    wiki = WikiStore(store).latest(repo_id)
    assert wiki is not None
    return wiki


def _whole_files(index: Any, paths: list[str]) -> list[SearchHit]:
    hits = []
    for path in paths:
        text, info = index.file_text(path) or "", index.file_info(path)
        language = info.language if info is not None else ""
        hits.append(SearchHit(path, language, 1, max(1, text.count("\n") + 1), None, text, 0.0))
    return hits


def made_parts(store: Store, repo_id: str) -> dict[str, Any]:
    """Everything the generator made, by part name (see the module docstring)."""
    parts: dict[str, Any] = {}
    wiki = _offline_wiki(store, repo_id)
    parts["offline/structure"] = wiki.structure.model_dump()
    for page in wiki.ordered_pages():
        parts[f"offline/page/{page.id}"] = page.model_dump()
    index = store.open(repo_id)
    facts = offline.collect_facts(index, True)
    for comprehensive, language in ((True, "en"), (False, "ja")):
        messages = llm.plan_messages(facts, comprehensive, language)
        parts[f"llm/plan-prompt/{language}"] = [dataclasses.asdict(message) for message in messages]
    parsed = llm.parse_plan(PLAN_REPLY)
    structure = llm.structure_from_plan(parsed.plan, set(facts.texts))
    parts["llm/plan"] = {"repaired": parsed.repaired, "structure": structure.model_dump()}
    hashes = index.file_hashes()
    made_by = page_maker("fake/model", index)
    for page in structure.pages:
        hits = _whole_files(index, page.filePaths)
        messages = llm.page_messages(page, structure, hits, True, "en")
        parts[f"llm/page-prompt/{page.id}"] = [dataclasses.asdict(message) for message in messages]
        context = [Span(hit.path, hit.start_line, hit.end_line) for hit in hits]
        finished, repaired, dropped = finish_page(page, PAGE_REPLY, context, index.record, hashes, made_by)
        parts[f"llm/page/{page.id}"] = {"page": finished.model_dump(), "diagrams": [repaired, dropped]}
    return parts


def fingerprint(store: Store, repo_id: str) -> dict[str, Any]:
    """`{"inputs": {...}, "parts": {name: sha256[:16]}}`: the place-independent digest of `made_parts`.

    The repository's id (it holds the fixture's temporary path) and commit are replaced by placeholders,
    and keys are sorted, so only what the generator decides is in it."""
    record = store.open(repo_id).record
    digests = {}
    for name, made in sorted(made_parts(store, repo_id).items()):
        text = json.dumps(made, sort_keys=True, ensure_ascii=False)
        text = text.replace(repo_id, "<repo>")
        if record.commit:
            text = text.replace(record.commit, "<commit>")
        digests[name] = hashlib.sha256(text.encode()).hexdigest()[:16]
    files = json.dumps(sorted(store.open(repo_id).file_hashes().items()))
    inputs = {"files": hashlib.sha256(files.encode()).hexdigest()[:16], "graph_version": GRAPH_VERSION}
    return {"inputs": inputs, "parts": digests}


if __name__ == "__main__":
    home, repo = sys.argv[1], sys.argv[2]
    print(json.dumps(fingerprint(Store(Path(home)), repo), indent=2, sort_keys=True))
