"""Typed settings: every documented variable is a field, `.env` works for all, bad values fail at start-up."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

import rag.redact
from api.cli import app
from ingest.git import token_for
from ingest.reader import Limits
from rag.errors import ConfigError
from rag.redact import MASK, redact, register_secret, secret_scope
from rag.settings import Settings, markdown_table, variable_of
from tests.support.chat import ChatServer
from tests.support.repos import commit_all, git, write_files

README = Path(__file__).resolve().parent.parent / "README.md"
# Variables the README names that are not settings of the app: an Ollama server option
NOT_OURS = {  # an Ollama server option, a code constant (the graph extractor's), and benchmark knobs (bench/)
    "OLLAMA_CONTEXT_LENGTH",
    "GRAPH_VERSION",
    "REPOLENS_BENCH_SCALE",
    "REPOLENS_BENCH_DEEPWIKI_CORPORA",
    "REPOLENS_BENCH_CHAT_LEVELS",
    "REPOLENS_BENCH_CHAT_COMPARE",
    "REPOLENS_BENCH_INGEST_PART",
    "REPOLENS_BENCH_INGEST_COMPARE",
    "REPOLENS_BENCH_INGEST_ROUNDS",
    "REPOLENS_BENCH_CHAT_WORKERS",
    "REPOLENS_BENCH_CHAT_PROBE",
    "REPOLENS_BENCH_PROFILE",
    "REPOLENS_BENCH_QUEUE_REPOS",
    "REPOLENS_BENCH_QUEUE_FILES",
    "REPOLENS_BENCH_QUEUE_ROUNDS",
    "REPOLENS_BENCH_VECTORS",
    "REPOLENS_BENCH_QUERIES",
    "REPOLENS_BENCH_PG_DIR",
    "REPOLENS_BENCH_PREPARE_ONLY",
    "REPOLENS_BENCH_EF_SEARCH",
    "REPOLENS_BENCH_HNSW_M",
    "REPOLENS_BENCH_EF_CONSTRUCTION",
    "REPOLENS_BENCH_ANSWER_PART",
    "REPOLENS_BENCH_SPLIT",
}
VARIABLE = re.compile(
    r"`(?:[A-Z_]+=)?(REPOLENS_[A-Z_]+|PORT|TIKTOKEN_CACHE_DIR|[A-Z]+_(?:API_KEY|TOKEN|BASE_URL|HOST|"
    r"ENDPOINT|VERSION|WORKSPACE_ID))[`=]"
)


def variables() -> set[str]:
    return {variable_of(field) for field in Settings.model_fields.values()}


def test_every_variable_in_the_readme_is_a_field() -> None:
    named = set(VARIABLE.findall(README.read_text(encoding="utf-8"))) - NOT_OURS
    assert named, "the pattern finds the README's variables"
    assert named - variables() == set()


def test_readme_settings_table_is_generated_from_the_fields() -> None:
    """Regenerate with `python -m rag.settings` and paste into README's "All settings"."""
    assert markdown_table() in README.read_text(encoding="utf-8")


def test_dotenv_works_for_every_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home-from-dotenv"
    (tmp_path / ".env").write_text(
        f"REPOLENS_HOME={home}\nREPOLENS_MAX_FILES=7\nGITHUB_TOKEN=ghp_from_dotenv_123456\n", encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REPOLENS_HOME")
    settings = Settings.from_env()
    assert settings.home == home
    assert Limits.from_settings(settings).max_files == 7
    assert token_for("github", None, settings) == "ghp_from_dotenv_123456"
    assert token_for("github") == "ghp_from_dotenv_123456"  # loaded here when the caller has none
    # every field, through a .env holding a valid value for each
    values = {variable_of(field): _valid(name) for name, field in Settings.model_fields.items()}
    (tmp_path / "all.env").write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    loaded = Settings.from_env({}, dotenv=tmp_path / "all.env")
    for variable, value in values.items():
        assert loaded.value(variable) == value, variable


def _valid(field: str) -> str:
    special = {
        "port": "8123",
        "ingest_workers": "3",
        "chunk_processes": "3",
        "ingest_isolation": "process",
        "ingest_nice": "5",
        "embedder": "ollama",
        "allow_local": "True",
        "home": "/tmp/somewhere",
        "model_dir": "/tmp/models",
        "tiktoken_cache_dir": "/tmp/tiktoken",
        "pg_pool_size": "12",
        "pg_ef_search": "120",
        "pg_hnsw_m": "12",
        "pg_ef_construction": "96",
    }
    annotation = str(Settings.model_fields[field].annotation)
    if field in special:
        return special[field]
    if "bool" in annotation:
        return "True"
    if "int" in annotation:
        return "4096"
    if "float" in annotation:
        return "2.5"
    return f"value-of-{field}"


def test_environment_wins_over_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("REPOLENS_MAX_FILES=7\n")
    assert Settings.from_env({"REPOLENS_MAX_FILES": "9"}, dotenv=tmp_path / ".env").max_files == 9


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REPOLENS_MAX_FILES", "lots"),
        ("PORT", "eighty"),
        ("REPOLENS_LLM_TIMEOUT", "-1"),
        ("REPOLENS_ALLOW_LOCAL", "perhaps"),
        ("REPOLENS_CONTEXT_WINDOW", "12"),
        ("REPOLENS_PG_EF_SEARCH", "5000"),
        ("REPOLENS_PG_EF_CONSTRUCTION", "20"),  # under 2 x REPOLENS_PG_HNSW_M (16)
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable) as caught:
        Settings.from_env({variable: value})
    assert caught.value.code == "bad_config" and repr(value) in caught.value.message


def test_a_bad_value_stops_the_cli_at_start_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("REPOLENS_MAX_BYTES=a-lot\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["list", "--json"])
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "bad_config" and "REPOLENS_MAX_BYTES" in error["message"]


def test_dotenv_limit_reaches_the_cli_ingest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    write_files(repo, {"a.py": "A = 1\n", "b.py": "B = 2\n", "c.py": "C = 3\n"})
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "initial")
    (tmp_path / ".env").write_text("REPOLENS_MAX_FILES=1\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["ingest", str(repo), "--json"])
    assert result.exit_code == 5, result.output
    assert "REPOLENS_MAX_FILES" in json.loads(result.stdout)["error"]["message"]


def test_secrets_never_show_in_a_repr() -> None:
    settings = Settings.from_env({"OPENAI_API_KEY": "sk-verysecret-123456", "GITHUB_TOKEN": "tok-123456789"})
    assert "verysecret" not in repr(settings) and "tok-123456789" not in str(settings.model_dump())
    assert set(settings.secrets()) == {"sk-verysecret-123456", "tok-123456789"}


def test_request_secrets_are_masked_only_while_the_request_runs() -> None:
    token = "request-only-token-7f3a"
    with secret_scope(token):
        assert redact(f"saw {token}") == f"saw {MASK}"
        register_secret("found-during-request-91c")
        assert MASK in redact("found-during-request-91c")
    assert redact(token) == token and redact("found-during-request-91c") == "found-during-request-91c"
    assert token not in rag.redact._unscoped and token not in rag.redact._configured


def test_a_chat_request_token_is_not_kept_after_the_request(chat_server: ChatServer) -> None:
    token = "chat-request-token-5d2e9"
    body = chat_server.request(token=token, protocol="events", provider="offline", model=None)
    response = httpx.post(f"{chat_server.server.base_url}/chat/completions/stream", json=body, timeout=30)
    assert response.status_code == 200 and '"done"' in response.text
    assert token not in rag.redact._unscoped and token not in rag.redact._configured
    assert redact(token) == token
