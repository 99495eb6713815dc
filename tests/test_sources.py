"""Every accepted spelling of a repository maps to one canonical source and repo id."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.errors import InvalidSourceError, PlatformMismatchError, RepositoryNotFoundError
from ingest.git import is_git_checkout, local_commit
from ingest.sources import is_commit_sha, repo_folder, resolve_source
from tests.support.repos import commit_all, git, write_files

REMOTE_CASES = [
    # location, platform hint, ref, repo_id, platform, url, clone_url
    (
        "https://github.com/encode/httpx",
        None,
        None,
        "github.com/encode/httpx",
        "github",
        "https://github.com/encode/httpx",
        "https://github.com/encode/httpx.git",
    ),
    (
        "https://github.com/Encode/HTTPX.git/",
        None,
        None,
        "github.com/encode/httpx",
        "github",
        "https://github.com/encode/httpx",
        "https://github.com/encode/httpx.git",
    ),
    (
        "https://github.com/encode/httpx/tree/feature/http3",
        None,
        None,
        "github.com/encode/httpx@feature/http3",
        "github",
        "https://github.com/encode/httpx",
        "https://github.com/encode/httpx.git",
    ),
    (
        "https://github.com/encode/httpx/blob/0.27.0/httpx/_client.py",
        None,
        None,
        "github.com/encode/httpx@0.27.0",
        "github",
        "https://github.com/encode/httpx",
        "https://github.com/encode/httpx.git",
    ),
    (
        "https://github.com/encode/httpx/tree/main",
        None,
        "v0.27.0",
        "github.com/encode/httpx@v0.27.0",
        "github",
        "https://github.com/encode/httpx",
        "https://github.com/encode/httpx.git",
    ),
    (
        "github.com/encode/httpx",
        None,
        None,
        "github.com/encode/httpx",
        "github",
        "https://github.com/encode/httpx",
        "https://github.com/encode/httpx.git",
    ),
    (
        "https://gitlab.com/group/sub/repo",
        None,
        None,
        "gitlab.com/group/sub/repo",
        "gitlab",
        "https://gitlab.com/group/sub/repo",
        "https://gitlab.com/group/sub/repo.git",
    ),
    (
        "https://gitlab.com/group/sub/repo/-/tree/release/1.x",
        None,
        None,
        "gitlab.com/group/sub/repo@release/1.x",
        "gitlab",
        "https://gitlab.com/group/sub/repo",
        "https://gitlab.com/group/sub/repo.git",
    ),
    (
        "https://gitlab.com/group/sub/repo/-/blob/main/src/app.py",
        None,
        None,
        "gitlab.com/group/sub/repo@main",
        "gitlab",
        "https://gitlab.com/group/sub/repo",
        "https://gitlab.com/group/sub/repo.git",
    ),
    (
        "https://bitbucket.org/team/app/src/develop/README.md",
        None,
        None,
        "bitbucket.org/team/app@develop",
        "bitbucket",
        "https://bitbucket.org/team/app",
        "https://bitbucket.org/team/app.git",
    ),
    (
        "https://gitlab.example.com/platform/tools/cli",
        None,
        None,
        "gitlab.example.com/platform/tools/cli",
        "gitlab",
        "https://gitlab.example.com/platform/tools/cli",
        "https://gitlab.example.com/platform/tools/cli.git",
    ),
    (
        "https://code.example.com:8443/team/app",
        "github",
        None,
        "code.example.com:8443/team/app",
        "github",
        "https://code.example.com:8443/team/app",
        "https://code.example.com:8443/team/app.git",
    ),
    (
        "https://git.example.com:443/team/app.git",
        None,
        None,
        "git.example.com/team/app",
        "git",
        "https://git.example.com/team/app",
        "https://git.example.com/team/app.git",
    ),
    (
        "https://git.example.com/team/app",
        None,
        None,
        "git.example.com/team/app",
        "git",
        "https://git.example.com/team/app",
        "https://git.example.com/team/app",
    ),
    (
        "https://bitbucket.example.com/projects/PRJ/repos/app/browse",
        None,
        None,
        "bitbucket.example.com/scm/prj/app",
        "bitbucket",
        "https://bitbucket.example.com/scm/prj/app",
        "https://bitbucket.example.com/scm/prj/app.git",
    ),
    (
        "git@github.com:encode/httpx.git",
        None,
        None,
        "github.com/encode/httpx",
        "github",
        "git@github.com:encode/httpx.git",
        "git@github.com:encode/httpx.git",
    ),
    (
        "git@plain.example.com:projects/app",
        None,
        None,
        "plain.example.com/projects/app",
        "git",
        "git@plain.example.com:projects/app",
        "git@plain.example.com:projects/app",
    ),
    (
        "ssh://git@plain.example.com/srv/git/app",
        None,
        None,
        "plain.example.com/srv/git/app",
        "git",
        "ssh://git@plain.example.com/srv/git/app",
        "ssh://git@plain.example.com/srv/git/app",
    ),
    (
        "git@gitlab.com:group/sub/repo.git",
        None,
        "main",
        "gitlab.com/group/sub/repo@main",
        "gitlab",
        "git@gitlab.com:group/sub/repo.git",
        "git@gitlab.com:group/sub/repo.git",
    ),
    (
        "ssh://git@git.example.com:2222/team/app.git",
        None,
        None,
        "git.example.com:2222/team/app",
        "git",
        "ssh://git@git.example.com:2222/team/app.git",
        "ssh://git@git.example.com:2222/team/app.git",
    ),
    (
        "http://127.0.0.1:8080/demo.git",
        None,
        None,
        "127.0.0.1:8080/demo",
        "git",
        "http://127.0.0.1:8080/demo",
        "http://127.0.0.1:8080/demo.git",
    ),
]


@pytest.mark.parametrize(("location", "platform", "ref", "repo_id", "kind", "url", "clone_url"), REMOTE_CASES)
def test_remote_sources_are_canonical(
    location: str, platform: str | None, ref: str | None, repo_id: str, kind: str, url: str, clone_url: str
) -> None:
    source = resolve_source(location, platform=platform, ref=ref)
    assert (source.repo_id, source.platform, source.url, source.clone_url) == (repo_id, kind, url, clone_url)
    assert source.local_path is None
    assert source.repo_id.startswith(source.host + "/")


@pytest.mark.parametrize(
    "repo_id",
    [
        "github.com/encode/httpx@v0.27.0",
        "gitlab.com/group/sub/repo@feature/x",
        "git.example.com:8443/team/app",
    ],
)
def test_a_repo_id_resolves_to_itself(repo_id: str) -> None:
    assert resolve_source(repo_id).repo_id == repo_id


def test_host_and_path_are_kept_for_blob_links() -> None:
    source = resolve_source("https://gitlab.com/group/sub/repo/-/tree/main")
    assert (source.host, source.path, source.ref) == ("gitlab.com", "group/sub/repo", "main")
    assert source.web_url() == "https://gitlab.com/group/sub/repo"
    assert resolve_source("git@github.com:a/b.git").web_url() is None


def test_ids_never_collide_across_subgroups_hosts_and_refs() -> None:
    locations = [
        ("https://gitlab.com/group/sub/repo", None),
        ("https://gitlab.com/group/sub-repo", None),
        ("https://gitlab.com/group/repo", None),
        ("https://gitlab.com/sub/repo", None),
        ("https://gitlab.example.com/group/sub/repo", None),
        ("https://gitlab.example.com:8443/group/sub/repo", None),
        ("https://github.com/group/repo", None),
        ("https://github.com/group/repo", "dev"),
        ("https://github.com/group/repo", "v1.0"),
    ]
    ids = [resolve_source(location, ref=ref).repo_id for location, ref in locations]
    assert len(set(ids)) == len(ids)
    folders = [repo_folder(repo_id) for repo_id in ids]
    assert len(set(folders)) == len(folders)


def test_spellings_of_one_repository_share_an_id() -> None:
    spellings = [
        "https://github.com/encode/httpx",
        "https://github.com/encode/httpx/",
        "https://github.com/encode/httpx.git",
        "HTTPS://GitHub.com/encode/httpx",
        "git@github.com:encode/httpx.git",
        "ssh://git@github.com/encode/httpx",
        "github.com/encode/httpx",
        "https://github.com/encode/httpx/pulls",
    ]
    assert {resolve_source(spelling).repo_id for spelling in spellings} == {"github.com/encode/httpx"}


def test_repo_folder_is_one_safe_path_component() -> None:
    assert repo_folder("github.com/encode/httpx@v0.27.0") == "github.com%2Fencode%2Fhttpx%40v0.27.0"
    long_a = "local/" + "a" * 300 + "/x"
    long_b = "local/" + "a" * 300 + "/y"
    assert len(repo_folder(long_a)) <= 200
    assert repo_folder(long_a) != repo_folder(long_b)
    assert "/" not in repo_folder(long_a)


def test_credentials_in_a_url_are_taken_out() -> None:
    token = "ghp_" + "A1b2C3d4E5" * 4
    source = resolve_source(f"https://{token}@github.com/acme/private")
    assert source.url_token == token
    assert source.url_username is None
    assert token not in source.url + source.clone_url + repr(source)

    source = resolve_source("https://x-access-token:s3cret-value@github.com/acme/private.git")
    assert (source.url_token, source.url_username) == ("s3cret-value", None)
    assert "s3cret" not in source.url + source.clone_url + source.repo_id + repr(source)

    source = resolve_source("https://alice:api-token-123@bitbucket.org/team/app.git")
    assert (source.url_token, source.url_username) == ("api-token-123", "alice")
    assert source.clone_url == "https://bitbucket.org/team/app.git"


def test_a_user_name_alone_is_not_a_token() -> None:
    source = resolve_source("https://alice@bitbucket.org/team/app.git")
    assert (source.url_token, source.url_username) == (None, "alice")
    assert "alice" not in source.clone_url


def test_ssh_url_with_password_is_rejected_without_echoing_it() -> None:
    with pytest.raises(InvalidSourceError) as caught:
        resolve_source("ssh://git:hunter2-pass@git.example.com/team/app.git")
    assert "hunter2-pass" not in str(caught.value)


@pytest.mark.parametrize(
    "location",
    [
        "",
        "   ",
        "not a url",
        "ftp://user:ftp-secret-value@example.com/repo.git",
        "https://",
        "https:///encode/httpx",
        "https://github.com/encode",
        "https://github.com/",
        "https://bitbucket.org/team",
        "https://exa mple.com/a/b",
        "https://example.com:99999/a/b",
        "https://example.com/a/../b",
        "encode/httpx",
        "javascript:alert(1)",
        "x" * 5000,
    ],
)
def test_bad_urls_say_what_is_accepted(location: str) -> None:
    with pytest.raises(InvalidSourceError) as caught:
        resolve_source(location)
    assert caught.value.code == "bad_url"
    message = str(caught.value)
    assert "accepted sources" in message or "no repository given" in message
    assert "ftp-secret-value" not in message
    # The page shows this message too: the platform is named for every client, not as a CLI flag only.
    assert "the CLI's --type, the API's type, the page's Platform" in message


@pytest.mark.parametrize(
    "ref", ["-upload-pack=evil", "a..b", "bad ref", "x:y", "refs/heads/", "a@{1}", "x.lock"]
)
def test_bad_refs_are_rejected(ref: str) -> None:
    with pytest.raises(InvalidSourceError, match="invalid ref"):
        resolve_source("https://github.com/encode/httpx", ref=ref)


def test_a_type_the_location_contradicts_is_refused_and_says_what_to_give() -> None:
    """`--type gitlab` with a github.com URL used to be dropped without a word."""
    with pytest.raises(PlatformMismatchError) as caught:
        resolve_source("https://gitlab.com/group/sub/repo", platform="github")
    assert caught.value.code == "type_mismatch" and caught.value.exit_code == 7
    assert caught.value.http_status == 400
    assert str(caught.value) == (
        "--type github contradicts 'https://gitlab.com/group/sub/repo': gitlab.com is "
        "a gitlab host; leave --type out (it is detected) or give --type gitlab"
    )
    with pytest.raises(PlatformMismatchError, match="give --type bitbucket"):
        resolve_source("https://bitbucket.org/team/app", platform="gitlab")
    token = "ghp_" + "t" * 36
    with pytest.raises(PlatformMismatchError, match="github.com is a github host") as pasted:
        resolve_source(f"https://{token}@github.com/a/b", platform="git")
    assert token not in str(pasted.value)
    assert resolve_source("https://git.example.com/team/app", platform="gitlab").platform == "gitlab"
    assert resolve_source("https://github.com/a/b", platform=" GitHub ").platform == "github"


def test_a_type_hint_is_ignored_where_the_host_says_otherwise() -> None:
    """deepwiki clients send type "github" by default, also for GitLab and Bitbucket URLs: their
    chat requests resolve with `platform_is_hint`."""
    source = resolve_source("https://gitlab.com/group/sub/repo", platform="github", platform_is_hint=True)
    assert (source.platform, source.repo_id) == ("gitlab", "gitlab.com/group/sub/repo")
    hinted = resolve_source("https://bitbucket.org/team/app", platform="gitlab", platform_is_hint=True)
    assert hinted.platform == "bitbucket"


def test_unknown_platform_is_rejected() -> None:
    with pytest.raises(InvalidSourceError, match="unknown --type 'svn'"):
        resolve_source("https://github.com/encode/httpx", platform="svn")
    with pytest.raises(PlatformMismatchError, match="--type local .* it is a remote URL") as remote:
        resolve_source(f"https://{'t' * 30}@github.com/encode/httpx", platform="local", platform_is_hint=True)
    assert "t" * 30 not in str(remote.value)


def test_default_ref_names_mean_no_ref() -> None:
    assert resolve_source("https://github.com/encode/httpx", ref="HEAD").ref is None
    assert resolve_source("https://github.com/encode/httpx", ref="  ").repo_id == "github.com/encode/httpx"


def test_local_git_checkout_and_plain_folder(tmp_path: Path) -> None:
    checkout_dir = tmp_path / "proj"
    checkout_dir.mkdir()
    git(checkout_dir, "init", "--quiet")
    write_files(checkout_dir, {"app.py": "print('hi')\n"})
    sha = commit_all(checkout_dir, "initial")
    plain = tmp_path / "plain"
    plain.mkdir()

    source = resolve_source(str(checkout_dir))
    assert source.platform == "local"
    assert source.local_path == checkout_dir.resolve()
    assert source.repo_id == "local/" + checkout_dir.resolve().as_posix().lstrip("/")
    assert source.url == checkout_dir.resolve().as_uri()
    assert is_git_checkout(checkout_dir) and local_commit(checkout_dir) == sha
    assert not is_git_checkout(plain) and local_commit(plain) is None

    assert resolve_source(checkout_dir.resolve().as_uri()) == source
    assert resolve_source("proj").repo_id == source.repo_id  # relative to the test's cwd (tmp_path)
    assert resolve_source("./proj/").repo_id == source.repo_id
    assert resolve_source(str(plain), platform="github", platform_is_hint=True).platform == "local"
    for named in (str(plain), plain.resolve().as_uri()):
        with pytest.raises(PlatformMismatchError) as caught:
            resolve_source(named, platform="github")
        assert f"{plain.resolve()} is a local folder" in str(caught.value)
        assert "leave --type out (it is detected) or give --type local" in str(caught.value)
    assert resolve_source(str(plain), platform="local").platform == "local"


def test_local_errors(tmp_path: Path) -> None:
    with pytest.raises(RepositoryNotFoundError, match="no such local folder"):
        resolve_source(str(tmp_path / "missing"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(InvalidSourceError, match="is a file"):
        resolve_source(str(tmp_path / "file.txt"))
    with pytest.raises(InvalidSourceError, match="--ref applies to remote"):
        resolve_source(str(tmp_path), ref="main")
    with pytest.raises(InvalidSourceError, match="no such user"):
        resolve_source("~no-such-user-here/repo")
    with pytest.raises(InvalidSourceError, match="file:// URLs"):
        resolve_source("file://otherhost/srv/repo")


def test_git_repository_without_commits_has_no_commit(tmp_path: Path) -> None:
    git(tmp_path, "init", "--quiet", "fresh")
    assert is_git_checkout(tmp_path / "fresh")
    assert local_commit(tmp_path / "fresh") is None
    assert local_commit(tmp_path / "missing") is None


def test_commit_sha_refs_are_lower_case() -> None:
    sha = "0123456789ABCDEF0123456789abcdef01234567"
    assert resolve_source("https://github.com/a/b", ref=sha).ref == sha.lower()


def test_commit_sha_detection() -> None:
    assert is_commit_sha("0123456789abcdef0123456789abcdef01234567")
    assert not is_commit_sha("0123456")
    assert not is_commit_sha("main")
    assert not is_commit_sha(None)


def test_a_folder_the_enclosing_checkout_ignores_records_no_commit(tmp_path: Path) -> None:
    """A copy of another project under an ignored `build/` is not at the enclosing repository's commit."""
    outer = tmp_path / "outer"
    outer.mkdir()
    git(outer, "init", "--quiet")
    write_files(
        outer, {".gitignore": "build/\n", "src/app.py": "APP = 1\n", "build/copy/lib.py": "LIB = 1\n"}
    )
    head = commit_all(outer, "outer")

    assert local_commit(outer) == head
    assert local_commit(outer / "src") == head
    assert local_commit(outer / "build" / "copy") is None
