"""Fetch a repository with git without a token ever touching disk, argv or a message.

The token reaches git only through the environment of one git process, as an
`http.<url>.extraHeader` for the repository's host, with redirects switched off
(git would send the header on to whatever host a redirect names). Nothing but
the credential-free URL is written to `.git/config`; prompts and credential
helpers are off so git fails fast instead of waiting on a terminal; and every
line git prints is redacted before it is shown, logged or put into an error.

Every git command runs through GitPython: `git.cmd.Git.execute` starts the processes (in a
new session, so a timeout or a cancel kills git and its helpers together), GitPython's own
unsafe-protocol and unsafe-option checks (`ext::`, `--upload-pack`, ...) vet each network
command before any process starts, and `git.Repo` answers the local questions (which
commit, whether a folder is a clone) by reading the repository.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import tempfile
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Sequence
from ipaddress import ip_address
from pathlib import Path
from typing import IO

import git
from git.cmd import Git
from git.exc import (
    GitCommandError,
    GitCommandNotFound,
    InvalidGitRepositoryError,
    NoSuchPathError,
    UnsafeOptionError,
    UnsafeProtocolError,
)

from ingest.errors import (
    AuthenticationError,
    CloneTimeoutError,
    HostUnreachableError,
    IngestCancelled,
    IngestError,
    InvalidSourceError,
    RepositoryNotFoundError,
    UnknownRefError,
)
from ingest.sources import RepoSource, is_commit_sha
from rag.errors import ErrorCode
from rag.redact import redact, register_secret
from rag.settings import TOKEN_VARIABLES, Settings
from rag.store.layout import process_alive

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

TOKEN_ENV = TOKEN_VARIABLES
# The user name each platform expects in front of an access token in HTTP Basic auth.
TOKEN_USER = {"github": "x-access-token", "gitlab": "oauth2", "bitbucket": "x-token-auth"}
_DEFAULT_TOKEN_USER = "x-access-token"

# Fixed options on every git call: no credential helper, no askpass, quiet hints.
_GIT_OPTIONS = tuple(
    Git().transform_kwargs(
        c=["credential.helper=", "core.askPass=", "advice.detachedHead=false", "init.defaultBranch=main"]
    )
)
# Inherited variables that could print headers, redirect git, or inject config.
_DROPPED_ENV_PREFIXES = ("GIT_CONFIG", "GIT_TRACE", "GIT_CURL", "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX")
# The unsafe options GitPython knows for each network command (its `Repo.clone_from`,
# `Remote.fetch` and `Git.ls_remote` refuse them the same way).
_UNSAFE_OPTIONS = {
    "clone": git.Repo.unsafe_git_clone_options,
    "fetch": git.Remote.unsafe_git_fetch_options,
    "ls-remote": Git.unsafe_git_ls_remote_options,
}
# One `ingest.policy` pin: `host:port:address,...` (IPv6 addresses in brackets), curl's --resolve.
_PIN = re.compile(r"(?P<host>[^:\[\]]+):(?P<port>[0-9]+):(?P<addresses>[^\s]+)")
_STDERR_LINES_KEPT = 40
# A progress line ("Receiving objects:  42% (...)"); one digit before the sign, as `\d+%` rescans a
# run of digits from each of its starts (quadratic on a long line a hostile server sends).
_PROGRESS = re.compile(r"\d%")
_POLL_SECONDS = 0.05

_AUTH_PATTERNS = re.compile(
    r"Authentication failed|could not read (Username|Password)|terminal prompts disabled|"
    r"HTTP Basic: Access denied|returned error: 40[13]|Invalid username or password|"
    r"Permission denied \(publickey|Invalid credentials|access denied",
    re.IGNORECASE,
)
_NOT_FOUND_PATTERNS = re.compile(
    r"repository '[^']*' not found|Repository not found|does not appear to be a git repository|"
    r"returned error: 404|project you were looking for could not be found|No such repository",
    re.IGNORECASE,
)
_REF_PATTERNS = re.compile(
    r"Remote branch .* not found|couldn't find remote ref|not our ref|"
    r"unadvertised object|no such ref|invalid refspec",
    re.IGNORECASE,
)
_MOVED_PATTERN = re.compile(r"returned error: 30[12378]")
_UNREACHABLE_PATTERNS = re.compile(
    r"Could not resolve host|Could not resolve hostname|Failed to connect|Connection refused|"
    r"Couldn't connect to server|Network is unreachable|No route to host|Connection timed out|"
    r"Connection reset|SSL certificate problem|unable to access|Name or service not known|"
    r"Temporary failure in name resolution|Host key verification failed|Empty reply from server",
    re.IGNORECASE,
)


def token_for(platform: str, explicit: str | None = None, settings: Settings | None = None) -> str | None:
    """The token to use: an explicit one, else `REPOLENS_TOKEN`, else the platform's own variable
    (`Settings.git_token`; the settings are loaded here when the caller has none)."""
    token = explicit.strip() if explicit and explicit.strip() else None
    if token is None:
        token = (settings or Settings.from_env()).git_token(platform)
    if token:
        register_secret(token)
    return token


def auth_header(platform: str, token: str, username: str | None = None) -> str:
    """The `Authorization` header git sends: Basic `<scheme-user or username>:<token>`."""
    user = username or TOKEN_USER.get(platform, _DEFAULT_TOKEN_USER)
    encoded = base64.b64encode(f"{user}:{token}".encode()).decode("ascii")
    register_secret(token)
    register_secret(encoded)
    return f"Authorization: Basic {encoded}"


def is_git_checkout(path: Path) -> bool:
    """True when `path` lies inside a git working tree that git is willing to read."""
    return _quick_git(["rev-parse", "--is-inside-work-tree"], Path(path)) == "true"


def local_commit(path: Path) -> str | None:
    """HEAD of the local checkout at `path`, or None for plain folders and repos without commits.

    A folder the enclosing checkout ignores (a build output, a copy of another project under
    `build/`) is not at that checkout's commit: it gets None rather than an unrelated sha.
    """
    path = Path(path)
    repo = _open_repo(path, search_parents=True)
    if repo is None or not is_git_checkout(path) or _is_ignored(path):
        return None
    return _head_commit(repo)


def _is_ignored(path: Path) -> bool:
    """True when the checkout around `path` ignores it (`git check-ignore` exits 0 only then)."""
    return _quick_git(["check-ignore", "--quiet", "."], path) is not None


def checkout(
    source: RepoSource,
    dest: Path,
    *,
    token: str | None = None,
    username: str | None = None,
    timeout: float = 300.0,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    resolve: Sequence[str] = (),
) -> str:
    """Make `dest` a shallow working copy of `source` at its ref and return the commit sha.

    `resolve` pins host names to addresses (`host:port:addr,...`, curl's `--resolve`; see
    `ingest.policy`): git then connects only there and follows no redirects.

    A new clone is built in a temporary folder beside `dest` and renamed into
    place, so a failed or cancelled clone leaves nothing behind; an existing
    clone is fetched and hard-reset, so a failed fetch leaves it as it was.
    `token` falls back to a token pasted in the URL, then to the environment.
    """
    if source.is_local:
        raise InvalidSourceError(f"{source.repo_id} is a local folder: it is read in place, not cloned")
    token = token_for(source.platform, token or source.url_token)
    username = username or source.url_username
    run = _GitRun(source, token, username, time.monotonic() + timeout, timeout, progress, cancel, resolve)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_partials(dest)

    if _is_clone_root(dest):
        return run.update(dest)
    if dest.exists():
        shutil.rmtree(dest)
    partial = dest.parent / f".{dest.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        sha = run.clone(partial)
        os.replace(partial, dest)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return sha


def ls_remote(
    source: RepoSource,
    token: str,
    *,
    username: str | None = None,
    timeout: float = 20.0,
    resolve: Sequence[str] = (),
) -> None:
    """Ask the host whether `token` may read `source` (`git ls-remote`); raise the classified error if not.

    The token travels exactly as in `checkout`: one process's environment, redirects off, and
    `resolve` pins the connection to the addresses a policy checked (as in `checkout`).
    Only http(s) can check a token: over ssh git would use the server's own keys and say yes.
    """
    if not uses_token(source):
        raise InvalidSourceError(f"{source.url} is not fetched over https: a token cannot be checked")
    register_secret(token)
    run = _GitRun(source, token, username, time.monotonic() + timeout, timeout, None, None, resolve)
    with tempfile.TemporaryDirectory(prefix="repolens-ls-remote-") as scratch:
        run.ls_remote(Path(scratch))


def uses_token(source: RepoSource) -> bool:
    """True when fetching `source` sends a token (https/http); local folders and ssh never do."""
    return not source.is_local and urllib.parse.urlsplit(source.clone_url).scheme in ("https", "http")


def _is_clone_root(dest: Path) -> bool:
    """True only when `dest` itself holds the clone: a leftover folder inside another repository
    (a data dir kept in a git checkout) must never have that repository fetched and reset."""
    repo = _open_repo(dest, search_parents=False)
    top = repo.working_tree_dir if repo is not None else None
    return top is not None and Path(top).resolve() == dest.resolve()


def _open_repo(path: Path, *, search_parents: bool) -> git.Repo | None:
    """The repository at `path` (or above it), read by GitPython; None for anything else."""
    try:
        return git.Repo(path, search_parent_directories=search_parents)
    except (InvalidGitRepositoryError, NoSuchPathError, OSError):
        return None


def _head_commit(repo: git.Repo) -> str | None:
    """The sha HEAD points at; None while the repository has no commits."""
    try:
        return repo.head.commit.hexsha
    except ValueError:  # HEAD names a branch that has no commit yet
        return None


def _remove_partials(dest: Path) -> None:
    """Delete temporary clones left by processes that died mid-clone (never a live process's)."""
    for leftover in dest.parent.glob(f".{dest.name}.partial-*"):
        pid = leftover.name.rpartition(".partial-")[2].split("-")[0]
        if not (pid.isdigit() and process_alive(int(pid))):
            shutil.rmtree(leftover, ignore_errors=True)


def _quick_git(args: list[str], cwd: Path) -> str | None:
    """Run a local, read-only git command; None when git fails or the folder is not a repository."""
    if not cwd.is_dir():
        return None
    try:
        output = Git(cwd).execute(
            [Git.GIT_PYTHON_GIT_EXECUTABLE, *_GIT_OPTIONS, *args], env=_base_env(), kill_after_timeout=30
        )
    except (GitCommandError, OSError):
        return None
    return str(output).strip()


def _base_env() -> dict[str, str]:
    """git's environment: no prompts (ssh too: git runs in a new session without a terminal).

    GitPython starts every git process from a copy of `os.environ`, so inherited variables
    that could print headers, redirect git or inject config are removed from the process
    environment itself: RepoLens never wants git to follow them.
    """
    for key in [key for key in os.environ if key.startswith(_DROPPED_ENV_PREFIXES)]:
        os.environ.pop(key, None)
    env = dict(os.environ)
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_ASKPASS="",
        SSH_ASKPASS="",
        GCM_INTERACTIVE="never",
        GIT_TRACE_REDACT="1",
        GIT_LFS_SKIP_SMUDGE="1",
        LC_ALL="C",
        LANGUAGE="C",
    )
    return env


def _is_loopback(host: str) -> bool:
    name = urllib.parse.urlsplit(f"//{host}").hostname or ""
    if name == "localhost":
        return True
    try:
        return ip_address(name).is_loopback
    except ValueError:
        return False


def _pinned_to_loopback(resolve: Sequence[str]) -> bool:
    """True when `resolve` pins the connection to loopback addresses only (the token stays on
    this machine, as with a loopback host name)."""
    pins = [pin for entry in resolve if (pin := _PIN.fullmatch(entry))]
    addresses = [address for pin in pins for address in pin["addresses"].split(",")]  # [v6] bracketed
    return bool(addresses) and all(_is_loopback(address) for address in addresses)


def transport(source: RepoSource) -> str:
    """`https`, `http`, `ssh` (scp-style `git@host:path` too) or `git`: how git reaches `source`."""
    return urllib.parse.urlsplit(source.clone_url).scheme.lower() if "://" in source.clone_url else "ssh"


def process_config_env(
    source: RepoSource, token: str | None, username: str | None, resolve: Sequence[str] = ()
) -> dict[str, str]:
    """The environment of one git process: config (`GIT_CONFIG_COUNT/KEY_n/VALUE_n`) that lives
    only there, never in argv or `.git/config`, and for ssh the command git runs.

    With a token: the `Authorization` header for the repository's host, and no redirects (git
    applies the header to every request of the session, also after a redirect to another host).
    `resolve` (`host:port:address,...`, from `ingest.policy`) pins the connection to the checked
    addresses, so a DNS answer that changes after the check (rebinding) is never used: http(s)
    through curl's resolve list (`http.curloptResolve`, redirects off), git:// by rewriting the
    URL to the address (`url.<address URL>.insteadOf`), ssh by `HostName=<address>` with
    `HostKeyAlias=<host>` (the host key is still checked under the host's name).
    """
    config: dict[str, str] = {}
    if token:
        scheme = urllib.parse.urlsplit(source.clone_url).scheme
        config[f"http.{scheme}://{source.host}/.extraHeader"] = auth_header(source.platform, token, username)
        config["http.followRedirects"] = "false"
    entries = list(config.items())
    env: dict[str, str] = {}
    pins = [pin for entry in resolve if (pin := _PIN.fullmatch(entry))]
    kind = transport(source)
    if pins and kind in ("https", "http"):
        entries += [("http.followRedirects", "false"), *(("http.curloptResolve", pin) for pin in resolve)]
    elif pins and kind == "git":
        pin = pins[0]
        address = pin["addresses"].split(",")[0]
        entries.append((f"url.git://{address}:{pin['port']}/.insteadOf", f"git://{source.host}/"))
    elif pins and kind == "ssh":
        pin = pins[0]
        address = pin["addresses"].split(",")[0].strip("[]")
        base = os.environ.get("GIT_SSH_COMMAND") or shlex.quote(os.environ.get("GIT_SSH") or "ssh")
        pinned = f"-o HostName={shlex.quote(address)} -o HostKeyAlias={shlex.quote(pin['host'])}"
        env["GIT_SSH_COMMAND"] = f"{base} {pinned}"
    env["GIT_CONFIG_COUNT"] = str(len(entries))
    for index, (key, value) in enumerate(entries):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


class _GitFailure(Exception):
    def __init__(self, stderr: str) -> None:
        super().__init__(stderr)
        self.stderr = stderr


class _GitRun:
    """The git commands of one checkout, sharing its credentials, deadline and progress sink."""

    def __init__(
        self,
        source: RepoSource,
        token: str | None,
        username: str | None,
        deadline: float,
        timeout: float,
        progress: Progress | None,
        cancel: threading.Event | None,
        resolve: Sequence[str] = (),
    ) -> None:
        self.source = source
        self.token = token
        self.deadline = deadline
        self.timeout = timeout
        self.progress = progress
        self.cancel = cancel
        self.env = _base_env()
        scheme = urllib.parse.urlsplit(source.clone_url).scheme
        if token and scheme in ("https", "http"):
            if scheme == "http" and not (_is_loopback(source.host) or _pinned_to_loopback(resolve)):
                raise InvalidSourceError(
                    f"refusing to send a token over unencrypted http to {source.host}; use an https URL"
                )
        elif token:
            log.debug("ignoring the token for %s: ssh uses keys", source.url)
        self.env.update(
            process_config_env(source, token if scheme in ("https", "http") else None, username, resolve)
        )

    def clone(self, target: Path) -> str:
        ref = self.source.ref
        if is_commit_sha(ref):
            self._vet(["fetch", "origin", ref or ""])
            repo = git.Repo.init(target, mkdir=True)
            repo.git.update_environment(**_base_env())
            repo.create_remote("origin", self.source.clone_url)
            return self.update(target)
        options = ["--depth", "1", "--single-branch", "--no-tags"]
        if ref:
            options += ["--branch", ref]
        if self.progress:
            options.append("--progress")
        self._git(["clone", *options, "--", self.source.clone_url, str(target)], cwd=target.parent)
        return self._head(target)

    def update(self, target: Path) -> str:
        fetch = ["fetch", "--depth", "1", "--no-tags"]
        if self.progress:
            fetch.append("--progress")
        # The ref was validated by resolve_source: it cannot start with "-" and pass as an option.
        fetch += ["origin", self.source.ref or "HEAD"]
        self._vet(fetch)
        repo = git.Repo(target)
        repo.git.update_environment(**_base_env())
        repo.remotes.origin.set_url(self.source.clone_url)
        self._git(fetch, cwd=target)
        repo.head.reset("FETCH_HEAD", index=True, working_tree=True)
        repo.git.clean("--quiet", "-ffdx")
        return self._head(target)

    def ls_remote(self, cwd: Path) -> None:
        self._git(["ls-remote", "--quiet", "--", self.source.clone_url, "HEAD"], cwd=cwd)

    def _vet(self, args: list[str]) -> None:
        """GitPython's own checks on a network command (`args[0]`), before any git process starts:
        no remote helper (`ext::`, `fd::`, ...) as the URL and no option that runs a command."""
        try:
            Git.check_unsafe_protocols(self.source.clone_url)
            Git.check_unsafe_options(args[1:], _UNSAFE_OPTIONS[args[0]])
        except (UnsafeProtocolError, UnsafeOptionError) as refused:
            raise InvalidSourceError(
                f"refusing to run git {args[0]} for {redact(self.source.url)}: {refused}"
            ) from None

    def _head(self, target: Path) -> str:
        head = _head_commit(git.Repo(target))
        if not head:
            raise RepositoryNotFoundError(
                f"repository {self.source.url} has no commits yet: nothing to index"
            )
        return head

    def _git(self, args: list[str], *, cwd: Path) -> str:
        self._vet(args)
        try:
            return self._run(args, cwd)
        except _GitFailure as failure:
            raise self._classify(failure.stderr) from None

    def _run(self, args: list[str], cwd: Path) -> str:
        """Run one network command with GitPython, watching the deadline and the cancel event.

        `execute(as_process=True)` hands back the running process; its own session
        (`start_new_session`) lets a timeout or a cancel kill git and its helpers at once.
        """
        try:
            handle = Git(cwd).execute(
                [Git.GIT_PYTHON_GIT_EXECUTABLE, *_GIT_OPTIONS, *args],
                as_process=True,
                env=self.env,
                start_new_session=True,
            )
        except GitCommandNotFound:
            raise IngestError("git is not installed: install git to ingest remote repositories") from None
        process = handle.proc
        assert process is not None and process.stdout is not None and process.stderr is not None
        stdout: list[bytes] = []
        stderr: deque[str] = deque(maxlen=_STDERR_LINES_KEPT)
        output = process.stdout
        readers = [
            threading.Thread(target=lambda: stdout.append(output.read()), daemon=True),
            threading.Thread(target=self._read_stderr, args=(process.stderr, stderr), daemon=True),
        ]
        for reader in readers:
            reader.start()
        try:
            while process.poll() is None:
                if self.cancel is not None and self.cancel.is_set():
                    raise IngestCancelled(f"cancelled while fetching {self.source.url}")
                if time.monotonic() > self.deadline:
                    raise CloneTimeoutError(
                        f"fetching {self.source.url} did not finish within {self.timeout:g}s; "
                        "check the network, or allow more time with --clone-timeout"
                    )
                time.sleep(_POLL_SECONDS)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            for reader in readers:
                reader.join(timeout=5)
            for pipe in (process.stdout, process.stderr):
                pipe.close()
        if process.returncode != 0:
            raise _GitFailure("\n".join(stderr))
        return b"".join(stdout).decode("utf-8", "replace")

    def _read_stderr(self, stream: IO[bytes], lines: deque[str]) -> None:
        """Collect git's messages (redacted) and forward progress lines, split on \\r as git redraws them."""
        buffer = b""
        while chunk := os.read(stream.fileno(), 4096):
            buffer += chunk
            *complete, buffer = re.split(rb"[\r\n]", buffer)
            for raw in complete:
                self._take_line(raw, lines)
        self._take_line(buffer, lines)

    def _take_line(self, raw: bytes, lines: deque[str]) -> None:
        line = redact(raw.decode("utf-8", "replace").strip(), [self.token] if self.token else [])
        if not line:
            return
        if self.progress is not None and _PROGRESS.search(line):
            self.progress(line)
        else:
            lines.append(line)
            log.debug("git: %s", line)

    def _classify(self, stderr: str) -> IngestError:
        """Map git's stderr to the error a user can act on; the text is redacted and credential-free."""
        url = self.source.url
        detail = redact(_last_fatal(stderr), [self.token] if self.token else [])
        if _AUTH_PATTERNS.search(stderr):
            if self.token:
                return AuthenticationError(f"authentication failed for {url}: check the token and its scopes")
            variable = TOKEN_ENV.get(self.source.platform)
            hint = f"--token, REPOLENS_TOKEN or {variable}" if variable else "--token or REPOLENS_TOKEN"
            return AuthenticationError(
                f"authentication failed for {url}: the repository is private or does not exist; "
                f"give an access token with {hint}"
            )
        if _MOVED_PATTERN.search(stderr):
            return RepositoryNotFoundError(
                f"{url} redirects elsewhere (moved or renamed?); with a token, redirects are not "
                "followed so the token stays with this host: ingest the repository's current URL"
            )
        if _NOT_FOUND_PATTERNS.search(stderr):
            return RepositoryNotFoundError(f"repository not found: {url}")
        if _REF_PATTERNS.search(stderr):
            ref = self.source.ref or "HEAD"
            return UnknownRefError(f"ref {ref!r} not found in {url}: check the branch, tag or commit sha")
        if _UNREACHABLE_PATTERNS.search(stderr):
            return HostUnreachableError(f"cannot reach {self.source.host} for {url}: {detail}")
        return IngestError(f"git failed for {url}: {detail}", code=ErrorCode.GIT_FAILED)


def _last_fatal(stderr: str) -> str:
    """The most telling line of git's output: its last `fatal:`/`error:` line, else the last line."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(("fatal:", "error:")):
            return line.split(":", 1)[1].strip()
    return lines[-1] if lines else "no output"
