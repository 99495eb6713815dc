"""Which files of a repository get indexed.

The rule, in order (see README "Filters"):

1. include narrows: if any include pattern is given, a file must match an include-dir or an
   include-file pattern;
2. the user's excludes remove;
3. the default excludes remove (VCS folders, dependencies, build outputs, lock files, generated and
   binary files) unless `use_defaults` is off; an include never silently drops them;
4. the repository's own `.gitignore` files (root and nested) and `.git/info/exclude` remove.

Patterns are gitignore-style (`pathspec`) and always matched against paths relative to the
repository root, so a checkout that happens to live under `/tmp/build/` is still indexed. A
directory pattern matches the directory and everything under it; a leading `./` anchors a pattern
at the root (deepwiki sends `./node_modules/`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from pathspec import GitIgnoreSpec, PathSpec
from pydantic import BaseModel, ConfigDict, field_validator

DEFAULT_EXCLUDE_DIRS: tuple[str, ...] = (
    # version control
    ".git", ".hg", ".svn", ".bzr",
    # dependencies and virtualenvs (any folder holding a pyvenv.cfg is skipped as well)
    "node_modules", "bower_components", "jspm_packages", "vendor", "third_party", "Pods", "Carthage",
    ".venv", "venv", "site-packages", "*.egg-info", ".eggs",
    # build outputs
    "dist", "build", "target", "out", "obj", ".next", ".nuxt", ".svelte-kit", ".output", "coverage",
    "htmlcov", ".gradle", ".terraform", "_build", ".dart_tool",
    # caches and editor state
    "__pycache__", ".cache", ".parcel-cache", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".tox",
    ".nox", ".ipynb_checkpoints", ".idea", ".vs", ".turbo",
)  # fmt: skip

DEFAULT_EXCLUDE_FILES: tuple[str, ...] = (
    # lock files
    "*.lock", "package-lock.json", "npm-shrinkwrap.json", "pnpm-lock.yaml", "bun.lockb", "go.sum",
    "packages.lock.json", "composer.lock", "Gemfile.lock", "Cargo.lock", "poetry.lock", "uv.lock",
    # minified, generated and source maps
    "*.min.js", "*.min.css", "*.min.mjs", "*.map", "*.bundle.js", "*_pb2.py", "*_pb2_grpc.py",
    "*_pb2.pyi", "*.pb.go", "*.pb.cc", "*.pb.h", "*.generated.*", "*.g.dart", "*.designer.cs",
    # binaries, archives, media, fonts, data blobs
    "*.pyc", "*.pyo", "*.pyd", "*.so", "*.so.*", "*.dylib", "*.dll", "*.exe", "*.o", "*.a", "*.lib",
    "*.obj", "*.class", "*.jar", "*.war", "*.ear", "*.whl", "*.egg", "*.wasm", "*.bin",
    "*.zip", "*.tar", "*.gz", "*.tgz", "*.bz2", "*.xz", "*.7z", "*.rar", "*.zst",
    "*.png", "*.jpg", "*.jpeg", "*.gif", "*.bmp", "*.ico", "*.icns", "*.webp", "*.tif", "*.tiff",
    "*.psd", "*.svg", "*.heic", "*.avif",
    "*.mp3", "*.mp4", "*.wav", "*.ogg", "*.flac", "*.avi", "*.mov", "*.mkv", "*.webm", "*.m4a",
    "*.pdf", "*.doc", "*.docx", "*.xls", "*.xlsx", "*.ppt", "*.pptx",
    "*.woff", "*.woff2", "*.ttf", "*.otf", "*.eot",
    "*.db", "*.sqlite", "*.sqlite3", "*.pkl", "*.pickle", "*.npy", "*.npz", "*.h5", "*.hdf5",
    "*.parquet", "*.onnx", "*.pt", "*.pth", "*.ckpt", "*.safetensors", "*.tflite",
    ".DS_Store", "Thumbs.db",
)  # fmt: skip

DEFAULT_EXCLUDES: dict[str, tuple[str, ...]] = {"dirs": DEFAULT_EXCLUDE_DIRS, "files": DEFAULT_EXCLUDE_FILES}

_PATTERN_SEPARATORS = str.maketrans({",": "\n", "\r": "\n"})


def parse_patterns(value: str | Iterable[str] | None) -> list[str]:
    """Patterns from a flag or request field.

    Accepts comma- or newline-separated strings (deepwiki sends newline-separated, percent-encoded
    entries), lists of such strings (a repeated CLI flag) or None. Each entry is URL-decoded and
    stripped; blanks are dropped; order is kept and duplicates removed.
    """
    if value is None:
        return []
    values = [value] if isinstance(value, str) else list(value)
    patterns: list[str] = []
    for item in values:
        for entry in item.translate(_PATTERN_SEPARATORS).split("\n"):
            pattern = unquote(entry).strip()
            if pattern and pattern not in patterns:
                patterns.append(pattern)
    return patterns


class FilterSpec(BaseModel):
    """The user's filter choices, stored in the registry so an update filters the same way."""

    model_config = ConfigDict(extra="forbid")

    include_dirs: list[str] = []
    exclude_dirs: list[str] = []
    include_files: list[str] = []
    exclude_files: list[str] = []
    use_defaults: bool = True
    respect_gitignore: bool = True

    @field_validator("include_dirs", "exclude_dirs", "include_files", "exclude_files", mode="before")
    @classmethod
    def _split(cls, value: object) -> list[str]:
        if value is None or isinstance(value, str | list | tuple):
            return parse_patterns(value)
        raise ValueError("expected a string or a list of strings")


def _normalise(pattern: str, *, directory: bool) -> str:
    """A user pattern in gitignore syntax, relative to the repository root."""
    pattern = pattern.replace("\\", "/")
    if pattern.startswith("./"):
        pattern = "/" + pattern[2:].lstrip("/")
    if directory and not pattern.endswith(("/", "/**")):
        pattern += "/"
    return pattern


def _spec(patterns: Iterable[str], *, directory: bool) -> PathSpec[Any] | None:
    lines = [_normalise(p, directory=directory) for p in patterns]
    return PathSpec.from_lines("gitignore", lines) if lines else None


def _matches(spec: PathSpec[Any] | None, path: str) -> bool:
    return spec is not None and spec.match_file(path)


class FileFilter:
    """Decides file by file (and directory by directory, to prune the walk) what gets indexed."""

    def __init__(self, spec: FilterSpec, root: Path | None = None) -> None:
        self.spec = spec
        self.root = root
        self._include = [
            s
            for s in (_spec(spec.include_dirs, directory=True), _spec(spec.include_files, directory=False))
            if s
        ]
        self._exclude_dirs = _spec(spec.exclude_dirs, directory=True)
        self._exclude_files = _spec(spec.exclude_files, directory=False)
        self._default_dirs = _spec(DEFAULT_EXCLUDE_DIRS, directory=True) if spec.use_defaults else None
        self._default_files = _spec(DEFAULT_EXCLUDE_FILES, directory=False) if spec.use_defaults else None
        self._gitignores: dict[str, GitIgnoreSpec | None] = {}
        self._dir_verdicts: dict[str, bool] = {"": True}

    @classmethod
    def from_spec(cls, spec: FilterSpec, root: Path | None = None) -> FileFilter:
        """`root` is where `.gitignore` files are read from; without it they are not consulted."""
        return cls(spec, root)

    def accepts(self, rel_path: str) -> bool:
        """Whether the file at `rel_path` (posix, relative to the root) is indexed."""
        parent, _, _ = rel_path.rpartition("/")
        if not self.accepts_dir(parent):
            return False
        if self._include and not any(spec.match_file(rel_path) for spec in self._include):
            return False
        if _matches(self._exclude_files, rel_path) or _matches(self._default_files, rel_path):
            return False
        return not self._ignored_by_git(rel_path, is_dir=False)

    def accepts_dir(self, rel_dir: str) -> bool:
        """False when nothing under `rel_dir` can be indexed, so the walk need not enter it."""
        rel_dir = rel_dir.strip("/")
        verdict = self._dir_verdicts.get(rel_dir)
        if verdict is None:
            parent, _, _ = rel_dir.rpartition("/")
            verdict = self.accepts_dir(parent) and not self._excludes_dir(rel_dir)
            self._dir_verdicts[rel_dir] = verdict
        return verdict

    def _excludes_dir(self, rel_dir: str) -> bool:
        as_dir = rel_dir + "/"
        if _matches(self._exclude_dirs, as_dir):
            return True
        if self._default_dirs is not None and (
            self._default_dirs.match_file(as_dir) or self._is_virtualenv(rel_dir)
        ):
            return True
        return self._ignored_by_git(rel_dir, is_dir=True)

    def _is_virtualenv(self, rel_dir: str) -> bool:
        if self.root is None:
            return False
        try:
            return (self.root / rel_dir / "pyvenv.cfg").is_file()
        except OSError:  # a folder this user may not enter: the walk counts it unreadable
            return False

    def _ignored_by_git(self, rel_path: str, *, is_dir: bool) -> bool:
        """gitignore semantics: the deepest `.gitignore` with a matching pattern decides."""
        if self.root is None or not self.spec.respect_gitignore:
            return False
        parts = rel_path.split("/")
        candidate = rel_path + "/" if is_dir else rel_path
        for depth in range(len(parts) - 1, -1, -1):
            base = "/".join(parts[:depth])
            spec = self._gitignore(base)
            if spec is None:
                continue
            relative = candidate[len(base) + 1 :] if base else candidate
            result = spec.check_file(relative)
            if result.include is not None:
                return bool(result.include)
        return False

    def _gitignore(self, rel_dir: str) -> GitIgnoreSpec | None:
        if rel_dir not in self._gitignores:
            self._gitignores[rel_dir] = self._load_gitignore(rel_dir)
        return self._gitignores[rel_dir]

    def _load_gitignore(self, rel_dir: str) -> GitIgnoreSpec | None:
        assert self.root is not None
        directory = self.root / rel_dir if rel_dir else self.root
        sources = [directory / ".gitignore"]
        if not rel_dir:
            sources.append(directory / ".git" / "info" / "exclude")
        lines: list[str] = []
        for source in sources:
            try:
                lines.extend(source.read_text(encoding="utf-8", errors="replace").splitlines())
            except OSError:
                continue
        return GitIgnoreSpec.from_lines(lines) if lines else None
