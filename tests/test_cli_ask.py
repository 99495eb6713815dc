"""`repolens ask`: JSON events, plain text with sources, the offline answer, errors and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import app
from rag.store import Store
from tests.support.fake_provider import FakeProvider, FakeResponse

runner = CliRunner()
QUESTION = "How does main reach HttpClient.send?"


def test_ask_json_then_plain_then_offline(
    indexed_repo: tuple[Store, str],
    fixture_repo: Path,
    openai_fake: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, repo_id = indexed_repo
    answer = "main() calls ForecastService.run (see nowhere/ghost.py:10-12)."
    openai_fake.script(FakeResponse(text=answer, chunks=4), FakeResponse(text=answer, chunks=4))

    result = runner.invoke(app, ["ask", repo_id, QUESTION, "--json", "--provider", "openai", "-k", "5"])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [event["type"] for event in events]
    assert kinds[-1] == "done" and "sources" in kinds
    assert "".join(event["text"] for event in events if event["type"] == "token") == answer
    assert len(next(event for event in events if event["type"] == "sources")["sources"]) <= 5

    result = runner.invoke(app, ["ask", str(fixture_repo), QUESTION, "--plain", "--provider", "openai"])
    assert result.exit_code == 0, result.output
    text, _, sources = result.stdout.partition("\nSources:\n")
    assert text.strip() == answer
    assert "weatherline/" in sources
    assert "/api/repos/" not in sources  # a local repository's server-relative links mean nothing here
    assert "! nowhere/ghost.py:10-12" in sources

    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name)
    result = runner.invoke(app, ["ask", repo_id, QUESTION, "--plain"])
    assert result.exit_code == 0, result.output
    assert "offline" in result.stdout.lower()
    assert "weatherline/client.py" in result.stdout
    assert len(openai_fake.requests) == 2


def test_ask_provider_error_exits_with_the_provider_code(
    indexed_repo: tuple[Store, str], openai_fake: FakeProvider
) -> None:
    _, repo_id = indexed_repo
    openai_fake.script(FakeResponse(status=401))
    result = runner.invoke(app, ["ask", repo_id, QUESTION, "--json", "--provider", "openai"])
    assert result.exit_code == 6, result.output
    error = next(json.loads(line) for line in result.stdout.splitlines() if '"error"' in line)
    assert error["message"] and "sk-fake-test-key" not in result.stdout


def test_ask_refuses_a_type_the_folder_contradicts_as_ingest_does(
    indexed_repo: tuple[Store, str], fixture_repo: Path
) -> None:
    """`repolens ask ./folder --type github` speaks RepoLens' own protocol: `type_mismatch`, exit 7."""
    result = runner.invoke(app, ["ask", str(fixture_repo), QUESTION, "--json", "--type", "github"])
    assert result.exit_code == 7, result.output
    error = next(json.loads(line) for line in result.stdout.splitlines() if '"error"' in line)
    assert error["code"] == "type_mismatch" and error["message"].endswith("or give --type local")


@pytest.mark.parametrize("command", ["ask", "wiki"])
def test_a_language_there_are_no_answers_in_is_refused_not_answered_in_english(
    indexed_repo: tuple[Store, str], command: str
) -> None:
    """`repolens ask --language de` answered in English, exit 0, not a word (`repolens wiki` refused it)."""
    _, repo_id = indexed_repo
    args = [command, repo_id, QUESTION] if command == "ask" else [command, repo_id]
    result = runner.invoke(app, [*args, "--language", "de"])
    assert result.exit_code == 2 and result.stdout == ""
    assert "unknown language 'de'; choose one of: en, ja, zh" in result.stderr


def test_a_provider_or_model_named_but_not_configured_is_an_error_not_an_offline_answer(
    indexed_repo: tuple[Store, str],
) -> None:
    """With no provider configured, `--provider google` answered offline with exit 0 and not a word
    about it (the fallback's note is a status line the plain and JSON outputs leave out)."""
    _, repo_id = indexed_repo
    result = runner.invoke(app, ["ask", repo_id, QUESTION, "--json", "--provider", "google"])
    assert result.exit_code == 6, result.output
    error = json.loads(result.stdout.splitlines()[-1])
    assert error["type"] == "error" and error["code"] == "not_configured"
    assert "GOOGLE_API_KEY" in error["message"] and "configured: offline" in error["message"]
    assert "restart" not in error["message"]  # each command reads the settings afresh
    result = runner.invoke(app, ["ask", repo_id, QUESTION, "--plain", "--model", "gpt-4o"])
    assert result.exit_code == 6 and result.stdout == ""
    assert "'gpt-4o'" in result.stderr and "grounded-excerpts" in result.stderr


@pytest.mark.parametrize(
    ("option", "value"), [("-k", "0"), ("-k", "51"), ("--max-iterations", "0"), ("--max-iterations", "11")]
)
def test_ask_rejects_bad_options_clearly(tmp_path: Path, option: str, value: str) -> None:
    """The error names the option typed, before any work (it named the request field: 'max_iterations:
    Input should be ...', after the settings and services had loaded)."""
    result = runner.invoke(app, ["ask", str(tmp_path), QUESTION, option, value, "--plain"])
    assert result.exit_code == 2
    assert f"Invalid value for '{option}'" in " ".join(result.stderr.replace("│", " ").split())


def test_a_streamed_answer_taller_than_the_terminal_is_shown_once() -> None:
    """On a terminal the live view redraws only what fits on the screen, then prints the whole answer
    once: redrawing a 60-line answer on a 10-row screen used to pile copies of its top into the
    scrollback (rich's Live cannot move the cursor above the screen's first row)."""
    import io
    import re

    from rich.console import Console

    from api.cli.ask_cmd import _LiveRenderer

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=60, height=10, color_system=None)
    renderer = _LiveRenderer(console)
    with renderer:
        for number in range(1, 61):
            renderer.show({"type": "token", "text": f"- line {number} of the answer\n"})
            renderer.live.refresh()
    raw = out.getvalue()
    # Each redraw first climbs back over the previous one: never more rows than the screen has.
    climbs = [len(run) // len("\x1b[1A\x1b[2K") for run in re.findall(r"(?:\x1b\[1A\x1b\[2K)+", raw)]
    assert climbs and max(climbs) < console.height, max(climbs)
    final = raw[raw.rindex("\x1b[2K") :]  # after the live view is cleared: the whole answer, once
    assert final.count("line 1 of the answer") == 1 and "line 60 of the answer" in final


def test_a_progress_line_says_its_stage_once() -> None:
    """`repolens ask` on a folder it indexes first printed "indexing indexing /tmp/x"."""
    from api.answer_text import progress_line
    from rag.events import status_event

    assert progress_line(status_event("indexing", "indexing /tmp/x")) == "indexing /tmp/x"
    assert progress_line(status_event("retrieving", "searching local/x")) == "retrieving searching local/x"
    counted = status_event("indexing", "a.py", files_done=1, files_total=2)
    assert progress_line(counted) == "indexing 1/2 files a.py"
