"""Turn whatever the user typed into one canonical repository source.

Users paste browser URLs (`.../tree/main`), clone URLs (`.git`), ssh remotes,
`file://` URLs and paths; all of them must map to one stable repo id so the
same repository is indexed once, GitLab subgroups and different hosts never
collide, and each ref gets its own entry. Credentials pasted inside a URL are
taken out here, before the URL can reach a log, the registry or `.git/config`.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from ingest.errors import (
    InvalidSourceError,
    NotASourceError,
    PlatformMismatchError,
    RepositoryNotFoundError,
)
from rag.redact import redact, register_secret
from rag.store.layout import repo_folder

__all__ = ["ACCEPTED", "PLATFORMS", "RepoSource", "is_commit_sha", "repo_folder", "resolve_source"]

PLATFORMS = ("github", "gitlab", "bitbucket", "git", "local")
_CLOUD_HOSTS = {"github.com": "github", "gitlab.com": "gitlab", "bitbucket.org": "bitbucket"}
_DEFAULT_PORTS = {"https": 443, "http": 80, "ssh": 22, "git": 9418}
# User names that are part of a platform's token scheme, not a real account.
_SCHEME_USERS = {"x-access-token", "oauth2", "x-token-auth", "git", "token"}
_HOST_RE = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*$")
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._~+-][A-Za-z0-9._~+%-]*$")
_SCP_RE = re.compile(r"^(?P<user>[A-Za-z0-9._-]+)@(?P<host>[A-Za-z0-9.-]+):(?!//)(?P<path>.+)$")
_TOKEN_SHAPE_RE = re.compile(r"^[A-Za-z0-9_\-.=]{20,}$")
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_BAD_REF_RE = re.compile(r"(^[-/.])|\.\.|@\{|//|[\x00-\x20\x7f~^:?*\[\\]|(\.lock|[/.])$")
# Browser-URL tails that name a ref: /tree/<ref>, /-/blob/<ref>/file, /src/<ref>/file ...
_REF_MARKERS = {"tree", "blob", "commit", "commits", "src", "branch", "raw"}

ACCEPTED = (
    "accepted sources: https://github.com/<owner>/<repo>, https://gitlab.com/<group>/<subgroup>/<repo>, "
    "https://bitbucket.org/<workspace>/<repo>, self-hosted https URLs with their platform named "
    "(github, gitlab or bitbucket: the CLI's --type, the API's type, the page's Platform), "
    "ssh remotes (git@host:group/repo.git, ssh://git@host/group/repo.git), file:// URLs and local folders"
)


@dataclass(frozen=True, slots=True)
class RepoSource:
    """One repository at one ref, as the rest of RepoLens sees it.

    `url` and `clone_url` never carry credentials; a token pasted into the URL
    is kept in `url_token` (out of repr and equality) so the caller can use it.
    `host` and `path` are what blob links for citations are built from.
    """

    repo_id: str
    platform: str
    url: str
    clone_url: str
    host: str
    path: str
    ref: str | None = None
    local_path: Path | None = None
    url_token: str | None = field(default=None, repr=False, compare=False)
    url_username: str | None = field(default=None, repr=False, compare=False)

    @property
    def is_local(self) -> bool:
        return self.local_path is not None

    def web_url(self) -> str | None:
        """The repository's browser page (None for local folders and ssh-only hosts)."""
        if self.is_local or not self.url.startswith(("https://", "http://")):
            return None
        return self.url


def resolve_source(
    location: str, *, platform: str | None = None, ref: str | None = None, platform_is_hint: bool = False
) -> RepoSource:
    """Parse a URL, ssh remote or path into a `RepoSource`; raise `InvalidSourceError` if it is none.

    A `platform` the location contradicts (a local folder named `github`, a github.com URL named
    `gitlab`) is refused with `PlatformMismatchError`: ignoring it would index something other
    than what was asked without a word. `platform_is_hint` keeps it a hint instead, for
    deepwiki-open's chat requests, whose `type` is `github` unless its page knew better.
    """
    text = (location or "").strip()
    if not text:
        raise InvalidSourceError(f"no repository given; {ACCEPTED}")
    if platform is not None:
        platform = platform.strip().lower() or None
    if platform is not None and platform not in PLATFORMS:
        raise InvalidSourceError(f"unknown --type {platform!r}: use one of {', '.join(PLATFORMS)}")
    source = _resolve(text, platform, _check_ref(ref.strip() if ref else None))
    if platform is not None and not platform_is_hint and source.platform != platform:
        raise PlatformMismatchError(_contradiction(text, platform, source))
    return source


def _contradiction(text: str, platform: str, source: RepoSource) -> str:
    """What is wrong with `--type platform` for this location, and what to give instead."""
    if source.is_local:
        found = f"{source.local_path} is a local folder"
    else:
        found = f"{source.host} is a {source.platform} host"
    return (
        f"--type {platform} contradicts {redact(text)!r}: {found}; "
        f"leave --type out (it is detected) or give --type {source.platform}"
    )


def _resolve(text: str, platform: str | None, ref: str | None) -> RepoSource:
    scheme = urllib.parse.urlsplit(text).scheme.lower() if "://" in text else ""
    if scheme == "file":
        return _local_source(_file_url_path(text), ref)
    if scheme in ("https", "http", "ssh", "git", "git+ssh", "ssh+git"):
        return _url_source(text, platform, ref)
    if scheme:
        raise InvalidSourceError(f"unsupported URL scheme {scheme!r} in {redact(text)}; {ACCEPTED}")
    if platform == "local" or _looks_like_path(text):
        try:
            path = Path(text).expanduser()
        except RuntimeError:  # ~user of an unknown user
            raise InvalidSourceError(f"cannot expand {text!r}: no such user") from None
        return _local_source(path, ref)
    scp = _SCP_RE.match(text)
    if scp:
        as_url = f"ssh://{scp['user']}@{scp['host']}/{scp['path'].lstrip('/')}"
        return _url_source(as_url, platform, ref, remote=text)
    first = text.split("/", 1)[0].lower()
    if "." in first and _HOST_RE.match(first.split(":")[0]) and text.count("/") >= 2:
        return _url_source(f"https://{text}", platform, ref)
    raise NotASourceError(f"{redact(text)!r} is neither a URL nor an existing folder; {ACCEPTED}")


def _looks_like_path(text: str) -> bool:
    if text.startswith(("/", "./", "../", "~", ".\\")) or text in (".", ".."):
        return True
    try:
        return Path(text).exists()
    except OSError:  # a name too long for the file system is no folder of ours
        return False


def _file_url_path(text: str) -> Path:
    parts = urllib.parse.urlsplit(text)
    if parts.netloc not in ("", "localhost"):
        raise InvalidSourceError(
            f"file:// URLs must name a local folder (file:///path), not host {parts.netloc!r}"
        )
    return Path(urllib.parse.unquote(parts.path))


def _local_source(path: Path, ref: str | None) -> RepoSource:
    if ref is not None:
        raise InvalidSourceError(
            "--ref applies to remote repositories; a local folder is indexed at its working tree "
            "(check the ref out there first)"
        )
    resolved = path.resolve()
    try:
        resolved.stat()
    except FileNotFoundError:
        raise RepositoryNotFoundError(f"no such local folder: {resolved}") from None
    except OSError as error:  # a parent folder this user may not enter (EACCES), a dead mount...
        raise InvalidSourceError(_unreadable(resolved, error.strerror or str(error))) from None
    if not resolved.is_dir():
        raise InvalidSourceError(f"{resolved} is a file; give the repository's folder")
    if not os.access(resolved, os.R_OK | os.X_OK):
        raise InvalidSourceError(_unreadable(resolved, "permission denied"))
    posix = resolved.as_posix()
    return RepoSource(
        repo_id=f"local/{posix.lstrip('/')}",
        platform="local",
        url=resolved.as_uri(),
        clone_url=resolved.as_uri(),
        host="local",
        path=posix.lstrip("/"),
        local_path=resolved,
    )


def _unreadable(folder: Path, reason: str) -> str:
    """Why a local folder cannot be indexed, and for whom: the user RepoLens runs as."""
    user = f"the user RepoLens runs as (uid {os.getuid()})"
    return f"cannot read local folder {folder}: {reason.lower()} for {user}"


def _url_source(text: str, platform: str | None, ref: str | None, *, remote: str | None = None) -> RepoSource:
    """Parse a URL; `remote` is the scp-style form (`git@host:path`) it was made from, kept as the
    clone URL because its path is relative to the login's home, unlike an ssh:// path."""
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError as error:
        raise InvalidSourceError(f"malformed URL {redact(text)!r} ({error}); {ACCEPTED}") from None
    scheme = "ssh" if parts.scheme.lower() in ("git+ssh", "ssh+git") else parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if not host or not _HOST_RE.match(host):
        raise InvalidSourceError(f"malformed URL {redact(text)!r}: missing or invalid host name; {ACCEPTED}")
    if platform == "local":
        raise PlatformMismatchError(
            f"--type local contradicts {redact(text)!r}: it is a remote URL; "
            "leave --type out (it is detected) or give a folder or file:// URL"
        )
    # The three cloud hosts are known for sure; a --type hint only matters for self-hosted servers
    # (deepwiki clients send type "github" by default, even with a GitLab URL).
    platform = _CLOUD_HOSTS.get(host) or platform or _detect_platform(host)
    if port is not None and port == _DEFAULT_PORTS.get(scheme):
        port = None
    netloc = f"{host}:{port}" if port else host

    user = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password else None
    url_token, url_username, ssh_user = _split_credentials(scheme, user, password)

    # A repo id pasted back (`github.com/a/b@v1.0`) names its ref after "@".
    repo_path, _, id_ref = urllib.parse.unquote(parts.path).partition("@")
    segments = [segment for segment in repo_path.split("/") if segment]
    repo_segments, url_ref = _split_browser_path(platform, segments)
    if not repo_segments or any(s in (".", "..") or not _SEGMENT_RE.match(s) for s in repo_segments):
        raise InvalidSourceError(f"{redact(text)!r} does not name a repository path; {ACCEPTED}")
    if repo_segments[-1].endswith(".git"):
        repo_segments[-1] = repo_segments[-1][:-4]
    if not repo_segments[-1] or not _has_owner_and_name(platform, repo_segments):
        raise InvalidSourceError(f"{redact(text)!r} does not name a repository; {ACCEPTED}")
    if host in _CLOUD_HOSTS:
        repo_segments = [s.lower() for s in repo_segments]
    ref = ref or _check_ref(url_ref) or _check_ref(id_ref.rstrip("/"))

    path = "/".join(repo_segments)
    # Forges accept either spelling; a plain git server needs the path exactly as it was given.
    suffix = ".git" if repo_path.rstrip("/").endswith(".git") or platform != "git" else ""
    if remote is not None:
        url = clone_url = remote
    elif scheme in ("ssh", "git"):
        user_part = f"{ssh_user}@" if ssh_user else ""
        url = clone_url = f"{scheme}://{user_part}{netloc}/{path}{suffix}"
    else:
        url = f"{scheme}://{netloc}/{path}"
        clone_url = url + suffix
    if url_token:
        register_secret(url_token)
    repo_id = f"{netloc}/{path}" + (f"@{ref}" if ref else "")
    return RepoSource(
        repo_id=repo_id,
        platform=platform,
        url=url,
        clone_url=clone_url,
        host=netloc,
        path=path,
        ref=ref,
        url_token=url_token,
        url_username=url_username,
    )


def _detect_platform(host: str) -> str:
    for name in ("gitlab", "bitbucket", "github"):
        if name in host:
            return name
    return "git"


def _split_credentials(
    scheme: str, user: str | None, password: str | None
) -> tuple[str | None, str | None, str | None]:
    """(token, user name for the token, ssh login) from a URL's userinfo.

    For ssh the user is the login (`git@`), never a secret; for http(s) a lone
    user is a token when it looks like one (`https://<token>@github.com/...`)
    and a user name otherwise (Bitbucket's clone URLs carry the account name);
    a user with a password is a user name plus token unless the name is a
    scheme word such as `x-access-token`.
    """
    if scheme in ("ssh", "git"):
        if password:
            register_secret(password)
            raise InvalidSourceError(
                "ssh URLs cannot carry a password; use an ssh key or an https URL with --token"
            )
        return None, None, user
    if password:
        return password, (None if (user or "").lower() in _SCHEME_USERS else user), None
    if user and _TOKEN_SHAPE_RE.match(user):
        return user, None, None
    return None, user, None


def _split_browser_path(platform: str, segments: list[str]) -> tuple[list[str], str | None]:
    """Separate the repository path from a browser tail such as `/tree/<ref>` or `/-/blob/<ref>/x`."""
    if platform == "gitlab" and "-" in segments:
        cut = segments.index("-")
        tail = segments[cut + 1 :]
        return segments[:cut], _ref_from_tail(tail)
    if (
        platform == "bitbucket"
        and len(segments) >= 4
        and segments[0] == "projects"
        and segments[2] == "repos"
    ):
        # Bitbucket Server browse URL: /projects/<KEY>/repos/<repo>/browse -> clone path scm/<key>/<repo>
        return ["scm", segments[1].lower(), segments[3]], None
    if platform in ("github", "bitbucket") and len(segments) > 2:
        if platform == "bitbucket" and segments[0] == "scm" and len(segments) == 3:
            return segments, None
        return segments[:2], _ref_from_tail(segments[2:])
    return segments, None


def _has_owner_and_name(platform: str, segments: list[str]) -> bool:
    """GitHub and Bitbucket repositories are always <owner>/<name> (Bitbucket Server: scm/<key>/<name>)."""
    if platform == "github":
        return len(segments) == 2
    if platform == "bitbucket":
        return len(segments) == 2 or (len(segments) == 3 and segments[0] == "scm")
    return True


def _ref_from_tail(tail: list[str]) -> str | None:
    if len(tail) >= 2 and tail[0] in _REF_MARKERS:
        # /tree/<ref> may be a slashed branch name; after blob/src a file path follows, so one segment.
        return "/".join(tail[1:]) if tail[0] == "tree" else tail[1]
    return None


def _check_ref(ref: str | None) -> str | None:
    if not ref or ref.upper() == "HEAD":
        return None
    if _SHA_RE.match(ref.lower()):
        return ref.lower()
    if _BAD_REF_RE.search(ref):
        raise InvalidSourceError(f"invalid ref {ref!r}: give a branch, tag or commit sha")
    return ref


def is_commit_sha(ref: str | None) -> bool:
    """A full 40-hex sha is fetched by id; anything else is a branch or tag name."""
    return bool(ref and _SHA_RE.match(ref.lower()))
