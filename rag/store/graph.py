"""The code graph half of a version's `meta.sqlite`: per-file rows, and their resolution at commit.

Per-file tables hold what extraction saw in one file and come and go with it (an update deletes the
rows of removed and changed files and inserts the new ones; unchanged files' rows carry over):

- `definitions(id, path, name, qualname, kind, parent, start_line, end_line, bases)`: indexed by
  `name`, `qualname` and `path`, so "definitions named X" is one index lookup.
- `imports(path, line, module, name, alias)`: as written in the file.
- `refs(path, line, scope, name, kind, receiver)`: call sites, configuration reads, and constructor
  arguments stored on the instance (`store`) and read back in its methods (`read` through `self`),
  unresolved. A stored attribute is a definition of kind `attribute` (`Client.timeout`).
- `graph_files(path, version)`: files whose graph was extracted (and by which extractor version).

Tables derived from all of them are rebuilt when the version is committed, because a change in one
file can change what a name in another file resolves to:

- `import_edges(path, line, alias, target_path)`: imports resolved to indexed files.
- `edges(src_id, dst_id, kind, path, line, name, exact)`: `call`, `read`, `store` and `inherit` edges
  between definitions (`src_id` NULL for module-level code); `exact` is 0 when a name was matched only by
  being the one definition of that name in the repository.
"""

from __future__ import annotations

import posixpath
import re
import sqlite3
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rag.graph_types import PATH_RECEIVER, RECEIVER_SELF, FileGraph
from rag.js_paths import CONFIG_NAMES, load_configs, module_target

GRAPH_DDL = """
CREATE TABLE IF NOT EXISTS definitions (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    name TEXT NOT NULL,
    qualname TEXT NOT NULL,
    kind TEXT NOT NULL,
    parent TEXT,
    start_line INTEGER NOT NULL,
    end_line INTEGER NOT NULL,
    bases TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS definitions_name ON definitions(name);
CREATE INDEX IF NOT EXISTS definitions_qualname ON definitions(qualname);
CREATE INDEX IF NOT EXISTS definitions_path ON definitions(path, start_line);
CREATE TABLE IF NOT EXISTS imports (
    path TEXT NOT NULL,
    line INTEGER NOT NULL,
    module TEXT NOT NULL,
    name TEXT,
    alias TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS imports_path ON imports(path);
CREATE TABLE IF NOT EXISTS refs (
    path TEXT NOT NULL,
    line INTEGER NOT NULL,
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    receiver TEXT
);
CREATE INDEX IF NOT EXISTS refs_path ON refs(path);
CREATE TABLE IF NOT EXISTS graph_files (path TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS import_edges (
    path TEXT NOT NULL,
    line INTEGER NOT NULL,
    alias TEXT NOT NULL,
    target_path TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS import_edges_path ON import_edges(path);
CREATE INDEX IF NOT EXISTS import_edges_target ON import_edges(target_path);
CREATE TABLE IF NOT EXISTS edges (
    src_id INTEGER,
    dst_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    line INTEGER NOT NULL,
    name TEXT NOT NULL,
    exact INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS edges_src ON edges(src_id);
CREATE INDEX IF NOT EXISTS edges_dst ON edges(dst_id);
"""

# A bare name defined this many times or more in the repository is too generic to guess at.
MAX_GUESSES = 3
GRAPH_TABLES = ("definitions", "imports", "refs", "graph_files")
# The files whose text the resolver reads (module paths, import aliases); of others only the path.
RESOLVER_READS = ("go.mod", *CONFIG_NAMES)
# Files whose code can name each other's definitions. A name never binds across families: in a
# repository with a TypeScript front end and a Python back end, `items.filter()` in a `.tsx` file is
# not the Python method `LogFilter.filter`.
_FAMILIES = {
    ".py": "python", ".pyi": "python",
    ".js": "js", ".mjs": "js", ".cjs": "js", ".jsx": "js",
    ".ts": "js", ".mts": "js", ".cts": "js", ".tsx": "js",
    ".go": "go", ".java": "java", ".rs": "rust",
}  # fmt: skip


def language_family(path: str) -> str:
    """The family of `path`'s language (its extension when the graph knows no family for it)."""
    extension = posixpath.splitext(path)[1].lower()
    return _FAMILIES.get(extension, extension)


def create_graph_schema(conn: sqlite3.Connection) -> None:
    """The graph tables (idempotent: a version built before the graph existed gets them on update).

    Statement by statement: `executescript` would commit the builder's open transaction.
    """
    for statement in GRAPH_DDL.split(";"):
        if statement.strip():
            conn.execute(statement)


# One write: an SQL statement (SQLite's `?` placeholders) and the rows to run it with.
GraphWrite = tuple[str, list[tuple[Any, ...]]]


def file_graph_writes(path: str, graph: FileGraph | None = None, version: int = 0) -> list[GraphWrite]:
    """What replaces the per-file rows of `path` with `graph`'s (extracted by extractor `version`),
    or with no `graph` only removes them; edges are rebuilt by `resolve` at commit. Written once for
    the SQLite and the PostgreSQL writers (which swap the placeholders)."""
    writes: list[GraphWrite] = [(f"DELETE FROM {table} WHERE path = ?", [(path,)]) for table in GRAPH_TABLES]
    if graph is None:
        return writes
    definitions = [
        (path, d.name, d.qualname, d.kind, d.parent, d.start_line, d.end_line, ",".join(d.bases))
        for d in graph.definitions
    ]
    return [
        *writes,
        (
            "INSERT INTO definitions(path, name, qualname, kind, parent, start_line, end_line, bases) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            definitions,
        ),
        (
            "INSERT INTO imports VALUES (?, ?, ?, ?, ?)",
            [(path, i.line, i.module, i.name, i.alias) for i in graph.imports],
        ),
        (
            "INSERT INTO refs VALUES (?, ?, ?, ?, ?, ?)",
            [(path, r.line, r.scope, r.name, r.kind, r.receiver) for r in graph.references],
        ),
        ("INSERT INTO graph_files VALUES (?, ?)", [(path, version)]),
    ]


def write_file_graph(conn: sqlite3.Connection, path: str, graph: FileGraph | None, version: int = 0) -> None:
    """Replace the rows of `path` with `graph` (None: remove them)."""
    for sql, rows in file_graph_writes(path, graph, version):
        conn.executemany(sql, rows)


def graphed_files(conn: sqlite3.Connection) -> dict[str, int]:
    """`path -> extractor version` of the files whose graph is stored."""
    return dict(conn.execute("SELECT path, version FROM graph_files"))


# alias -> (files it names, the member it binds or None for the module itself)
_Bound = dict[str, tuple[list[str], str | None]]


@dataclass(frozen=True, slots=True)
class _Def:
    id: int
    path: str
    name: str
    qualname: str
    kind: str
    parent: str | None
    bases: tuple[str, ...]


def _kin(path: str, definitions: Iterable[_Def]) -> list[_Def]:
    """The `definitions` that code in `path` can name: those in its language family."""
    family = language_family(path)
    return [d for d in definitions if language_family(d.path) == family]


class _Resolver:
    """Name resolution over every file of the version being committed."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.paths = [row[0] for row in conn.execute("SELECT path FROM files")]
        self.path_set = set(self.paths)
        self.defs: list[_Def] = [
            _Def(row[0], row[1], row[2], row[3], row[4], row[5], tuple(b for b in row[6].split(",") if b))
            for row in conn.execute(
                "SELECT id, path, name, qualname, kind, parent, bases FROM definitions ORDER BY id"
            )
        ]
        self.by_qualname: dict[tuple[str, str], _Def] = {}
        self.top: dict[tuple[str, str], list[_Def]] = defaultdict(list)
        self.by_name: dict[str, list[_Def]] = defaultdict(list)
        self.methods: dict[tuple[str, str], list[_Def]] = defaultdict(list)
        self.classes: dict[str, list[_Def]] = defaultdict(list)
        self.attributes: dict[tuple[str, str], list[_Def]] = defaultdict(list)
        self.bases: dict[str, set[str]] = defaultdict(set)
        self.by_dir: dict[tuple[str, str], list[_Def]] = defaultdict(list)
        for d in self.defs:
            if d.bases:
                self.bases[d.name].update(d.bases)
            if d.kind == "impl":
                continue
            self.by_qualname.setdefault((d.path, d.qualname), d)
            if d.kind == "attribute":
                self.attributes[((d.parent or "").rsplit(".", 1)[-1], d.name)].append(d)
                continue
            self.by_name[d.name].append(d)
            if d.parent is not None and d.kind == "method":
                self.methods[(d.parent.rsplit(".", 1)[-1], d.name)].append(d)
            if d.kind == "class":
                self.classes[d.name].append(d)
            if d.qualname == d.name:
                self.top[(d.path, d.name)].append(d)
                self.by_dir[(posixpath.dirname(d.path), d.name)].append(d)
        self.python_modules = _python_module_map(p for p in self.paths if p.endswith((".py", ".pyi")))
        self.go_modules = self._go_modules()
        self.js_configs = load_configs(self.paths, self._text)

    # imports --------------------------------------------------------------------------------------

    def _text(self, path: str) -> str | None:
        row = self.conn.execute("SELECT text FROM files WHERE path = ?", (path,)).fetchone()
        return row[0] if row else None

    def _go_modules(self) -> list[tuple[str, str]]:
        """(module path, directory) of every go.mod, longest module first."""
        found = []
        for path in self.paths:
            if posixpath.basename(path) != "go.mod":
                continue
            match = re.search(r"^module\s+(\S+)", self._text(path) or "", re.MULTILINE)
            if match:
                found.append((match.group(1), posixpath.dirname(path)))
        return sorted(found, key=lambda item: -len(item[0]))

    def import_targets(self, path: str, module: str, name: str | None) -> tuple[list[str], bool]:
        """Files `module` names from `path`, and whether the alias binds a module (True) or a member."""
        if path.endswith((".py", ".pyi")):
            return self._python_targets(path, module, name)
        if path.endswith((".js", ".mjs", ".cjs", ".jsx", ".ts", ".tsx", ".mts", ".cts")):
            found = self._js_target(path, module)
            return ([found] if found else []), name is None
        if path.endswith(".go"):
            return self._go_targets(module), True
        if path.endswith(".java"):
            suffix = module.replace(".", "/") + ".java"
            return [p for p in self.paths if p == suffix or p.endswith("/" + suffix)][:1], False
        if path.endswith(".rs"):
            return self._rust_targets(path, module)
        return [], True

    def _python_targets(self, path: str, module: str, name: str | None) -> tuple[list[str], bool]:
        dots = len(module) - len(module.lstrip("."))
        rest = module[dots:]
        if dots:
            base = posixpath.dirname(path)
            for _ in range(dots - 1):
                base = posixpath.dirname(base)
            stem = posixpath.join(base, *rest.split(".")) if rest else base
            candidates = [f"{stem}.py", f"{stem}/__init__.py"]
            if name:
                submodule = [f"{stem}/{name}.py", f"{stem}/{name}/__init__.py"]
                hit = [p for p in submodule if p in self.path_set]
                if hit:
                    return hit[:1], True
            return [p for p in candidates if p in self.path_set][:1], name is None
        if name:
            module_files = self.python_modules.get(f"{rest}.{name}")
            if module_files:
                return module_files, True
        return self.python_modules.get(rest, []), name is None

    def _js_target(self, path: str, module: str) -> str | None:
        return module_target(path, module, self.js_configs, self.path_set.__contains__)

    def _go_targets(self, module: str) -> list[str]:
        for prefix, folder in self.go_modules:
            if module == prefix or module.startswith(prefix + "/"):
                folder = posixpath.join(folder, module[len(prefix) + 1 :]) if module != prefix else folder
                return [
                    p for p in self.paths
                    if p.endswith(".go") and posixpath.dirname(p) == folder and not p.endswith("_test.go")
                ]  # fmt: skip
        return []

    def _rust_targets(self, path: str, module: str) -> tuple[list[str], bool]:
        parts = module.split("::")
        marker = path.find("src/")
        crate_root = path[: marker + 4] if marker >= 0 else ""
        if parts[0] == "crate":
            base, parts = crate_root.rstrip("/"), parts[1:]
        elif parts[0] in ("super", "self"):
            base = posixpath.dirname(path)
            if parts[0] == "super" and posixpath.basename(path) in ("mod.rs", "lib.rs"):
                base = posixpath.dirname(base)
            parts = parts[1:]
        else:
            crate = parts[0].replace("_", "-")
            roots = [
                root for root in (f"{crate}/src", f"{parts[0]}/src")
                if any(path.startswith(root + "/") for path in self.paths)
            ]  # fmt: skip
            if not roots:
                return [], True
            base, parts = roots[0], parts[1:]
        for keep in range(len(parts), -1, -1):
            stem = posixpath.join(base, *parts[:keep]) if keep else base
            options = [f"{stem}.rs", f"{stem}/mod.rs"] if keep else [f"{stem}/lib.rs", f"{stem}/main.rs"]
            hit = [p for p in options if p in self.path_set]
            if hit:
                return hit[:1], keep == len(parts)
        return [], True

    def resolve_imports(self) -> dict[str, _Bound]:
        """`path -> alias -> (target files, member or None)`, written to `import_edges` as well."""
        bound: dict[str, _Bound] = defaultdict(dict)
        rows: list[tuple[Any, ...]] = []
        for path, line, module, name, alias in self.conn.execute(
            "SELECT path, line, module, name, alias FROM imports"
        ):
            targets, is_module = self.import_targets(path, module, name)
            if not targets:
                continue
            member = None if is_module else (name or module.replace("::", ".").rsplit(".", 1)[-1])
            bound[path][alias] = (targets, member)
            rows.extend((path, line, alias, target) for target in targets)
        self.conn.executemany("INSERT INTO import_edges VALUES (?, ?, ?, ?)", rows)
        return bound

    # names ----------------------------------------------------------------------------------------

    def method(
        self, owner: str, name: str, table: dict[tuple[str, str], list[_Def]] | None = None
    ) -> list[_Def]:
        """`name` on class `owner` or the nearest base class that has it (a method, or an attribute
        with `table=self.attributes`)."""
        members = self.methods if table is None else table
        queue, seen = [owner], set()
        while queue:
            current = queue.pop(0)
            if current in seen:
                continue
            seen.add(current)
            found = members.get((current, name))
            if found:
                return found
            queue.extend(sorted(self.bases.get(current, ())))
        return []

    def attribute(self, path: str, scope: str, name: str) -> list[_Def]:
        """The stored attribute `self.name` means in `scope`: of its class (or a base), or of the
        constructor function `scope` starts with (`function Route(path) { this.path = path }`)."""
        owner = self.owner_of(path, scope) or scope.split(".", 1)[0]
        return self.method(owner, name, self.attributes) if owner else []

    def own_method(self, path: str, scope: str, name: str) -> tuple[list[_Def], bool]:
        """`self.name()` (`Self::name()`) at `scope`: the method of the class the code is in, or of a base.
        Of two classes of that name (axum's `Query` and axum-extra's), the one in this file."""
        owner = self.owner_of(path, scope)
        if not owner:
            return [], False
        found = self.method(owner, name)
        return [d for d in found if d.path == path] or found, True

    def owner_of(self, path: str, scope: str) -> str | None:
        """The class the code at `scope` is a method (or nested function) of."""
        parts = scope.split(".")
        for size in range(len(parts), 0, -1):
            d = self.by_qualname.get((path, ".".join(parts[:size])))
            if d is None:
                continue
            if d.kind == "class":
                return d.name
            if d.kind == "method" and d.parent:
                return d.parent.rsplit(".", 1)[-1]
        return None

    def bare(self, path: str, scope: str, name: str, imports: _Bound) -> tuple[list[_Def], bool]:
        """What a bare `name` used at `scope` in `path` means; (defs, exact)."""
        if scope:
            nested = self.by_qualname.get((path, f"{scope}.{name}"))
            if nested is not None:
                return [nested], True
        local = self.top.get((path, name))
        if local:
            return local, True
        bound = imports.get(name)
        if bound is not None:
            targets, member = bound
            found = [d for target in targets for d in self.top.get((target, member or name), [])]
            if found:
                return found, True
        same_package = self.by_dir.get((posixpath.dirname(path), name)) if path.endswith(".go") else None
        if same_package:
            return same_package, True
        everywhere = [d for d in _kin(path, self.by_name.get(name, [])) if d.qualname == d.name]
        return (everywhere, False) if 0 < len(everywhere) <= MAX_GUESSES else ([], False)

    def through(
        self, path: str, scope: str, receiver: str, name: str, imports: _Bound
    ) -> tuple[list[_Def], bool]:
        """What `receiver.name` means: a module member, a class's method, or a guess by method name (for
        a value only: a path's receiver, `serde_path_to_error::deserialize`, names a module or a type,
        and a crate outside the repository has no method of it here)."""
        if receiver == RECEIVER_SELF:
            return self.own_method(path, scope, name)
        is_path = receiver.endswith(PATH_RECEIVER)
        receiver = receiver.removesuffix(PATH_RECEIVER)
        head = receiver.split(".", 1)[0]
        bound = imports.get(receiver) or imports.get(head)
        if bound is not None:
            targets, member = bound
            if member is None:
                found = [d for target in targets for d in self.top.get((target, name), [])]
            else:
                found = self.method(member, name)
            if found:
                return found, True
        leaf = receiver.rsplit(".", 1)[-1]
        if leaf in self.classes:
            found = _kin(path, self.method(leaf, name))
            if found:
                return found, True
        if is_path:
            return [], False
        guesses = [d for d in _kin(path, self.by_name.get(name, [])) if d.kind == "method"]
        if len(guesses) > 1:
            # `adapter.send()`: a variable is usually named after its class (`HTTPAdapter`, `BaseAdapter`).
            word = leaf.lstrip("_").replace("_", "").lower()
            typed = [d for d in guesses if d.parent and d.parent.rsplit(".", 1)[-1].lower().endswith(word)]
            if word and 0 < len(typed) <= MAX_GUESSES + 1:
                return typed, False
        return (guesses, False) if 0 < len(guesses) <= MAX_GUESSES else ([], False)

    def resolve(self) -> None:
        imports = self.resolve_imports()
        rows: list[tuple[int | None, int, str, str, int, str, int]] = []
        for path, line, scope, name, kind, receiver in self.conn.execute(
            "SELECT path, line, scope, name, kind, receiver FROM refs"
        ):
            file_imports = imports.get(path, {})
            if kind in ("read", "store") and receiver == RECEIVER_SELF:
                targets, exact = self.attribute(path, scope, name), True
            elif receiver is None:
                targets, exact = self.bare(path, scope, name, file_imports)
            else:
                targets, exact = self.through(path, scope, receiver, name, file_imports)
            source = self.by_qualname.get((path, scope)) if scope else None
            # A method found through a class or base by name alone may live in another language.
            for target in _kin(path, targets):
                if source is not None and target.id == source.id:
                    continue
                rows.append((source.id if source else None, target.id, kind, path, line, name, int(exact)))
        for d in self.defs:
            if not d.bases:
                continue
            source = d
            if d.kind == "impl":
                owners = self.top.get((d.path, d.name)) or self.classes.get(d.name, [])
                if not owners:
                    continue
                source = next(iter(owners))
            for base in d.bases:
                targets, exact = self.bare(d.path, "", base, imports.get(d.path, {}))
                for target in targets:
                    if target.kind == "class" and target.id != source.id:
                        rows.append((source.id, target.id, "inherit", d.path, 0, base, int(exact)))
        self.conn.executemany("INSERT INTO edges VALUES (?, ?, ?, ?, ?, ?, ?)", rows)


def _python_module_map(paths: Iterable[str]) -> dict[str, list[str]]:
    """Dotted module names (every suffix of the path: `src/pkg/mod.py` is `pkg.mod` too) -> files."""
    modules: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        stem = path.rsplit(".", 1)[0]
        if stem.endswith("/__init__"):
            stem = stem[: -len("/__init__")]
        parts = stem.split("/")
        for start in range(len(parts)):
            modules[".".join(parts[start:])].append(path)
    return modules


def resolve(conn: sqlite3.Connection) -> None:
    """Rebuild `import_edges` and `edges` from the per-file rows (called once, at commit)."""
    conn.execute("DELETE FROM import_edges")
    conn.execute("DELETE FROM edges")
    _Resolver(conn).resolve()
