"""Citations: extraction of every form, checking against the prompt's spans, and links per platform."""

from __future__ import annotations

import pytest

from rag.citations import Citation, Span, check_citations, extract_citations, link, source_url
from rag.types import RepoRecord, SearchHit

SHA = "0123456789abcdef0123456789abcdef01234567"


def record(platform: str, url: str, repo_id: str) -> RepoRecord:
    return RepoRecord(id=repo_id, url=url, platform=platform, ref=None, commit=SHA, embedder="e", dimension=3)


def hit(path: str, start: int, end: int) -> SearchHit:
    return SearchHit(path, "python", start, end, None, "x\n" * (end - start + 1), 1.0)


def spans(citations: list[Citation]) -> list[tuple[str, int, int]]:
    return [(c.path, c.start_line, c.end_line) for c in citations]


def test_extracts_every_citation_form_once_in_order() -> None:
    answer = (
        "The client (`weatherline/client.py:80-95`) retries; see weatherline/cli.py:12 and "
        "web/chart.js#L3-L9 or README.md#L4. Also ./src/app.py:L3-L7, docs/a.md:7–9, "
        ".github/ci.yml:1-2 and again weatherline/client.py:80-95. Reversed: lib/x.go:20-10."
    )
    assert spans(extract_citations(answer)) == [
        ("weatherline/client.py", 80, 95),
        ("weatherline/cli.py", 12, 12),
        ("web/chart.js", 3, 9),
        ("README.md", 4, 4),
        ("src/app.py", 3, 7),
        ("docs/a.md", 7, 9),
        (".github/ci.yml", 1, 2),
        ("lib/x.go", 10, 20),
    ]


def test_web_framework_route_files_are_citations() -> None:
    """Next.js and SvelteKit name files after their routes; a Markdown link's brackets are not a path."""
    answer = (
        "It is built in `src/app/[owner]/[repo]/page.tsx:96-138`, guarded by "
        "app/(auth)/@modal/[...slug]/page.js:4, pages/[[...path]].tsx:2-3 and src/routes/+page.svelte:10; see [api/rag.py:157-243](https://x/y)."
    )
    assert spans(extract_citations(answer)) == [
        ("src/app/[owner]/[repo]/page.tsx", 96, 138),
        ("app/(auth)/@modal/[...slug]/page.js", 4, 4),
        ("pages/[[...path]].tsx", 2, 3),
        ("src/routes/+page.svelte", 10, 10),
        ("api/rag.py", 157, 243),
    ]


@pytest.mark.parametrize(
    "text",
    ["at 10:30 the job runs", "http://example.com:8080/x", "step:2 of the plan", "ratio 3:4", "file.py:0"],
)
def test_ignores_things_that_are_not_citations(text: str) -> None:
    assert extract_citations(text) == []


def test_check_flags_files_and_lines_outside_the_context() -> None:
    context = [hit("pkg/client.py", 10, 30), hit("pkg/client.py", 31, 40), hit("pkg/cli.py", 1, 20)]
    answer = (
        "pkg/client.py:12-38 spans two adjacent hits; pkg/client.py:35-60 runs past them; "
        "pkg/ghost.py:1-3 was never shown; cli.py:5 is shortened; pkg/cli.py:25 is outside."
    )
    checked = check_citations(extract_citations(answer), context)
    assert [(c.path, c.start_line, c.in_context) for c in checked] == [
        ("pkg/client.py", 12, True),
        ("pkg/client.py", 35, False),
        ("pkg/ghost.py", 1, False),
        ("pkg/cli.py", 5, True),
        ("pkg/cli.py", 25, False),
    ]


def test_a_shortened_spelling_of_the_same_lines_is_one_citation() -> None:
    """`pkg/cli.py:1-12` and `cli.py:1-12` were two citations once the path was completed: one chip twice."""
    answer = "See pkg/cli.py:1-12, then cli.py:1-12 and pkg/cli.py:L1-L12; elsewhere ghost.py:3."
    checked = check_citations(extract_citations(answer), [hit("pkg/cli.py", 1, 20)])
    assert [(c.path, c.start_line, c.end_line, c.in_context) for c in checked] == [
        ("pkg/cli.py", 1, 12, True),
        ("ghost.py", 3, 3, False),
    ]


def test_pinned_file_span_counts_as_context() -> None:
    checked = check_citations(extract_citations("src/main.py:100-120"), [Span("src/main.py", 1, 300)])
    assert checked[0].in_context


@pytest.mark.parametrize(
    ("platform", "url", "repo_id", "expected"),
    [
        (
            "github",
            "https://github.com/encode/httpx",
            "github.com/encode/httpx",
            f"https://github.com/encode/httpx/blob/{SHA}/httpx/_client.py#L10-L20",
        ),
        (
            "gitlab",
            "https://gitlab.com/group/sub/repo.git",
            "gitlab.com/group/sub/repo",
            f"https://gitlab.com/group/sub/repo/-/blob/{SHA}/httpx/_client.py#L10-20",
        ),
        (
            "bitbucket",
            "https://bitbucket.org/ws/repo",
            "bitbucket.org/ws/repo",
            f"https://bitbucket.org/ws/repo/src/{SHA}/httpx/_client.py#lines-10:20",
        ),
        (
            "local",
            "/home/me/proj",
            "local/home/me/proj",
            "/api/repos/local/home/me/proj/file?path=httpx%2F_client.py&start=10&end=20",
        ),
    ],
)
def test_source_url_per_platform(platform: str, url: str, repo_id: str, expected: str) -> None:
    assert source_url(record(platform, url, repo_id), "httpx/_client.py", 10, 20) == expected


def test_single_line_anchor_and_quoted_path() -> None:
    github = record("github", "https://github.com/o/r/", "github.com/o/r")
    assert (
        source_url(github, "docs/my file.md", 7, 7)
        == f"https://github.com/o/r/blob/{SHA}/docs/my%20file.md#L7"
    )
    linked = link([Citation("a.py", 1, 2)], github)
    assert linked[0].url == f"https://github.com/o/r/blob/{SHA}/a.py#L1-L2"
    assert linked[0].to_json() == {
        "path": "a.py",
        "start_line": 1,
        "end_line": 2,
        "url": linked[0].url,
        "in_context": True,
    }


def test_ssh_remote_links_to_the_web_view() -> None:
    record = RepoRecord(
        id="github.com/encode/httpx@main",
        url="git@github.com:encode/httpx.git",
        platform="github",
        ref="main",
        commit="abc123",
        embedder="minilm",
        dimension=384,
    )
    assert source_url(record, "httpx/_client.py", 3, 9) == (
        "https://github.com/encode/httpx/blob/abc123/httpx/_client.py#L3-L9"
    )
