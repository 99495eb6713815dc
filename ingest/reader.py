"""Finding and reading the files to index.

The walk prunes excluded directories (so `node_modules` costs nothing), never follows symlinks
(nothing outside the repository can be read through one) and sorts paths so every run sees the same
order. Limits are checked on the whole candidate list before any file is read, so an oversized
repository stops at once with a message naming the limit and how to raise it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from charset_normalizer import from_bytes

from ingest.errors import IngestError, LimitExceededError
from ingest.filters import FileFilter
from ingest.languages import language_for
from rag.settings import Settings

SNIFF_BYTES = 8192
# Share of control characters (other than whitespace and form feed) above which a file is binary.
MAX_CONTROL_RATIO = 0.10
_TEXT_CONTROLS = frozenset(b"\t\n\r\f\v\x1b")
_CONTROL_BYTES = bytes(sorted(frozenset(range(32)) - _TEXT_CONTROLS | {0x7F}))
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_TIE_BREAK = "cp1252"


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One file to index: its text with `\\n` newlines, and the SHA-256 of its bytes on disk."""

    path: str
    language: str
    text: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits of one ingest; each has a CLI flag and an environment variable."""

    max_file_bytes: int = 1_000_000
    max_files: int = 20_000
    max_total_bytes: int = 200_000_000

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: int | None) -> Limits:
        """Limits from `REPOLENS_MAX_FILE_BYTES`/`_MAX_FILES`/`_MAX_BYTES`; explicit values (flags) win."""
        values = {
            "max_file_bytes": settings.max_file_bytes,
            "max_files": settings.max_files,
            "max_total_bytes": settings.max_bytes,
        }
        values.update({name: value for name, value in overrides.items() if value is not None})
        return cls(**values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: int | None) -> Limits:
        """`from_settings` of `Settings.from_env(environ)`."""
        return cls.from_settings(Settings.from_env(environ), **overrides)


@dataclass
class SkipStats:
    """How many files were left out, by reason, with a few example paths for reports."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    REASONS = (
        "filtered",
        "filtered_dirs",
        "symlink",
        "hardlink",
        "special",
        "binary",
        "too_large",
        "undecodable",
        "unreadable",
        "unreadable_dirs",
    )
    # Folders, not files: `filtered_dirs` pruned by the filters, `unreadable_dirs` the walk may not
    # open (permissions), whose files are then not indexed (and leave the index on an update).
    DIR_REASONS = ("filtered_dirs", "unreadable_dirs")
    MAX_EXAMPLES = 5

    def add(self, reason: str, path: str) -> None:
        self.counts[reason] += 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < self.MAX_EXAMPLES:
            examples.append(path)

    @property
    def total(self) -> int:
        """Skipped files (folders are counted separately: `DIR_REASONS`)."""
        return sum(count for reason, count in self.counts.items() if reason not in self.DIR_REASONS)

    def as_dict(self) -> dict[str, int]:
        return {reason: self.counts[reason] for reason in self.REASONS if self.counts[reason]}


@dataclass(frozen=True, slots=True)
class Candidate:
    """A file that passed the filters and the per-file size limit, not yet read."""

    path: str
    size: int


def scan(
    root: Path, file_filter: FileFilter, limits: Limits, skipped: SkipStats | None = None
) -> list[Candidate]:
    """The files to read, sorted by path; raises `LimitExceededError` before anything is read."""
    skipped = skipped if skipped is not None else SkipStats()
    root = root.resolve()
    candidates: list[Candidate] = []
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            listing = os.scandir(root / rel_dir)
        except OSError as error:
            if not rel_dir:  # the repository itself (the source check saw it readable: it changed)
                raise IngestError(f"cannot read the folder {root}: {error.strerror or error}") from None
            skipped.add("unreadable_dirs", rel_dir)
            continue
        with listing as entries:
            for entry in entries:
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                if entry.is_symlink():
                    skipped.add("symlink", rel)
                elif entry.is_dir():
                    if file_filter.accepts_dir(rel):
                        stack.append(rel)
                    else:
                        skipped.add("filtered_dirs", rel)
                elif not entry.is_file():
                    skipped.add("special", rel)  # fifos, sockets, devices: reading one could hang
                elif not file_filter.accepts(rel):
                    skipped.add("filtered", rel)
                else:
                    try:
                        info = entry.stat()
                    except OSError:  # a folder we may list but not enter (r--)
                        skipped.add("unreadable", rel)
                        continue
                    size = info.st_size
                    if info.st_nlink > 1:  # a hard link may be a file from outside the repository
                        skipped.add("hardlink", rel)
                    elif size > limits.max_file_bytes:
                        skipped.add("too_large", rel)
                    else:
                        candidates.append(Candidate(rel, size))
    candidates.sort(key=lambda candidate: candidate.path)
    _check_limits(candidates, limits)
    return candidates


def _check_limits(candidates: list[Candidate], limits: Limits) -> None:
    if len(candidates) > limits.max_files:
        raise LimitExceededError(
            f"the repository has {len(candidates):,} files to index, more than the limit of "
            f"{limits.max_files:,} (max_files); narrow it with --include-dirs/--exclude-dirs or raise "
            "the limit with --max-files or REPOLENS_MAX_FILES"
        )
    total = sum(candidate.size for candidate in candidates)
    if total > limits.max_total_bytes:
        raise LimitExceededError(
            f"the files to index total {total:,} bytes, more than the limit of {limits.max_total_bytes:,} "
            "(max_total_bytes); narrow it with --include-dirs/--exclude-dirs or raise the limit with "
            "--max-bytes or REPOLENS_MAX_BYTES"
        )


def is_binary(data: bytes) -> bool:
    """Binary by content: a NUL byte or many control characters near the start (UTF-16 BOMs excepted)."""
    head = data[:SNIFF_BYTES]
    if head.startswith(_UTF16_BOMS):
        return False
    if b"\x00" in head:
        return True
    controls = len(head) - len(head.translate(None, _CONTROL_BYTES))  # in C (byte by byte: 0.25 ms a file)
    return bool(head) and controls / len(head) > MAX_CONTROL_RATIO


def decode(data: bytes) -> str | None:
    """The text of `data`: UTF-8 (with or without BOM), else charset detection; None if undecodable."""
    if data.startswith(_UTF16_BOMS):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    encoding = _guess_encoding(data[: SNIFF_BYTES * 8])
    if encoding is None:
        return None
    try:
        return data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None


def _guess_encoding(sample: bytes) -> str | None:
    """charset-normalizer's pick, except that Windows-1252 wins a tie.

    Short Western-European texts fit several single-byte code pages equally well, and the detector's
    first pick (often cp1250) turns `ï` into `ď`; cp1252 is by far the most common of them in source.
    """
    matches = list(from_bytes(sample))
    if not matches:
        return None
    best = matches[0]
    tied = {m.encoding for m in matches if m.chaos <= best.chaos and m.coherence >= best.coherence}
    return _TIE_BREAK if _TIE_BREAK in tied else best.encoding


def normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


class _NotRegularFile(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _read_regular_file(path: Path) -> bytes:
    """The bytes of `path`, checked again on the open file: it may have been swapped for a
    symlink, a hard link or a fifo since the scan (O_NOFOLLOW, O_NONBLOCK, fstat)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise _NotRegularFile("symlink") from None
        raise
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _NotRegularFile("special")
        if info.st_nlink > 1:
            raise _NotRegularFile("hardlink")
        return handle.read()


def read_source_file(root: Path, candidate: Candidate, skipped: SkipStats | None = None) -> SourceFile | None:
    """The file as a `SourceFile`, or None (counted in `skipped`) if it is binary or undecodable."""
    skipped = skipped if skipped is not None else SkipStats()
    try:
        data = _read_regular_file(root / candidate.path)
    except _NotRegularFile as refused:
        skipped.add(refused.reason, candidate.path)
        return None
    except OSError:
        skipped.add("unreadable", candidate.path)
        return None
    if is_binary(data):
        skipped.add("binary", candidate.path)
        return None
    text = decode(data)
    if text is None:
        skipped.add("undecodable", candidate.path)
        return None
    text = normalise_newlines(text)
    return SourceFile(
        path=candidate.path,
        language=language_for(candidate.path, text),
        text=text,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
    )


def iter_source_files(
    root: Path, file_filter: FileFilter, limits: Limits | None = None, skipped: SkipStats | None = None
) -> Iterator[SourceFile]:
    """Every indexable file under `root` in path order; skipped files are counted in `skipped`."""
    limits = limits or Limits()
    skipped = skipped if skipped is not None else SkipStats()
    root = root.resolve()
    for candidate in scan(root, file_filter, limits, skipped):
        source = read_source_file(root, candidate, skipped)
        if source is not None:
            yield source
