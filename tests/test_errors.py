"""One error table: each code and each `RepoLensError` subclass maps to a documented status and exit code."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import httpx
import pytest

import api
import ingest
import rag
from rag.errors import (
    ERROR_TABLE,
    UNEXPECTED_EXIT_CODE,
    ErrorCode,
    RepoLensError,
    error_spec,
    exit_code,
    http_status,
    markdown_tables,
)
from tests.support.chat import ChatServer

README = Path(__file__).resolve().parent.parent / "README.md"


def _all_subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_all_subclasses(sub)}
    return found


def _error_classes() -> list[type[RepoLensError]]:
    """Every RepoLensError subclass defined anywhere in the three packages (all modules imported)."""
    for package in (rag, ingest, api):
        for module in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
            if module.name.endswith("__main__"):
                continue
            importlib.import_module(module.name)
    classes = [cls for cls in _all_subclasses(RepoLensError) if cls.__module__.split(".")[0] != "tests"]
    return sorted([RepoLensError, *classes], key=lambda cls: f"{cls.__module__}.{cls.__qualname__}")


def test_every_code_has_one_row() -> None:
    assert set(ERROR_TABLE) == set(ErrorCode)


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_code_is_a_client_status_except_internal(code: ErrorCode) -> None:
    spec = ERROR_TABLE[code]
    if code is ErrorCode.INTERNAL:
        assert spec.http_status == 500 and spec.exit_code == UNEXPECTED_EXIT_CODE == 1
    else:
        assert 400 <= spec.http_status < 600 and spec.http_status != 500, code
        assert spec.exit_code not in (0, 1), code
    assert http_status(code) == spec.http_status and exit_code(code) == spec.exit_code
    assert spec.meaning


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda cls: f"{cls.__module__}.{cls.__qualname__}")
def test_every_error_class_takes_its_code_from_the_table(cls: type[RepoLensError]) -> None:
    assert isinstance(cls.code, ErrorCode), f"{cls.__qualname__}.code is not an ErrorCode"
    assert cls.code is not ErrorCode.INTERNAL
    assert "http_status" not in vars(cls) or cls is RepoLensError, "statuses live in rag.errors.ERROR_TABLE"
    spec = ERROR_TABLE[cls.code]
    assert spec.http_status != 500
    error = cls.__new__(cls)
    error.code = cls.code
    assert error.http_status == spec.http_status and error.exit_code == spec.exit_code


def test_distinct_codes_for_clone_and_model_timeouts() -> None:
    from ingest.errors import CloneTimeoutError

    assert CloneTimeoutError.code is ErrorCode.CLONE_TIMEOUT and exit_code(CloneTimeoutError.code) == 7
    assert exit_code(ErrorCode.TIMEOUT) == 6  # the model timed out: a provider error, not "unreachable"


def test_named_failures_of_the_chat_route_are_not_500() -> None:
    for code in ("empty", "git_failed", "chunk_budget", "embedder_error", "index_corrupt"):
        assert http_status(code) != 500, code
    assert http_status(ErrorCode.INDEX_CORRUPT) == 409


def test_unknown_code_is_reported_as_internal() -> None:
    assert error_spec("no_such_code") == ERROR_TABLE[ErrorCode.INTERNAL]


def test_readme_tables_are_generated_from_the_table() -> None:
    """Regenerate with `python -m rag.errors` and paste into README's "Errors" section."""
    assert markdown_tables() in README.read_text(encoding="utf-8")


def test_empty_repository_through_the_http_chat_is_422(chat_server: ChatServer, tmp_path: Path) -> None:
    folder = tmp_path / "nothing-to-index"
    folder.mkdir()
    (folder / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    body = chat_server.request(repo_url=str(folder))
    response = httpx.post(f"{chat_server.server.base_url}/chat/completions/stream", json=body, timeout=30)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "empty"
