"""Server-side wikis: the offline wiki, the LLM wiki through the fake provider, updates, exports, CLI."""

from __future__ import annotations

import asyncio
import io
import json
import re
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from api.cli import app
from api.cli.wiki_cmd import same_wiki_options, what_happened
from ingest import ingest, update
from ingest import pipeline as ingest_pipeline
from rag.citations import extract_citations
from rag.embedders import Embedder
from rag.graph_types import GRAPH_VERSION
from rag.settings import Settings
from rag.store import Store
from rag.wiki import freshness
from rag.wiki.codefacts import first_paragraph
from rag.wiki.export import wiki_from_json, wiki_json, wiki_markdown, wiki_zip
from rag.wiki.generate import WikiOptions, generate_wiki
from rag.wiki.llm import parse_plan
from rag.wiki.mermaid import check_diagram, clean_diagrams, diagrams
from rag.wiki.model import Wiki
from rag.wiki.store import WikiStore
from tests.support.fake_provider import FakeProvider, FakeResponse
from tests.support.repos import commit_all, write_files

_DEFINITION_BULLET = re.compile(
    r"^- `(?P<name>\w+)` \((?P<kind>class|function|method) in `(?P<path>[^`]+)`\)"
)


def run_wiki(store: Store, embedder: Embedder | None, repo_id: str, **options: Any) -> list[dict[str, Any]]:
    services = SimpleNamespace(store=store, embedder=embedder, settings=Settings.from_env())

    async def collect() -> list[dict[str, Any]]:
        return [event async for event in generate_wiki(services, repo_id, WikiOptions(**options))]

    return asyncio.run(collect())


def index_line(store: Store, repo_id: str, path: str, line: int) -> str:
    text = store.open(repo_id).file_text(path)
    assert text is not None
    return text.splitlines()[line - 1]


def saved(store: Store, repo_id: str) -> Wiki:
    wiki = WikiStore(store).latest(repo_id)
    assert wiki is not None
    return wiki


def test_offline_wiki_has_an_overview_module_pages_diagrams_and_real_citations(
    indexed_repo: tuple[Store, str],
) -> None:
    store, repo_id = indexed_repo
    events = run_wiki(store, None, repo_id, offline=True)
    kinds = [event["type"] for event in events]
    assert kinds[-1] == "done" and "error" not in kinds
    structure = next(event for event in events if event.get("event") == "structure")
    progress = [event for event in events if event.get("event") == "page"]
    assert [event["index"] for event in progress] == list(range(1, structure["total"] + 1))

    wiki = saved(store, repo_id)
    assert wiki.mode == "offline" and wiki.provider is None
    assert {"overview", "module-weatherline", "module-web", "module-server"} <= set(wiki.pages)
    assert any(page_id.startswith("guide-") for page_id in wiki.pages)
    overview = wiki.pages["overview"].content
    assert "Generated without a language model" in overview
    assert "Weatherline fetches weather forecasts" in overview and "(`README.md:3-4`)" in overview

    module = wiki.pages["module-weatherline"].content
    calls, imports = diagrams(module)  # from the code graph: who calls whom, which file imports which
    for diagram in (calls, imports):
        checked = check_diagram(diagram)
        assert checked.text is not None and not checked.repaired
        assert re.search(r"n\d+ --> n\d+", diagram)
    assert '["ForecastService.run"]' in calls and '["service.py"]' in imports
    [call] = [
        line
        for line in module.splitlines()
        if line.startswith("- `ForecastService.run` calls `HttpClient.send`")
    ]
    [citation] = extract_citations(call)
    assert ".send(" in index_line(store, repo_id, citation.path, citation.start_line)
    assert "`ForecastService`" in module and "`persist_forecasts`" in module

    index = store.open(repo_id)
    checked_bullets = 0
    for page in wiki.ordered_pages():
        citations = extract_citations(page.content)
        assert citations, page.id
        assert page.citations and all(item["in_context"] for item in page.citations)
        for citation in citations:
            text = index.file_text(citation.path)
            assert text is not None, citation
            assert citation.end_line <= len(text.splitlines()), citation
        for line in page.content.splitlines():
            match = _DEFINITION_BULLET.match(line)
            if match:
                [citation] = extract_citations(line)
                first = index.file_text(citation.path).splitlines()[citation.start_line - 1]
                assert match["name"] in first and citation.path == match["path"], line
                checked_bullets += 1
    assert checked_bullets >= 8


def test_update_regenerates_only_the_pages_citing_the_changed_file(
    indexed_repo: tuple[Store, str], fixture_repo: Path, shared_embedder: Embedder
) -> None:
    store, repo_id = indexed_repo
    run_wiki(store, None, repo_id, offline=True)
    before = saved(store, repo_id)
    citing = {page.id for page in before.ordered_pages() if "web/format.js" in page.sources}
    assert citing and len(citing) < len(before.pages)

    write_files(
        fixture_repo,
        {
            "web/format.js": "/** Formats degrees Celsius, one decimal. */\n"
            "export function formatCelsius(v) {\n  return `${v.toFixed(1)} C`;\n}\n"
        },
    )
    commit_all(fixture_repo, "shorter unit")
    update(repo_id, store=store, embedder=shared_embedder)

    events = run_wiki(store, None, repo_id, offline=True)
    done = events[-1]["wiki"]
    rewritten = {event["page_id"] for event in events if event.get("event") == "page" and not event["reused"]}
    assert rewritten == citing
    assert done["regenerated"] == len(citing) and done["reused"] == len(before.pages) - len(citing)
    after = saved(store, repo_id)
    assert after.commit != before.commit
    assert "Formats degrees Celsius, one decimal." in after.pages["module-web"].content


PLAN = {
    "title": "Weatherline wiki",
    "description": "Forecasts in the terminal",
    "pages": [
        {
            "id": "overview",
            "title": "Overview",
            "description": "What it does",
            "filePaths": ["README.md"],
            "importance": "high",
            "relatedPages": ["http-client"],
        },
        {
            "id": "http-client",
            "title": "HTTP client",
            "description": "Retries and backoff",
            "filePaths": ["weatherline/client.py", "missing/file.py"],
            "importance": "medium",
            "relatedPages": [],
        },
        {
            "id": "service",
            "title": "Forecast service",
            "description": "Fetch, parse, store",
            "filePaths": ["weatherline/service.py"],
            "importance": "medium",
            "relatedPages": ["overview"],
        },
    ],
    "sections": [{"id": "core", "title": "Core", "pages": ["overview", "http-client", "service"]}],
}
BROKEN_DIAGRAM_PAGE = (
    "Weatherline prints forecasts (README.md:3-4).\n\n```mermaid\ngraph TD\n"
    "A[send(method, path)] --> B[backoff_delay]\n```\n\nAnd it invents lines (weatherline/client.py:900-901)."
)


def test_llm_wiki_repairs_a_broken_plan_and_checks_citations_and_diagrams(
    indexed_repo: tuple[Store, str],
    shared_embedder: Embedder,
    openai_fake: FakeProvider,
) -> None:
    store, repo_id = indexed_repo
    openai_fake.script(
        FakeResponse(text='Here is the plan you asked for: {"title": "Weatherline", "pages": [{"id": '),
        FakeResponse(text=json.dumps(PLAN)),
        FakeResponse(text=BROKEN_DIAGRAM_PAGE),
    )  # the other pages get the fake's echo answer, which cites a span of the prompt
    events = run_wiki(store, shared_embedder, repo_id, provider="openai", concurrency=1)
    assert events[-1]["type"] == "done" and "error" not in [event["type"] for event in events]
    notes = [event["message"] for event in events if event.get("event") == "note"]
    assert any("plan attempt 1 was not usable" in note and "asking again" in note for note in notes)
    assert any("1 diagram(s) repaired" in note for note in notes)
    assert "No valid XML" not in json.dumps(events)
    retry = openai_fake.requests[1].body["messages"]
    assert "not usable" in retry[-1]["content"]

    wiki = saved(store, repo_id)
    assert wiki.mode == "llm" and wiki.provider == "openai"
    assert [page.id for page in wiki.ordered_pages()] == ["overview", "http-client", "service"]
    assert wiki.pages["http-client"].filePaths == ["weatherline/client.py"]
    assert wiki.structure.sections and wiki.structure.sections[0].pages == [
        "overview",
        "http-client",
        "service",
    ]
    first = wiki.pages["overview"]
    assert 'A["send(method, path)"] --> B["backoff_delay"]' in first.content
    by_lines = {(c["path"], c["start_line"]): c["in_context"] for c in first.citations}
    assert by_lines[("README.md", 3)] is True
    assert by_lines[("weatherline/client.py", 900)] is False
    for page in wiki.ordered_pages():
        assert page.content and page.sources
    # The page prompts carried numbered code from the retrieved context.
    page_prompt = openai_fake.requests[2].body["messages"][-1]["content"]
    assert "<context>" in page_prompt and "weatherline/" in page_prompt


def test_parse_plan_repairs_fenced_json_with_trailing_commas() -> None:
    text = "```json\n" + json.dumps(PLAN, indent=1).replace('"high"', '"high",').rstrip("}") + ",}\n```"
    parsed = parse_plan(text)
    assert parsed.repaired and [page.id for page in parsed.plan.pages] == [
        "overview",
        "http-client",
        "service",
    ]
    assert not parse_plan(json.dumps(PLAN)).repaired


@pytest.mark.parametrize(
    ("source", "kept"),
    [
        ("graph TD\n  A --> B", "A --> B"),
        ("graph LR\n  Web Page --> API[serve(x)]", 'Web_Page --> API["serve(x)"]'),
        ("flowchart TD\n  A --> B\n  ][ nonsense ((", "A --> B"),
        ("sequenceDiagram\n  A->>B: hi", "A->>B: hi"),
    ],
)
def test_mermaid_check_and_repair(source: str, kept: str) -> None:
    checked = check_diagram(source)
    assert checked.text is not None and kept in checked.text


def test_an_unrepairable_diagram_is_dropped_from_the_page() -> None:
    text, repaired, dropped = clean_diagrams("Intro\n```mermaid\nnot a diagram at all\n```\nOutro")
    assert (repaired, dropped) == (0, 1) and "```mermaid" not in text and "Outro" in text


def test_exports_round_trip(indexed_repo: tuple[Store, str]) -> None:
    store, repo_id = indexed_repo
    run_wiki(store, None, repo_id, offline=True)
    wiki = saved(store, repo_id)
    back = wiki_from_json(wiki_json(wiki, "https://example.invalid/weatherline"))
    assert back.ordered_pages() == wiki.ordered_pages()
    assert (back.repo_id, back.commit, back.mode, back.structure.sections) == (
        wiki.repo_id,
        wiki.commit,
        wiki.mode,
        wiki.structure.sections,
    )
    markdown = wiki_markdown(wiki, "https://example.invalid/weatherline")
    for page in wiki.ordered_pages():
        assert f"## {page.title}" in markdown and page.content.strip() in markdown
    archive = zipfile.ZipFile(io.BytesIO(wiki_zip(wiki, "https://example.invalid/weatherline")))
    names = archive.namelist()
    assert "index.md" in names and len([n for n in names if n.endswith(".md")]) == len(wiki.pages) + 1
    assert wiki_from_json(archive.read("wiki.json").decode()).ordered_pages() == wiki.ordered_pages()


def test_cli_wiki_offline_with_json_export(indexed_repo: tuple[Store, str], tmp_path: Path) -> None:
    _, repo_id = indexed_repo
    out = tmp_path / "wiki.json"
    runner = CliRunner()
    result = runner.invoke(
        app, ["wiki", repo_id, "--offline", "--export", "json", "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["mode"] == "offline" and summary["regenerated"] == summary["pages"] >= 4
    assert wiki_from_json(out.read_text()).pages.keys() >= {"overview", "module-weatherline"}
    again = runner.invoke(app, ["wiki", repo_id, "--offline", "--json"])
    assert json.loads(again.stdout.strip().splitlines()[-1])["reused"] == summary["pages"]
    plain = runner.invoke(app, ["wiki", repo_id, "--offline"])  # piped: the summary, no progress bar
    assert "━" not in plain.output
    lines = plain.stdout.splitlines()
    assert lines[:2] == [
        f"Weatherline wiki: {summary['pages']} pages, made without a language model",
        f"up to date: {summary['pages']} pages unchanged, nothing regenerated",  # not "0 regenerated"
    ]
    command = f"  repolens wiki {repo_id} --offline --export md --out wiki.md"
    assert command in lines  # a command to copy, whole (this local id is long)
    assert max(len(line) for line in lines if line != command) <= 80  # piped: none rich has to break
    zipped = runner.invoke(app, ["wiki", repo_id, "--offline", "--export", "zip"])  # a zip is not for stdout
    assert zipped.exit_code == 2 and "needs --out" in zipped.output
    unknown = runner.invoke(app, ["wiki", "github.com/nobody/nothing", "--offline"])
    assert unknown.exit_code == 3


def test_the_export_command_it_suggests_exports_the_wiki_just_made(
    indexed_repo: tuple[Store, str], tmp_path: Path
) -> None:
    """After `--language ja --concise`, the suggested `repolens wiki REPO --export md --out wiki.md` exported
    (generating it first) the English comprehensive wiki: the command now names the same wiki."""
    _, repo_id = indexed_repo
    runner = CliRunner()
    made = runner.invoke(app, ["wiki", repo_id, "--language", "ja", "--concise"])
    assert made.exit_code == 0, made.output
    suggested = made.stdout.splitlines()[-1].split()
    assert suggested[:2] == ["repolens", "wiki"]
    assert suggested[3:7] == ["--language", "ja", "--concise", "--offline"]
    again = runner.invoke(app, [*suggested[1:-1], str(tmp_path / "wiki.md"), "--json"])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert (summary["language"], summary["comprehensive"], summary["regenerated"]) == ("ja", False, 0)
    assert (tmp_path / "wiki.md").is_file()
    assert same_wiki_options({**summary, "mode": "llm", "provider": "openai", "model": "gpt-4o"}) == (
        " --language ja --concise --provider openai --model gpt-4o"
    )


def test_cli_wiki_refuses_a_provider_or_model_that_is_not_configured(indexed_repo: tuple[Store, str]) -> None:
    """`--provider google` with no key wrote offline pages and exited 0; now it says what to set, like
    `repolens ask`, and writes nothing. Named nothing, the wiki is offline as before."""
    store, repo_id = indexed_repo
    runner = CliRunner()
    named = runner.invoke(app, ["wiki", repo_id, "--provider", "google", "--json"])
    assert named.exit_code == 6, named.output
    error = json.loads(named.stdout.strip().splitlines()[-1])["error"]
    assert error["code"] == "not_configured" and "GOOGLE_API_KEY" in error["message"]
    model = runner.invoke(app, ["wiki", repo_id, "--model", "gpt-4o"])
    assert model.exit_code == 6 and "'gpt-4o'" in model.stderr
    assert WikiStore(store).latest(repo_id) is None
    default = runner.invoke(app, ["wiki", repo_id, "--json"])
    assert default.exit_code == 0 and json.loads(default.stdout.strip().splitlines()[-1])["mode"] == "offline"


def test_codefacts_read_rst_headings_and_skip_docstring_titles() -> None:
    from rag.wiki.codefacts import headings, module_summary

    rst = [
        "Developer Interface",
        "===================",
        "",
        "Intro text.",
        "",
        "Sessions",
        "--------",
        "",
        "More.",
    ]
    assert headings(rst) == [(1, 1, "Developer Interface"), (6, 2, "Sessions")]
    assert headings(["# Title", "", "```", "# not a heading", "```", "## Part"]) == [
        (1, 1, "Title"),
        (6, 2, "Part"),
    ]
    summary = module_summary("python", '"""\nrequests.models\n~~~~~~~~~~~~~~~\n\nThe primary objects.\n"""\n')
    assert summary is not None and summary.text == "The primary objects." and summary.start_line == 1


def test_a_rust_inner_doc_comment_is_the_module_summary_without_its_marker() -> None:
    """axum's `//! HTTP body utilities.` was summarised `!`: its overview said `axum/src (58 files): !`."""
    from rag.wiki.codefacts import first_sentence, module_summary

    text = "//! HTTP body utilities.\n//!\n//! More.\n\n#[doc(no_inline)]\npub use x;\n"
    summary = module_summary("rust", text)
    assert summary is not None and summary.start_line == 1 and "!" not in summary.text
    assert first_sentence(summary.text) == "HTTP body utilities."
    block = module_summary("rust", "/*! Macros for routing. */\nfn f() {}\n")
    assert block is not None and block.text == "Macros for routing."
    # rustdoc links show their text: axum-macros' summary read "Macros for [ axum ]." on the page.
    book = "[the book](https://x.example)"
    linked = module_summary("rust", f"//! Macros for [`axum`], see [Router] and {book}.\n")
    assert linked is not None and linked.text == f"Macros for `axum`, see Router and {book}."


def test_a_rust_definition_is_documented_by_its_doc_comment_not_its_attributes() -> None:
    """axum's module page said `new (method in axum/src/extract/path/de.rs): [inline]` and `headers ...: Get a
    map of headers as [HeaderMap].`: the attribute was read as a `#` comment, the rustdoc link kept whole."""
    from rag.wiki.codefacts import definition_doc, definitions, module_summary

    lines = ["/// Get a map of headers as [`HeaderMap`].", "#[inline]", "#[must_use]", "pub fn headers() {}"]
    documented = "Get a map of headers as `HeaderMap`."
    assert definition_doc("rust", lines, 4) == documented
    assert definition_doc("rust", ["}", "#[inline]", "pub fn new() {}"], 3) == ""
    assert [item.doc for item in definitions("rust", "\n".join(lines))] == [documented]
    jsdoc = ["/**", " * Dispatch a req, res pair.", " */", "", "app.handle = function handle() {", "};"]
    assert (
        definition_doc("javascript", jsdoc, 5) == "Dispatch a req, res pair."
    )  # express: a blank line between
    assert definition_doc("javascript", ["// Section", "", "function f() {", "}"], 3) == ""
    header = "/*!\n * express\n * Copyright(c) 2009-2013 TJ Holowaychuk\n * MIT Licensed\n */\n\n"
    assert module_summary("javascript", header + "'use strict';\n") is None  # was every module's description
    described = module_summary("javascript", header + "/** Routing for apps. */\nvar x = 1;\n")
    assert described is not None and described.text == "Routing for apps."
    example = "//! Run with `cargo run`.\n#[cfg(unix)]\n#[tokio::main]\nasync fn main() {}\n"
    summary = module_summary("rust", example)
    assert summary is not None and (summary.text, summary.end_line) == ("Run with `cargo run`.", 1)


def test_a_module_is_described_by_its_own_package_file_not_a_sub_folders() -> None:
    """axum's overview said `axum/src (58 files): HTTP body utilities.`: `axum/src/body/mod.rs` sorted
    before `axum/src/lib.rs`, and a sub-folder's package file counted as the module's."""
    from rag.wiki.codefacts import module_summary
    from rag.wiki.offline import RepoFacts, _module_summary

    texts = {
        "axum/src/body/mod.rs": "//! HTTP body utilities.\npub use x;\n",
        "axum/src/lib.rs": "//! axum is a web application framework.\npub mod body;\n",
        "axum/src/routing.rs": "//! Routing between services.\npub fn route() {}\n",
    }
    facts = RepoFacts("local/axum", None, dict.fromkeys(texts, "rust"), texts)
    for path, text in texts.items():
        summary = module_summary("rust", text)
        assert summary is not None
        facts.summaries[path] = summary
    described = _module_summary(facts, sorted(texts))
    assert described is not None and described[0] == "axum/src/lib.rs"
    assert _module_summary(facts, ["axum/src/body/mod.rs", "axum/src/routing.rs"]) is None


def test_offline_titles_descriptions_and_entry_points_come_from_the_right_lines() -> None:
    """Guide titles from an H1 (else the file name, never a sub-heading), module descriptions from the
    package file or Go package comment (never another file's docstring), top-level entry points only."""
    from rag.wiki.codefacts import entry_point_lines, first_sentence, module_summary
    from rag.wiki.offline import RepoFacts, _doc_title, _module_summary, _overview, plan

    license_header = "// Copyright 2023 The Authors\n// Licensed under the Apache License.\n\n"
    texts = {
        "docs/database.md": "Intro without a title.\n\n## Queries\n\nRun them.\n",
        "docs/index.md": "<p>logo</p>\n\n# Introduction\n\n## Install\n",
        "docs/guide.md": "## The guide\n\nText.\n\n### Part\n",
        "pkg/status.py": '"""HTTP codes."""\nOK = 200\n',
        "pkg/routing.py": "def route():\n    pass\n",
        "lib/__init__.py": '"""The lib package: tools."""\n',
        "lib/util.py": '"""Helpers."""\n',
        "cmd/command.go": license_header + "// Package cmd runs commands.\npackage cmd\n",
        "cmd/other.go": license_header + "// A note that documents nothing.\n\npackage cmd\n",
    }
    languages = {
        path: "markdown" if path.endswith(".md") else "go" if path.endswith(".go") else "python"
        for path in texts
    }
    facts = RepoFacts("local/x", None, languages, texts)
    for path, text in texts.items():
        summary = module_summary(languages[path], text)
        if summary is not None and summary.text:
            facts.summaries[path] = summary
    assert _doc_title(facts, "docs/database.md") == "Database"  # not its sub-heading "Queries"
    assert _doc_title(facts, "docs/index.md") == "Introduction"
    assert _doc_title(facts, "docs/guide.md") == "The guide"  # a heading on the first line names the doc
    facts.texts["examples/views/index.md"] = "\n# {title}\n\nJust an example view.\n"  # a template
    facts.texts["docs/page.md"] = "# {{ page.title }}\n\n## Usage\n"
    assert _doc_title(facts, "examples/views/index.md") == "Views"  # its folder: "Index" names nothing
    assert _doc_title(facts, "docs/page.md") == "Page"
    assert _module_summary(facts, ["pkg/routing.py", "pkg/status.py"]) is None  # status.py is not pkg
    lib = _module_summary(facts, ["lib/__init__.py", "lib/util.py"])
    assert lib is not None and lib[0] == "lib/__init__.py"
    assert "cmd/other.go" not in facts.summaries  # not attached to `package`
    go = _module_summary(facts, ["cmd/command.go", "cmd/other.go"])
    assert go is not None and go[1].text == "Package cmd runs commands." and go[1].start_line == 4

    readme = '<p align="center"><img src="logo.svg"></p>\n\n**Docs**: <a href="https://x.example">x</a>\n\n'
    facts.texts["README.md"] = readme + "# Proj\n\nProj does things.\n"
    facts.languages["README.md"], facts.readme = "markdown", "README.md"
    overview = _overview(facts)
    assert "Proj does things. (`README.md:7`)" in overview and "Docs" not in overview
    assert plan(facts).title == "Proj wiki"
    facts.texts["README.md"] = readme + "# Overview\n\nProj does things.\n"  # a section, not the name
    assert plan(facts).title == "x wiki"  # the repository's name (local/x)

    assert first_sentence("Where a request is (i.e. an endpoint), use it. More.") == (
        "Where a request is (i.e. an endpoint), use it."
    )
    nested = (
        "def request_response(func):\n    async def app(scope):\n        pass\n    return app\n\n"
        "def main():\n    pass\n"
    )
    from rag.wiki.codefacts import definitions

    assert [d.name for d in entry_point_lines("python", nested, definitions("python", nested))] == ["main"]


def test_outline_and_page_lookup(indexed_repo: tuple[Store, str]) -> None:
    store, repo_id = indexed_repo
    run_wiki(store, None, repo_id, offline=True)
    wiki = saved(store, repo_id)
    outline = wiki.outline(freshness.stale_pages(wiki, store.open(repo_id)))
    assert outline["mode"] == "offline" and [s["title"] for s in outline["sections"]] == [
        "Overview",
        "Modules",
        "Guides",
    ]
    assert "content" not in json.dumps(outline)
    first = outline["sections"][1]["pages"][0]
    assert wiki.page(first["id"]) == wiki.page(first["title"].upper()) == wiki.pages[first["id"]]
    assert wiki.page("no such page") is None


def test_cli_update_refreshes_an_offline_wiki_page_by_page(
    indexed_repo: tuple[Store, str], fixture_repo: Path
) -> None:
    _, repo_id = indexed_repo
    runner = CliRunner()
    assert runner.invoke(app, ["update", repo_id]).stdout.count("wiki:") == 0  # no wiki yet: nothing said
    assert runner.invoke(app, ["wiki", repo_id, "--offline"]).exit_code == 0
    write_files(fixture_repo, {"server/main.go": "// Package main serves nothing.\npackage main\n"})
    commit_all(fixture_repo, "smaller server")
    result = runner.invoke(app, ["update", repo_id])
    assert result.exit_code == 0, result.output
    assert (
        "wiki: 2 of 5 pages regenerated" in result.stdout
    )  # module-server, and the overview (its entry point)


def written_again(events: list[dict[str, Any]]) -> dict[str, str]:
    """`page id -> reason` of the pages a generation wrote again."""
    return {e["page_id"]: e["reason"] for e in events if e.get("event") == "page" and not e["reused"]}


def test_a_rewrite_with_new_pages_counts_them_apart() -> None:
    """After an upgrade that also planned 3 new pages, axum's summary said "all 20 pages regenerated" and
    then "regenerated: 17 because the wiki generator changed": three pages regenerated for no reason."""
    reason = "the wiki generator changed (version 2 -> 5)"
    outcome = {"regenerated": 20, "reused": 0, "reasons": {reason: 17, freshness.NEW: 3}}
    assert what_happened(outcome) == "all 20 pages written: 17 regenerated, 3 new"
    assert what_happened({**outcome, "reasons": {freshness.NEW: 20}}) == "all 20 pages written"
    assert what_happened({**outcome, "reasons": {reason: 20}}) == "all 20 pages regenerated"


def test_an_upgraded_wiki_generator_rewrites_every_page_and_says_why(
    indexed_repo: tuple[Store, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, repo_id = indexed_repo
    runner = CliRunner()
    first = runner.invoke(app, ["wiki", repo_id, "--offline"])
    assert first.exit_code == 0 and "regenerated:" not in first.stdout  # new pages: nothing to explain
    total = len(saved(store, repo_id).pages)
    monkeypatch.setattr(freshness, "OFFLINE_GENERATOR_VERSION", freshness.OFFLINE_GENERATOR_VERSION + 1)
    reason = f"the wiki generator changed (version {freshness.OFFLINE_GENERATOR_VERSION - 1} -> "
    reason += f"{freshness.OFFLINE_GENERATOR_VERSION})"
    upgraded = runner.invoke(app, ["wiki", repo_id, "--offline"])
    assert upgraded.exit_code == 0, upgraded.output
    assert max(map(len, upgraded.stdout.splitlines()[:-1])) <= 80  # wrapped when piped (but the command)
    said = " ".join(upgraded.stdout.split())  # unwrapped
    assert f"all {total} pages regenerated regenerated: {total} because {reason} " in said  # no --force
    wiki = saved(store, repo_id)
    assert {page.made_by.generator for page in wiki.pages.values() if page.made_by} == {
        freshness.OFFLINE_GENERATOR_VERSION
    } and wiki.generator == freshness.OFFLINE_GENERATOR_VERSION
    events = run_wiki(store, None, repo_id, offline=True)  # and now it is current
    assert events[-1]["wiki"]["reused"] == total and events[-1]["wiki"]["reasons"] == {}
    forced = run_wiki(store, None, repo_id, offline=True, force=True)
    assert set(written_again(forced).values()) == {freshness.FORCED}


def test_pages_stored_before_they_recorded_how_they_were_made_are_written_again(
    indexed_repo: tuple[Store, str],
) -> None:
    store, repo_id = indexed_repo
    run_wiki(store, None, repo_id, offline=True)
    [path] = WikiStore(store).folder(repo_id).glob("*.json")
    stored = json.loads(path.read_text())
    del stored["generator"]  # the format of the RepoLens before: no key on the wiki or its pages
    for page in stored["pages"].values():
        del page["made_by"]
    path.write_text(json.dumps(stored))
    assert all(page.made_by is None for page in saved(store, repo_id).pages.values())  # it still reads

    events = run_wiki(store, None, repo_id, offline=True)
    assert [e for e in events if e["type"] == "error"] == []
    assert set(written_again(events).values()) == {freshness.UNRECORDED}
    assert events[-1]["wiki"]["reasons"] == {freshness.UNRECORDED: len(stored["pages"])}
    assert all(page.made_by is not None for page in saved(store, repo_id).pages.values())


def test_an_offline_wiki_is_rewritten_when_an_update_rebuilds_the_code_graph(
    fixture_repo: Path, shared_embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as older:  # indexed by the RepoLens before the graph extractor changed
        older.setattr(ingest_pipeline, "GRAPH_VERSION", GRAPH_VERSION - 1)
        repo_id = ingest(
            str(fixture_repo), store=Store(Settings.from_env().home), embedder=shared_embedder
        ).repo_id
    runner = CliRunner()
    assert runner.invoke(app, ["wiki", repo_id, "--offline"]).exit_code == 0
    store = Store(Settings.from_env().home)
    before = saved(store, repo_id)
    assert {page.made_by.graph for page in before.pages.values() if page.made_by} == {GRAPH_VERSION - 1}
    wiki = runner.invoke(app, ["wiki", repo_id, "--offline"])  # the index is as it was: nothing to do
    assert f"up to date: {len(before.pages)} pages unchanged, nothing regenerated" in wiki.stdout

    updated = runner.invoke(app, ["update", repo_id])  # no file changed; the graph is rebuilt
    assert updated.exit_code == 0, updated.output
    assert updated.stdout.startswith("updated ") and "code graph: rebuilt for" in updated.stdout
    reason = f"the code graph was rebuilt (graph version {GRAPH_VERSION - 1} -> {GRAPH_VERSION})"
    total = len(before.pages)
    assert f"wiki: {total} of {total} pages regenerated: {total} because {reason}" in " ".join(
        updated.stdout.split()
    )
    assert {page.made_by.graph for page in saved(store, repo_id).pages.values() if page.made_by} == {
        GRAPH_VERSION
    }


def test_another_model_plans_and_writes_the_wiki_again(
    indexed_repo: tuple[Store, str], shared_embedder: Embedder, openai_fake: FakeProvider
) -> None:
    store, repo_id = indexed_repo
    openai_fake.script(FakeResponse(text=json.dumps(PLAN)), *[FakeResponse(text="Text (README.md:3-4).")] * 3)
    first = run_wiki(store, shared_embedder, repo_id, provider="openai", model="model-a", concurrency=1)
    assert first[-1]["wiki"]["regenerated"] == 3
    openai_fake.reset()
    openai_fake.script(FakeResponse(text=json.dumps(PLAN)), *[FakeResponse(text="Text (README.md:3-4).")] * 3)
    again = run_wiki(store, shared_embedder, repo_id, provider="openai", model="model-b", concurrency=1)
    reason = "another writer makes them (openai/model-a -> openai/model-b)"
    assert written_again(again) == dict.fromkeys(["overview", "http-client", "service"], reason)
    assert len(openai_fake.requests) == 4  # a new plan too: the old model's is not kept
    wiki = saved(store, repo_id)
    assert wiki.model == "model-b"
    assert {page.made_by.writer for page in wiki.pages.values() if page.made_by} == {"openai/model-b"}


def test_an_offline_generator_change_costs_a_model_written_wiki_nothing(
    indexed_repo: tuple[Store, str],
    shared_embedder: Embedder,
    openai_fake: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One version for both writers made each of nine offline-only fixes in a session rewrite every
    model-written wiki at the model's cost; each writer's pages now follow their own version."""
    store, repo_id = indexed_repo
    openai_fake.script(FakeResponse(text=json.dumps(PLAN)), *[FakeResponse(text="Text (README.md:3-4).")] * 3)
    assert (
        run_wiki(store, shared_embedder, repo_id, provider="openai", concurrency=1)[-1]["wiki"]["regenerated"]
        == 3
    )
    openai_fake.reset()
    monkeypatch.setattr(freshness, "OFFLINE_GENERATOR_VERSION", freshness.OFFLINE_GENERATOR_VERSION + 1)
    again = run_wiki(store, shared_embedder, repo_id, provider="openai", concurrency=1)
    assert again[-1]["wiki"]["reused"] == 3 and openai_fake.requests == []  # no plan, no page: nothing paid
    assert freshness.stale_pages(saved(store, repo_id), store.open(repo_id)) == {}

    monkeypatch.setattr(freshness, "MODEL_GENERATOR_VERSION", freshness.MODEL_GENERATOR_VERSION + 1)
    reason = f"the wiki generator changed (version {freshness.MODEL_GENERATOR_VERSION - 1} -> "
    reason += f"{freshness.MODEL_GENERATOR_VERSION})"
    assert set(freshness.stale_pages(saved(store, repo_id), store.open(repo_id)).values()) == {reason}


def test_an_interrupted_llm_wiki_resumes_where_it_stopped(
    indexed_repo: tuple[Store, str],
    shared_embedder: Embedder,
    openai_fake: FakeProvider,
) -> None:
    store, repo_id = indexed_repo
    openai_fake.script(
        FakeResponse(text=json.dumps(PLAN)),
        FakeResponse(text="The overview (README.md:3-4)."),
        FakeResponse(status=400, error_code="invalid_request_error"),
    )
    first = run_wiki(store, shared_embedder, repo_id, provider="openai", concurrency=1)
    assert "error" in [event["type"] for event in first]
    partial = saved(store, repo_id)
    assert not partial.complete and list(partial.pages) == ["overview"]

    openai_fake.reset()
    resumed = run_wiki(store, shared_embedder, repo_id, provider="openai", concurrency=1)
    assert resumed[-1]["wiki"]["reused"] == 1 and resumed[-1]["wiki"]["regenerated"] == 2
    assert len(openai_fake.requests) == 2  # no new plan, no rewrite of the finished page
    wiki = saved(store, repo_id)
    assert wiki.complete and set(wiki.pages) == {"overview", "http-client", "service"}


def test_key_definitions_list_an_overloaded_name_once() -> None:
    """`@overload` signatures and their implementation (and a property's getter and setter) are one entry
    of "Key classes and functions", cited over all of them; same-named methods of two classes stay two."""
    from rag.wiki.codefacts import definitions
    from rag.wiki.offline import RepoFacts, _module

    source = (
        "from typing import overload\n\n"
        "@overload\ndef is_async_callable(obj: int) -> bool: ...\n"
        "@overload\ndef is_async_callable(obj: str) -> bool: ...\n"
        'def is_async_callable(obj):\n    """Whether obj is async."""\n    return False\n\n'
        "class A:\n    @property\n    def value(self):\n        return 1\n"
        "    @value.setter\n    def value(self, new):\n        pass\n    def send(self):\n        pass\n\n"
        "class B:\n    def send(self):\n        pass\n"
    )
    facts = RepoFacts("local/x", None, {"pkg/utils.py": "python"}, {"pkg/utils.py": source})
    facts.defs["pkg/utils.py"] = definitions("python", source)
    facts.modules["pkg"] = ["pkg/utils.py"]
    page = _module(facts, "pkg")
    key = page.split("## Key classes and functions")[1].split("##")[0]
    assert key.count("`is_async_callable`") == 1, key
    assert "Whether obj is async. (`pkg/utils.py:4-9`)" in key, key
    assert key.count("`value`") == 1 and key.count("`send`") == 2, key


def test_a_top_level_examples_or_tests_folder_is_one_module() -> None:
    from rag.wiki.offline import ROOT_MODULE, module_name

    assert module_name("src/requests/models.py", True) == "src/requests"
    assert module_name("examples/auth/index.js", True) == "examples"  # not one page per example
    assert module_name("tests/testserver/server.py", True) == "tests"
    assert module_name("pkg/examples/demo.go", True) == "pkg/examples"  # only a top-level folder
    assert (
        module_name("src/requests/models.py", False) == "src" and module_name("setup.py", True) == ROOT_MODULE
    )


def test_issue_and_pull_request_templates_are_not_guides() -> None:
    """axum's offline wiki listed "Pull Request Template", "Bug Report" and "Feature Request" as guides."""
    from rag.wiki.offline import _is_guide

    templates = [
        ".github/PULL_REQUEST_TEMPLATE.md",
        ".github/pull_request_template.md",
        ".github/ISSUE_TEMPLATE/bug_report.md",
        ".gitlab/merge_request_templates/Default.md",
        "CHANGELOG.md",
    ]
    assert not any(_is_guide(path, set(templates)) for path in templates)
    guides = ["CONTRIBUTING.md", "docs/templates.md", "examples/README.md", "axum/src/docs/routing/route.md"]
    assert all(_is_guide(path, set(guides)) for path in guides)


def test_translations_are_not_guides_and_guides_with_one_title_say_which_file() -> None:
    """deepwiki-open has nine translations of its README: they took nine of the ten guide places,
    all titled "DeepWiki-Open". A translation is skipped; two guides with one title name their file."""
    from rag.wiki.offline import RepoFacts, _is_translation, plan

    known = {"README.md", "README.zh-tw.md", "README.pt-br.md", "docs/setup.md", "docs/setup.ja.md"}
    known |= {"docs/api.v1.md", "notes.es.md", "docs/ollama.md", "guide/ollama.md"}
    assert _is_translation("README.zh-tw.md", known) and _is_translation("README.pt-br.md", known)
    assert _is_translation("docs/setup.ja.md", known)
    assert not _is_translation("notes.es.md", known)  # no `notes.md`: the only copy is the document
    assert not _is_translation("docs/api.v1.md", known) and not _is_translation("docs/setup.md", known)

    texts = {"docs/ollama.md": "# Ollama\n\nRun it.\n", "guide/ollama.md": "# Ollama\n\nOr this.\n"}
    texts["docs/other.md"] = "# Other\n"
    facts = RepoFacts("local/x", None, dict.fromkeys(texts, "markdown"), texts)
    facts.docs = sorted(texts)
    titles = {page.filePaths[0]: page.title for page in plan(facts).pages if page.id.startswith("guide-")}
    assert titles == {
        "docs/ollama.md": "Ollama (docs/ollama.md)",
        "guide/ollama.md": "Ollama (guide/ollama.md)",
        "docs/other.md": "Other",
    }


def test_key_definitions_cover_every_file_and_the_most_used_first() -> None:
    """Ranked by path alone, a module's first file filled every place (deepwiki-open's `api/api.py`
    took all 25 and `RAG` was missing): each file's best comes first, and best means most called."""
    from rag.wiki.codefacts import Definition
    from rag.wiki.offline import MAX_DEFINITIONS, RepoFacts, _key_definitions

    paths = ["pkg/a.py", "pkg/b.py", "pkg/c.py", "pkg/d.py"]
    facts = RepoFacts("local/x", None, dict.fromkeys(paths, "python"), dict.fromkeys(paths, ""))
    facts.defs["pkg/a.py"] = [
        Definition(f"helper{n}", "function", n * 3 + 1, n * 3 + 2, "Doc.") for n in range(40)
    ]
    facts.defs["pkg/b.py"] = [Definition("tiny", "function", 1, 2), Definition("Engine", "class", 5, 90)]
    facts.defs["pkg/c.py"] = [Definition("run", "function", 1, 9)]
    facts.defs["pkg/d.py"] = [Definition("_private", "function", 1, 3)]
    facts.calls = [(f"caller{n}", "pkg/c.py", n, "Engine", "pkg/b.py") for n in range(3)]
    facts.calls += [("run", "pkg/c.py", 4, "helper39", "pkg/a.py")]
    chosen = _key_definitions(facts, paths)
    names = [definition.name for _, definition in chosen]
    assert len(chosen) == MAX_DEFINITIONS[True] and {"Engine", "run", "helper39"} <= set(names), names
    assert "_private" not in names
    assert [path for path, _ in chosen] == sorted(path for path, _ in chosen)  # in file order
    assert "tiny" in names and "helper21" not in names  # `b.py`'s second before `a.py`'s 23rd
    assert names[0] == "helper0" and names[21] == "helper39"  # the called one, last in `a.py`, is in


def test_the_overview_quotes_the_list_a_readme_paragraph_introduces() -> None:
    """deepwiki-open's README says "DeepWiki will:" and lists what: the quote stopped at the colon."""
    from rag.wiki.offline import RepoFacts, _overview

    readme = "# Proj\n\nJust enter a repo name, and Proj will:\n\n1. Analyze the code\n2) Draw diagrams\n"
    readme += "\n## Install\n\n- not part of it\n"
    facts = RepoFacts("local/x", None, {"README.md": "markdown"}, {"README.md": readme})
    facts.readme = "README.md"
    overview = _overview(facts)
    assert "and Proj will: (`README.md:3`)\n\n1. Analyze the code (`README.md:5`)\n" in overview, overview
    assert "2. Draw diagrams (`README.md:6`)" in overview and "not part of it" not in overview
    facts.texts["README.md"] = "# Proj\n\nProj does things.\n\n- a feature\n"
    assert "a feature" not in _overview(facts)  # a paragraph that introduces nothing


def test_a_quoted_paragraph_keeps_its_reference_links_as_links() -> None:
    """Before: starlette's overview read "a lightweight [ASGI][asgi] framework" (the definition of
    `[asgi]` is at the end of the README, outside the quoted paragraph)."""
    readme = [
        "# Demo",
        "",
        "Demo is a lightweight [ASGI][asgi] toolkit, see [the docs][] and [nowhere][gone].",
        "",
        "[asgi]: https://asgi.readthedocs.io/en/latest/",
        "[The Docs]: <https://demo.example/docs>",
    ]
    summary = first_paragraph(readme, 1)
    assert summary is not None and summary.text == (
        "Demo is a lightweight [ASGI](https://asgi.readthedocs.io/en/latest/) toolkit, "
        "see [the docs](https://demo.example/docs) and nowhere."
    )
