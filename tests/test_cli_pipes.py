"""`repolens ... | head -1`: a reader that closes the pipe early ends the command quietly with exit code
141, as git and other Unix tools do (before: a bare exit 1, the code of an unexpected error, which
failed `set -o pipefail` scripts with nothing said).

The real `repolens` console script runs in a subprocess whose stdout is a pipe nobody reads any more:
its read end is closed before the command starts, so its first write fails (what `head -1` does to
the rest of the output, without a race on how much `head` read first).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from api.cli.app import CLOSED_PIPE_EXIT_CODE
from rag.store import Store

REPOLENS = Path(sys.executable).parent / "repolens"


def _into_a_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [str(REPOLENS), *args], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120
        )
    finally:
        os.close(write_end)


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [
        ["--help"],  # typer's rich help, printed while the arguments are parsed
        ["list"],  # a rich table
        ["show", "{repo}"],
        ["search", "{repo}", "retry ceiling", "--json"],  # print()
        ["ask", "{repo}", "What is the retry ceiling?", "--plain"],  # sys.stdout.write, streamed
    ],
    ids=lambda command: " ".join(command),
)
def test_a_closed_pipe_ends_the_command_quietly_with_sigpipes_exit_code(
    command: list[str], indexed_repo: tuple[Store, str]
) -> None:
    _, repo_id = indexed_repo
    done = _into_a_closed_pipe(*(part.format(repo=repo_id) for part in command))
    assert (done.returncode, done.stderr) == (CLOSED_PIPE_EXIT_CODE, "")


def test_output_to_an_open_pipe_is_unchanged(indexed_repo: tuple[Store, str]) -> None:
    """The pipe handling keeps a complete run's exit code and output."""
    _, repo_id = indexed_repo
    done = subprocess.run(
        [str(REPOLENS), "show", repo_id, "--json"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and f'"id": "{repo_id}"' in done.stdout
