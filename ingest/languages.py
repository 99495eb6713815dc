"""Which language a file is written in, and which languages we can parse with tree-sitter.

The language decides how a file is chunked (syntax tree, headings or line windows) and is stored
with every chunk so searches can be narrowed by language. Grammars come from the per-language
PyPI wheels (never `tree-sitter-language-pack`, which downloads grammars at run time).
"""

from __future__ import annotations

import functools
import importlib
import re
from pathlib import PurePosixPath

from tree_sitter import Language

TEXT = "text"

EXTENSIONS: dict[str, str] = {
    ".py": "python", ".pyi": "python", ".pyw": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
    ".java": "java",
    ".rs": "rust",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".c++": "cpp", ".hh": "cpp", ".hpp": "cpp", ".hxx": "cpp",
    ".h++": "cpp", ".ipp": "cpp", ".tpp": "cpp",
    ".rb": "ruby", ".rake": "ruby", ".gemspec": "ruby", ".ru": "ruby",
    ".php": "php", ".phtml": "php",
    ".cs": "csharp", ".csx": "csharp",
    ".kt": "kotlin", ".kts": "kotlin",
    ".swift": "swift",
    ".scala": "scala", ".sc": "scala",
    ".sh": "shell", ".bash": "shell", ".zsh": "shell", ".fish": "shell", ".ksh": "shell",
    ".ps1": "powershell", ".psm1": "powershell",
    ".bat": "batch", ".cmd": "batch",
    ".md": "markdown", ".markdown": "markdown", ".mdx": "markdown",
    ".rst": "rst", ".rest": "rst",
    ".txt": "text", ".text": "text", ".adoc": "asciidoc", ".org": "org", ".tex": "latex",
    ".json": "json", ".jsonc": "json", ".json5": "json", ".ipynb": "json",
    ".yaml": "yaml", ".yml": "yaml",
    ".toml": "toml", ".ini": "ini", ".cfg": "ini", ".conf": "ini", ".properties": "ini",
    ".xml": "xml", ".xsd": "xml", ".xsl": "xml", ".plist": "xml", ".csproj": "xml", ".pom": "xml",
    ".html": "html", ".htm": "html", ".xhtml": "html",
    ".vue": "vue", ".svelte": "svelte",
    ".css": "css", ".scss": "scss", ".sass": "scss", ".less": "less",
    ".sql": "sql",
    ".graphql": "graphql", ".gql": "graphql", ".proto": "protobuf",
    ".lua": "lua", ".pl": "perl", ".pm": "perl", ".r": "r", ".jl": "julia",
    ".dart": "dart", ".ex": "elixir", ".exs": "elixir", ".erl": "erlang", ".hrl": "erlang",
    ".hs": "haskell", ".ml": "ocaml", ".mli": "ocaml", ".fs": "fsharp", ".fsx": "fsharp",
    ".clj": "clojure", ".cljs": "clojure", ".elm": "elm", ".zig": "zig", ".nim": "nim",
    ".m": "objective-c", ".mm": "objective-c", ".groovy": "groovy", ".gradle": "groovy",
    ".tf": "hcl", ".hcl": "hcl", ".nix": "nix", ".cmake": "cmake", ".mk": "make",
    ".dockerfile": "dockerfile",
}  # fmt: skip

FILENAMES: dict[str, str] = {
    "Makefile": "make", "makefile": "make", "GNUmakefile": "make",
    "Dockerfile": "dockerfile", "Containerfile": "dockerfile",
    "CMakeLists.txt": "cmake",
    "Rakefile": "ruby", "Gemfile": "ruby", "Podfile": "ruby", "Vagrantfile": "ruby",
    "Jenkinsfile": "groovy",
    "BUILD": "starlark", "BUILD.bazel": "starlark", "WORKSPACE": "starlark",
    ".bashrc": "shell", ".zshrc": "shell", ".profile": "shell",
}  # fmt: skip

# Interpreter named on a `#!` line -> language, for extension-less scripts.
_SHEBANGS: dict[str, str] = {
    "python": "python", "python3": "python", "node": "javascript", "deno": "typescript",
    "bash": "shell", "sh": "shell", "zsh": "shell", "ksh": "shell", "dash": "shell", "fish": "shell",
    "ruby": "ruby", "php": "php", "perl": "perl", "lua": "lua", "Rscript": "r",
}  # fmt: skip
_SHEBANG = re.compile(r"#!\s*(?:\S*/)?(?:env\s+(?:-\S+\s+)*)?([A-Za-z]+[0-9.]*)")
# `[ \t]*`, not `\s*`: `^\s*` crossed line ends, so a header of blank lines was rescanned from every line
# (quadratic in a file a repository controls); possessive runs never give back what they matched.
_CPP_IN_HEADER = re.compile(r"^[ \t]*+(?:class\s++\w|namespace\s++\w*+\s*+\{|template\s*+<)", re.MULTILINE)

# language -> (module, function returning the grammar pointer)
_GRAMMARS: dict[str, tuple[str, str]] = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "go": ("tree_sitter_go", "language"),
    "java": ("tree_sitter_java", "language"),
    "rust": ("tree_sitter_rust", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
    "ruby": ("tree_sitter_ruby", "language"),
    "php": ("tree_sitter_php", "language_php"),
    "csharp": ("tree_sitter_c_sharp", "language"),
}


def language_for(path: str, text: str | None = None) -> str:
    """The language of `path` (posix, relative); `text` refines extension-less scripts and `.h` headers."""
    name = PurePosixPath(path).name
    if name in FILENAMES:
        return FILENAMES[name]
    suffix = PurePosixPath(name.lower()).suffix
    language = EXTENSIONS.get(suffix)
    if language == "c" and suffix == ".h" and text is not None and _CPP_IN_HEADER.search(text):
        return "cpp"
    if language is None and name.lower().startswith("dockerfile"):
        return "dockerfile"
    if language is None and text is not None and text.startswith("#!"):
        match = _SHEBANG.match(text)
        if match:
            return _SHEBANGS.get(match.group(1).rstrip("0123456789."), TEXT)
    return language or TEXT


def has_grammar(language: str) -> bool:
    return language in _GRAMMARS


@functools.cache
def grammar(language: str) -> Language | None:
    """The tree-sitter grammar for `language`, loaded once per process; None if we have none."""
    spec = _GRAMMARS.get(language)
    if spec is None:
        return None
    module = importlib.import_module(spec[0])
    return Language(getattr(module, spec[1])())
