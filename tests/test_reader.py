"""Reading files: binary detection by content, encodings, newlines, size limits and repo limits."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.errors import LimitExceededError
from ingest.filters import FileFilter, FilterSpec
from ingest.languages import has_grammar, language_for
from ingest.reader import (
    MAX_CONTROL_RATIO,
    SNIFF_BYTES,
    Limits,
    SkipStats,
    is_binary,
    iter_source_files,
    scan,
)
from rag.errors import RepoLensError


def read_all(root: Path, limits: Limits | None = None, skipped: SkipStats | None = None) -> dict[str, object]:
    file_filter = FileFilter.from_spec(FilterSpec(), root)
    return {file.path: file for file in iter_source_files(root, file_filter, limits or Limits(), skipped)}


def test_binary_is_detected_by_content_not_extension(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_bytes(b"looks like text\x00\x01\x02 but is not")
    (tmp_path / "noisy.cfg").write_bytes(bytes(range(1, 9)) * 200)
    (tmp_path / "deploy").write_text("#!/usr/bin/env bash\nset -euo pipefail\necho deploying\n")
    (tmp_path / "tool").write_text("#!/usr/bin/env python3\nprint('hi')\n")
    skipped = SkipStats()
    files = read_all(tmp_path, skipped=skipped)
    assert sorted(files) == ["deploy", "tool"]
    assert files["deploy"].language == "shell" and files["tool"].language == "python"
    assert skipped.as_dict() == {"binary": 2}
    assert sorted(skipped.examples["binary"]) == ["noisy.cfg", "notes.txt"]


def test_ansi_coloured_logs_and_form_feeds_are_text() -> None:
    assert not is_binary(b"\x1b[31mred\x1b[0m line\n\x0c next page\n" * 50)
    assert not is_binary(b"")


def _reference_is_binary(data: bytes) -> bool:
    """`is_binary` byte by byte, as first written."""
    head = data[:SNIFF_BYTES]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return False
    if b"\x00" in head:
        return True
    controls = sum(1 for byte in head if (byte < 32 and byte not in b"\t\n\r\f\v\x1b") or byte == 0x7F)
    return bool(head) and controls / len(head) > MAX_CONTROL_RATIO


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=SNIFF_BYTES + 200)
    | st.lists(st.sampled_from(b"\x01\x07\x7f\x1b\t\nab~"), max_size=400).map(bytes)
)
def test_binary_detection_counts_control_bytes_as_its_definition(data: bytes) -> None:
    assert is_binary(data) == _reference_is_binary(data)


def test_encodings_fall_back_and_newlines_are_normalised(tmp_path: Path) -> None:
    latin = "# café, naïve, déjà vu\nname = 'Grüße'\n"
    (tmp_path / "latin.py").write_bytes(latin.encode("latin-1"))
    (tmp_path / "windows.py").write_bytes(b"a = 1\r\nb = 2\r\rc = 3\r\n")
    (tmp_path / "bom.py").write_bytes("\ufeffx = 'ü'\n".encode())
    (tmp_path / "wide.txt").write_bytes("UTF-16 text ✓\n".encode("utf-16"))
    files = read_all(tmp_path)
    assert files["latin.py"].text == latin
    assert files["windows.py"].text == "a = 1\nb = 2\n\nc = 3\n"
    assert files["bom.py"].text == "x = 'ü'\n"
    assert files["wide.txt"].text == "UTF-16 text ✓\n"
    raw = (tmp_path / "windows.py").read_bytes()
    assert files["windows.py"].sha256 == hashlib.sha256(raw).hexdigest()
    assert files["windows.py"].size == len(raw)


def test_files_over_the_size_limit_are_skipped_and_counted(tmp_path: Path) -> None:
    (tmp_path / "small.py").write_text("x = 1\n")
    (tmp_path / "huge.py").write_text("x = 1\n" * 1000)
    skipped = SkipStats()
    files = read_all(tmp_path, Limits(max_file_bytes=100), skipped)
    assert list(files) == ["small.py"]
    assert skipped.as_dict() == {"too_large": 1} and skipped.total == 1


def test_too_many_files_stops_before_reading_with_a_clear_message(tmp_path: Path) -> None:
    for index in range(5):
        (tmp_path / f"m{index}.py").write_text("pass\n")
    with pytest.raises(LimitExceededError) as caught:
        read_all(tmp_path, Limits(max_files=4))
    assert caught.value.code == "limit_exceeded"
    message = str(caught.value)
    assert "5 files" in message and "max_files" in message
    assert "--max-files" in message and "REPOLENS_MAX_FILES" in message


def test_too_many_bytes_stops_with_a_clear_message(tmp_path: Path) -> None:
    for index in range(3):
        (tmp_path / f"m{index}.py").write_text("x = 1\n" * 100)
    with pytest.raises(LimitExceededError) as caught:
        read_all(tmp_path, Limits(max_total_bytes=1000))
    message = str(caught.value)
    assert "1,800 bytes" in message and "--max-bytes" in message and "REPOLENS_MAX_BYTES" in message


def test_symlinks_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.py").write_text("TOKEN = 'x'\n")
    root = tmp_path / "repo"
    root.mkdir()
    (root / "app.py").write_text("pass\n")
    (root / "leak.py").symlink_to(outside / "secret.py")
    (root / "linked_dir").symlink_to(outside, target_is_directory=True)
    skipped = SkipStats()
    assert list(read_all(root, skipped=skipped)) == ["app.py"]
    assert skipped.as_dict() == {"symlink": 2}


def test_order_is_sorted_by_path_and_scan_lists_candidates(tmp_path: Path) -> None:
    for path in ["b.py", "a/z.py", "a.py", "a/b/c.py"]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("pass\n")
    assert list(read_all(tmp_path)) == ["a.py", "a/b/c.py", "a/z.py", "b.py"]
    candidates = scan(tmp_path, FileFilter.from_spec(FilterSpec(), tmp_path), Limits())
    assert [(c.path, c.size) for c in candidates] == [
        ("a.py", 5),
        ("a/b/c.py", 5),
        ("a/z.py", 5),
        ("b.py", 5),
    ]


def test_limits_from_environment_and_flags() -> None:
    limits = Limits.from_env({"REPOLENS_MAX_FILES": "50", "REPOLENS_MAX_BYTES": "1_000"}, max_file_bytes=10)
    assert limits == Limits(max_file_bytes=10, max_files=50, max_total_bytes=1000)
    assert Limits.from_env({}, max_files=None) == Limits()
    with pytest.raises(RepoLensError, match="REPOLENS_MAX_FILES"):
        Limits.from_env({"REPOLENS_MAX_FILES": "lots"})


@pytest.mark.parametrize(
    ("path", "text", "language"),
    [
        ("src/app.tsx", None, "tsx"),
        ("lib/x.mjs", None, "javascript"),
        ("include/vec.h", "template <typename T> class Vec {};", "cpp"),
        ("include/vec.h", "int add(int a, int b);", "c"),
        ("Makefile", None, "make"),
        ("Dockerfile.dev", None, "dockerfile"),
        ("docs/guide.rst", None, "rst"),
        ("LICENSE", "MIT License", "text"),
        ("bin/run", "#!/bin/sh\necho hi", "shell"),
    ],
)
def test_languages(path: str, text: str | None, language: str) -> None:
    assert language_for(path, text) == language


def test_grammars_cover_the_required_languages() -> None:
    required = [
        "python",
        "javascript",
        "typescript",
        "tsx",
        "go",
        "java",
        "rust",
        "c",
        "cpp",
        "ruby",
        "php",
        "csharp",
    ]
    assert all(has_grammar(language) for language in required)
    assert not has_grammar("markdown")


def test_hard_links_and_special_files_are_skipped_like_symlinks(tmp_path: Path) -> None:
    """A hard link inside a repository to a file outside it (say /etc/passwd) was indexed."""
    import os

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    root = tmp_path / "repo"
    root.mkdir()
    (root / "ok.py").write_text("print('ok')\n")
    os.link(outside / "passwd", root / "passwd.txt")
    os.mkfifo(root / "pipe.txt")  # reading a fifo would block the ingest forever
    skipped = SkipStats()
    files = read_all(root, skipped=skipped)
    assert sorted(files) == ["ok.py"]
    assert skipped.as_dict() == {"hardlink": 1, "special": 1}


def test_a_file_swapped_after_the_scan_is_checked_again_when_read(tmp_path: Path) -> None:
    import os

    from ingest.reader import Candidate, read_source_file

    (tmp_path / "secret").write_text("top secret\n")
    (tmp_path / "a.py").symlink_to(tmp_path / "secret")
    os.link(tmp_path / "secret", tmp_path / "b.py")
    skipped = SkipStats()
    assert read_source_file(tmp_path, Candidate("a.py", 10), skipped) is None
    assert read_source_file(tmp_path, Candidate("b.py", 10), skipped) is None
    assert skipped.as_dict() == {"symlink": 1, "hardlink": 1}
