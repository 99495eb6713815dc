"""The code graph built at ingest: definitions, resolved imports, calls and inheritance, kept
incrementally with the files (fixture repositories in Python and Go), on both store backends."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ingest import IngestOptions, finish_embedding, ingest, update
from ingest import pipeline as ingest_pipeline
from rag.embedders import Embedder
from rag.graph_types import GRAPH_VERSION
from rag.store import RepoIndex, Store
from tests.support.graph_repos import GO_FILES, JS_FILES, PYTHON_FILES, make_repo
from tests.support.repos import commit_all, write_files

CHECKOUT_CALLS = ["CheckoutService.total", "CheckoutService.charge"]


def _index(
    make_store: Callable[[Path], Store], tmp_path: Path, embedder: Embedder, files: dict[str, str], name: str
) -> tuple[Store, str, Path]:
    repo = make_repo(tmp_path / name, files)
    store = make_store(tmp_path / f"home-{name}")
    return store, ingest(str(repo), store=store, embedder=embedder).repo_id, repo


def _one(index: RepoIndex, name: str):
    found = index.definition(name)
    assert len(found) == 1, found
    return found[0]


def _callee_names(index: RepoIndex, name: str) -> list[str]:
    return [edge.target.qualname for edge in index.callees(_one(index, name))]


def test_python_definitions_have_qualified_names_and_spans(
    make_store: Callable[[Path], Store], tmp_path: Path, shared_embedder: Embedder
) -> None:
    store, repo_id, _ = _index(make_store, tmp_path, shared_embedder, PYTHON_FILES, "shop")
    index = store.open(repo_id)
    checkout = _one(index, "CheckoutService.checkout")
    assert (checkout.path, checkout.kind, checkout.parent) == ("shop/service.py", "method", "CheckoutService")
    assert (checkout.start_line, checkout.end_line) == (9, 11)
    assert [d.qualname for d in index.definitions_named("capture_payment")] == [
        "Gateway.capture_payment",
        "CardGateway.capture_payment",
    ]


def test_python_calls_resolve_through_imports_and_self(
    make_store: Callable[[Path], Store], tmp_path: Path, shared_embedder: Embedder
) -> None:
    store, repo_id, _ = _index(make_store, tmp_path, shared_embedder, PYTHON_FILES, "shop")
    index = store.open(repo_id)
    assert (2, "CheckoutService", "shop/service.py") in index.imports_of("shop/cli.py")
    assert "CheckoutService.checkout" in _callee_names(index, "main")
    assert _callee_names(index, "CheckoutService.checkout") == CHECKOUT_CALLS
    assert "make_gateway" in _callee_names(index, "CheckoutService.charge")
    callers = index.callers(_one(index, "CheckoutService.charge"))
    assert [(e.source.qualname, e.path, e.line) for e in callers if e.source] == [
        ("CheckoutService.checkout", "shop/service.py", 11)
    ]


def test_subclasses_and_overrides(
    make_store: Callable[[Path], Store], tmp_path: Path, shared_embedder: Embedder
) -> None:
    store, repo_id, _ = _index(make_store, tmp_path, shared_embedder, PYTHON_FILES, "shop")
    index = store.open(repo_id)
    gateway = _one(index, "Gateway")
    assert [d.qualname for d in index.subclasses(gateway)] == ["CardGateway"]
    assert [d.qualname for d in index.superclasses(_one(index, "CardGateway"))] == ["Gateway"]


def test_go_calls_resolve_through_package_import_and_receiver(
    make_store: Callable[[Path], Store], tmp_path: Path, shared_embedder: Embedder
) -> None:
    store, repo_id, _ = _index(make_store, tmp_path, shared_embedder, GO_FILES, "relay")
    index = store.open(repo_id)
    assert {target for _, _, target in index.imports_of("cmd/relay/main.go")} == {
        "server/server.go",
        "server/socket.go",
    }
    assert _callee_names(index, "main") == ["New", "Server.Start"]
    assert _callee_names(index, "Server.Start") == ["Server.listen"]
    listen = _one(index, "Server.listen")
    assert [(e.target.qualname, e.target.path) for e in index.callees(listen)] == [
        ("openSocket", "server/socket.go")
    ]


def test_update_removing_a_function_removes_its_edges(
    make_store: Callable[[Path], Store], tmp_path: Path, shared_embedder: Embedder
) -> None:
    store, repo_id, repo = _index(make_store, tmp_path, shared_embedder, PYTHON_FILES, "shop")
    index = store.open(repo_id)
    assert "make_gateway" in _callee_names(index, "CheckoutService.charge")
    payments = PYTHON_FILES["shop/payments.py"].split("\n\ndef make_gateway")[0] + "\n"
    write_files(repo, {"shop/payments.py": payments})
    commit_all(repo, "drop make_gateway")
    ingest(str(repo), store=store, embedder=shared_embedder)
    index = store.open(repo_id)
    assert index.definition("make_gateway") == []
    assert "make_gateway" not in _callee_names(index, "CheckoutService.charge")
    # Unchanged files keep their rows, and their calls into the changed file are resolved again.
    assert _callee_names(index, "CheckoutService.checkout") == CHECKOUT_CALLS
    assert [d.qualname for d in index.subclasses(_one(index, "Gateway"))] == ["CardGateway"]


def test_unknown_names_and_enclosing_definitions(
    make_store: Callable[[Path], Store], tmp_path: Path, shared_embedder: Embedder
) -> None:
    store, repo_id, _ = _index(make_store, tmp_path, shared_embedder, PYTHON_FILES, "shop")
    index = store.open(repo_id)
    assert index.definition("no_such_function") == []
    assert index.definition_at("shop/cli.py", 6).qualname == "main"


def _uses(index: RepoIndex, name: str) -> list[tuple[str, str, int]]:
    return [
        (e.kind, e.source.qualname if e.source else "", e.line) for e in index.references(_one(index, name))
    ]


def test_python_constructor_arguments_are_tracked_to_their_reads(
    make_store: Callable[[Path], Store], tmp_path: Path, shared_embedder: Embedder
) -> None:
    """`CheckoutService(argv[0])` -> `self.currency = currency` -> read in `CheckoutService.charge`."""
    store, repo_id, _ = _index(make_store, tmp_path, shared_embedder, PYTHON_FILES, "shop")
    index = store.open(repo_id)
    currency = _one(index, "CheckoutService.currency")
    assert (currency.kind, currency.path, currency.start_line, currency.parent) == (
        "attribute", "shop/service.py", 7, "CheckoutService",
    )  # fmt: skip
    assert _uses(index, "CheckoutService.currency") == [
        ("store", "CheckoutService.__init__", 7),
        ("read", "CheckoutService.charge", 17),
    ]
    assert index.attributes_of(_one(index, "CheckoutService")) == [currency]
    assert ("read", 17, "CheckoutService.currency") in [
        (e.kind, e.line, e.target.qualname) for e in index.callees(_one(index, "CheckoutService.charge"))
    ]
    # Attributes are not code: lookups by file or short name (retrieval, wikis, seeds) leave them out.
    assert "currency" not in {d.name for d in index.definitions_in("shop/service.py")}
    assert index.definitions_named("currency") == []


def test_javascript_constructor_arguments_are_tracked_to_their_reads(
    make_store: Callable[[Path], Store], tmp_path: Path, shared_embedder: Embedder
) -> None:
    store, repo_id, _ = _index(make_store, tmp_path, shared_embedder, JS_FILES, "fetcher")
    index = store.open(repo_id)
    assert _uses(index, "Client.timeout") == [("store", "Client.constructor", 6), ("read", "Client.send", 12)]
    # A destructured parameter with a default is an argument too; `this.pending = []` is not one.
    assert _uses(index, "Client.retries") == [("store", "Client.constructor", 7)]
    assert index.definition("Client.pending") == []
    # A constructor function, read back by a method set on its prototype.
    assert _uses(index, "Route.path") == [("store", "Route", 4), ("read", "Route.match", 9)]
    assert [d.qualname for d in index.attributes_of(_one(index, "Route"))] == ["Route.path"]


def test_an_update_graphs_again_what_an_older_extractor_graphed_and_says_so(
    make_store: Callable[[Path], Store],
    tmp_path: Path,
    shared_embedder: Embedder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with monkeypatch.context() as older:  # the index of the RepoLens before an upgrade
        older.setattr(ingest_pipeline, "GRAPH_VERSION", GRAPH_VERSION - 1)
        store, repo_id, _ = _index(make_store, tmp_path, shared_embedder, PYTHON_FILES, "shop")
    assert store.open(repo_id).graph_version == GRAPH_VERSION - 1
    report = update(repo_id, store=store, embedder=shared_embedder)
    assert report.graph_reason == f"graph version {GRAPH_VERSION - 1} -> {GRAPH_VERSION}"
    graphed = [path for path in PYTHON_FILES if path.endswith(".py")]
    assert report.files["regraphed"] == len(graphed) and report.files["changed"] == 0
    index = store.open(repo_id)
    assert index.graph_version == GRAPH_VERSION and _callee_names(index, "CheckoutService.checkout")
    again = update(repo_id, store=store, embedder=shared_embedder)
    assert again.graph_reason is None and again.files["regraphed"] == 0


def test_the_graph_follows_the_lexical_version_in_a_version_of_its_own(
    tmp_path: Path, shared_embedder: Embedder
) -> None:
    """Lexical first: the first searchable version of a new repository has no graph yet (research
    falls back to the identifier walk); the graph is built after it and goes live at the `graph`
    milestone, before any vector (a chat waits for it: `api.graph_wait`), and is in the finished index.
    With `dense=False` (`ingest --no-wait`) the run ends at the searchable version and
    `finish_embedding` (the background `repolens embed`) builds the graph with the vectors."""
    seen: list[tuple[str, bool, str]] = []
    for dense in (True, False):
        # Texts new to the shared vector cache, so the `dense=False` run has chunks left to embed.
        files = {path: f"# {tmp_path.name} {dense}\n{text}" for path, text in PYTHON_FILES.items()}
        repo = make_repo(tmp_path / f"shop-{dense}", files)
        store = Store(tmp_path / f"home-{dense}")

        def on_progress(progress: Any, store: Store = store) -> None:
            if progress.stage in ("searchable", "graph"):
                record = store.list()[0]
                seen.append((progress.stage, store.open(record.id).has_graph, record.index_state))

        options = IngestOptions(dense=dense)
        report = ingest(str(repo), options, store=store, embedder=shared_embedder, progress=on_progress)
        if not dense:
            assert report.record.index_state != "complete" and not store.open(report.repo_id).has_graph
            finish_embedding(report.repo_id, store=store, embedder=shared_embedder, progress=on_progress)
        index = store.open(report.repo_id)
        assert index.record.index_state == "complete"
        assert index.has_graph and "CheckoutService.charge" in _callee_names(
            index, "CheckoutService.checkout"
        )
        assert report.timings["graph_s"] > 0
    # The graph goes live in a version of its own before any vector (not with the first dense version).
    # `finish_embedding` publishes the graph it backfills the same way, before its first vector.
    assert seen == [
        ("searchable", False, "lexical"),
        ("graph", True, "lexical"),
        ("searchable", False, "lexical"),
        ("graph", True, "lexical"),
    ]


MIXED_FILES = {
    "api/logs.py": (
        "class LogFilter:\n"
        "    def filter(self, record):\n"
        "        return 'noise' not in record\n"
        "\n"
        "\n"
        "def quiet(records, log_filter):\n"
        "    return [r for r in records if log_filter.filter(r)]\n"
    ),
    "web/page.tsx": (
        "export function Home(items: string[]) {\n  return items.filter((item) => item.length > 0)\n}\n"
    ),
}


def test_a_name_never_binds_to_a_definition_in_another_language(
    make_store: Callable[[Path], Store], tmp_path: Path, shared_embedder: Embedder
) -> None:
    """A guess by method name stays inside the caller's language family: the Python call finds the
    Python method, the TypeScript `Array.filter` call finds nothing (it used to bind to it, and the
    offline answer then traced a web page into a logging filter)."""
    store, repo_id, _ = _index(make_store, tmp_path, shared_embedder, MIXED_FILES, "mixed")
    index = store.open(repo_id)
    assert _callee_names(index, "quiet") == ["LogFilter.filter"]
    assert _callee_names(index, "Home") == []
    callers = index.callers(_one(index, "LogFilter.filter"))
    assert [edge.source.qualname for edge in callers if edge.source] == ["quiet"]


ALIASED_FILES = {
    "tsconfig.json": (
        "{\n"
        "  // Next.js writes comments and trailing commas here\n"
        '  "compilerOptions": {\n'
        '    "baseUrl": ".",\n'
        '    "paths": {"@/*": ["./src/*"], "~lib": ["./src/lib/index.ts"]}, /* aliases */\n'
        '    "types": ["https://example.com/not-a-comment"],\n'
        "  },\n"
        "}\n"
    ),
    "src/utils/url.ts": "export function parseUrl(url: string) {\n  return url\n}\n",
    "src/lib/index.ts": "export function helper() {\n  return 1\n}\n",
    "src/app/page.tsx": (
        "import { parseUrl } from '@/utils/url'\n"
        "import { helper } from '~lib'\n"
        "export function Home() {\n"
        "  parseUrl('x')\n"
        "  return helper()\n"
        "}\n"
    ),
    "packages/ui/tsconfig.json": '{"compilerOptions": {"paths": {"@/*": ["./lib/*"]}}}\n',
    "packages/ui/lib/button.ts": "export function button() {\n  return 2\n}\n",
    "packages/ui/app.ts": (
        "import { button as b } from '@/button'\nexport function render() {\n  return b()\n}\n"
    ),
}


def test_typescript_imports_resolve_through_the_nearest_tsconfig_aliases(
    make_store: Callable[[Path], Store], tmp_path: Path, shared_embedder: Embedder
) -> None:
    """`@/utils/url` is `src/utils/url.ts` by the root tsconfig's `paths`; in `packages/ui` its own
    tsconfig maps `@/` to `lib/` (the nearest config wins)."""
    store, repo_id, _ = _index(make_store, tmp_path, shared_embedder, ALIASED_FILES, "aliased")
    index = store.open(repo_id)
    assert {target for _, _, target in index.imports_of("src/app/page.tsx")} == {
        "src/utils/url.ts",
        "src/lib/index.ts",
    }
    assert [(e.target.qualname, e.exact) for e in index.callees(_one(index, "Home"))] == [
        ("parseUrl", True),
        ("helper", True),
    ]
    assert [target for _, _, target in index.imports_of("packages/ui/app.ts")] == [
        "packages/ui/lib/button.ts"
    ]


HOOK_FILES = {
    "src/api.ts": "export function fetchTree(repo: string) {\n  return repo\n}\n",
    "src/page.tsx": (
        "import { useCallback } from 'react'\n"
        "import { fetchTree } from './api'\n"
        "export function WikiPage() {\n"
        "  const loadStructure = useCallback(async (repo: string) => {\n"
        "    return fetchTree(repo)\n"
        "  }, [])\n"
        "  const plain = 3\n"
        "  return loadStructure(String(plain))\n"
        "}\n"
    ),
}


def test_a_function_wrapped_in_a_hook_is_a_definition_of_its_own(
    make_store: Callable[[Path], Store], tmp_path: Path, shared_embedder: Embedder
) -> None:
    """`const loadStructure = useCallback(async () => ...)`: the handler is a definition inside the
    component, its calls are its own, and the component calls it (React code is written this way)."""
    store, repo_id, _ = _index(make_store, tmp_path, shared_embedder, HOOK_FILES, "hooks")
    index = store.open(repo_id)
    handler = _one(index, "WikiPage.loadStructure")
    assert (handler.kind, handler.start_line, handler.end_line) == ("function", 4, 6)
    assert _callee_names(index, "WikiPage.loadStructure") == ["fetchTree"]
    assert _callee_names(index, "WikiPage") == ["WikiPage.loadStructure"]
    assert index.definition("WikiPage.plain") == []


RUST_PATH_FILES = {
    "core/src/query.rs": (
        "pub struct Query;\n"
        "impl Query {\n"
        "    pub fn from_parts(parts: &str) -> Self {\n"
        "        Self::from_text(parts)\n"
        "    }\n"
        "    pub fn from_text(text: &str) -> Self {\n"
        "        serde_path_to_error::deserialize(text);\n"
        "        Query\n"
        "    }\n"
        "}\n"
        "pub fn read(body: &Body) {\n"
        "    body.deserialize();\n"
        "}\n"
    ),
    "extra/src/query.rs": (
        "pub struct Query;\n"
        "impl Query {\n"
        "    pub fn from_text(text: &str) -> Self {\n"
        "        Query\n"
        "    }\n"
        "}\n"
    ),
    "extra/src/json.rs": (
        "pub struct JsonDeserializer;\n"
        "impl JsonDeserializer {\n"
        "    pub fn deserialize(&self) -> u8 {\n"
        "        0\n"
        "    }\n"
        "}\n"
    ),
}


def test_a_rust_path_names_a_module_or_a_type_never_a_value(
    make_store: Callable[[Path], Store], tmp_path: Path, shared_embedder: Embedder
) -> None:
    """`serde_path_to_error::deserialize(text)` calls a function of a crate outside the repository: it
    is no call of the one method named `deserialize` (axum's offline answer named
    `JsonDeserializer.deserialize` as the code that deserializes a query string), while a value's
    `body.deserialize()` is still guessed by name. `Self::from_text` is the own type's method, in its
    own file, though another crate's `Query` has one too."""
    store, repo_id, _ = _index(make_store, tmp_path, shared_embedder, RUST_PATH_FILES, "rust-paths")
    index = store.open(repo_id)
    own = [d for d in index.definitions_in("core/src/query.rs") if d.qualname == "Query.from_text"]
    assert [edge.target.qualname for edge in index.callees(own[0])] == []
    edges = index.callees(_one(index, "Query.from_parts"))
    assert [(edge.target.path, edge.target.qualname, edge.exact) for edge in edges] == [
        ("core/src/query.rs", "Query.from_text", True)
    ]
    assert _callee_names(index, "read") == ["JsonDeserializer.deserialize"]
