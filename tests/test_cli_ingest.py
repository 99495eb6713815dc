"""`repolens ingest | update | list | show | delete`: JSON outputs, exit codes, and a killed ingest."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from api.cli import app
from api.cli.ingest_cmds import _count, _skip_reasons, _times
from ingest import IngestReport, ingest
from ingest import pipeline as ingest_pipeline
from ingest.chunking import CHUNKER_VERSION
from rag.embedders import Embedder
from rag.graph_types import GRAPH_VERSION
from rag.store import Store
from rag.types import RepoRecord
from tests.support.repos import commit_all, git, write_files

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent

SMALL_REPO = {
    "pkg/greeting.py": 'def greet(name: str) -> str:\n    """Say hello."""\n    return f"hello {name}"\n',
    "README.md": "# Greeter\n\nSays hello.\n",
}


def make_repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir()
    write_files(path, files)
    git(path, "init", "-q", "-b", "main")
    commit_all(path, "initial")
    return path


def run(*args: str) -> tuple[int, dict | None, str]:
    """Invoke the CLI in-process; returns the exit code, stdout parsed as JSON (if it is), and stderr."""
    result = runner.invoke(app, list(args))
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError:
        data = None
    return result.exit_code, data, result.stderr


@pytest.fixture
def small_repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "greeter", SMALL_REPO)


def test_ingest_list_show_update_delete_with_json(small_repo: Path) -> None:
    code, report, _ = run("ingest", str(small_repo), "--json")
    assert code == 0, report
    repo_id = report["id"]
    assert repo_id == f"local/{small_repo.resolve().as_posix().lstrip('/')}"
    assert report["commit"] == git(small_repo, "rev-parse", "HEAD")
    assert report["files"]["added"] == 2 and report["chunks"]["total"] >= 2
    assert {"clone_s", "embed_s", "total_s"} <= set(report["timings"])

    code, listing, _ = run("list", "--json")
    assert code == 0 and [repo["id"] for repo in listing["repos"]] == [repo_id]

    code, shown, _ = run("show", str(small_repo), "--json")  # by path, not id
    assert code == 0 and shown["id"] == repo_id and shown["languages"] == {"markdown": 1, "python": 1}
    # For people: the filters as chosen (not a dump of empty lists), long values wrapped under themselves.
    text = runner.invoke(app, ["show", repo_id]).stdout
    assert "filters         default exclusions, .gitignore\n" in text and "include_dirs []" not in text
    assert all(line == line.rstrip() for line in text.splitlines()), text  # no padding to the width
    # Every value starts in one column, `chunker_version`'s too (it stuck out by three).
    starts = {len(line) - len(line.split(maxsplit=1)[1]) for line in text.splitlines() if " " in line.strip()}
    assert starts == {len("chunker_version ")}, text

    write_files(small_repo, {"pkg/greeting.py": SMALL_REPO["pkg/greeting.py"].replace("hello", "hi")})
    commit_all(small_repo, "say hi")
    code, updated, _ = run("update", repo_id, "--json")
    assert code == 0 and updated["files"]["changed"] == 1 and updated["files"]["unchanged"] == 1
    assert updated["version"] > report["version"] and updated["index_state"] == "complete"

    code, deleted, _ = run("delete", small_repo.resolve().as_uri(), "--yes", "--json")  # by URL
    assert code == 0 and deleted == {"deleted": repo_id}
    assert run("list", "--json")[1] == {"repos": [], "chunker_version": CHUNKER_VERSION}


def test_human_output_is_a_short_summary(small_repo: Path) -> None:
    result = runner.invoke(app, ["ingest", str(small_repo)])
    assert result.exit_code == 0
    headline = result.stdout.splitlines()[0]
    assert headline.startswith("indexed local/") and "2 added" in result.stdout
    assert "version" not in result.stdout  # an internal counter, not news on a first ingest
    again = runner.invoke(app, ["ingest", str(small_repo)])
    assert again.stdout.startswith("up to date local/") and "2 unchanged" in again.stdout
    # Two milestones, or one when the dense phase took under 50 ms (a tiny repo, a warm embedder).
    assert re.search(r"time: +searchable (after [\d.]+s, |and )complete after [\d.]+s", result.stdout)
    assert re.search(r"time: +searchable and complete after [\d.]+s", again.stdout)  # nothing embedded
    write_files(small_repo, {"notes.txt": "\x00binary", "pkg/new.py": "VALUE = 1\n"})
    commit_all(small_repo, "more")
    updated = runner.invoke(app, ["ingest", str(small_repo)])
    assert updated.stdout.startswith("updated local/") and "1 skipped (1 binary)" in updated.stdout


def test_update_after_a_chunker_upgrade_says_it_rechunked_and_why(
    small_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert runner.invoke(app, ["ingest", str(small_repo)]).exit_code == 0
    current = f"chunker_version {CHUNKER_VERSION} (current)"
    assert current in runner.invoke(app, ["show", str(small_repo)]).stdout
    # The index was built by this version; an upgrade brings version + 1 (the CLI's copy stays).
    monkeypatch.setattr(ingest_pipeline, "CHUNKER_VERSION", CHUNKER_VERSION + 1)
    updated = runner.invoke(app, ["update", str(small_repo)])
    assert updated.stdout.startswith("updated local/") and "2 unchanged" in updated.stdout
    reason = f"chunker version {CHUNKER_VERSION} -> {CHUNKER_VERSION + 1}"
    assert f"re-chunked: 2 unchanged files ({reason})" in updated.stdout
    # The same chunker under a new number: every chunk came back with its text, none is new or gone
    # (it once read "0 new, N reused, N removed").
    counted = re.search(
        r"chunks: 0 new, (\d+) replaced by the same text, 0 removed, (\d+) in the index", updated.stdout
    )
    assert counted is not None and counted[1] == counted[2] != "0"
    code, shown, _ = run("show", str(small_repo), "--json")
    assert code == 0 and shown is not None and shown["chunker_version"] == CHUNKER_VERSION + 1
    again = runner.invoke(app, ["update", str(small_repo)])
    assert again.stdout.startswith("up to date local/") and "re-chunked" not in again.stdout
    # Back to this version: a record it did not write, and `show` says what the next update does.
    monkeypatch.setattr(ingest_pipeline, "CHUNKER_VERSION", CHUNKER_VERSION)
    other = " ".join(runner.invoke(app, ["show", str(small_repo)]).stdout.split())  # unwrapped
    assert f"this RepoLens chunks with version {CHUNKER_VERSION}: the next update re-chunks" in other
    # `list` and `doctor` flag it too, with the fix; doctor still counts the data dir healthy.
    repo_id = shown["id"]
    advice = (
        f"chunked by another chunker (chunker version {CHUNKER_VERSION + 1} -> {CHUNKER_VERSION}): "
        f"a plain `repolens update {repo_id}` re-chunks it"
    )
    listed = runner.invoke(app, ["list"]).stdout
    assert "complete*" in listed and f"* {repo_id}: {advice}" in " ".join(listed.split())
    code, listing, _ = run("list", "--json")
    assert listing is not None and listing["chunker_version"] == CHUNKER_VERSION
    assert listing["repos"][0]["chunker_version"] == CHUNKER_VERSION + 1
    doctor = runner.invoke(app, ["doctor"])
    assert doctor.exit_code == 0 and f"outdated: {repo_id}: {advice}" in " ".join(doctor.stdout.split())
    code, checked, _ = run("doctor", "--json")
    assert code == 0 and checked is not None and checked["healthy"] is True
    assert checked["outdated"] == [
        {"repo": repo_id, "chunker_version": CHUNKER_VERSION + 1, "advice": advice}
    ]
    assert runner.invoke(app, ["update", str(small_repo)]).stdout.startswith("updated local/")
    assert current in runner.invoke(app, ["show", str(small_repo)]).stdout
    assert "*" not in runner.invoke(app, ["list"]).stdout.replace("`repolens show", "")
    code, checked, _ = run("doctor", "--json")
    assert code == 0 and checked is not None and checked["outdated"] == []


def test_an_update_that_only_rebuilds_the_code_graph_says_so_not_up_to_date(
    small_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An index whose graph the previous extractor made; this RepoLens extracts with GRAPH_VERSION.
    with monkeypatch.context() as upgraded_from:
        upgraded_from.setattr(ingest_pipeline, "GRAPH_VERSION", GRAPH_VERSION - 1)
        assert runner.invoke(app, ["ingest", str(small_repo)]).exit_code == 0
    updated = runner.invoke(app, ["update", str(small_repo), "--progress", "jsonl"])
    assert updated.exit_code == 0, updated.output
    reason = f"graph version {GRAPH_VERSION - 1} -> {GRAPH_VERSION}"
    assert updated.stdout.startswith("updated local/") and "2 unchanged" in updated.stdout
    assert f"code graph: rebuilt for 1 unchanged files ({reason})" in updated.stdout  # pkg/greeting.py
    progress = [json.loads(line) for line in updated.stderr.splitlines()]
    said = [(event["stage"], event["message"]) for event in progress]
    assert ("graph", f"rebuilding the code graph of 1 unchanged files: {reason}") in said
    assert any(stage == "done" and f"code graph rebuilt for 1 unchanged files ({reason})" in message
               for stage, message in said)  # fmt: skip
    again = runner.invoke(app, ["update", str(small_repo)])
    assert again.stdout.startswith("up to date local/") and "code graph" not in again.stdout
    # The next upgrade, in `--json`: what was rebuilt and why; nothing else changed.
    monkeypatch.setattr(ingest_pipeline, "GRAPH_VERSION", GRAPH_VERSION + 1)
    code, report, _ = run("update", str(small_repo), "--json")
    assert code == 0 and report is not None
    assert report["graph_reason"] == f"graph version {GRAPH_VERSION} -> {GRAPH_VERSION + 1}"
    assert report["files"]["regraphed"] == 1 and report["files"]["changed"] == 0
    assert report["rechunk_reason"] is None


def test_the_time_line_counts_from_the_command_start_and_says_what_goes_on() -> None:
    """Times include what the command did before the run (`startup_s`); `--no-wait` says the index is
    searchable and still `lexical` while the background embed runs, never "lexical after"."""
    record = RepoRecord("local/app", "/app", "local", None, None, "minilm", 384, index_state="lexical")
    counts = {"added": 1, "changed": 0, "removed": 0, "unchanged": 0, "skipped": 0}
    timings = {"searchable_s": 2.0, "embed_s": 0.0, "total_s": 2.1}
    no_wait = IngestReport(record, counts, {}, timings)
    assert _times(no_wait, 4242, 1.5) == (
        "searchable after 3.5s, lexical: dense embedding continues in the background "
        "(pid 4242; `repolens show local/app` shows its index_state)"
    )
    complete = dataclasses.replace(record, index_state="complete")
    waited = IngestReport(complete, counts, {}, {**timings, "embed_s": 40.0, "total_s": 42.0})
    assert _times(waited, None, 1.5) == "searchable after 3.5s, complete after 43.5s"
    up_to_date = IngestReport(complete, counts, {}, {**timings, "total_s": 2.02})
    assert _times(up_to_date, None, 0.5) == "searchable and complete after 2.5s"


def test_the_progress_count_is_shown_only_where_it_counts() -> None:
    """Before: rich's `0/?` for a step without counts (writing), as if it was stuck."""
    assert [_count(57, 121, "files"), _count(57, None, "files"), _count(0, None, "files")] == [
        "57/121",
        "57 files",
        "",
    ]


def test_times_count_from_when_the_command_starts_its_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: from the process's start (psutil), which added Python's start-up (up to ~1 s) to the
    time line: "complete after 21.1s" for a 20.6 s run."""
    from api.cli import main
    from api.cli.app import state

    monkeypatch.setattr(sys, "argv", ["repolens", "list", "--json"])
    before = time.time()
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 0 and state.started >= before


@pytest.mark.parametrize(
    ("command", "pointer"),
    [
        (
            ["research", "github.com/psf/requests", "how?"],
            "deep research is `repolens ask REPO QUESTION --deep`",
        ),
        (["status"], "`repolens list` shows the state of every indexed repository, `repolens show REPO`"),
    ],
)
def test_a_command_under_another_name_points_to_it(command: list[str], pointer: str) -> None:
    """Before: "No such command 'research'. Did you mean 'search'?" (the wrong command), and for
    `status` (what a newcomer tries after an ingest) nothing at all."""
    result = runner.invoke(app, command)
    assert result.exit_code == 2
    said = " ".join(result.stderr.replace("│", " ").split())  # rich's error box wraps it
    assert pointer in said and "'search'" not in said


def test_version_and_the_short_help_option() -> None:
    """`repolens --version` and `-h` were "No such option" (exit 2): the first things many try."""
    from importlib.metadata import version

    shown = runner.invoke(app, ["--version"])
    assert shown.exit_code == 0 and shown.stdout == f"repolens {version('repolens')}\n"
    for args in (["-h"], ["ask", "-h"]):
        helped = runner.invoke(app, args)
        assert helped.exit_code == 0 and f"Usage: repolens {' '.join(args[:-1])}".strip() in helped.stdout


def test_the_command_line_loads_without_the_server_stack() -> None:
    """`repolens ingest` (every command) starts without importing FastAPI or a provider SDK: they took
    two thirds of its start-up, which `--no-wait` users wait for."""
    code = "import sys, api.cli; print(sorted({'fastapi', 'openai', 'anthropic'} & set(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert loaded.stdout.strip() == "[]"


def test_list_keeps_ids_whole_and_rows_within_80_columns(small_repo: Path) -> None:
    """An id is what you copy: before, a long local id folded inside its column (`.../cor` + `pora/...`).
    One that fits stays in its column; a longer one gets a line of its own, its row under it."""
    code, report, _ = run("ingest", str(small_repo), "--json")
    assert code == 0
    short_home = Path(tempfile.mkdtemp(prefix="", dir="/tmp"))  # ids under tmp_path do not fit
    short = make_repo(short_home / "a", SMALL_REPO)
    try:
        code, short_report, _ = run("ingest", str(short), "--json")
        assert code == 0 and len(report["id"]) > 40 > len(short_report["id"])
        lines = runner.invoke(app, ["list"], env={"COLUMNS": "80"}).stdout.splitlines()
    finally:
        shutil.rmtree(short_home)
    assert lines[0].split() == ["id", "commit", "files", "chunks", "state", "updated", "(UTC)"]
    counts = [report["commit"][:12], "2", str(report["chunks"]["total"]), "complete"]
    long_at = lines.index(report["id"])  # whole, on a line of its own
    assert lines[long_at + 1].split()[:4] == counts and lines[long_at + 1].startswith(" ")
    short_row = next(line for line in lines if line.startswith(short_report["id"] + " "))
    assert short_row.split()[1:5] == [short_report["commit"][:12], *counts[1:]]
    assert all(len(line) <= 80 and line == line.rstrip() for line in lines if line != report["id"])


def test_list_hints_name_arguments_as_the_usage_lines_do(small_repo: Path) -> None:
    """`repolens list`'s hints spell the arguments as `repolens ingest -h` and `show -h` do (`LOCATION`,
    `REPO`): before, `<url-or-path>` and `<id>` beside usage lines that said neither."""
    empty = runner.invoke(app, ["list"]).stdout
    assert "`repolens ingest LOCATION` (a URL or a folder)" in empty
    assert run("ingest", str(small_repo), "--json")[0] == 0
    listed = runner.invoke(app, ["list"], env={"COLUMNS": "120"}).stdout
    assert "`repolens show REPO` has the rest" in listed
    for command, argument in (("ingest", "LOCATION"), ("show", "REPO")):
        assert f"repolens {command} [OPTIONS] {argument}" in runner.invoke(app, [command, "-h"]).stdout


def test_messages_spell_command_arguments_as_the_usage_lines_do() -> None:
    """Error messages, hints and the research tools' words to the model name a command's arguments
    as `repolens CMD -h` does (`repolens update REPO`), never `<repo>`, `<id>`, `<url-or-path>`."""
    placeholder = re.compile(r"repolens [a-z-]+ (?:[A-Z]+ )*<[^>]*>")
    found = [
        f"{path.relative_to(ROOT)}: {match.group()}"
        for package in ("ingest", "rag", "api")
        for path in sorted((ROOT / package).rglob("*.py"))
        for match in placeholder.finditer(path.read_text(encoding="utf-8"))
    ]
    assert not found


@pytest.mark.parametrize(
    ("args", "code", "error_code"),
    [
        (["ingest", "/no/such/folder"], 3, "not_found"),
        (["ingest", "ftp://example.invalid/repo"], 7, "bad_url"),
        (["show", "github.com/acme/missing"], 3, "not_found"),
        (["update", "github.com/acme/missing"], 3, "not_found"),
        (["delete", "github.com/acme/missing", "--yes"], 3, "not_found"),
    ],
)
def test_errors_are_one_json_object_and_a_documented_exit_code(
    args: list[str], code: int, error_code: str
) -> None:
    exit_code, data, _ = run(*args, "--json")
    assert exit_code == code
    assert data["error"]["code"] == error_code and data["error"]["message"]


def test_a_type_the_location_contradicts_is_refused_with_what_to_give_instead(
    small_repo: Path, tmp_path: Path
) -> None:
    """`repolens ingest ./folder --type github` used to index the folder as local without a word: the
    real command refuses it (exit 7, `type_mismatch`) and names the type to give; so it does for a
    cloud host named as another platform, before any clone."""
    env = {**os.environ, "REPOLENS_HOME": str(tmp_path / "home")}
    folder = subprocess.run(
        _cli("ingest", "./" + small_repo.name, "--type", "github"),
        cwd=small_repo.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert folder.returncode == 7, folder.stderr
    assert f"--type github contradicts './{small_repo.name}': {small_repo.resolve()} is a local folder; " in (
        " ".join(folder.stderr.split())
    )
    assert "leave --type out (it is detected) or give --type local" in " ".join(folder.stderr.split())
    cloud = subprocess.run(
        _cli("ingest", "https://github.com/acme/app", "--type", "gitlab", "--json"),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cloud.returncode == 7
    error = json.loads(cloud.stdout)["error"]
    assert error["code"] == "type_mismatch" and error["message"].endswith("or give --type github")
    assert not (tmp_path / "home" / "clones").exists()
    assert run("ingest", str(small_repo), "--type", "local", "--json")[0] == 0


def _ingest_as_an_unprivileged_user(folder: Path, home: Path) -> tuple[int, dict, str]:
    """`repolens ingest folder --json` by a user file permissions apply to: `nobody` when the suite
    runs as root (root reads every folder), else the suite's own user."""
    command = [sys.executable, "-c", "from api.cli import main; main()", "ingest", str(folder), "--json"]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: no user to whom permissions apply")
        command = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
    env = {**os.environ, "REPOLENS_HOME": str(home / "data"), "HOME": str(home)}
    done = subprocess.run(command, env=env, cwd=home, capture_output=True, text=True, timeout=300)
    assert done.stdout.startswith("{"), done.stderr  # one JSON document, not a crash
    return done.returncode, json.loads(done.stdout), done.stderr


def test_folders_the_user_may_not_read_are_said_not_a_crash() -> None:
    """Before: a subfolder without read permission ended the ingest with exit 1, "unexpected error:
    [Errno 13] Permission denied: '.../sub/pyvenv.cfg'", and an unreadable repository folder the same.
    Now unreadable files and folders are skipped and counted, and an unreadable repository is a
    `bad_url` (exit 7) that says who may not read it."""
    # Under the system temp folder, not pytest's (its 0700 folders keep another user out of all of it).
    home = Path(tempfile.mkdtemp(prefix="repolens-perm-"))
    repo = home / "repo"
    try:
        home.chmod(0o777)
        write_files(
            repo, {"app.py": "def main():\n    return 1\n", "locked/inner.py": "X = 1\n", "key.py": "K = 2\n"}
        )
        repo.chmod(0o755)
        (repo / "app.py").chmod(0o644)
        (repo / "locked").chmod(0o000)
        (repo / "key.py").chmod(0o000)
        code, report, stderr = _ingest_as_an_unprivileged_user(repo, home)
        assert code == 0, stderr
        assert report["files"]["added"] == 1 and report["files"]["skipped"] == 1
        assert report["skipped"] == {"unreadable": 1, "unreadable_dirs": 1}
        assert "1 folder could not be read (permissions)" in _skip_reasons(report["skipped"])

        repo.chmod(0o000)
        code, error, _ = _ingest_as_an_unprivileged_user(repo, home)
        assert code == 7 and error["error"]["code"] == "bad_url"
        assert f"cannot read local folder {repo.resolve()}: permission denied" in error["error"]["message"]
    finally:
        for folder in (repo, repo / "locked"):
            if folder.is_dir():
                folder.chmod(0o755)
        shutil.rmtree(home)


def test_an_error_is_one_line_when_piped_with_its_brackets_as_typed() -> None:
    """Before: rich broke a long error at 80 columns when piped (a log, grep), inside the id; and
    read `[/]` in a path as markup (a MarkupError traceback instead of the error)."""
    missing = "github.com/acme/" + "x" * 90 + "[/]"
    result = runner.invoke(app, ["show", missing], env={"COLUMNS": "80"})
    assert result.exit_code == 3
    expected = f"error: no indexed repository matches '{missing}'; see `repolens list`"
    assert result.stderr.splitlines() == [expected]


def test_a_repository_that_is_not_indexed_yet_is_named_with_the_command_that_indexes_it() -> None:
    """Before: `repolens search github.com/encode/httpx ...` ahead of its ingest said only "no indexed
    repository matches"; a text that is a source RepoLens could index now says how to index it."""
    code, error, _ = run("search", "github.com/acme/widget", "how are widgets drawn", "--json")
    assert code == 3 and error["error"]["code"] == "not_found"
    assert "`repolens ingest github.com/acme/widget` indexes it" in error["error"]["message"]
    code, error, _ = run("show", "widget", "--json")  # no source: nothing to suggest
    assert code == 3 and error["error"]["message"].startswith("no indexed repository matches 'widget'")


def test_limits_and_filters_that_leave_nothing_fail_clearly(small_repo: Path) -> None:
    exit_code, data, _ = run("ingest", str(small_repo), "--max-files", "1", "--json")
    assert (
        exit_code == 5
        and data["error"]["code"] == "limit_exceeded"
        and "--max-files" in data["error"]["message"]
    )
    exit_code, data, _ = run("ingest", str(small_repo), "--include-files", "*.rs", "--json")
    assert exit_code == 10 and data["error"]["code"] == "empty"
    assert run("list", "--json")[1] == {"repos": [], "chunker_version": CHUNKER_VERSION}


def test_update_takes_the_same_run_flags_as_ingest(small_repo: Path) -> None:
    """`ingest` and `update` share one declaration of the limits and output flags (`RunFlags`)."""
    code, report, _ = run("ingest", str(small_repo), "--json")
    assert code == 0
    write_files(small_repo, {"pkg/extra.py": "VALUE = 1\n"})
    commit_all(small_repo, "one more file")
    exit_code, data, _ = run("update", report["id"], "--max-files", "1", "--json")
    assert exit_code == 5 and data["error"]["code"] == "limit_exceeded"
    exit_code, data, _ = run("update", report["id"], "--reindex", "--json")
    assert exit_code == 0 and data["files"]["added"] == 3


def test_delete_without_yes_asks_and_refuses_when_it_cannot(small_repo: Path) -> None:
    assert run("ingest", str(small_repo), "--json")[0] == 0
    exit_code, _, stderr = run("delete", str(small_repo))
    assert exit_code == 2 and "--yes" in stderr
    assert len(run("list", "--json")[1]["repos"]) == 1


def test_progress_jsonl_reports_stages_on_stderr(small_repo: Path) -> None:
    result = runner.invoke(app, ["ingest", str(small_repo), "--json", "--progress", "jsonl"])
    assert result.exit_code == 0
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert {event["stage"] for event in events} >= {"scanning", "embedding", "done"}
    assert all(event["type"] == "progress" for event in events)
    assert json.loads(result.stdout)["files"]["added"] == 2


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from api.cli import main; main()", *args]


_WITH_DEFAULT_SIGINT = (
    "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from api.cli import main; main()"
)


@pytest.mark.slow
def test_a_kill_during_the_dense_phase_leaves_the_searchable_version_serving_and_a_rerun_completes_it(
    tmp_path: Path,
    repolens_home: Path,
    shared_embedder: Embedder,
) -> None:
    repo = make_repo(tmp_path / "big", SMALL_REPO)
    store = Store(repolens_home)
    first = ingest(str(repo), store=store, embedder=shared_embedder)
    body = "\n".join(f"    total += value * {n} + offset  # step {n} of the pipeline" for n in range(12))
    modules = {
        f"gen/module_{m}.py": f"def compute_{m}(value, offset=0):\n{body}\n    return {m}\n"
        for m in range(60)
    }
    write_files(repo, modules)
    commit_all(repo, "many modules")

    env = {**os.environ, "REPOLENS_HOME": str(repolens_home)}
    process = subprocess.Popen(
        _cli("ingest", str(repo), "--json", "--progress", "jsonl"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stages = []
    try:
        for line in process.stderr:
            stages.append(json.loads(line).get("stage"))
            if stages[-1] == "embedding":
                break
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
        process.stdout.close()  # type: ignore[union-attr]
        process.stderr.close()  # type: ignore[union-attr]
    assert process.returncode == -signal.SIGKILL
    assert "searchable" in stages, "the dense phase starts after the searchable milestone"
    paths = store.paths(first.repo_id)
    assert list(paths.root.glob("build-*")), "the kill should have left a half-built dense version"

    index = store.open(first.repo_id)
    assert index.record.version > first.record.version
    assert {f.path for f in index.list_files()} == set(SMALL_REPO) | set(modules)
    assert index.record.index_state != "complete" and index.size < index.record.chunk_count
    lexical = index.get_chunks([i for i, _ in index.lexical_search("compute_42", 5)])
    assert lexical and lexical[0].path == "gen/module_42.py", "new files answer lexically at once"
    hits = index.dense_search(shared_embedder.embed_query("def greet(name) returns hello"), 2)
    assert "pkg/greeting.py" in {chunk.path for chunk in index.get_chunks([i for i, _ in hits])}

    rerun = subprocess.run(
        _cli("ingest", str(repo), "--json"), env=env, capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    assert report["files"]["added"] == 0 and report["index_state"] == "complete"
    assert not list(paths.root.glob("build-*"))
    done = store.open(first.repo_id)
    assert len(done.list_files()) == 62 and done.size == done.record.chunk_count


@pytest.mark.slow
def test_ctrl_c_cancels_cleanly_with_exit_130(
    tmp_path: Path, repolens_home: Path, shared_embedder: Embedder
) -> None:
    repo = make_repo(tmp_path / "interrupted", SMALL_REPO)
    store = Store(repolens_home)
    first = ingest(str(repo), store=store, embedder=shared_embedder)
    # Enough new chunks that the dense phase outlasts the signal's way there on a loaded machine
    # (40 were embedded before SIGINT arrived once, and the run ended complete with exit 0).
    write_files(
        repo, {f"gen/part_{m}.py": f"def part_{m}(x):\n    return x * {m} + {m * m}\n" for m in range(400)}
    )
    commit_all(repo, "parts")

    env = {**os.environ, "REPOLENS_HOME": str(repolens_home)}
    # A shell without job control (CI scripts, `cmd &`) starts its children with SIGINT ignored, and
    # a child inherits that; a user's Ctrl-C reaches a CLI whose SIGINT is Python's default, as here.
    process = subprocess.Popen(
        [sys.executable, "-c", _WITH_DEFAULT_SIGINT, "ingest", str(repo), "--json", "--progress", "jsonl"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in process.stderr:
        if json.loads(line).get("stage") == "embedding":
            break
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert json.loads(stdout)["error"]["code"] == "cancelled"
    # Cancelled in the dense phase: the searchable version of the new commit stays, partly embedded.
    live = store.open(first.repo_id).record
    assert live.version > first.record.version and live.index_state != "complete"
    assert not list(store.paths(first.repo_id).root.glob("build-*"))


def test_no_wait_returns_searchable_and_a_background_embed_completes_it(
    tmp_path: Path, repolens_home: Path
) -> None:
    repo = make_repo(
        tmp_path / "nowait",
        {**SMALL_REPO, **{f"gen/step_{m}.py": f"def step_{m}(x):\n    return x + {m}\n" for m in range(30)}},
    )
    env = {**os.environ, "REPOLENS_HOME": str(repolens_home)}
    started = subprocess.run(
        _cli("ingest", str(repo), "--no-wait", "--json"), env=env, capture_output=True, text=True, timeout=300
    )
    assert started.returncode == 0, started.stderr
    report = json.loads(started.stdout)
    assert report["index_state"] == "lexical" and report["embedding_pid"] > 0
    store = Store(repolens_home)
    deadline = time.monotonic() + 180
    while store.get(report["id"]).index_state != "complete" and time.monotonic() < deadline:
        time.sleep(0.2)
    record = store.get(report["id"])
    assert record.index_state == "complete" and store.open(record.id).size == record.chunk_count
    # Already complete: `repolens embed` has nothing left to do.
    again = subprocess.run(
        _cli("embed", record.id, "--json"), env=env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0 and json.loads(again.stdout)["version"] == record.version


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ([], "--debug"),
        (["ingest"], "--max-files"),
        (["doctor"], "--repair"),
        (["ask"], "REPOLENS_PROVIDER or"),
        (["serve"], "REPOLENS_HOST or"),
        (["worker"], "REPOLENS_INGEST_WORKERS"),
    ],
)
def test_help_shows_flags_without_a_value_placeholder(command: list[str], shown: str) -> None:
    """A flag (`--json`, `--debug`, `--help`) takes no value: the help must not show `<bool>` after it.
    Defaults in the help text survive rich markup (`[default: ...]` would be eaten as a style tag)."""
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--help" in result.stdout and "<bool>" not in result.stdout
    assert shown in result.stdout and not re.search(r"\w \.(\s|$)", result.stdout), result.stdout


def test_help_at_80_columns_shows_every_option_whole() -> None:
    """On an 80-column terminal no option's name or placeholder is cut (`--no-default-exclu…`,
    `<auto|rich|jsonl|n`): placeholders are short (`TEXT`, `N`, `DIRS`, `MODE`)."""
    group = typer.main.get_command(app)
    for name in [None, *group.commands]:  # type: ignore[attr-defined]
        result = runner.invoke(app, [name, "--help"] if name else ["--help"], env={"COLUMNS": "80"})
        assert result.exit_code == 0, result.stdout
        assert "…" not in result.stdout, result.stdout
        assert all(len(line) <= 80 for line in result.stdout.splitlines()), result.stdout
        command = group.commands[name] if name else group  # type: ignore[attr-defined]
        for param in command.params:
            for option in [*param.opts, *param.secondary_opts]:
                if option.startswith("--"):
                    assert option in result.stdout, (name, option)
    ingest_help = runner.invoke(app, ["ingest", "--help"], env={"COLUMNS": "80"}).stdout
    assert re.search(r"--exclude-dirs +DIRS", ingest_help) and re.search(r"--max-files +N ", ingest_help)
    assert re.search(r"--progress +MODE", ingest_help) and "<list[str]>" not in ingest_help
    # The commands in the order a newcomer uses them, not in the order their modules are imported.
    listed = re.findall(
        r"^│ ([a-z][a-z-]*) ", runner.invoke(app, ["--help"], env={"COLUMNS": "80"}).stdout, re.M
    )
    assert listed[:9] == ["ingest", "update", "embed", "list", "show", "delete", "search", "ask", "wiki"]


def test_help_paragraphs_wrap_to_the_terminal_not_to_the_source() -> None:
    """A docstring's line breaks are the source's, not sentences' ends: on a wide terminal every
    command's summary is one line in the list, and each paragraph of its own help is one line."""
    group = typer.main.get_command(app)
    listing = runner.invoke(app, ["--help"], env={"COLUMNS": "400"}).stdout
    rows = re.findall(r"^│ ([a-z][a-z-]*) +(\S.*?) *│$", listing, re.M)
    assert {name for name, _ in rows} == set(group.commands)  # type: ignore[attr-defined]
    assert not re.search(r"^│ {10,}\S", listing, re.M), listing  # no summary continues on a second line
    worker = runner.invoke(app, ["worker", "--help"], env={"COLUMNS": "400"}).stdout
    assert re.search(r"Give every worker the API replicas' store .* once its lease", worker), worker


def test_a_repository_is_named_by_the_unique_last_part_of_its_id(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = make_repo(tmp_path / "one" / "lens-app", SMALL_REPO)
    code, report, _ = run("ingest", str(first), "--json")
    assert code == 0
    code, shown, _ = run("show", "lens-app", "--json")
    assert code == 0 and shown["id"] == report["id"]
    assert run("ingest", str(make_repo(tmp_path / "two" / "lens-app", SMALL_REPO)), "--json")[0] == 0
    code, error, _ = run("show", "lens-app", "--json")
    assert code == 3 and "several indexed repositories" in error["error"]["message"]
    # `ask` takes the same names: one that is ambiguous, or names nothing indexed and is no source to
    # index either, is a name not found (exit 3) saying so, not a malformed URL (exit 7).
    # Its `--json` prints event lines, so the error is an `error` event, as one during the answer is.
    code, error, _ = run("ask", "lens-app", "What does greet return?", "--json")
    assert code == 3 and error["type"] == "error" and "several indexed repositories" in error["message"]
    assert "not a source" not in error["message"]  # the ids to use, not the accepted source forms
    code, error, _ = run("ask", "widgetry", "What does greet return?", "--json")
    assert code == 3 and error["type"] == "error" and error["code"] == "not_found", error
    message = error["message"]
    assert "no indexed repository matches 'widgetry'" in message and "`repolens list`" in message
    assert "not a source RepoLens can index" in message and "https://github.com/<owner>/<repo>" in message
    # A typo of an indexed name says the likely id (in every command that takes a name), not the
    # accepted source forms.
    code, error, _ = run("ask", "lens-ap", "What does greet return?", "--json")
    assert code == 3 and "(did you mean local/" in error["message"] and "not a source" not in error["message"]
    assert "/one/lens-app or local/" in error["message"] and error["message"].count("/two/lens-app") == 1
    code, error, _ = run("show", "lens-ap", "--json")
    assert code == 3 and "(did you mean local/" in error["error"]["message"]


def test_help_shows_each_option_once_and_one_placeholder_style() -> None:
    """`repolens search --help` listed `--k` and `-k` in two columns (two options, it read), and
    arguments as `{repo}` / `<str>` beside options' `TEXT`. Now `-k, --k` is one row, arguments read
    `REPO [QUERY]` and `TEXT` like options; both spellings of `-k` still work."""
    group = typer.main.get_command(app)
    for name in [None, *group.commands]:  # type: ignore[attr-defined]
        shown = runner.invoke(app, [name, "--help"] if name else ["--help"], env={"COLUMNS": "80"}).stdout
        assert re.search(r"-h, --help +Show this message", shown), shown
        assert not re.search(r"<(str|int|path|float)[^>]*>|\{[a-z]+\}", shown), shown
        assert not re.search(r"│ --\S+ +-\w\b", shown), shown  # no long name with its short one beside it
    search = runner.invoke(app, ["search", "--help"], env={"COLUMNS": "80"}).stdout
    assert "Usage: repolens search [OPTIONS] REPO [QUERY]" in search
    assert re.search(r"│ -k, --k +N \[1<=x<=100\] +Number of results", search), search
    assert re.search(r"│ \*    repo +TEXT +Repository id", search), search
    missing = runner.invoke(app, ["search"])
    assert missing.exit_code == 2 and "Missing argument 'REPO'" in missing.output
    for spelling in ("-k", "--k"):  # neither spelling broke: a bad value is refused by both
        refused = runner.invoke(app, ["search", "some-repo", "query", spelling, "0"])
        assert refused.exit_code == 2 and "'-k' / '--k'" in refused.output, refused.output


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (
            ["search", "some-repo", "q", "--mode", "fuzzy"],
            "Invalid value for '--mode': 'fuzzy' is not one of",
        ),
        (["wiki", "some-repo", "--export", "pdf"], "Invalid value for '--export': 'pdf' is not one of"),
    ],
)
def test_a_refused_value_is_said_without_the_validators_prefix(command: list[str], said: str) -> None:
    """typer passed pydantic's message on: "Invalid value for '--mode': Value error, 'fuzzy' is ..."."""
    result = runner.invoke(app, command)
    shown = " ".join(result.stderr.replace("│", " ").split())  # rich's error box wraps it
    assert result.exit_code == 2 and said in shown and "Value error" not in shown, shown
