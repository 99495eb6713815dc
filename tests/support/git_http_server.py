"""A real smart-HTTP git server on 127.0.0.1 that demands a token, for tests that clone.

`git http-backend` (shipped with git) runs as a CGI program behind a small threaded
`http.server`, so the client side is stock git speaking the real protocol (v2 included).
Every request must carry HTTP Basic auth whose *password* equals `server.token`; any user
name is accepted, so GitHub's `x-access-token:<t>`, GitLab's `oauth2:<t>`, Bitbucket's
`x-token-auth:<t>` and `<username>:<t>` all work. A wrong or missing token gets
`401` with `WWW-Authenticate: Basic`, like a real forge; an unknown repository gets 404.

Usage (tests/conftest.py registers this module as a plugin, so its fixtures are everywhere)::

    def test_clone(git_http_server, tmp_path):
        sha = git_http_server.add_repo("acme/demo", {"README.md": "# demo\\n", "src/app.py": "x = 1\\n"})
        url = git_http_server.url_for("acme/demo")       # http://127.0.0.1:<port>/acme/demo.git
        ...  # clone url with git_http_server.token
        assert git_http_server.requests[-1].authorized

API of `GitHttpServer`:
- `.token`: the one accepted password (distinctive, so tests can scan files and logs for it).
- `.url_for(name)`: the clone URL of a repository; `.base_url`: `http://127.0.0.1:<port>`.
  Names may contain slashes: use `owner/name` when the URL is resolved as GitHub or Bitbucket.
- `.add_repo(name, files, *, branch="main", message=...) -> sha`: creates the bare repository
  on first use, then commits `files` (path -> text; `None` deletes a file) on top of `branch`
  and returns the new commit. Call it again to add commits (e.g. to test updates).
- `.tag(name, tag, commit)`: adds a lightweight tag.
- `.require_auth`: set to False to serve like a public repository.
- `.redirect(name, target_url)`: answer requests for `name` with a 302 to `target_url` (e.g. another
  server's `url_for(...)`), like a renamed or moved repository.
- `.requests`: a list of `GitRequest(method, path, user, authorized, status)` (never a password).
- `.hold(name)` / `.release(name)`: requests for `name` wait until released (a clone that stalls,
  e.g. to kill a worker mid-job); `.held_count(name)` is how many requests have arrived held.

Helpers for tests that need failing hosts: `closed_port()` / the `refused_port` fixture (a port
nothing listens on) and the `silent_server` fixture / `SilentServer` (accepts TCP connections and
never answers). Local repositories are built with `tests.support.repos` (`git`, `write_files`,
`commit_all`), which also gives the commits here their fixed identity and dates.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import socket
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.repos import commit_all, git, write_files

HOST = "127.0.0.1"
HTTP_BACKEND = (
    Path(subprocess.run(["git", "--exec-path"], capture_output=True, text=True, check=True).stdout.strip())
    / "git-http-backend"
)


@dataclass(frozen=True, slots=True)
class GitRequest:
    method: str
    path: str
    user: str | None
    authorized: bool
    status: int


def _has_ref(worktree: Path, ref: str) -> bool:
    try:
        git(worktree, "rev-parse", "--verify", "--quiet", ref)
    except subprocess.CalledProcessError:
        return False
    return True


def _split_cgi_output(output: bytes) -> tuple[bytes, bytes]:
    """CGI headers end at the first blank line, written with either line ending."""
    ends = [(output.find(sep), sep) for sep in (b"\r\n\r\n", b"\n\n") if sep in output]
    if not ends:
        return output, b""
    index, separator = min(ends)
    return output[:index], output[index + len(separator) :]


def closed_port() -> int:
    """A loopback port with no listener (connecting to it is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class GitHttpServer:
    """git http-backend behind Basic auth, in a background thread."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.repos = root / "repos"
        self.work = root / "work"
        self.repos.mkdir(parents=True)
        self.work.mkdir()
        self.token = f"rl-test-{secrets.token_hex(12)}"
        self.require_auth = True
        self.requests: list[GitRequest] = []
        self.redirects: dict[str, str] = {}
        self.gates: dict[str, threading.Event] = {}
        self.held: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((HOST, 0), _handler_for(self))
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.base_url = f"http://{HOST}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="git-http", daemon=True)
        self._thread.start()

    def url_for(self, name: str) -> str:
        return f"{self.base_url}/{name}.git"

    def add_repo(
        self, name: str, files: Mapping[str, str | None], *, branch: str = "main", message: str = "update"
    ) -> str:
        bare = self.repos / f"{name}.git"
        if not bare.exists():
            git(self.root, "init", "--quiet", "--bare", "--initial-branch", "main", str(bare))
        worktree = self.work / name
        if not worktree.exists():
            git(self.root, "clone", "--quiet", str(bare), str(worktree))
        git(worktree, "fetch", "--quiet", "origin")
        if _has_ref(worktree, f"refs/remotes/origin/{branch}"):
            git(worktree, "checkout", "--quiet", "-B", branch, f"origin/{branch}")
        elif _has_ref(worktree, "HEAD"):
            git(worktree, "checkout", "--quiet", "-B", branch)
        else:
            git(worktree, "symbolic-ref", "HEAD", f"refs/heads/{branch}")
        write_files(worktree, {path: text for path, text in files.items() if text is not None})
        for path in (path for path, text in files.items() if text is None):
            (worktree / path).unlink(missing_ok=True)
        sha = commit_all(worktree, message)
        git(worktree, "push", "--quiet", "origin", f"HEAD:refs/heads/{branch}")
        return sha

    def redirect(self, name: str, target_url: str) -> None:
        self.redirects[f"/{name}.git"] = target_url

    def hold(self, name: str) -> None:
        self.gates[f"/{name}.git"] = threading.Event()

    def release(self, name: str) -> None:
        gate = self.gates.pop(f"/{name}.git", None)
        if gate is not None:
            gate.set()

    def held_count(self, name: str) -> int:
        return self.held.get(f"/{name}.git", 0)

    def _wait_if_held(self, path: str) -> None:
        for prefix, gate in list(self.gates.items()):
            if path.startswith(prefix + "/"):
                with self._lock:
                    self.held[prefix] = self.held.get(prefix, 0) + 1
                gate.wait(60)

    def tag(self, name: str, tag: str, commit: str) -> None:
        git(self.repos / f"{name}.git", "tag", tag, commit)

    def close(self) -> None:
        for gate in self.gates.values():
            gate.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _record(self, request: GitRequest) -> None:
        with self._lock:
            self.requests.append(request)


def _handler_for(server: GitHttpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def log_message(self, format: str, *args: object) -> None:
            """Silence the default stderr access log: `server.requests` is the log."""

        def _serve(self) -> None:
            user, authorized = self._check_auth()
            parts = urllib.parse.urlsplit(self.path)
            body = self._read_body()
            server._wait_if_held(parts.path)
            for prefix, target in server.redirects.items():
                if parts.path.startswith(prefix + "/"):
                    rest = parts.path[len(prefix) :] + (f"?{parts.query}" if parts.query else "")
                    self._reply(302, {"Location": target + rest}, b"")
                    server._record(GitRequest(self.command, parts.path, user, authorized, 302))
                    return
            if server.require_auth and not authorized:
                self._reply(401, {"WWW-Authenticate": 'Basic realm="git"'}, b"authentication required\n")
                server._record(GitRequest(self.command, parts.path, user, False, 401))
                return
            status = self._run_backend(parts, body, user)
            server._record(GitRequest(self.command, parts.path, user, authorized, status))

        def _check_auth(self) -> tuple[str | None, bool]:
            header = self.headers.get("Authorization", "")
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "basic":
                return None, False
            try:
                user, _, password = base64.b64decode(value.strip()).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                return None, False
            return user, secrets.compare_digest(password, server.token)

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _run_backend(self, parts: urllib.parse.SplitResult, body: bytes, user: str | None) -> int:
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(server.root),
                "GIT_PROJECT_ROOT": str(server.repos),
                "GIT_HTTP_EXPORT_ALL": "1",
                "GIT_CONFIG_NOSYSTEM": "1",
                "GATEWAY_INTERFACE": "CGI/1.1",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": urllib.parse.unquote(parts.path),
                "QUERY_STRING": parts.query,
                "REMOTE_ADDR": self.client_address[0],
                "REMOTE_USER": user or "",
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
            }
            for name, value in self.headers.items():
                if name.lower() not in (
                    "authorization",
                    "content-type",
                    "content-length",
                    "transfer-encoding",
                ):
                    env["HTTP_" + name.upper().replace("-", "_")] = value
            result = subprocess.run(
                [str(HTTP_BACKEND)], input=body, env=env, capture_output=True, check=False
            )
            head, payload = _split_cgi_output(result.stdout)
            headers: dict[str, str] = {}
            status = 200
            for line in head.decode("latin-1").splitlines():
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name:
                    headers[name.strip()] = value.strip()
            self._reply(status, headers, payload)
            return status

        def _reply(self, status: int, headers: Mapping[str, str], payload: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


class SilentServer:
    """Accepts TCP connections and never sends a byte: a host that hangs."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind((HOST, 0))
        self._socket.listen(16)
        self.port = int(self._socket.getsockname()[1])
        self.base_url = f"http://{HOST}:{self.port}"

    def close(self) -> None:
        self._socket.close()


@pytest.fixture
def git_http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitHttpServer]:
    root = tmp_path_factory.mktemp("git-http")
    server = GitHttpServer(root)
    try:
        yield server
    finally:
        server.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def refused_port() -> int:
    return closed_port()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()
