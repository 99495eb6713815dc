"""Wikis as files: one Markdown document, a zip of Markdown pages, or JSON (which reads back into a `Wiki`).

The JSON layout is deepwiki-open's export (`{"metadata": {...}, "pages": [WikiPage]}`) with RepoLens'
additions (`structure`, and the wiki's identity in `metadata`), so either tool can read the other's.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rag.wiki.model import Wiki, WikiPage, WikiStructure

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def markdown_document(title: str, repo_url: str, pages: Sequence[WikiPage], *, note: str = "") -> str:
    """Every page in one Markdown file: a title, a table of contents, then the pages in order."""
    lines = [f"# {title}", "", f"Repository: {repo_url}", f"Generated: {_now()}", ""]
    if note:
        lines += [f"> {note}", ""]
    lines += ["## Contents", ""]
    lines += [f"- [{page.title}](#{page.id})" for page in pages]
    for page in pages:
        lines += ["", "---", "", f'<a id="{page.id}"></a>', "", f"## {page.title}", ""]
        if page.filePaths:
            lines += ["Files: " + ", ".join(f"`{path}`" for path in page.filePaths), ""]
        lines.append(page.content.strip())
        if page.relatedPages:
            lines += ["", "Related: " + ", ".join(f"[{ref}](#{ref})" for ref in page.relatedPages)]
    return "\n".join(lines) + "\n"


def json_document(repo_url: str, pages: Sequence[WikiPage], **metadata: Any) -> str:
    """deepwiki-open's JSON export; extra keyword `structure` adds the wiki's structure."""
    structure = metadata.pop("structure", None)
    document: dict[str, Any] = {
        "metadata": {"repository": repo_url, "generated_at": _now(), "page_count": len(pages), **metadata},
        "pages": [page.model_dump() for page in pages],
    }
    if structure is not None:
        document["structure"] = structure
    return json.dumps(document, indent=2, ensure_ascii=False)


def wiki_markdown(wiki: Wiki, repo_url: str) -> str:
    note = "" if wiki.mode != "offline" else "Generated without a language model."
    return markdown_document(wiki.structure.title, repo_url, wiki.ordered_pages(), note=note)


def wiki_json(wiki: Wiki, repo_url: str) -> str:
    skeleton = wiki.structure.model_copy(
        update={"pages": [page.model_copy(update={"content": ""}) for page in wiki.structure.pages]}
    )
    return json_document(
        repo_url,
        wiki.ordered_pages(),
        repo_id=wiki.repo_id,
        commit=wiki.commit,
        language=wiki.language,
        comprehensive=wiki.comprehensive,
        mode=wiki.mode,
        provider=wiki.provider,
        model=wiki.model,
        wiki_generated_at=wiki.generated_at,
        structure=skeleton.model_dump(),
    )


def wiki_from_json(text: str) -> Wiki:
    """Read back `wiki_json`'s output (raises `ValueError` on anything else)."""
    document = json.loads(text)
    meta = document["metadata"]
    pages = [WikiPage.model_validate(page) for page in document["pages"]]
    structure = WikiStructure.model_validate(document["structure"])
    return Wiki(
        repo_id=meta["repo_id"],
        commit=meta.get("commit"),
        language=meta.get("language", "en"),
        comprehensive=meta.get("comprehensive", True),
        mode=meta.get("mode", "offline"),
        provider=meta.get("provider"),
        model=meta.get("model"),
        generated_at=meta.get("wiki_generated_at", ""),
        structure=structure.model_copy(update={"pages": pages}),
        pages={page.id: page for page in pages},
    )


def wiki_zip(wiki: Wiki, repo_url: str) -> bytes:
    """`index.md` (contents), one `NN-<id>.md` per page, and `wiki.json`."""
    buffer = io.BytesIO()
    pages = wiki.ordered_pages()
    names = [f"{number:02d}-{_UNSAFE_NAME.sub('-', page.id)}.md" for number, page in enumerate(pages, 1)]
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        index = [f"# {wiki.structure.title}", "", wiki.structure.description, ""]
        index += [f"- [{page.title}]({name})" for page, name in zip(pages, names, strict=True)]
        archive.writestr("index.md", "\n".join(index) + "\n")
        for page, name in zip(pages, names, strict=True):
            archive.writestr(name, f"# {page.title}\n\n{page.content.strip()}\n")
        archive.writestr("wiki.json", wiki_json(wiki, repo_url))
    return buffer.getvalue()


def attachment_name(repo_url: str, extension: str) -> str:
    """`<repo>_wiki_<timestamp>.<ext>` like deepwiki-open, reduced to safe characters."""
    name = repo_url.rstrip("/").split("/")[-1] or "wiki"
    stamp = datetime.now(UTC).strftime("%Y%m%d_%H%M%S")
    return f"{_UNSAFE_NAME.sub('-', name)}_wiki_{stamp}.{extension}"
