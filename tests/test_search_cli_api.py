"""`repolens search` and `POST /api/repos/{id}/search` on a really ingested fixture repository."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from api.cli import app
from api.cli.search_cmd import console, print_hits
from ingest import ingest
from rag.embedders import get_embedder
from rag.settings import Settings
from rag.store import RepoIndex, Store
from rag.types import SearchHit
from tests.conftest import SHARED_CACHE
from tests.support.repos import RARE_IDENTIFIER, commit_all, git, make_fixture_repo, write_files

RESULT_FIELDS = {"path", "start_line", "end_line", "symbol", "language", "score", "text"}


@pytest.fixture(scope="module")
def shared_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """The fixture repository ingested once for the module: `(home, repo path, repo id)`."""
    home = tmp_path_factory.mktemp("search-home")
    repo = make_fixture_repo(tmp_path_factory.mktemp("source") / "weatherline")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REPOLENS_HOME", str(home))
        patch.setenv("TIKTOKEN_CACHE_DIR", str(SHARED_CACHE / "tiktoken"))
        settings = Settings.from_env(dotenv=home / ".env")
        report = ingest(str(repo), store=Store(home), embedder=get_embedder(settings))
    return home, repo, report.repo_id


@pytest.fixture
def indexed(shared_index: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """This test runs against the shared index: `(repo id, repo path)`."""
    home, repo, repo_id = shared_index
    monkeypatch.setenv("REPOLENS_HOME", str(home))
    return repo_id, repo


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["search", *args])
    return result.exit_code, result.stdout


def assert_results_shape(results: list[dict]) -> None:
    for result in results:
        assert set(result) == RESULT_FIELDS
        assert isinstance(result["start_line"], int) and result["start_line"] <= result["end_line"]
        assert isinstance(result["score"], float)


def test_cli_json_finds_the_rare_identifier(indexed: tuple[str, Path]) -> None:
    repo_id, _ = indexed
    code, out = run_cli(repo_id, RARE_IDENTIFIER, "--json", "-k", "3")
    assert code == 0, out
    payload = json.loads(out)
    assert payload["repo"] == repo_id
    assert payload["query"] == RARE_IDENTIFIER
    assert 1 <= len(payload["results"]) <= 3
    assert_results_shape(payload["results"])
    assert payload["results"][0]["path"] == "weatherline/client.py"
    assert RARE_IDENTIFIER in payload["results"][0]["text"]


def test_cli_accepts_the_local_path_and_prints_excerpts(indexed: tuple[str, Path]) -> None:
    _, repo = indexed
    code, out = run_cli(str(repo), "HttpClient.send", "-k", "2")
    assert code == 0, out
    first = out.splitlines()[0]
    assert first.startswith("1. weatherline/client.py:") and "HttpClient" in first
    assert "def send(self, method: str, path: str) -> dict:" in out
    assert not [line for line in out.splitlines() if line.endswith("  ")]  # no lines padded to the width


@pytest.mark.parametrize(
    ("options", "prefix"),
    [(["--path", "web"], "web/"), (["--path", "*.go"], "server/"), (["--language", "markdown"], "")],
)
def test_cli_filters(indexed: tuple[str, Path], options: list[str], prefix: str) -> None:
    repo_id, _ = indexed
    code, out = run_cli(repo_id, "forecast temperature", "--json", *options)
    assert code == 0, out
    results = json.loads(out)["results"]
    assert results
    assert all(result["path"].startswith(prefix) for result in results)
    if "--language" in options:
        assert {result["language"] for result in results} == {"markdown"}


@pytest.mark.parametrize(
    ("options", "why"),
    [
        (["--language", "rust"], "no file here is in language 'rust' (its languages: python, "),
        (["--path", "no_such_folder"], "no indexed file matches --path 'no_such_folder'"),
    ],
)
def test_cli_says_when_a_filter_leaves_nothing_to_search(
    indexed: tuple[str, Path], options: list[str], why: str
) -> None:
    """A bare "no results" read as if the query had found nothing, not the filter."""
    repo_id, _ = indexed
    code, out = run_cli(repo_id, "retry ceiling", *options)
    assert code == 0 and out.startswith(f"no results: {why}")


def test_cli_queries_file_answers_each_query_with_one_loaded_index(
    indexed: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo_id, _ = indexed
    loads: list[Path] = []
    original_init = RepoIndex.__init__

    def counting_init(self: RepoIndex, version_dir: Path) -> None:
        loads.append(version_dir)
        original_init(self, version_dir)

    monkeypatch.setattr(RepoIndex, "__init__", counting_init)
    queries = tmp_path / "queries.jsonl"
    queries.write_text(
        '{"id": "q1", "query": "ForecastService.run"}\n'
        "\n"
        '{"id": 2, "query": "draw a bar chart of temperatures"}\n'
        '{"query": "healthHandler"}\n'
    )
    code, out = run_cli(repo_id, "--queries-file", str(queries), "-k", "2", "--mode", "hybrid")
    assert code == 0, out
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["id"] for line in lines] == ["q1", 2, 4]
    assert all(set(line) == {"id", "query", "results"} for line in lines)
    assert lines[0]["results"][0]["path"] == "weatherline/service.py"
    assert lines[1]["results"][0]["path"] == "web/chart.js"
    assert lines[2]["results"][0]["path"] == "server/main.go"
    assert len(loads) == 1


def test_cli_lexical_mode(indexed: tuple[str, Path]) -> None:
    repo_id, _ = indexed
    code, out = run_cli(repo_id, "persist_forecasts", "--mode", "lexical", "--json")
    assert code == 0, out
    assert json.loads(out)["results"][0]["path"] == "weatherline/storage.py"


def test_cli_unknown_repo_is_exit_3_with_a_json_error() -> None:
    code, out = run_cli("github.com/nobody/nothing", "client", "--json")
    assert code == 3
    error = json.loads(out)["error"]
    assert error["code"] == "not_found"
    assert "github.com/nobody/nothing" in error["message"]


@pytest.mark.parametrize(
    ("content", "message"),
    [("not json\n", ":1: not valid JSON"), ('{"id": 1}\n', ":1: expected an object"), ("[1]\n", ":1:")],
)
def test_cli_bad_queries_file_names_the_line(
    indexed: tuple[str, Path], tmp_path: Path, content: str, message: str
) -> None:
    repo_id, _ = indexed
    queries = tmp_path / "queries.jsonl"
    queries.write_text(content)
    code, out = run_cli(repo_id, "--queries-file", str(queries))
    assert code != 0
    assert message in json.loads(out)["error"]["message"]


def test_cli_needs_a_query_or_a_queries_file(indexed: tuple[str, Path]) -> None:
    repo_id, _ = indexed
    code, out = run_cli(repo_id, "--json")
    assert code != 0
    assert "either a query or --queries-file" in json.loads(out)["error"]["message"]


def test_cli_refuses_bad_k_and_mode_as_usage_errors(indexed: tuple[str, Path]) -> None:
    repo_id, _ = indexed
    assert run_cli(repo_id, "client", "-k", "0")[0] == 2
    assert run_cli(repo_id, "client", "--mode", "fuzzy")[0] == 2


def test_http_search_returns_the_cli_json(indexed: tuple[str, Path], live_server) -> None:
    repo_id, _ = indexed
    url = f"{live_server.base_url}/api/repos/{repo_id}/search"
    response = httpx.post(url, json={"query": "HttpClient.send", "k": 3})
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["repo"] == repo_id and payload["query"] == "HttpClient.send"
    assert_results_shape(payload["results"])
    assert payload["results"][0]["path"] == "weatherline/client.py"
    assert "def send(" in payload["results"][0]["text"]
    code, out = run_cli(repo_id, "HttpClient.send", "-k", "3", "--json")
    assert code == 0 and json.loads(out) == payload

    filtered = httpx.post(url, json={"query": "forecast", "path_glob": "web", "mode": "lexical"}).json()
    assert filtered["results"] and all(r["path"].startswith("web/") for r in filtered["results"])
    go_only = httpx.post(url, json={"query": "forecast server", "language": "go"}).json()
    assert {r["language"] for r in go_only["results"]} == {"go"}


def test_http_unknown_repo_is_404(indexed: tuple[str, Path], live_server) -> None:
    response = httpx.post(
        f"{live_server.base_url}/api/repos/github.com/nobody/nothing/search", json={"query": "client"}
    )
    assert response.status_code == 404
    assert "github.com/nobody/nothing is not indexed" in response.json()["detail"]


BAD_BODIES = [
    {},
    {"query": ""},
    {"query": "   "},
    {"query": "client", "k": 0},
    {"query": "client", "k": 101},
    {"query": "client", "k": "many"},
    {"query": "client", "mode": "fuzzy"},
    {"query": "client", "top_k": 5},
    {"query": 42},
]


def test_http_bad_body_is_422(indexed: tuple[str, Path], live_server) -> None:
    repo_id, _ = indexed
    for body in BAD_BODIES:
        response = httpx.post(f"{live_server.base_url}/api/repos/{repo_id}/search", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["detail"], body


def test_http_embedder_mismatch_is_409(
    indexed: tuple[str, Path], live_server_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo_id, _ = indexed
    # A remote embedder cannot read a local index (its model's dimension is known: nothing is sent).
    monkeypatch.setenv("REPOLENS_EMBEDDER", "ollama")
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    server = live_server_factory()
    url = f"{server.base_url}/api/repos/{repo_id}/search"
    response = httpx.post(url, json={"query": "client"})
    assert response.status_code == 409
    assert "re-index" in response.json()["detail"]
    assert httpx.post(url, json={"query": "client", "mode": "lexical"}).status_code == 200


def test_http_search_reads_a_local_index_with_its_own_model_whatever_model_is_configured(
    indexed: tuple[str, Path], live_server_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo_id, _ = indexed
    record = Store(Settings.from_env().home).get(repo_id)
    assert record is not None
    other_model = "minilm-l6-v2" if record.embedder != "minilm-l6-v2" else "minilm-l6-v2-int8"
    monkeypatch.setenv("REPOLENS_EMBEDDING_MODEL", other_model)
    server = live_server_factory()
    response = httpx.post(
        f"{server.base_url}/api/repos/{repo_id}/search", json={"query": "client", "mode": "dense"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["results"]


def test_explain_shows_role_ranks_and_boosts_in_the_cli_and_the_api(
    indexed: tuple[str, Path], live_server
) -> None:
    repo_id, _ = indexed
    code, out = run_cli(repo_id, "HttpClient.send", "-k", "3", "--json", "--explain")
    assert code == 0, out
    results = json.loads(out)["results"]
    first = results[0]["explain"]
    assert first["role"] == "source" and first["intent"] == "code"
    assert first["exact_boost"] > 0 and "lexical_rank" in first and "dense_rank" in first
    response = httpx.post(
        f"{live_server.base_url}/api/repos/{repo_id}/search",
        json={"query": "HttpClient.send", "k": 3, "explain": True},
    )
    assert response.status_code == 200, response.text
    assert response.json()["results"] == results
    code, out = run_cli(repo_id, "how is a request retried", "-k", "2", "--explain")
    assert code == 0, out
    assert "role source · intent code" in out and "dense #" in out


def printed_at_80_columns(hit: SearchHit) -> str:
    """What `print_hits` writes for `hit` on an 80-column console."""
    width = console.width
    console.width = 80
    try:
        with console.capture() as captured:
            print_hits([hit])
    finally:
        console.width = width
    return captured.get()


def test_a_long_explain_line_wraps_under_its_hit() -> None:
    """At 80 columns the explain line wraps; its tail (`from History.md (app.route)`) stays indented."""
    explain = {
        "role": "source", "intent": "code", "dense_rank": 5, "lexical_rank": 23, "role_weight": 1.0,
        "link_boost": 0.0025, "linked_from": "docs/guide/routing-and-middleware.md",
        "linked_name": "app.route",
    }  # fmt: skip
    symbol = "SessionRedirectMixin.resolve_redirects_for_a_long_name"  # the title stays one line
    hit = SearchHit("lib/application.js", "javascript", 190, 192, symbol, "a\nb\nc", 0.036, explain)
    lines = printed_at_80_columns(hit).splitlines()
    assert lines[0].startswith("1. lib/application.js:190-192") and lines[0].endswith("score 0.0360"), lines
    explained = [line for line in lines[1:] if "role source" in line or "routing-and-middleware" in line]
    assert len(explained) == 2 and all(line.startswith("   ") for line in explained), lines
    assert all(line == line.rstrip() for line in explained), lines  # not padded with spaces to the width


def test_a_long_code_line_stays_one_line_when_piped() -> None:
    """Before: rich wrapped excerpt lines at 80 columns when piped (`async fn ` / `cannot_extract_...`):
    a grep or a copy got half a line."""
    code = '    let app = Router::new().nest_service("/{a}", Router::new().route("/{b}", get(handler)));'
    hit = SearchHit("src/lib.rs", "rust", 250, 251, "tests.nested", f"fn main() {{\n{code}", 0.03, None)
    printed = printed_at_80_columns(hit)
    assert f"  251 {code}" in printed.splitlines(), printed


def _function(name: str, topic: str) -> str:
    """A function long enough to get a chunk of its own (each is well under the window)."""
    steps = "".join(
        f"    {topic}_step_{i} = {topic}_value * {i} + len('{topic} step {i}')\n" for i in range(7)
    )
    return (
        f'def {name}({topic}_value: int) -> int:\n    """Compute the {topic} total."""\n{steps}    return 0\n'
    )


def test_a_hit_holding_two_functions_is_named_after_both_in_line_order(
    tmp_path: Path, shared_embedder
) -> None:
    """`-k 2` on a file of two functions merges their chunks into one hit. It was named after its
    best chunk alone, so a query for the second function printed lines 1-22 as `melt_glacier`."""
    repo = tmp_path / "twofold"
    write_files(
        repo,
        {"twofold.py": _function("brew_coffee", "coffee") + "\n\n" + _function("melt_glacier", "glacier")},
    )
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "two functions")
    repo_id = ingest(str(repo), store=Store(Settings.from_env().home), embedder=shared_embedder).repo_id
    index = Store(Settings.from_env().home).open(repo_id)
    assert [c.symbol for c in index.chunks_for_file("twofold.py")] == ["brew_coffee", "melt_glacier"]
    code, out = run_cli(repo_id, "melt_glacier glacier total", "-k", "2")
    assert code == 0, out
    assert out.splitlines()[0].startswith("1. twofold.py:1-") and "  brew_coffee, melt_glacier  score" in out
    code, out = run_cli(repo_id, "melt_glacier glacier total", "-k", "2", "--json")
    [hit] = json.loads(out)["results"]
    assert hit["symbol"] == "brew_coffee, melt_glacier"
