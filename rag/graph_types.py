"""The code graph of one file, as extracted at ingest time and stored in a version's `meta.sqlite`.

`ingest.graph` fills these from a tree-sitter tree; `rag.store` writes them (rows of one file come
and go with the file) and resolves names to definitions across files when a version is committed.
Everything is per file and syntactic, so an update only re-extracts the files that changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rag.pickling import pickled_by_fields

# Bumped when extraction or resolution changes, so an update re-extracts files graphed by an older
# extractor and resolves the edges again (4: names no longer bind across languages; 5: named ES imports,
# `import { a } from`, are recorded, and tsconfig/jsconfig aliases resolve; 6: a function wrapped in a
# call, `const f = useCallback(() => ...)`, is a definition; 7: a Rust path's receiver is marked
# (`PATH_RECEIVER`) and never guessed as a value, `Self::f()` is a call on the own type, and a call on
# the own object goes to the class of its own file when two classes share the name).
GRAPH_VERSION = 7


def graph_change(version: int | None, current: int | None = GRAPH_VERSION) -> str | None:
    """`graph version 5 -> 6` from a code graph made by extractor `version` (`RepoIndex.graph_version`;
    None: no graph) to one made by `current`, None when they are the same: the one wording of why an
    update re-extracted unchanged files (`IngestReport.graph_reason`) and why a wiki page built from the
    graph is written again (`rag.wiki.freshness`)."""
    if version == current:
        return None
    was, now = ("none" if value is None else str(value) for value in (version, current))
    return f"graph version {was} -> {now}"


RECEIVER_SELF = "self"  # a call on the enclosing method's own object (`self.`, `this.`, Go/Rust receiver)
# Ends the receiver of a name reached through a path (Rust `serde_path_to_error::deserialize`: receiver
# `serde_path_to_error::`): a module, a crate or a type, never a value, so no method is guessed for it.
PATH_RECEIVER = "::"


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class GraphDefinition:
    """A function, method or type: `qualname` is dotted inside the file (`Router.add_route`)."""

    name: str
    qualname: str
    kind: str  # "function" | "method" | "class" | "impl" | "attribute" (stored from a constructor argument)
    start_line: int
    end_line: int
    parent: str | None = None  # qualname of the enclosing class/type, for methods
    bases: tuple[str, ...] = ()  # names the class extends/implements/embeds, as written


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class GraphImport:
    """`module` as written (`starlette.routing`, `./router`, `github.com/spf13/cobra`), bound to `alias`.

    `name` is the imported member (`from x import name`), None when the module itself is bound.
    """

    line: int
    module: str
    name: str | None
    alias: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class GraphReference:
    """A use of `name` at `line` inside the definition `scope` ('' for module level).

    `kind` is "call" (a call or instantiation), "read" (an attribute of a settings/options object, or
    of `self` that a constructor stored) or "store" (a constructor storing an argument on `self`).
    `receiver` is what the name was reached through:
    `RECEIVER_SELF`, an identifier (`router`, `os`), a path ending with `PATH_RECEIVER`
    (`crate.routing::` for `crate::routing::get`), or None for a bare name.
    """

    line: int
    scope: str
    name: str
    kind: str
    receiver: str | None = None


@pickled_by_fields
@dataclass(slots=True)
class FileGraph:
    """Everything the graph knows about one file."""

    definitions: list[GraphDefinition] = field(default_factory=list)
    imports: list[GraphImport] = field(default_factory=list)
    references: list[GraphReference] = field(default_factory=list)
