"""`repolens serve` on an address it cannot bind says so at once, in words, with exit code 2.

Before, uvicorn found out only after the app was built (the embedder loaded), logged
`[Errno 98] error while attempting to bind on address ...` and exited with 3, the CLI's code for
"not found". The real console script runs against a port a socket of the test holds.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from rag.errors import ERROR_TABLE, ErrorCode

REPOLENS = Path(sys.executable).parent / "repolens"


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(REPOLENS), "serve", *args], capture_output=True, text=True, timeout=120)


def test_a_port_in_use_is_named_before_the_server_starts() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = _serve("--port", str(port))
    assert done.returncode == ERROR_TABLE[ErrorCode.BAD_CONFIG].exit_code
    assert f"error: port {port} on 127.0.0.1 is in use" in done.stderr and "--port" in done.stderr
    assert "Started server process" not in done.stderr  # refused before the app was built


def test_an_address_of_another_machine_is_named() -> None:
    done = _serve("--host", "192.0.2.1", "--port", "8000")  # TEST-NET-1: never an address of this machine
    assert done.returncode == ERROR_TABLE[ErrorCode.BAD_CONFIG].exit_code
    assert "error: cannot listen on 192.0.2.1 port 8000: Cannot assign requested address" in done.stderr
