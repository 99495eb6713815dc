"""File filters: the include/exclude rule, wildcards, defaults, `.gitignore`, and pattern parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from ingest.filters import DEFAULT_EXCLUDES, FileFilter, FilterSpec, parse_patterns
from ingest.reader import Limits, iter_source_files


def make_tree(root: Path, paths: list[str]) -> Path:
    for path in paths:
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"# {path}\n")
    return root


def accepted(spec: FilterSpec, paths: list[str], root: Path | None = None) -> set[str]:
    file_filter = FileFilter.from_spec(spec, root)
    return {path for path in paths if file_filter.accepts(path)}


def indexed(root: Path, spec: FilterSpec | None = None) -> list[str]:
    filter_ = FileFilter.from_spec(spec or FilterSpec(), root)
    return [file.path for file in iter_source_files(root, filter_, Limits())]


PATHS = [
    "src/app.py",
    "src/util/strings.py",
    "src/node_modules/left-pad/index.js",
    "src/bundle.min.js",
    "src/pkg/test_app.py",
    "src/pkg/deep/test_deep.py",
    "lib/other.py",
    "docs/index.md",
    "docs/guide/setup.md",
    "mydocs/notes.md",
    "node_modules/react/index.js",
    "vendor/lib.go",
    "build/out.js",
    "dist/app.js",
    "__pycache__/app.cpython-311.pyc",
    ".git/config",
    "package-lock.json",
    "yarn.lock",
    "go.sum",
    "api_pb2.py",
    "logo.png",
    "README.md",
]


def test_defaults_exclude_dependencies_builds_locks_generated_and_media() -> None:
    assert accepted(FilterSpec(), PATHS) == {
        "src/app.py",
        "src/util/strings.py",
        "src/pkg/test_app.py",
        "src/pkg/deep/test_deep.py",
        "lib/other.py",
        "docs/index.md",
        "docs/guide/setup.md",
        "mydocs/notes.md",
        "README.md",
    }
    assert "node_modules" in DEFAULT_EXCLUDES["dirs"] and "*.min.js" in DEFAULT_EXCLUDES["files"]


def test_include_narrows_and_defaults_still_apply() -> None:
    spec = FilterSpec(include_dirs=["src"])
    assert accepted(spec, PATHS) == {
        "src/app.py",
        "src/util/strings.py",
        "src/pkg/test_app.py",
        "src/pkg/deep/test_deep.py",
    }


def test_include_files_and_dirs_are_a_union_then_excludes_remove() -> None:
    spec = FilterSpec(include_dirs=["docs"], include_files=["*.py"], exclude_files=["test_*.py"])
    assert accepted(spec, PATHS) == {
        "src/app.py",
        "src/util/strings.py",
        "lib/other.py",
        "docs/index.md",
        "docs/guide/setup.md",
    }


def test_wildcards_match_relative_paths() -> None:
    spec = FilterSpec(include_files=["src/*/test_*.py"])
    assert accepted(spec, PATHS) == {"src/pkg/test_app.py"}
    assert accepted(FilterSpec(exclude_files=["*.md"], include_dirs=["docs", "mydocs"]), PATHS) == set()


def test_double_star_excludes_the_folder_and_everything_under_it_only() -> None:
    remaining = accepted(FilterSpec(exclude_files=["docs/**"]), PATHS)
    assert "docs/index.md" not in remaining and "docs/guide/setup.md" not in remaining
    assert "mydocs/notes.md" in remaining
    assert accepted(FilterSpec(exclude_dirs=["docs/**"]), PATHS) == remaining


def test_exclude_dirs_match_the_dir_at_any_depth_and_dot_slash_anchors_at_the_root() -> None:
    assert "src/util/strings.py" not in accepted(FilterSpec(exclude_dirs=["util"]), PATHS)
    anchored = accepted(FilterSpec(exclude_dirs=["./pkg/"]), PATHS)
    assert "src/pkg/test_app.py" in anchored
    assert "src/pkg/test_app.py" not in accepted(FilterSpec(exclude_dirs=["./src/pkg/"]), PATHS)


def test_no_default_excludes_keeps_everything_the_user_did_not_exclude() -> None:
    spec = FilterSpec(use_defaults=False, exclude_dirs=[".git"])
    assert accepted(spec, PATHS) == set(PATHS) - {".git/config"}


def test_gitignore_root_and_nested_with_negation(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path / "repo", ["app.py", "debug.log", "keep.log", "secret/key.py", "sub/x.log", "sub/y.log"]
    )
    make_tree(root, ["sub/local.py", "local.py"])
    (root / ".gitignore").write_text("*.log\n!keep.log\nsecret/\n")
    (root / "sub" / ".gitignore").write_text("!x.log\nlocal.py\n")
    assert indexed(root) == [".gitignore", "app.py", "keep.log", "local.py", "sub/.gitignore", "sub/x.log"]
    everything = indexed(root, FilterSpec(respect_gitignore=False))
    assert "debug.log" in everything and "secret/key.py" in everything and "sub/local.py" in everything


def test_git_info_exclude_is_respected(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "repo", ["a.py", "scratch.py", ".git/info/exclude"])
    (root / ".git" / "info" / "exclude").write_text("scratch.py\n")
    assert indexed(root) == ["a.py"]


def test_paths_are_matched_relative_to_the_repository_root(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "build" / "node_modules" / "dist" / "repo", ["src/app.py", "README.md"])
    assert indexed(root) == ["README.md", "src/app.py"]


def test_virtualenvs_are_found_by_their_pyvenv_cfg(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "repo", ["app.py", "py311/pyvenv.cfg", "py311/lib/site.py", "envs/notes.py"])
    assert indexed(root) == ["app.py", "envs/notes.py"]


def test_pruned_directories_are_never_entered(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "repo", ["a.py", "node_modules/x/index.js"])
    file_filter = FileFilter.from_spec(FilterSpec(), root)
    assert not file_filter.accepts_dir("node_modules")
    assert not file_filter.accepts_dir("src/node_modules/x")
    assert file_filter.accepts_dir("src")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, []),
        ("", []),
        ("a, b,,c", ["a", "b", "c"]),
        ("./node_modules/\n./.venv/\r\n\n*.min.js", ["./node_modules/", "./.venv/", "*.min.js"]),
        ("docs%2F%2A%2A\nmy%20dir", ["docs/**", "my dir"]),
        (["a,b", "c", "a"], ["a", "b", "c"]),
    ],
)
def test_parse_patterns(value: str | list[str] | None, expected: list[str]) -> None:
    assert parse_patterns(value) == expected


def test_deepwiki_newline_encoded_excludes_work_end_to_end(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "repo", ["src/app.py", "tests/test_app.py", "docs/a.md"])
    spec = FilterSpec(exclude_dirs="./tests/\n.%2Fdocs%2F")
    assert indexed(root, spec) == ["src/app.py"]


def test_filter_spec_round_trips_through_json_and_rejects_garbage() -> None:
    spec = FilterSpec(include_dirs="src,lib", exclude_files=["*.gen.ts"], use_defaults=False)
    assert spec.include_dirs == ["src", "lib"]
    assert FilterSpec.model_validate_json(spec.model_dump_json()) == spec
    assert FilterSpec.model_validate(spec.model_dump(mode="json")) == spec
    with pytest.raises(ValidationError):
        FilterSpec(include_dirs=42)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        FilterSpec.model_validate({"include_dir": ["typo"]})
