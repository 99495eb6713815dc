"""Offline research and the offline answer over the code graph, on fixture repositories in Python
and Go: chains across three files, overrides, line citations, and the graph research tools."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from ingest import ingest
from rag.answer import AnswerRequest, AnswerService
from rag.embedders import get_embedder
from rag.graph_walk import ChainFinder, Link, find_chain, named_identifiers, stem
from rag.providers.offline import explained_answer
from rag.research import ResearchOptions, run_research
from rag.research.loop import open_tools
from rag.research.tools import RepoTools
from rag.settings import Settings
from rag.store import Store
from rag.types import SearchHit
from tests.support.fake_provider import FakeProvider, FakeResponse
from tests.support.graph_repos import (
    CHAT_FILES,
    CLI_FILES,
    FORM_FILES,
    GO_FILES,
    HOOK_FILES,
    HOOK_INSTALL_FILES,
    PACKAGE_FILES,
    PYTHON_FILES,
    RUST_FILES,
    SERVER_FILES,
    SESSION_FILES,
    TIE_FILES,
    make_repo,
)


class _Services:
    def __init__(self, store: Store, embedder: Any, settings: Settings) -> None:
        self.store, self.embedder, self.settings = store, embedder, settings


@functools.cache
def _indexed(name: str) -> tuple[_Services, str]:
    """One index per fixture repository for the whole module (research only reads it)."""
    base = Path(tempfile.mkdtemp(prefix=f"repolens-graph-{name}-"))
    home = base / "home"
    settings = Settings.from_env({"REPOLENS_HOME": str(home)}, dotenv=home / "no.env")
    fixtures = {"shop": PYTHON_FILES, "relay": GO_FILES, "router": RUST_FILES, "server": SERVER_FILES}
    files = {
        **fixtures,
        "cli": CLI_FILES,
        "reply": TIE_FILES,
        "web": SESSION_FILES,
        "hooks": HOOK_FILES,
        "chat": CHAT_FILES,
        "fancy": HOOK_INSTALL_FILES,
        "forms": FORM_FILES,
        "tiny": PACKAGE_FILES,
    }[name]
    repo = make_repo(base / name, files)
    store = Store(home)
    embedder = get_embedder(settings)
    repo_id = ingest(str(repo), store=store, embedder=embedder).repo_id
    return _Services(store, embedder, settings), repo_id


def _research(
    name: str, question: str, language: str = "en"
) -> tuple[list[dict[str, Any]], str, dict[str, Any]]:
    services, repo_id = _indexed(name)

    async def collect() -> tuple[list[dict[str, Any]], str, dict[str, Any]]:
        sources: list[dict[str, Any]] = []
        text: list[str] = []
        done: dict[str, Any] = {}
        async for event in run_research(
            services, repo_id=repo_id, question=question, provider="offline", language=language,
            options=ResearchOptions(),
        ):  # fmt: skip
            if event["type"] == "sources":
                sources = event["sources"]
            elif event["type"] == "token":
                text.append(event["text"])
            elif event["type"] == "done":
                done = event
        return sources, "".join(text), done

    return asyncio.run(collect())


def _tools(name: str) -> RepoTools:
    services, repo_id = _indexed(name)
    return open_tools(services, repo_id, ResearchOptions())


def test_python_chain_across_three_files_through_import_and_self() -> None:
    sources, answer, done = _research(
        "shop", "How does main check out and charge the payment through a gateway?"
    )
    files = list(dict.fromkeys(source["path"] for source in sources))
    assert files[:3] == ["shop/cli.py", "shop/service.py", "shop/payments.py"]
    assert done["research"]["stopped_because"] == "chain_found"
    # The chain goes main -> CheckoutService.checkout -> CheckoutService.charge (self.) -> make_gateway.
    assert "`main()` (`shop/cli.py:5-7`)" in answer
    assert "`CheckoutService.checkout()` (`shop/service.py:9-11`)" in answer
    assert "`CheckoutService.charge()` (`shop/service.py:16-18`)" in answer


def test_go_chain_across_three_files_through_package_and_receiver() -> None:
    sources, answer, _ = _research("relay", "How does main start the server and open the socket?")
    files = list(dict.fromkeys(source["path"] for source in sources))
    assert set(files) == {"cmd/relay/main.go", "server/server.go", "server/socket.go"}
    assert "`Server.listen()` (`server/server.go:15-17`)" in answer
    assert "It is done in `openSocket()` (function, `server/socket.go:3-5`)" in answer or (
        "`openSocket()` (`server/socket.go:3-5`)" in answer
    )


def test_subclass_override_is_followed() -> None:
    sources, answer, _ = _research("shop", "How does the card gateway capture the payment when charging?")
    cited = {(source["path"], source["start_line"]) for source in sources}
    assert ("shop/payments.py", 10) in cited  # CardGateway.capture_payment, the override
    assert "CardGateway.capture_payment" in answer
    result = _tools("shop").run("subclasses", {"name": "Gateway"})
    assert "`CardGateway` (class) at shop/payments.py:9-11" in result.output
    assert "`CardGateway.capture_payment` (shop/payments.py:10-11)" in result.output


def test_an_abstract_worker_gives_way_to_its_override() -> None:
    """A chain ending at `Gateway.capture_payment` (`raise NotImplementedError`) goes on to the
    concrete override, which the answer names as where the work is done."""
    _, answer, _ = _research("shop", "How does the gateway capture the payment?")
    assert "It is done in `CardGateway.capture_payment()` (method, `shop/payments.py:10-11`)" in answer
    assert (
        "`Gateway.capture_payment()` (`shop/payments.py:5-6`) → overridden by "
        "`CardGateway.capture_payment()` (`shop/payments.py:10-11`)"
    ) in answer


def test_a_constructor_argument_is_followed_to_where_it_is_read() -> None:
    """`CheckoutService(argv[0])` -> `self.currency = currency` -> read in `charge`: in the answer, its
    citations and the trace tool."""
    question = "Where is the currency given to CheckoutService read when charging?"
    sources, answer, _ = _research("shop", question)
    assert (
        "`currency` is a constructor argument, stored in `CheckoutService.__init__()` "
        "(`shop/service.py:7`); read in `CheckoutService.charge()` (`shop/service.py:17`)."
    ) in answer
    assert {("shop/service.py", 7), ("shop/service.py", 17)} <= {
        (s["path"], s["start_line"]) for s in sources
    }
    trace = _tools("shop").run("trace", {"question": question}).output
    assert (
        "- constructor argument `currency`: stored by `CheckoutService.__init__` at shop/service.py:7; "
        "read by `CheckoutService.charge` at shop/service.py:17"
    ) in trace


def test_offline_answer_names_entry_and_worker_with_line_citations() -> None:
    services, repo_id = _indexed("shop")
    service = AnswerService(services.store, services.embedder, services.settings)

    async def answer() -> tuple[str, list[dict[str, Any]]]:
        text: list[str] = []
        citations: list[dict[str, Any]] = []
        request = AnswerRequest(
            repo_id=repo_id, question="How does main check out and charge the payment through a gateway?"
        )
        async for event in service.answer(request):
            if event["type"] == "token":
                text.append(event["text"])
            elif event["type"] == "citations":
                citations = event["citations"]
        return "".join(text), citations

    text, citations = asyncio.run(answer())
    assert text.startswith("**Offline answer — generated from the code graph without a language model**")
    assert "reached from `main()` (`shop/cli.py:5-7`)" in text
    assert "`CheckoutService.charge()` (`shop/service.py:16-18`)" in text
    checked = {(c["path"], c["start_line"], c["end_line"]): c for c in citations}
    assert checked[("shop/cli.py", 5, 7)]["in_context"] is True
    assert checked[("shop/service.py", 16, 18)]["in_context"] is True


def test_offline_answer_labels_follow_the_language() -> None:
    _, answer, _ = _research(
        "shop", "How does main check out and charge the payment through a gateway?", language="fr"
    )
    assert answer.startswith("**Réponse hors ligne")
    assert "On y arrive depuis `main()` (`shop/cli.py:5-7`)" in answer


@pytest.mark.parametrize(
    ("tool", "name", "expected"),
    [
        (
            "callers",
            "CheckoutService.charge",
            "call at shop/service.py:11: `CheckoutService.checkout` (method)",
        ),
        (
            "callees",
            "main",
            "call at shop/cli.py:7: `CheckoutService.checkout` (method) at shop/service.py:9-11",
        ),
        ("definition", "shop/service.py:CheckoutService.total", "13|     def total(self, items):"),
        ("references", "make_gateway", "call at shop/service.py:17: `CheckoutService.charge` (method)"),
        (
            "references",
            "CheckoutService",
            "constructor argument stored as `CheckoutService.currency` (attribute) at shop/service.py:7-7 "
            "(at shop/service.py:7); read at: shop/service.py:17 (`CheckoutService.charge`)",
        ),
        (
            "callees",
            "CheckoutService.__init__",
            "store at shop/service.py:7: `CheckoutService.currency` (attribute)",
        ),
        ("definition", "CheckoutService.currency", "7|         self.currency = currency"),
    ],
)
def test_graph_tools(tool: str, name: str, expected: str) -> None:
    result = _tools("shop").run(tool, {"name": name})
    assert not result.is_error, result.output
    assert expected in result.output
    assert result.evidence


def test_graph_tool_errors_are_results() -> None:
    result = _tools("shop").run("callers", {"name": "no_such_thing"})
    assert result.is_error
    assert "no definition named 'no_such_thing'" in result.output


def investigate_turn(request: Any) -> str:
    return str(request.body["messages"][1]["content"])


def test_trace_tool_gives_offline_researchs_chain_and_sources() -> None:
    question = "How does main check out and charge the payment through a gateway?"
    result = _tools("shop").run("trace", {"question": question})
    assert not result.is_error, result.output
    assert "1. `main` (function) at shop/cli.py" in result.output
    assert "(called at shop/cli.py:7)" in result.output
    offline, _, _ = _research("shop", question)
    assert [(e.path, e.start_line, e.end_line) for e in result.evidence] == [
        (s["path"], s["start_line"], s["end_line"]) for s in offline
    ]


def test_llm_loop_gets_the_chain_and_graph_tools_and_cites_its_sources(fake_provider: FakeProvider) -> None:
    """The plan prompt offers the code graph's chain, the model can call the graph tools, and the
    final `sources` are the evidence the answer cites (not every span a tool showed)."""
    services, repo_id = _indexed("shop")
    env = fake_provider.openai_env()
    settings = Settings.from_env({"REPOLENS_HOME": str(services.settings.home), **env}, dotenv=Path("no.env"))
    fake_provider.script(
        FakeResponse(text="1. Find the entry. 2. Follow the calls."),
        FakeResponse(tool_calls=[{"name": "callees", "arguments": {"name": "CheckoutService.charge"}}]),
        FakeResponse(text="enough"),
        FakeResponse(text="`charge` builds the gateway (shop/service.py:16-18) and calls make_gateway."),
    )

    async def collect() -> list[dict[str, Any]]:
        events = run_research(
            _Services(services.store, services.embedder, settings), repo_id=repo_id,
            question="How does main charge the payment through a gateway?", provider="openai",
            options=ResearchOptions(),
        )  # fmt: skip
        return [event async for event in events]

    events = asyncio.run(collect())
    plan_prompt = fake_provider.requests[0].body["messages"][-1]["content"]
    assert "Code graph chain for the question" in plan_prompt
    assert "`CheckoutService.charge` (method) at shop/service.py:16-18" in plan_prompt
    tools = {tool["function"]["name"] for tool in fake_provider.requests[1].body["tools"]}
    assert {"callers", "callees", "definition", "references", "subclasses"} <= tools
    investigate = fake_provider.requests[1].body["messages"][0]["content"]
    assert "callees for what it calls" in investigate
    results = [e for e in events if e["type"] == "research" and e["event"] == "tool_result"]
    assert (results[0]["phase"], results[0]["tool"]) == ("plan", "trace"), "the chain is the first finding"
    assert results[0]["files"] == ["shop/cli.py", "shop/service.py", "shop/payments.py"]
    assert "make_gateway" in results[1]["summary"] + str(results[1].get("files"))
    assert "Code graph chain for the question" in investigate_turn(fake_provider.requests[1])
    sources = [e["sources"] for e in events if e["type"] == "sources"]
    assert len(sources) == 2, "all evidence first, then what the answer cites"
    assert [(s["path"], s["start_line"]) for s in sources[-1]] == [("shop/service.py", 16)]


def test_documented_in_cites_documentation_not_ci_or_changelogs() -> None:
    from rag.graph_walk import Chain, Link
    from rag.providers.offline import explained_answer
    from rag.store.schema import CodeDefinition
    from rag.types import SearchHit

    worker = CodeDefinition(
        1, "shop/service.py", "charge", "CheckoutService.charge", "method", "CheckoutService", 16, 18
    )
    hits = [
        SearchHit(path, language, 1, 3, None, "text", 1.0)
        for path, language in (
            (".github/workflows/ci.yml", "yaml"), ("CHANGELOG.md", "markdown"), ("README.md", "markdown"),
        )
    ]  # fmt: skip
    answer = explained_answer("How is it charged?", Chain([Link(worker)]), hits, lambda path: "x\n" * 20)
    assert "It is done in `CheckoutService.charge()` (method, `shop/service.py:16-18`)." in answer
    assert "- Documented in `README.md:1-3`.\n" in answer


def _chat(name: str, question: str, k: int = 10) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """The offline chat answer (what the WebSocket, HTTP and MCP chat send): text, sources, citations."""
    services, repo_id = _indexed(name)
    service = AnswerService(services.store, services.embedder, services.settings)

    async def collect() -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
        text: list[str] = []
        sources: list[dict[str, Any]] = []
        citations: list[dict[str, Any]] = []
        async for event in service.answer(AnswerRequest(repo_id=repo_id, question=question, k=k)):
            if event["type"] == "token":
                text.append(event["text"])
            elif event["type"] == "sources":
                sources = event["sources"]
            elif event["type"] == "citations":
                citations = event["citations"]
        return "".join(text), sources, citations

    return asyncio.run(collect())


def _in_short(answer: str) -> str:
    return next(line for line in answer.splitlines() if line.startswith("**In short:**"))


@pytest.mark.parametrize("mode", ["chat", "deep"])
def test_the_summary_names_the_implementation_and_no_test_is_on_the_chain(mode: str) -> None:
    """`Router::route` is called by an inline `#[cfg(test)]` test and by `app()`: the chain starts at
    the code, not at the test, and the summary names `route`, not the test or the error type."""
    question = "How does `Router::route` add a route to the router?"
    answer = _chat("router", question)[0] if mode == "chat" else _research("router", question)[1]
    assert "`Router.route()` (method, `src/router.rs:" in _in_short(answer)
    assert "adding_a_route_to_the_router_keeps_its_path" not in answer
    assert "RouteError" not in _in_short(answer)


def test_a_hit_named_after_an_inline_test_seeds_no_chain_unless_the_question_is_about_tests() -> None:
    """A hit that starts at `normalize_route_path` and runs into the `#[cfg(test)]` module is named after
    its best chunk, the test: it says how well the test matches, so it neither seeds the chain nor
    pinpoints the subject; a question about tests still follows it."""
    services, repo_id = _indexed("router")
    index = services.store.open(repo_id)
    lines = (index.file_text("src/router.rs") or "").splitlines()
    start = next(n for n, line in enumerate(lines, 1) if line.startswith("fn normalize_route_path"))
    symbol = "tests.adding_a_route_to_the_router_keeps_its_path"
    hit = SearchHit("src/router.rs", "rust", start, len(lines), symbol, "\n".join(lines[start - 1 :]), 1.0)
    finder = ChainFinder(index, "How does the router normalize the path of a route?")
    assert finder.named_test(hit)
    assert finder.seeds([hit]) == {} and finder.source_hits([hit]) == []
    assert find_chain(index, "How does the router normalize the path of a route?", [hit]).subject is None
    about_tests = ChainFinder(index, "How is the path of a route tested?")
    seeded = {d.qualname for d, _ in about_tests.seeds([hit]).values()}
    assert seeded == {"normalize_route_path", "adding_a_route_to_the_router_keeps_its_path"}


def test_the_summary_names_what_retrieval_ranked_first_not_the_chains_last_helper() -> None:
    """The chain goes on from `Router.route` to the helper it calls; the summary stays at the code
    retrieval found for the question, and the helper is listed as what it calls."""
    answer = _chat("router", "How does the router add a route?")[0]
    assert "`Router.route()`" in _in_short(answer)
    assert "normalize_route_path" not in _in_short(answer)


@pytest.mark.parametrize("name, question", [
    ("shop", "Where is the currency given to CheckoutService read when charging?"),
    ("shop", "How does main check out and charge the payment through a gateway?"),
    ("router", "How does `Router::route` add a route to the router?"),
])  # fmt: skip
def test_every_citation_of_an_offline_answer_is_in_its_sources(name: str, question: str) -> None:
    """With one retrieved span, the chain's other lines (steps, reads, stored arguments) are sent as
    sources too, so the page links every citation and flags none (chat: WebSocket, HTTP and MCP)."""
    answer, sources, citations = _chat(name, question, k=1)
    assert citations and all(citation["in_context"] for citation in citations), citations
    for citation in citations:  # written as the page labels it (`linkCitations`): `path:7`, `path:5-9`
        start, end = citation["start_line"], citation["end_line"]
        label = f"{citation['path']}:{start}" + (f"-{end}" if end != start else "")
        assert re.search(re.escape(label) + r"(?![\d-])", answer), label
    listed = [(s["path"], s["start_line"], s["end_line"]) for s in sources]
    for citation in citations:
        assert any(
            path == citation["path"] and start <= citation["start_line"] and citation["end_line"] <= end
            for path, start, end in listed
        ), (citation, listed)
    _, research_sources, _ = _research(name, question)
    assert research_sources


def _hit_on(
    name: str, path: str, qualname: str, symbol: str | None, language: str = "python"
) -> tuple[Any, SearchHit]:
    """The index of fixture `name`, and a retrieved hit spanning all of `qualname` (named `symbol`)."""
    services, repo_id = _indexed(name)
    index = services.store.open(repo_id)
    span = next(d for d in index.definitions_in(path) if d.qualname == qualname)
    text = "\n".join((index.file_text(path) or "").splitlines()[span.start_line - 1 : span.end_line])
    return index, SearchHit(path, language, span.start_line, span.end_line, symbol, text, 1.0)


def test_inside_a_class_sized_hit_the_subject_is_the_method_holding_the_questions_terms() -> None:
    """Retrieval's best hit is the whole `FileServer` class: it pinpoints none of its methods, so the
    chain goes through the one whose name and text hold most of the question (`respond`: find, file,
    request, path, serve), not `__call__`'s first helper, and the summary names it."""
    index, hit = _hit_on("server", "server/files.py", "FileServer", "FileServer")
    chain = find_chain(index, "How does FileServer find the file to serve for a request path?", [hit])
    assert chain.subject is not None and chain.subject.qualname == "FileServer.respond"
    steps = [link.definition.qualname for link in chain.links]
    assert steps[: chain.subject_step + 1] == ["FileServer.__call__", "FileServer.respond"], steps
    assert "NotFound" not in steps


def test_an_entry_point_retrieval_ranks_first_is_the_subject_when_it_explains_more() -> None:
    """`SessionMiddleware.__call__` loads the session and calls on to `Connection.session`: when the best
    hit pinpoints the entry point and it explains more of the question than the step a lower hit
    pinpoints, it is the subject; when retrieval ranks the accessor first, the accessor is."""
    question = "How does the session middleware load the session from the cookie?"
    index, entry = _hit_on(
        "web", "web/sessions.py", "SessionMiddleware.__call__", "SessionMiddleware.__call__"
    )
    _, accessor = _hit_on("web", "web/requests.py", "Connection.session", "Connection.session")
    chain = find_chain(index, question, [entry, accessor])
    steps = [link.definition.qualname for link in chain.links]
    assert chain.subject is not None and chain.subject.qualname == "SessionMiddleware.__call__", steps
    chain = find_chain(index, question, [accessor, entry])
    steps = [link.definition.qualname for link in chain.links]
    assert steps[0] == "SessionMiddleware.__call__", steps
    assert chain.subject is not None and chain.subject.qualname == "Connection.session", steps


def test_a_merged_hit_names_the_step_its_best_chunk_is_in() -> None:
    """A hit merged from several chunks is named after its best-ranked one (`Index.lookup`): that step
    is the subject, though it spans a small share of the hit's lines."""
    index, hit = _hit_on("server", "server/index.py", "Index", "Index.lookup")
    chain = find_chain(index, "How is the position of a name in the index looked up?", [hit])
    steps = [link.definition.qualname for link in chain.links]
    assert "Index.lookup" in steps[1:], steps
    assert chain.subject is not None and chain.subject.qualname == "Index.lookup", steps


def test_a_merged_hit_named_after_a_helper_is_about_its_caller_when_the_caller_says_more() -> None:
    """A hit over the whole `Command` class is named after its best chunk, `post_run`: its caller on the
    chain, `execute`, in the same hit, holds more of the question's words (pre, run, post, hooks,
    command) than `post_run` (post, run, hooks), so `execute` is the subject and the helper comes after."""
    index, hit = _hit_on("hooks", "app/command.py", "Command", "Command.post_run")
    chain = find_chain(index, "How does a command run its pre-run and post-run hooks?", [hit])
    steps = [link.definition.qualname for link in chain.links]
    assert chain.subject is not None and chain.subject.qualname == "Command.execute", steps
    assert steps[chain.subject_step + 1 :] == ["Command.post_run"], steps


def test_a_class_the_chain_builds_gives_way_to_its_method_that_does_the_work() -> None:
    """`attach()` builds a `Download`: the summary names the method of it that sends the file to the
    client (`Download.__call__`), listed after the class on the chain, not the class."""
    index, hit = _hit_on("server", "server/download.py", "attach", "attach")
    chain = find_chain(index, "How is the file sent to the client when attached?", [hit])
    steps = [(link.definition.qualname, link.how) for link in chain.links]
    assert steps == [("attach", ""), ("Download", "call"), ("Download.__call__", "member")], steps
    assert chain.subject is not None and chain.subject.qualname == "Download.__call__"
    trace = _tools("server").run("trace", {"question": "How does attach send a Download to the client?"})
    assert (
        "3. `Download.__call__` (method) at server/download.py:13-16 "
        "(the method of the class before that does the work)"
    ) in trace.output
    answer = explained_answer("How is the file sent?", chain, [hit], index.file_text)
    assert "**In short:** It is done in `Download.__call__()` (method, `server/download.py:13-16`)." in answer
    assert (
        "→ `Download` (`server/download.py:4-16`) → `Download.__call__()` (`server/download.py:13-16`)."
        in answer
    )


def test_the_way_to_the_subject_takes_the_direct_call_not_a_detour_through_another_file() -> None:
    """`ExecuteC` calls `Find` to run the subcommand, and calls `initCompleteCmd` (completions.go), which
    calls `Find` only to check for a completion request: the chain reaches `Find` from `ExecuteC`, though
    retrieval ranks the detour and its text holds more of the question."""
    index, find = _hit_on("cli", "command.go", "Command.Find", "Command.Find", "go")
    _, detour = _hit_on("cli", "completions.go", "Command.initCompleteCmd", "Command.initCompleteCmd", "go")
    question = "How does the cli find which subcommand to run from the command-line args?"
    chain = find_chain(index, question, [find, detour])
    steps = [link.definition.qualname for link in chain.links]
    assert chain.subject is not None and chain.subject.qualname == "Command.Find", steps
    assert steps[: chain.subject_step + 1][-2:] == ["Command.ExecuteC", "Command.Find"], steps
    assert "Command.initCompleteCmd" not in steps, steps
    answer = explained_answer(question, chain, [find, detour], index.file_text)
    assert "`Command.ExecuteC()` (`command.go:17-22`) → `Command.Find()`" in answer, answer


def test_a_chain_starting_at_a_detour_starts_at_its_caller_that_calls_the_next_step_itself() -> None:
    """A chain found as `initCompleteCmd` -> `Find` starts instead at `ExecuteC`, which calls both."""
    index, find = _hit_on("cli", "command.go", "Command.Find", "Command.Find", "go")
    _, detour = _hit_on("cli", "completions.go", "Command.initCompleteCmd", "Command.initCompleteCmd", "go")
    finder = ChainFinder(index, "How does the cli find which subcommand to run from the command-line args?")
    nodes, out = finder.explore(finder.seeds([find, detour]))
    start = next(node for node in nodes.values() if node.qualname == "Command.initCompleteCmd")
    call = next(link for link in out[start.id] if link.definition.qualname == "Command.Find")
    links, step = finder.direct([Link(start), call], 1, nodes, out)
    assert [(link.definition.qualname, link.how) for link in links] == [
        ("Command.ExecuteC", ""),
        ("Command.Find", "call"),
    ]
    assert step == 1 and links[1].line == 19  # `ExecuteC`'s own call to `Find`


# Run in a fresh interpreter per PYTHONHASHSEED: the chat and deep research answers' chain lines for
# the tie fixture, and the older identifier walk's callee order for a set of edges.
_SEEDED_ANSWERS = """
import asyncio, sys
from rag.answer import AnswerRequest, AnswerService
from rag.embedders import get_embedder
from rag.research import ResearchOptions, run_research
from rag.research.offline import Edge, Graph, Node
from rag.settings import Settings
from rag.store import Store
from pathlib import Path

home, repo_id, question = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
CHAIN_LINES = ("**In short", "- It is reached")
settings = Settings.from_env({"REPOLENS_HOME": str(home)}, dotenv=home / "no.env")
store, embedder = Store(home), get_embedder(settings)

class Services:
    def __init__(self):
        self.store, self.embedder, self.settings = store, embedder, settings

async def text(events):
    return "".join([event["text"] async for event in events if event["type"] == "token"])

chat = AnswerService(store, embedder, settings).answer(AnswerRequest(repo_id, question, provider="offline"))
options = ResearchOptions()
deep = run_research(Services(), repo_id=repo_id, question=question, provider="offline", options=options)
for answer in (asyncio.run(text(chat)), asyncio.run(text(deep))):
    print([line for line in answer.splitlines() if line.startswith(CHAIN_LINES)])
caller, callee = Node("a.py", 1, 9, "run"), Node("b.py", 1, 9, "go")
print([e.identifier for e in Graph(edges={Edge(caller, callee, n) for n in "qwertyuiop"}).callees(caller)])
"""


def test_answers_are_the_same_whatever_the_hash_seed() -> None:
    """`jsonp -> send` and `sendStatus -> send` explain the question equally: the summed scores must not
    depend on the order a set hands out the question's terms (PYTHONHASHSEED), and the tie goes to
    retrieval's order, then the file's (`jsonp` comes first). Each seed runs in its own interpreter."""
    services, repo_id = _indexed("reply")
    question = "How does res.send set the content type and send the body to the browser?"
    outputs = set()
    for seed in ("0", "1", "2"):
        run = subprocess.run(
            [sys.executable, "-c", _SEEDED_ANSWERS, str(services.store.home), repo_id, question],
            capture_output=True, text=True, check=True, timeout=120,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )  # fmt: skip
        outputs.add(run.stdout)
    assert len(outputs) == 1, outputs
    chat, deep, callees = outputs.pop().splitlines()
    assert chat == deep
    assert "It is reached from `res.jsonp()` (`lib/reply.js:21-25`) → `res.send()`" in chat, chat
    assert callees == str(list("eiopqrtuwy"))


def test_of_equal_chains_the_one_retrieval_names_wins() -> None:
    """The same tie, with retrieval's second hit named after `sendStatus` (its best-ranked chunk): the
    chain starts there, not at `jsonp`, which comes first in the file."""
    index, send = _hit_on("reply", "lib/reply.js", "res.send", "send", "javascript")
    text = index.file_text("lib/reply.js") or ""
    helpers = SearchHit("lib/reply.js", "javascript", 18, 35, None, "\n".join(text.splitlines()[17:35]), 0.9)
    question = "How does res.send set the content type and send the body?"
    steps = [link.definition.qualname for link in find_chain(index, question, [send, helpers]).links]
    assert steps[:2] == ["res.jsonp", "res.send"], steps
    named = dataclasses.replace(helpers, symbol="sendStatus")
    steps = [link.definition.qualname for link in find_chain(index, question, [send, named]).links]
    assert steps[:2] == ["res.sendStatus", "res.send"], steps


def _chain_lines(answer: str) -> list[str]:
    return [line for line in answer.splitlines() if line.startswith(("**In short", "- It is reached"))]


def test_chat_and_deep_research_name_the_same_subject_whatever_chats_k() -> None:
    """Chat sends its `k` best hits as sources and deep research retrieves its own: both find the chain
    from one retrieval (`traced_chain`), so a chat showing one source names the subject deep research
    names (`openSocket`, reached from `main` through `Server.Start`), with every citation linked."""
    question = "Where does main start the relay?"
    chat, _, citations = _chat("relay", question, k=1)
    deep = _research("relay", question)[1]
    assert _chain_lines(chat) == _chain_lines(deep), (_chain_lines(chat), _chain_lines(deep))
    assert "`openSocket()`" in _in_short(chat), _in_short(chat)
    assert citations and all(citation["in_context"] for citation in citations), citations


def test_of_the_steps_the_best_hits_pinpoint_the_one_named_for_a_question_term_is_the_subject() -> None:
    """Retrieval ranks `child` (the lookup of one argument) above `Find`: both are on the chain, and
    `Find`, whose own name is the question's verb, is what the answer names."""
    index, child = _hit_on("cli", "command.go", "Command.child", "Command.child", "go")
    _, find = _hit_on("cli", "command.go", "Command.Find", "Command.Find", "go")
    question = "How does the cli find which subcommand to run from the command-line args?"
    chain = find_chain(index, question, [child, find])
    steps = [link.definition.qualname for link in chain.links]
    assert "Command.child" in steps, steps
    assert chain.subject is not None and chain.subject.qualname == "Command.Find", steps


def test_an_entry_point_only_retrieval_pinpoints_is_the_subject_when_its_lines_hold_more() -> None:
    """Every hit lands in `handle_websocket_chat`, which builds the prompt in its own lines, and none in
    what it calls (`RAG`, `format_history`): the chain's later steps are the walk's guess, so the answer
    names the handler, not the class it builds (`RAG.__init__`) or the formatter the walk ends at."""
    index, hit = _hit_on("chat", "server/chat.py", "handle_websocket_chat", "handle_websocket_chat")
    for question in (
        "How does the websocket chat handler build the prompt?",
        "How does the websocket chat handler build the RAG prompt?",
    ):
        chain = find_chain(index, question, [hit])
        steps = [link.definition.qualname for link in chain.links]
        assert len(steps) > 1 and steps[0] == "handle_websocket_chat", steps
        assert chain.subject is not None and chain.subject.qualname == "handle_websocket_chat", steps


def test_a_bare_acronym_is_a_word_of_the_question_not_a_name() -> None:
    """An all-capitals word ("build a URL", "the RAG prompt") is the sentence's acronym: it neither
    seeds the class of that name nor pins it down as the subject; quoted, it is a name."""
    assert named_identifiers("How does the websocket chat handler build the RAG prompt?") == []
    assert named_identifiers("How does url_for build a URL from a route name?") == ["url_for"]
    assert named_identifiers("What does `RAG` retrieve for HTTPAdapter?") == ["RAG", "HTTPAdapter"]


@pytest.mark.parametrize("mode", ["chat", "deep"])
def test_chat_and_deep_research_name_the_handler_that_builds_the_prompt(mode: str) -> None:
    """Both offline answers, from their real retrieval: the websocket chat handler builds the RAG prompt
    (deepwiki-open's question named `RAG.__init__` instead)."""
    question = "How does the websocket chat handler build the RAG prompt?"
    answer = _chat("chat", question)[0] if mode == "chat" else _research("chat", question)[1]
    assert "`handle_websocket_chat()` (function, `server/chat.py:" in _in_short(answer), _in_short(answer)


def test_the_chain_goes_through_the_function_retrievals_best_hit_pinpoints() -> None:
    """The best hit is `install`, the next the `FancyHandler` class; the walk alone prefers
    `FancyHandler.emit` -> `Traceback.from_exception`,
    whose steps hold more of the question's words (fancy, handler, traceback): the chain is found again
    through `install`, which is what the answer names."""
    index, hit = _hit_on("fancy", "fancy/traceback.py", "install", "install")
    _, handler = _hit_on("fancy", "fancy/logging.py", "FancyHandler", "FancyHandler")
    question = "How does fancy install its traceback handler?"
    chain = find_chain(index, question, [hit, handler])
    steps = [link.definition.qualname for link in chain.links]
    assert "install" in steps and "FancyHandler.emit" not in steps, steps
    assert chain.subject is not None and chain.subject.qualname == "install", steps


def test_a_compound_split_at_its_capital_and_a_verbs_forms_meet_the_questions_words() -> None:
    """ "multipart" is `MultiPartParser`'s name, written as one word, and "parsed" is `parse`: the chain
    goes to the multipart parser's `parse`, not to `FormParser`, whose name only says "form"."""
    assert stem("parse") == stem("parsed") == stem("parses") == stem("parsing")
    assert stem("validate") == stem("validated") and stem("route") == stem("routes")
    index, hit = _hit_on("forms", "web/request.py", "Request.form", "Request.form")
    chain = find_chain(index, "How are multipart form fields parsed from the request body?", [hit])
    steps = [link.definition.qualname for link in chain.links]
    assert "FormParser" not in steps, steps
    assert chain.subject is not None and chain.subject.qualname == "MultiPartParser.parse", steps


def test_a_package_called_by_name_is_traced_through_its_own_code_not_its_examples() -> None:
    """`tiny()` is the package's `createApplication`: the 36 examples and tests that bind the package
    (`var tiny = require(...)`) and call it define nothing, so they do not fill the hits the chain is
    found from (express 'How does express() create and initialize a new application?' cited nothing)."""
    sources, answer, _ = _research("tiny", "How does tiny() create and initialize a new application?")
    cited = [source["path"] for source in sources]
    assert cited[:2] == ["lib/tiny.js", "lib/application.js"], cited
    assert "`createApplication()`" in answer, answer
