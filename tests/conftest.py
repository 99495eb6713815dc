"""Shared test configuration.

Every test gets its own REPOLENS_HOME, and no provider key leaks in from the
developer's environment, so the suite is deterministic and never reaches the internet.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Fixtures that start real servers, available to every test module.
pytest_plugins = [
    "tests.support.fake_provider",
    "tests.support.repos",
    "tests.support.live_server",
    "tests.support.chat",
    "tests.support.git_http_server",
    "tests.support.redis_server",
    "tests.support.postgres",
]

_PROVIDER_VARIABLES = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "GOOGLE_API_KEY",
    "OPENROUTER_API_KEY",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_VERSION",
    "DASHSCOPE_API_KEY",
    "DASHSCOPE_WORKSPACE_ID",
    "OLLAMA_HOST",
    "REPOLENS_TOKEN",
    "GITHUB_TOKEN",
    "GITLAB_TOKEN",
    "BITBUCKET_TOKEN",
    "REPOLENS_PROVIDER",
    "REPOLENS_MODEL",
    "REPOLENS_EMBEDDER",
    "REPOLENS_EMBEDDING_MODEL",
    "REPOLENS_EMBEDDER_THREADS",
    "REPOLENS_EMBEDDING_TIMEOUT",
    "REPOLENS_EMBEDDING_MAX_TOKENS",
    "GOOGLE_API_BASE_URL",
    "OPENROUTER_BASE_URL",
    "DASHSCOPE_BASE_URL",
    "REPOLENS_OPENAI_COMPATIBLE_BASE_URL",
    "REPOLENS_OPENAI_COMPATIBLE_API_KEY",
    "REPOLENS_CONTEXT_WINDOW",
    "REPOLENS_LLM_TIMEOUT",
    "REPOLENS_DATABASE_URL",
)

# Derived model files and the tiktoken cache are shared by all tests (built once by `make install`).
SHARED_CACHE = Path(__file__).resolve().parent.parent / "build" / "test-cache"


@pytest.fixture(autouse=True)
def repolens_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "repolens-home"
    home.mkdir()
    monkeypatch.setenv("REPOLENS_HOME", str(home))

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(SHARED_CACHE / "tiktoken"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    for name in _PROVIDER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield home


@pytest.fixture(scope="session", autouse=True)
def source_policy_opt_in(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The test servers' explicit opt-in to the sources the fixtures use (ingest/policy.py): local
    folders under pytest's temporary root, and git servers on loopback; and rate limits no suite
    reaches. A server's default refuses both sources; tests of the defaults remove these (see
    tests/test_source_policy.py, tests/test_server_guards.py).
    Session-wide, so module- and session-scoped servers get it too."""
    opt_in = {
        "REPOLENS_LOCAL_ROOTS": str(tmp_path_factory.getbasetemp().resolve()),
        "REPOLENS_ALLOW_PRIVATE_HOSTS": "1",
        # Suites send hundreds of chat and ingest requests a minute from one address.
        "REPOLENS_RATE_LIMIT_CHAT": "100000/minute",
        "REPOLENS_RATE_LIMIT_INGEST": "100000/minute",
    }
    saved = {name: os.environ.get(name) for name in opt_in}
    os.environ.update(opt_in)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
