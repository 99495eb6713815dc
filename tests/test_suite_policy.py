"""The suite's own rules (pyproject.toml `[tool.pytest.ini_options]`): warnings are errors, so a
socket, file or pipe left to the garbage collector fails the test that dropped it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LEAKY_TESTS = """
import socket
import subprocess
import sys


def test_leaks_a_socket():
    socket.socket()


def test_leaks_a_pipe():
    child = subprocess.Popen([sys.executable, "-c", "print(1)"], stdout=subprocess.PIPE)
    child.wait()


def test_closes_what_it_opens():
    with socket.socket():
        pass
"""


def test_a_leaked_socket_or_pipe_fails_its_test(tmp_path: Path) -> None:
    (tmp_path / "test_leaky.py").write_text(LEAKY_TESTS)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(ROOT / "pyproject.toml")]
        + ["--rootdir", str(tmp_path), str(tmp_path / "test_leaky.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    summary = result.stdout.strip().splitlines()[-1]
    assert "2 failed, 1 passed" in summary, result.stdout
    assert "test_leaks_a_socket" in result.stdout and "test_leaks_a_pipe" in result.stdout
