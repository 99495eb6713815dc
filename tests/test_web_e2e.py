"""The web page end to end: the real server, the fixture repository, the fake provider and headless chromium.

One server and one browser serve the whole module; every test opens a fresh browser context
(so its own localStorage). Screenshots of the main states go to build/screenshots/.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, Route, expect

from api.routes import repos as repos_routes
from api.routes.web import IMMUTABLE, REVALIDATE
from ingest.chunking import CHUNKER_VERSION
from rag.store import Store
from tests.support.browser import SCREENSHOTS, browser  # noqa: F401 (the fixture)
from tests.support.chat import provider_env, settings_for
from tests.support.fake_provider import FakeProvider, FakeResponse
from tests.support.live_server import LiveServer
from tests.support.repos import commit_all, make_fixture_repo, write_files

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TIMEOUT_MS = 20_000
# The suite shares 2 cores with other tests' servers: give every expectation room.
expect.set_options(timeout=10_000)
ANSWER = """## How a forecast is fetched

`main()` builds a **ForecastService** and calls `run` (weatherline/cli.py:1-12):

1. the CLI parses `--city` and `--days`;
2. the service asks the HTTP client for each day;
3. failed requests are retried with a capped backoff (compare weatherline/imaginary.py:3-4):

```python
def backoff_delay(attempt: int) -> float:
    return min(2 ** attempt, 30)
```
"""


@dataclass
class Web:
    server: LiveServer
    store: Store
    repo_id: str
    root: Path


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    """A server whose data dir already holds the fixture repository, answering through the fake provider."""
    from api.app import create_app
    from ingest import ingest

    root = tmp_path_factory.mktemp("web")
    app = create_app(settings_for(root / "home", **provider_env()))
    services = app.state.services
    report = ingest(
        str(make_fixture_repo(root / "weatherline")), store=services.store, embedder=services.embedder
    )
    server = LiveServer(lambda: app).start()
    yield Web(server=server, store=services.store, repo_id=report.repo_id, root=root)
    server.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:  # noqa: F811 (the browser fixture)
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert errors == [], f"the page threw: {errors}"


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def open_repo(page: Page, web: Web, repo_id: str | None = None) -> None:
    page.goto(web.server.base_url)
    expect(page.locator("body[data-ready=true]")).to_have_count(1, timeout=TIMEOUT_MS)
    page.locator(f'li[data-repo-id="{repo_id or web.repo_id}"] .repo-name').click()
    expect(page.locator("body[data-socket=open]")).to_have_count(1, timeout=TIMEOUT_MS)


def ask(page: Page, question: str) -> Locator:
    """Type a question, send it with Enter, and return the answer's element."""
    answers = page.locator(".turn.assistant")
    before = answers.count()
    box = page.get_by_label("Question")
    box.fill(question)
    box.press("Enter")
    answer = answers.nth(before)
    expect(answer).to_have_count(1)
    expect(box).to_have_value("")
    return answer


def finished(answer: Locator, state: str = "done") -> None:
    expect(answer).to_have_attribute("data-state", state, timeout=TIMEOUT_MS)


def test_page_is_served_with_cache_headers(web: Web) -> None:
    index = httpx.get(web.server.base_url)
    assert index.status_code == 200 and "RepoLens" in index.text
    assert 'rel="icon"' in index.text  # inline: no /favicon.ico 404 in the console on every load
    assert index.headers["cache-control"] == REVALIDATE
    asset = next(part.split('"')[0] for part in index.text.split('src="')[1:] if part.startswith("/assets/"))
    assert httpx.get(web.server.base_url + asset).headers["cache-control"] == IMMUTABLE
    defaults = httpx.get(f"{web.server.base_url}/api/filters/defaults").json()
    assert "node_modules" in defaults["excluded_dirs"] and "*.min.js" in defaults["excluded_files"]


def test_a_repository_chunked_by_an_older_repolens_is_flagged_in_its_row(
    page: Page, web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an upgrade that changed chunking, the row says so and that its Update button is the fix."""
    row = page.locator(f'li[data-repo-id="{web.repo_id}"]')
    page.goto(web.server.base_url)
    expect(page.locator("body[data-ready=true]")).to_have_count(1, timeout=TIMEOUT_MS)
    expect(row).to_have_count(1)
    expect(row.locator(".outdated")).to_have_count(0)  # chunked by this RepoLens
    monkeypatch.setattr(repos_routes, "CHUNKER_VERSION", CHUNKER_VERSION + 1)  # RepoLens was upgraded
    page.reload()
    expect(row.locator(".outdated")).to_have_text("chunked by an older RepoLens: Update re-chunks it")
    shot(page, "repo-outdated-chunker")


def test_an_update_that_rebuilds_the_code_graph_says_so_on_the_page(
    page: Page, web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ingest import ingest
    from ingest import pipeline as ingest_pipeline
    from rag.graph_types import GRAPH_VERSION

    repo = make_fixture_repo(web.root / "graphed-by-an-older-repolens")
    with monkeypatch.context() as older:  # indexed before an upgrade changed the graph extractor
        older.setattr(ingest_pipeline, "GRAPH_VERSION", GRAPH_VERSION - 1)
        record = ingest(str(repo), store=web.store, embedder=web.server.app.state.services.embedder).record
    page.goto(web.server.base_url)
    expect(page.locator("body[data-ready=true]")).to_have_count(1, timeout=TIMEOUT_MS)
    page.locator(f'li[data-repo-id="{record.id}"]').get_by_role("button", name="Update").click()
    done = page.locator(".progress[data-state=done]")
    expect(done).to_contain_text(f"Indexed {repo.name}", timeout=TIMEOUT_MS)
    expect(done).to_contain_text(
        f"unchanged files (graph version {GRAPH_VERSION - 1} -> {GRAPH_VERSION})", timeout=TIMEOUT_MS
    )
    expect(done).to_contain_text("code graph rebuilt for ")
    web.store.delete(record.id)  # the other tests see the module's repositories only


def test_index_a_repository_with_live_progress(page: Page, web: Web) -> None:
    page.goto(web.server.base_url)
    expect(page.locator("body[data-ready=true]")).to_have_count(1, timeout=TIMEOUT_MS)
    page.locator(".filters summary").click()
    expect(page.locator(".defaults")).to_contain_text("node_modules")

    bad = "ftp://example.invalid/x"
    page.get_by_placeholder("https://github.com/owner/repo").fill(bad)
    page.get_by_role("button", name="Index repository").click()
    refusal = httpx.post(f"{web.server.base_url}/api/repos", json={"repo_url": bad})
    assert refusal.status_code == 400
    expect(page.locator(".progress[data-state=error]")).to_contain_text(refusal.json()["detail"])
    # The message lists the accepted URL forms (long unbreakable words): they wrap inside the box.
    widths = page.evaluate(
        "[...document.querySelectorAll('.progress, .progress p')].map(e => e.scrollWidth - e.clientWidth)"
    )
    assert max(widths) <= 0, widths

    second = make_fixture_repo(web.root / "second-copy")
    page.evaluate(
        """() => { window.progressLog = [];
        new MutationObserver(() => window.progressLog.push(document.querySelector('.progress').textContent))
          .observe(document.querySelector('.progress'), {childList: true, subtree: true}); }"""
    )
    page.get_by_placeholder("https://github.com/owner/repo").fill(str(second))
    page.get_by_label("Platform").select_option("local")
    page.get_by_placeholder("Access token").fill("tok-never-stored-123")
    page.get_by_role("button", name="Index repository").click()
    expect(page.locator(".progress[data-state=done]")).to_contain_text("Indexed", timeout=TIMEOUT_MS)
    shot(page, "indexed")

    log = page.evaluate("window.progressLog")
    assert any("files" in entry and "chunks" in entry for entry in log), log
    # It said "Ask a question below": below the sidebar's progress is the list; the chat is beside it.
    expect(page.locator(".progress[data-state=done]")).to_contain_text("Ask a question in the chat.")
    assert not any("below" in entry for entry in log), log
    record = next(r for r in web.store.list() if r.url.endswith("second-copy"))
    row = page.locator(f'li[data-repo-id="{record.id}"]')
    expect(row).to_contain_text(f"{record.file_count} files")
    expect(row).to_contain_text(f"{record.chunk_count} chunks")
    expect(row).to_contain_text(f"@{record.commit[:8]}")
    assert page.get_by_placeholder("Access token").input_value() == ""
    stored = page.evaluate("JSON.stringify({...localStorage}) + JSON.stringify({...sessionStorage})")
    assert "tok-never-stored" not in stored and "tok-never-stored" not in page.url

    row.get_by_role("button", name="Update").click()
    expect(page.locator(".progress[data-state=done]")).to_contain_text(
        f"Indexed {second.name}", timeout=TIMEOUT_MS
    )

    row.get_by_role("button", name="Delete").click()
    row.locator(".repo-name").click()  # the list re-renders (as on a late progress frame): still armed
    row.get_by_role("button", name="Confirm delete").click()
    expect(row).to_have_count(0)
    assert web.store.get(record.id) is None


# The ingest's SSE held open in the page, so a test sends each frame when it wants (`window.ingestFrame`)
# and ends the stream (`window.ingestEnd`): playwright's `route.fulfill` sends a whole body at once.
HELD_INGEST = """
(() => {
  const realFetch = window.fetch;
  let stream;
  window.fetch = (input, init) => {
    if (String(input).endsWith("/api/repos") && init && init.method === "POST") {
      const body = new ReadableStream({ start(controller) { stream = controller; } });
      const headers = { "Content-Type": "text/event-stream" };
      const response = new Response(body.pipeThrough(new TextEncoderStream()), { status: 200, headers });
      return Promise.resolve(response);
    }
    return realFetch(input, init);
  };
  window.ingestFrame = (frame) => stream.enqueue(`event: ${frame.type}\ndata: ${JSON.stringify(frame)}\n\n`);
  window.ingestEnd = () => stream.close();
})();
"""


def test_the_searchable_milestone_opens_the_repository_while_embedding_goes_on(page: Page, web: Web) -> None:
    """Lexical first: at `searchable` the page opens the repository being indexed (when none is open) and
    keeps saying it answers during the dense phase, with one count of the embedding: the live one above,
    not also a committed version's lagging one in its row or the detail line."""
    record = httpx.get(f"{web.server.base_url}/api/repos/{web.repo_id}").json()
    newest = {**record, "index_state": "partial 3/10", "updated_at": "2999-01-01T00:00:00+00:00"}
    older = {**record, "id": "local/elsewhere/other", "url": "file:///elsewhere/other"}
    older["updated_at"] = "2000-01-01T00:00:00+00:00"
    listing = json.dumps({"repos": [older, newest]})
    page.route(
        "**/api/repos", lambda route: route.fulfill(status=200, content_type="application/json", body=listing)
    )
    page.add_init_script(HELD_INGEST)
    page.goto(web.server.base_url)
    expect(page.locator("body[data-ready=true]")).to_have_count(1, timeout=TIMEOUT_MS)
    expect(page.locator(".chat-title")).to_have_text("No repository selected")  # two repos: none opened
    page.get_by_placeholder("https://github.com/owner/repo").fill(str(web.root / "weatherline"))
    page.get_by_role("button", name="Index repository").click()
    frame = {"type": "status", "stage": "indexing"}
    page.evaluate("f => window.ingestFrame(f)", {**frame, "step": "searchable", "index_state": "lexical"})
    expect(page.locator(".chat-title")).to_have_text(f"{web.repo_id.split('/')[-1]} (local)")
    # A dense version landed at 3 of 10 chunks; the embedding went on to 7.
    landed = {"step": "embedding", "chunks_done": 3, "chunks_total": 10, "index_state": "partial 3/10"}
    page.evaluate(
        "f => window.ingestFrame(f)", {**frame, **landed, "message": "dense version 2: partial 3/10"}
    )
    page.evaluate(
        "f => window.ingestFrame(f)", {**frame, "step": "embedding", "chunks_done": 7, "chunks_total": 10}
    )
    progress = page.locator(".repos .progress")
    row = page.locator(f'li[data-repo-id="{web.repo_id}"]')
    expect(progress).to_contain_text("7/10 chunks")
    expect(progress).to_contain_text("Searchable now: ask while the embedding goes on")
    expect(row).to_contain_text("embedding now (progress above)")
    shot(page, "embedding")
    assert "3/10" not in progress.inner_text() and "3/10" not in row.inner_text()
    expect(page.get_by_label("Question")).to_be_enabled()
    # The stream ended with no done or error frame (a server gone): said, not left "running" forever,
    # and the row says again how far the committed index got.
    page.evaluate("window.ingestEnd()")
    expect(page.locator(".repos .progress[data-state=error]")).to_contain_text("ended before the ingest did")
    expect(row).to_contain_text("embedded 3/10 chunks")


def test_streamed_answer_renders_markdown_code_and_citations(
    page: Page, web: Web, fake_provider: FakeProvider
) -> None:
    fake_provider.script(FakeResponse(text=ANSWER, chunks=15, delay=0.08))
    open_repo(page, web)
    models = page.get_by_label("Model")
    model = models.locator("option").nth(1).get_attribute("value")
    models.select_option(model)
    page.get_by_label("Answer language").select_option("ja")
    answer = ask(page, "How is a forecast fetched?")
    expect(answer.locator(".markdown")).not_to_be_empty(timeout=TIMEOUT_MS)
    partial = answer.locator(".markdown").inner_text()
    finished(answer)
    assert len(partial) < len(answer.locator(".markdown").inner_text()), "the answer did not stream"

    expect(answer.locator("h2")).to_have_text("How a forecast is fetched")
    expect(answer.locator("strong")).to_have_text("ForecastService")
    expect(answer.locator("pre code.hljs .hljs-keyword").first).to_have_text("def")
    chip = answer.locator(".citations .chip", has_text="weatherline/cli.py:1-12")
    expect(chip).to_be_visible()
    # A local folder has no host to open the lines at (its link is our JSON file API): no ↗ links.
    expect(answer.locator("a.chip-link")).to_have_count(0)
    body = fake_provider.requests[-1].body
    assert body["model"] == model and "Japanese" in json.dumps(body["messages"], ensure_ascii=False)
    expect(chip).not_to_have_class("chip unverified")
    guessed = answer.locator(".citations .chip.unverified")
    expect(guessed).to_have_text("⚠weatherline/imaginary.py:3-4")
    expect(answer.locator(".markdown button.cite.unverified")).to_have_text("weatherline/imaginary.py:3-4")
    shot(page, "answer")

    answer.locator(".markdown button.cite", has_text="weatherline/cli.py:1-12").click()
    viewer = page.locator("dialog.viewer[open]")
    expect(viewer).to_contain_text("weatherline/cli.py:1-12")
    expect(viewer.get_by_role("link", name="Open at source ↗")).to_have_count(0)
    page.keyboard.press("Escape")
    chip.click()
    expect(viewer).to_contain_text("weatherline/cli.py:1-12")
    expect(viewer.locator(".line.cited").first).to_be_visible(timeout=TIMEOUT_MS)
    cited = viewer.locator(".line.cited").all_inner_texts()
    file_lines = web.store.open(web.repo_id).file_text("weatherline/cli.py").splitlines()
    assert len(cited) == 12 and cited[0].split(maxsplit=1)[1].strip() == file_lines[0].strip()
    shot(page, "source-viewer")
    page.keyboard.press("Escape")
    expect(viewer).to_have_count(0)

    page.reload()
    expect(page.locator(".turn.assistant h2")).to_have_text("How a forecast is fetched", timeout=TIMEOUT_MS)
    page.get_by_role("button", name="Clear").click()
    expect(page.locator(".turn")).to_have_count(0)
    assert "forecast is fetched" not in page.evaluate("JSON.stringify({...localStorage})")


def test_every_citation_form_the_server_reports_links_in_the_answer(
    page: Page, web: Web, fake_provider: FakeProvider
) -> None:
    """The server reads `:L1-L12`, `#L3`, `:3-3` and a shortened path as citations (rag/citations.py); each
    one the answer wrote opens the viewer, not only the `path:1-12` spelling of the chips (the offline
    answer writes a one-line span `path:153-153`, which stayed plain text beside its `path:153` chip)."""
    written = ["weatherline/cli.py:L1-L12", "cli.py:1-12", "weatherline/cli.py#L3", "weatherline/cli.py:3-3"]
    text = f"See {written[0]} and {written[1]}; one line: {written[2]}, {written[3]}."
    fake_provider.script(FakeResponse(text=text))
    open_repo(page, web)
    page.get_by_label("Model").select_option(index=1)
    answer = ask(page, "How is a forecast fetched?")
    finished(answer)
    expect(answer.locator(".markdown button.cite")).to_have_text(written)
    answer.locator(".markdown button.cite", has_text=written[1]).click()
    viewer = page.locator("dialog.viewer[open]")
    expect(viewer).to_contain_text("weatherline/cli.py:1-12")
    page.keyboard.press("Escape")
    answer.locator(".markdown button.cite", has_text=written[3]).click()
    expect(viewer).to_contain_text("weatherline/cli.py:3")


# What chromium's select keeps beside its text for its arrow: 'Platform: auto' lost its 'o' in a 141 px box
# (text 107 px, padding 18 px) and shows whole in its own width, 145 px.
ARROW_PX = 20


def assert_shows_its_whole_label(select: Locator) -> None:
    """The selected option's text fits the select, with its padding and room for the arrow."""
    text_width, box_width = select.evaluate(
        """(select) => {
            const style = getComputedStyle(select);
            const probe = document.createElement("span");
            probe.style.font = style.font;
            probe.style.whiteSpace = "pre";
            probe.textContent = select.options[select.selectedIndex].text;
            document.body.append(probe);
            const width = probe.offsetWidth + parseFloat(style.paddingLeft) + parseFloat(style.paddingRight);
            probe.remove();
            return [width, select.clientWidth];
        }"""
    )
    assert text_width + ARROW_PX <= box_width, (select, text_width, box_width)


def test_the_provider_picker_shows_the_whole_offline_label(page: Page, web: Web) -> None:
    open_repo(page, web)
    picker = page.get_by_label("Provider")
    picker.select_option("offline")
    assert_shows_its_whole_label(picker)
    language = page.get_by_label("Answer language").bounding_box()
    assert language is not None and language["y"] == picker.bounding_box()["y"]  # the bar stays one row


def test_the_platform_menu_says_what_it_is(page: Page, web: Web) -> None:
    """Errors name "the page's Platform" (a self-hosted URL needs one), but the menu showed only
    "Auto-detect": nothing on the page was called Platform."""
    page.goto(web.server.base_url)
    platform = page.get_by_label("Platform")
    expect(platform.locator("option:checked")).to_have_text("Platform: auto")
    assert_shows_its_whole_label(platform)
    phone = page.context.new_page()
    phone.set_viewport_size({"width": 390, "height": 800})
    phone.goto(web.server.base_url)
    phone.get_by_role("button", name="Show repositories").click()
    assert_shows_its_whole_label(phone.get_by_label("Platform"))


def test_the_token_field_shows_its_whole_placeholder_in_the_forms_one_size(page: Page, web: Web) -> None:
    """At 1280 px the token field said "Access token (privat" (no "optional": a newcomer read a token as
    required), and it and the platform menu were larger than the Repository field above them."""
    page.goto(web.server.base_url)
    token = page.locator("input[name=token]")
    text_width, room = token.evaluate(
        """(input) => {
            const style = getComputedStyle(input);
            const probe = document.createElement("span");
            probe.style.font = style.font;
            probe.style.whiteSpace = "pre";
            probe.textContent = input.placeholder;
            document.body.append(probe);
            const width = probe.offsetWidth;
            probe.remove();
            const padding = parseFloat(style.paddingLeft) + parseFloat(style.paddingRight);
            return [width, input.clientWidth - padding];
        }"""
    )
    assert "private" in (token.get_attribute("placeholder") or "") and text_width <= room, (text_width, room)
    sizes = page.locator(".index-form input:not([type=checkbox]), .index-form select").evaluate_all(
        "(fields) => fields.map((field) => getComputedStyle(field).fontSize)"
    )
    assert len(sizes) == 3 and len(set(sizes)) == 1, sizes


def test_send_keeps_to_the_right_of_the_composer(browser: Browser, web: Web) -> None:  # noqa: F811
    """At 1280 px the pickers fill the composer's row and Send wraps onto the next: it sat alone at the
    bottom left, under the controls, instead of at the right where the eye ends the question."""
    for width in (1280, 390):
        context = browser.new_context(viewport={"width": width, "height": 860})
        page = context.new_page()
        page.goto(web.server.base_url)
        send = page.get_by_role("button", name="Send").bounding_box()
        bar = page.locator(".composer-bar").bounding_box()
        context.close()
        assert send is not None and bar is not None
        assert abs((send["x"] + send["width"]) - (bar["x"] + bar["width"])) <= 1, (width, send, bar)


def test_the_empty_chat_names_the_index_button_as_it_reads(page: Page, tmp_path: Path) -> None:
    """On a new install it said "press Index", and no button on the page is called that: it is "Index
    repository"."""
    from api.app import create_app

    app = create_app(settings_for(tmp_path / "home"))  # nothing indexed: no repository is selected
    server = LiveServer(lambda: app).start()
    try:
        page.goto(server.base_url)
        expect(page.locator("body[data-ready=true]")).to_have_count(1, timeout=TIMEOUT_MS)
        button = page.locator(".index-form button[type=submit]").inner_text()
        expect(page.locator(".conversation .empty p")).to_contain_text(f"press {button} ")
    finally:
        server.stop()


def test_an_answer_made_without_the_code_graph_keeps_saying_so(
    page: Page, web: Web, fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chat waited for a code graph still being built and went on without it: the status saying so
    used to be replaced by the next one at once. It now stays with the answer (a model's answer does not
    carry the offline answer's note), and after a reload."""
    from ingest import IngestOptions, ingest
    from rag.store.layout import RepoLock

    services = web.server.app.state.services
    monkeypatch.setattr(services, "settings", services.settings.model_copy(update={"graph_wait_s": 0.3}))
    repo = make_fixture_repo(web.root / "graphless")
    write_files(repo, {"weatherline/graphless.py": "def not_yet_embedded() -> int:\n    return 7\n"})
    commit_all(repo, "a text the vector cache has not seen: the run leaves it, and the graph, to later")
    report = ingest(str(repo), IngestOptions(dense=False), store=web.store, embedder=services.embedder)
    assert not web.store.open(report.repo_id).has_graph
    fake_provider.script(FakeResponse(text="The client retries with a capped backoff.", chunks=3))
    building = RepoLock(web.store.paths(report.repo_id), report.repo_id).__enter__()  # a build at work
    try:
        open_repo(page, web, report.repo_id)
        answer = ask(page, "How does the client retry?")
        finished(answer)
        note = answer.locator(".turn-note", has_text="is still being built: this answer is made without it")
        expect(note).to_have_count(1)
        expect(answer.locator(".markdown")).to_contain_text("capped backoff")
        shot(page, "answer-without-the-graph")
        page.reload()
        expect(page.locator(".turn.assistant .turn-note", has_text="made without it")).to_have_count(1)
    finally:
        building.__exit__(None, None, None)
        web.store.delete(report.repo_id)


def test_a_provider_picked_but_not_configured_says_what_to_set_with_the_offline_answer(
    page: Page, web: Web
) -> None:
    """On a server with no provider, picking OpenAI (listed "not configured") got the offline answer, and
    the status that said why ("openai is not configured", no more) was replaced at once: now the answer
    keeps it, with what to set and that the server must restart."""
    from api.app import create_app
    from ingest import ingest

    app = create_app(settings_for(web.root / "bare-home"))
    services = app.state.services
    repo = make_fixture_repo(web.root / "bare-weatherline")
    report = ingest(str(repo), store=services.store, embedder=services.embedder)
    server = LiveServer(lambda: app).start()
    try:
        open_repo(page, Web(server=server, store=services.store, repo_id=report.repo_id, root=web.root))
        page.get_by_label("Provider").select_option("openai")
        answer = ask(page, "How does main reach HttpClient.send?")
        finished(answer)
        advice = "set OPENAI_API_KEY in the environment or .env, then restart the server to pick it up"
        expect(answer.locator(".turn-note", has_text=f"openai is not configured ({advice})")).to_have_count(1)
        expect(answer.locator(".markdown")).to_contain_text("Offline answer")
        shot(page, "answer-offline-fallback")
    finally:
        server.stop()


def test_stop_a_long_answer(page: Page, web: Web, fake_provider: FakeProvider) -> None:
    long_text = "word " * 400
    fake_provider.script(FakeResponse(text=long_text, chunks=400, delay=0.03))
    open_repo(page, web)
    answer = ask(page, "Tell me everything.")
    expect(answer.locator(".markdown")).not_to_be_empty(timeout=TIMEOUT_MS)
    page.keyboard.press("Escape")
    finished(answer, "stopped")
    expect(answer.locator(".stopped-note")).to_be_visible()
    assert len(answer.locator(".markdown").inner_text()) < len(long_text.strip())
    assert fake_provider.wait_for_disconnect(timeout=5)
    expect(page.get_by_role("button", name="Send")).to_be_visible()


def test_deep_research_shows_each_iteration(page: Page, web: Web, fake_provider: FakeProvider) -> None:
    fake_provider.script(
        FakeResponse(text="1. Find the entry point. 2. Follow the request."),
        FakeResponse(tool_calls=[{"name": "grep", "arguments": {"pattern": "def send"}}], text=None),
        FakeResponse(
            tool_calls=[{"name": "read_file", "arguments": {"path": "weatherline/cli.py"}}], text=None
        ),
        FakeResponse(text="The evidence suffices."),
        FakeResponse(text="The CLI reaches HttpClient.send through ForecastService.run."),
    )
    open_repo(page, web)
    page.get_by_label("Deep research").check()
    answer = ask(page, "How does the CLI reach the HTTP client?")
    expect(answer.locator(".research")).to_be_visible(timeout=TIMEOUT_MS)
    finished(answer)
    research = answer.locator(".research")
    research.locator("summary").click()
    expect(research.locator(".iteration[data-iteration='0']")).to_contain_text("Find the entry point")
    expect(research.locator(".iteration[data-iteration='1']")).to_contain_text('grep(pattern="def send")')
    expect(research.locator(".iteration[data-iteration='2']")).to_contain_text("read_file")
    expect(answer.locator(".markdown")).to_contain_text("HttpClient.send")
    shot(page, "deep-research")


def test_the_spans_research_steps_name_open_the_viewer(page: Page, web: Web) -> None:
    """Research steps say where they looked (on express: `plan offline: walk the code graph from
    lib/response.js:780-868, ...`): plain text, while the answer's citations below open the viewer."""
    open_repo(page, web)
    page.get_by_label("Provider").select_option("offline")
    page.get_by_label("Deep research").check()
    answer = ask(page, "How does the CLI fetch a forecast?")
    finished(answer)
    research = answer.locator(".research")
    research.locator("summary").click()
    spans = research.locator("button.cite")
    expect(spans.first).to_be_visible()
    first = spans.first.inner_text()
    assert re.fullmatch(r"[\w./-]+:\d+(-\d+)?", first), first
    spans.first.click()
    viewer = page.locator("dialog.viewer[open]")
    expect(viewer).to_contain_text(first)
    expect(viewer.locator(".line.cited").first).to_be_visible(timeout=TIMEOUT_MS)


def test_answer_markup_cannot_run_script(page: Page, web: Web, fake_provider: FakeProvider) -> None:
    hostile = (
        "Look: <script>window.pwned = 1</script>"
        '<img src="x" onerror="window.pwned = 2"> '
        '<a href="javascript:window.pwned=3">click</a> [also](javascript:window.pwned=4)\n\n'
        '```mermaid\ngraph TD\n  A[Client] --> B["<img src=x onerror=window.pwned=5>"]\n```\n'
    )
    fake_provider.script(FakeResponse(text=hostile, chunks=4, delay=0.02))
    open_repo(page, web)
    answer = ask(page, "Say something hostile.")
    finished(answer)
    expect(answer.locator(".markdown")).to_contain_text("Look:")
    for link in answer.locator(".markdown a").all():
        link.click(modifiers=["Control"])
    page.wait_for_timeout(300)
    expect(answer.locator(".mermaid-diagram svg")).to_be_visible(timeout=TIMEOUT_MS)
    expect(answer.locator(".mermaid-diagram")).to_contain_text("Client")
    assert page.evaluate("window.pwned") is None
    assert answer.locator("script, [onerror], a[href^='javascript']").count() == 0
    shot(page, "mermaid")


def test_provider_failure_shows_the_server_message(page: Page, web: Web, fake_provider: FakeProvider) -> None:
    fake_provider.script(FakeResponse(status=404))
    open_repo(page, web)
    answer = ask(page, "Which model?")
    finished(answer, "error")
    expect(answer.locator(".error")).to_contain_text("model")
    expect(answer.locator(".error")).not_to_contain_text("sk-fake")


def test_reconnects_after_a_server_restart(page: Page, web: Web, fake_provider: FakeProvider) -> None:
    open_repo(page, web)
    finished(ask(page, "What does backoff_delay return?"))

    web.server.stop()
    banner = page.locator(".banner[data-kind=offline]")
    expect(banner).to_contain_text("reconnecting", timeout=TIMEOUT_MS)
    shot(page, "reconnecting")
    web.server.start()
    expect(page.locator(".banner[data-kind=ok]")).to_contain_text("Reconnected", timeout=TIMEOUT_MS)

    fake_provider.script(FakeResponse(text="It is capped at 30 seconds."))
    second = ask(page, "And its maximum?")
    finished(second)
    expect(second.locator(".markdown")).to_have_text("It is capped at 30 seconds.")
    messages = fake_provider.requests[-1].body["messages"]
    assert "What does backoff_delay return?" in json.dumps(messages), "the history was not sent"


def test_phone_width_layout(browser: Browser, web: Web) -> None:  # noqa: F811 (the browser fixture)
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    phone = context.new_page()
    try:
        phone.goto(web.server.base_url)
        expect(phone.locator("body[data-ready=true]")).to_have_count(1, timeout=TIMEOUT_MS)
        phone.get_by_role("button", name="Show repositories").click()
        expect(phone.get_by_role("button", name="Index repository")).to_be_visible()
        shot(phone, "phone-repositories")
        phone.locator(f'li[data-repo-id="{web.repo_id}"] .repo-name').click()
        expect(phone.get_by_label("Question")).to_be_visible()
        assert phone.evaluate("document.documentElement.scrollWidth") <= 375
        # The chat bar's selects show their whole labels (before: "Offline (no LLM:", "Grounded excer").
        phone.get_by_label("Provider").select_option("offline")
        for select in phone.locator(".composer-bar select").all():
            assert_shows_its_whole_label(select)
        shot(phone, "phone")
        phone.get_by_role("tab", name="Wiki").click()  # the wiki's title gets its own row, not a sliver
        heading = phone.locator(".wiki-heading").bounding_box()
        assert heading is not None and heading["width"] >= 300, heading
        phone.get_by_role("tab", name="Chat").click()
    finally:
        context.close()


def test_notice_when_the_page_is_not_built(
    live_server_factory: Callable[..., LiveServer], tmp_path: Path
) -> None:
    from fastapi import FastAPI

    from api.routes import web as web_routes

    def app_without_page() -> FastAPI:
        app = FastAPI()
        web_routes.mount(app, dist=tmp_path / "missing-dist")
        return app

    server = live_server_factory(app_factory=app_without_page)
    notice = httpx.get(server.base_url)
    assert notice.status_code == 200 and "make install" in notice.text


def test_private_repository_token_goes_with_questions_and_sources(
    page: Page, web: Web, fake_provider: FakeProvider, tmp_path: Path
) -> None:
    """The token typed at indexing is sent with questions and file fetches; after a reload the
    server's refusal is shown and the token field focused, and indexing again with it recovers."""
    from tests.support.git_http_server import GitHttpServer

    git = GitHttpServer(tmp_path / "git")
    try:
        git.add_repo("acme/vault", {"vault/lock.py": "def open_vault(code):\n    return code * 2\n"})
        token_field = page.get_by_placeholder("Access token")

        def index_with_token() -> None:
            token_field.fill(git.token)
            page.get_by_role("button", name="Index repository").click()
            expect(page.locator(".progress[data-state=done]")).to_contain_text("Indexed", timeout=TIMEOUT_MS)

        page.goto(web.server.base_url)
        expect(page.locator("body[data-ready=true]")).to_have_count(1, timeout=TIMEOUT_MS)
        page.get_by_placeholder("https://github.com/owner/repo").fill(git.url_for("acme/vault"))
        page.get_by_label("Platform").select_option("git")
        index_with_token()
        expect(page.locator("body[data-socket=open]")).to_have_count(1, timeout=TIMEOUT_MS)
        fake_provider.script(FakeResponse(text="It doubles the code (vault/lock.py:1-2)."))
        answer = ask(page, "What does open_vault return?")
        finished(answer)
        answer.locator(".citations .chip", has_text="vault/lock.py:1-2").click()
        viewer = page.locator("dialog.viewer[open]")
        expect(viewer.locator(".line.cited").first).to_be_visible(timeout=TIMEOUT_MS)
        page.keyboard.press("Escape")

        page.reload()
        expect(page.locator("body[data-socket=open]")).to_have_count(1, timeout=TIMEOUT_MS)
        # The restored conversation must be on the page before asking, or `ask` would count it late.
        expect(page.locator(".turn.assistant")).to_have_count(1, timeout=TIMEOUT_MS)
        refused = ask(page, "And after a reload?")
        finished(refused, "error")
        expect(refused.locator(".error")).to_contain_text("is private")
        expect(page.locator(".progress[data-state=error]")).to_contain_text("is private")
        expect(token_field).to_be_focused()
        index_with_token()
        fake_provider.script(FakeResponse(text="Answered with the token again."))
        finished(ask(page, "Once more?"))
        stored = page.evaluate("JSON.stringify({...localStorage}) + JSON.stringify({...sessionStorage})")
        assert git.token not in stored and git.token not in page.url
    finally:
        git.close()
        for record in web.store.list():
            if record.private:
                web.store.delete(record.id)


def test_wiki_view_generates_and_renders_pages_with_diagrams_and_citations(page: Page, web: Web) -> None:
    refused: list[str] = []
    page.on("response", lambda response: refused.append(response.url) if response.status >= 400 else None)
    page.on("console", lambda message: refused.append(message.text) if message.type == "error" else None)
    open_repo(page, web)
    page.get_by_role("tab", name="Wiki").click()
    wiki = page.locator("section.wiki")
    expect(wiki).to_be_visible()
    # Before the first wiki: the empty state, asked for without a 404 (no console error).
    expect(wiki.locator("article.wiki-page")).to_contain_text("No wiki yet", timeout=TIMEOUT_MS)
    page.wait_for_load_state("networkidle")
    assert refused == [], refused
    page.get_by_label("Offline (no LLM)").check()
    held: list[Route] = []  # hold the Mermaid chunk (loaded on first use) to see the page while it loads
    page.route("**/assets/mermaid.core-*.js", lambda route: held.append(route))
    wiki.locator("button.generate-wiki").click()
    progress = wiki.locator(".wiki-progress")
    expect(progress).to_have_attribute("data-state", "done", timeout=TIMEOUT_MS)
    expect(progress).to_contain_text("Done: 5 pages, 5 written, 0 unchanged")
    # Until the diagram is drawn: a placeholder, never the raw `graph TD` source.
    pending = wiki.locator("article.wiki-page pre.mermaid-source[data-pending]").first
    expect(pending).to_have_attribute("data-pending", "Drawing the diagram…", timeout=TIMEOUT_MS)
    expect(pending.locator("code")).to_be_hidden()
    page.wait_for_timeout(100)
    assert held, "the Mermaid chunk was not requested"
    for route in held:
        route.continue_()
    page.unroute("**/assets/mermaid.core-*.js")
    tree = wiki.locator(".wiki-tree")
    expect(tree.get_by_role("button", name="Overview")).to_have_class(re.compile("current"))
    expect(wiki.locator(".wiki-meta")).to_contain_text(
        re.compile(r"without a language model at commit [0-9a-f]{10}")
    )
    article = wiki.locator("article.wiki-page")
    expect(article).to_contain_text("Generated without a language model")
    expect(article.locator(".mermaid-diagram svg").first).to_be_visible(timeout=TIMEOUT_MS)

    tree.get_by_role("button", name="Module weatherline").click()
    expect(article.locator("h1")).to_have_text("Module weatherline")
    expect(article.locator(".mermaid-diagram svg")).to_have_count(2, timeout=TIMEOUT_MS)  # calls, imports
    expect(article.locator(".mermaid-error")).to_have_count(0)
    expect(article.locator(".mermaid-diagram").first).to_contain_text("ForecastService.run")
    expect(article.locator(".mermaid-diagram").last).to_contain_text("service.py")
    shot(page, "wiki")
    article.locator(".mermaid-diagram").first.screenshot(path=str(SCREENSHOTS / "wiki-diagram.png"))
    citation = article.locator("button.cite", has_text="weatherline/service.py:10-21")
    # Cited in backticks: the citation is the button, with no padded code box around it ("( a.py:3 )").
    assert citation.evaluate("(button) => getComputedStyle(button.parentElement).paddingLeft") == "0px"
    citation.click()
    viewer = page.locator("dialog.viewer[open]")
    expect(viewer).to_contain_text("weatherline/service.py:10-21")
    expect(viewer.locator(".line.cited").first).to_contain_text("class ForecastService", timeout=TIMEOUT_MS)
    viewer.get_by_role("button", name="Close").click()

    wiki.locator("button.generate-wiki", has_text="Regenerate").click()
    expect(progress).to_have_attribute("data-state", "done", timeout=TIMEOUT_MS)
    expect(article.locator("h1")).to_have_text("Module weatherline")

    # After an update that changes one file, the view says so and rewrites only the pages citing it.
    from ingest import update

    repo = web.root / "weatherline"
    write_files(
        repo,
        {"web/format.js": "/** Formats Celsius. */\nexport function formatCelsius(v) {\n  return v;\n}\n"},
    )
    commit_all(repo, "simpler format")
    update(web.repo_id, store=web.store, embedder=web.server.app.state.services.embedder)
    page.reload()
    expect(page.locator("body[data-ready=true]")).to_have_count(1, timeout=TIMEOUT_MS)
    page.get_by_role("tab", name="Wiki").click()
    expect(wiki.locator(".wiki-meta")).to_contain_text("out of date: their files changed", timeout=TIMEOUT_MS)
    wiki.locator("button.generate-wiki", has_text="Update wiki").click()
    expect(progress).to_have_attribute("data-state", "done", timeout=TIMEOUT_MS)
    expect(progress).to_contain_text("Done: 5 pages, 1 written (1 because their files changed), 4 unchanged")
    expect(wiki.locator("button.generate-wiki")).to_have_text("Regenerate")


def test_the_wiki_of_a_folder_without_git_names_no_commit(page: Page, web: Web) -> None:
    import shutil

    from ingest import ingest

    folder = make_fixture_repo(web.root / "plain-folder")
    shutil.rmtree(folder / ".git")
    services = web.server.app.state.services
    repo_id = ingest(str(folder), store=web.store, embedder=services.embedder).repo_id
    try:
        open_repo(page, web, repo_id)
        page.get_by_role("tab", name="Wiki").click()
        page.get_by_label("Offline (no LLM)").check()
        page.locator("button.generate-wiki").click()
        expect(page.locator(".wiki-progress")).to_have_attribute("data-state", "done", timeout=TIMEOUT_MS)
        meta = page.locator(".wiki-meta")
        expect(meta).to_have_text(re.compile(r"^Written without a language model( ·|$)"))
    finally:
        web.store.delete(repo_id)
