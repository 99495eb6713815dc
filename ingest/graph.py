"""Extracting a file's code graph from its tree-sitter tree: definitions, imports, calls, bases.

Works from the same tree the chunker parsed (`extract(file, tree)`), so a file is parsed once.
Everything here is syntactic and per file: names are recorded as written (`router.handle`,
`Router::new`, `self.send`); `rag.store.graph` resolves them to definitions across files when a
version is committed. Languages: Python, JavaScript/TypeScript, Go, Java, Rust; others get none.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from tree_sitter import Node, Tree

from rag.graph_types import (
    PATH_RECEIVER,
    RECEIVER_SELF,
    FileGraph,
    GraphDefinition,
    GraphImport,
    GraphReference,
)

# Object names that stand for the enclosing method's own instance.
_SELF_NAMES = frozenset({"self", "this", "cls", "super"})
# Receivers whose attribute reads are worth recording as configuration reads.
_CONFIG_RECEIVERS = frozenset({"settings", "config", "conf", "options", "opts", "cfg", "env"})
_MAX_RECEIVER = 40
_IMPORTS = frozenset(
    {"import_statement", "import_from_statement", "import_spec", "import_declaration", "use_declaration"}
)
# Subtrees that never hold a definition, an import or a call.
_OPAQUE = frozenset(
    {
        "comment", "line_comment", "block_comment", "string", "string_literal", "raw_string_literal",
        "interpreted_string_literal", "template_string", "string_content", "escape_sequence",
        "identifier", "property_identifier", "field_identifier", "type_identifier", "number", "integer",
        "float", "true", "false", "none", "null", "decimal_integer_literal", "int_literal",
    }
)  # fmt: skip
_JS_HERITAGE = ("class_heritage", "extends_clause", "implements_clause", "extends_type_clause")
_QUALIFIED_TYPES = ("member_expression", "qualified_type", "scoped_type_identifier", "nested_type_identifier")
_ASSIGNMENTS = frozenset({"assignment", "assignment_expression"})
# What may bind a JavaScript function to a name (`_Extractor._js_function_binding`).
_JS_BINDINGS = frozenset({"variable_declarator", "assignment_expression", "pair"})
# Names a constructor's parameter binds: plain, typed, defaulted, splat, destructured.
_PARAM_NAMES = ("identifier", "shorthand_property_identifier_pattern")
_INSTANCE_NAMES = frozenset({"self", "this"})


@dataclass(frozen=True)
class _Syntax:
    """Node types of one language's grammar that the extractor cares about."""

    functions: frozenset[str]
    classes: frozenset[str]
    calls: dict[str, str]  # call node type -> field holding the callee
    members: dict[str, tuple[str, str]]  # member node type -> (object field, name field)
    # Every node type `_Extractor.walk` does something with; it only walks through the others (most
    # nodes: a file's graph took a fifth of chunking's CPU, much of it in asking each node each question).
    handled: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        kinds = self.functions | self.classes | set(self.calls) | set(self.members)
        handled = kinds | _IMPORTS | _ASSIGNMENTS | _JS_BINDINGS | {"impl_item"}
        object.__setattr__(self, "handled", frozenset(handled))


_PY = _Syntax(
    frozenset({"function_definition"}),
    frozenset({"class_definition"}),
    {"call": "function"},
    {"attribute": ("object", "attribute")},
)
_JS = _Syntax(
    frozenset({"function_declaration", "generator_function_declaration", "method_definition"}),
    frozenset({"class_declaration", "abstract_class_declaration", "interface_declaration", "class"}),
    {"call_expression": "function", "new_expression": "constructor"},
    {"member_expression": ("object", "property")},
)
_GO = _Syntax(
    frozenset({"function_declaration", "method_declaration"}),
    frozenset({"type_spec"}),
    {"call_expression": "function", "composite_literal": "type"},
    {"selector_expression": ("operand", "field"), "qualified_type": ("package", "name")},
)
_JAVA = _Syntax(
    frozenset({"method_declaration", "constructor_declaration"}),
    frozenset({"class_declaration", "interface_declaration", "enum_declaration", "record_declaration"}),
    {"method_invocation": "name", "object_creation_expression": "type"},
    {"field_access": ("object", "field")},
)
_RUST = _Syntax(
    frozenset({"function_item", "function_signature_item"}),
    frozenset({"struct_item", "enum_item", "trait_item", "union_item"}),
    {"call_expression": "function"},
    {"field_expression": ("value", "field"), "scoped_identifier": ("path", "name")},
)
_SYNTAX: dict[str, _Syntax] = {
    "python": _PY,
    "javascript": _JS,
    "typescript": _JS,
    "tsx": _JS,
    "go": _GO,
    "java": _JAVA,
    "rust": _RUST,
}


LANGUAGES = frozenset(_SYNTAX)


def _text(node: Node | None) -> str:
    return node.text.decode("utf-8", "replace") if node is not None and node.text is not None else ""


def _line(node: Node) -> int:
    return node.start_point.row + 1


def _end_line(node: Node) -> int:
    row = node.end_point.row
    return row if node.end_point.column == 0 and row > node.start_point.row else row + 1


def _path_of(node: Node) -> bool:
    """Whether `node` is the path of a Rust path (`serde_path_to_error` of
    `serde_path_to_error::deserialize`): what it names is a module, a crate or a type."""
    return node.parent is not None and node.parent.type == "scoped_identifier"


def _path_receiver(raw: str) -> str:
    """The receiver of a name reached through the path `raw`: `Self` is the own type (`RECEIVER_SELF`),
    any other path is marked (`PATH_RECEIVER`), so resolution never takes it for a value."""
    if raw == "Self":
        return RECEIVER_SELF
    return raw.replace("::", ".") + PATH_RECEIVER if len(raw) <= _MAX_RECEIVER else "?"


def _unquote(text: str) -> str:
    return text.strip().strip("\"'`")


@dataclass
class _Scope:
    qualname: str = ""
    owner: str | None = None  # qualname of the class whose method this is
    receivers: frozenset[str] = _SELF_NAMES
    instance: str | None = None  # the class whose attributes `self.x` / `this.x` name here
    params: frozenset[str] = frozenset()  # a constructor's parameters (empty in other code)


@dataclass
class _Extractor:
    language: str
    syntax: _Syntax
    graph: FileGraph = field(default_factory=FileGraph)
    # Constructor-argument flow, emitted by `finish` once the whole file is seen: the first line
    # storing each (class, attribute) from a parameter, the stores, and candidate reads.
    stored: dict[tuple[str, str], int] = field(default_factory=dict)
    stores: list[GraphReference] = field(default_factory=list)
    reads: list[tuple[str, GraphReference]] = field(default_factory=list)
    targets: set[int] = field(default_factory=set)  # ids of `self.x` nodes assigned to

    # walking --------------------------------------------------------------------------------------

    def walk(self, node: Node, scope: _Scope) -> None:
        """Visit `node` and its subtree in `scope`, depth first, each node before its children (a
        definition's visit walks its own children, in its scope). A stack, not a Python call per
        node: a third less time, and no recursion limit on a long chain of `a + b + ...`."""
        handled = self.syntax.handled
        stack = [node]
        while stack:
            node = stack.pop()
            kind = node.type
            if kind in handled and self._visit(node, kind, scope):
                continue
            children = [child for child in node.named_children if child.type not in _OPAQUE]
            children.reverse()
            stack.extend(children)

    def _visit(self, node: Node, kind: str, scope: _Scope) -> bool:
        """Record what `node` defines, imports, calls or reads; True if it walked its children too
        (a definition's, in the definition's own scope)."""
        if kind in self.syntax.classes:
            inner = self._class(node, scope)
            if inner is not None:
                for child in node.named_children:
                    self.walk(child, inner)
                return True
        elif kind in self.syntax.functions:
            inner = self._function(node, scope)
            if inner is not None:
                for child in node.named_children:
                    self.walk(child, inner)
                return True
        elif kind == "impl_item":
            self._rust_impl(node, scope)
            return True
        elif self._js_function_binding(node, scope):
            return True
        if kind in _ASSIGNMENTS and scope.instance:
            self._assignment(node, scope)
        if kind in self.syntax.calls:
            self._call(node, scope)
        elif kind in self.syntax.members and self._is_callback(node, scope):
            self._read(node, scope, "call")  # a method passed to be called later, or an attribute's value
            if scope.instance and not scope.params:
                self._attribute_read(node, scope)
        elif kind in self.syntax.members and self._is_config_read(node):
            self._read(node, scope)
        elif kind in self.syntax.members and scope.instance and not scope.params:
            self._attribute_read(node, scope)
        elif kind in _IMPORTS:
            self._import(node)
        return False

    def _define(self, node: Node, name: str, kind: str, scope: _Scope, bases: tuple[str, ...] = ()) -> str:
        qualname = f"{scope.qualname}.{name}" if scope.qualname else name
        parent = scope.owner if kind == "method" else None
        self.graph.definitions.append(
            GraphDefinition(name, qualname, kind, _line(node), _end_line(node), parent, bases)
        )
        return qualname

    def _class(self, node: Node, scope: _Scope) -> _Scope | None:
        name = _text(node.child_by_field_name("name"))
        if not name:
            return None
        qualname = self._define(node, name, "class", scope, tuple(dict.fromkeys(self._bases(node))))
        return _Scope(qualname, qualname, _SELF_NAMES)

    def _function(self, node: Node, scope: _Scope) -> _Scope | None:
        name_node = node.child_by_field_name("name")
        name = _text(name_node)
        if not name:
            return None
        owner, receivers = scope.owner, scope.receivers
        if node.type == "method_declaration" and self.language == "go":
            owner, receiver = self._go_receiver(node)
            receivers = frozenset({receiver}) if receiver else frozenset()
            qualname = self._define(node, name, "method", _Scope(owner or "", owner, receivers))
            return _Scope(qualname, owner, receivers)
        in_class = owner is not None and scope.qualname == owner
        qualname = self._define(node, name, "method" if in_class else "function", scope)
        instance = owner if in_class else None
        builds = in_class and (name in ("__init__", "constructor") or node.type == "constructor_declaration")
        if (
            not scope.qualname
            and self.syntax is _JS
            and node.type == "function_declaration"
            and name[0].isupper()
        ):
            instance, builds = qualname, True  # `function Route(path) { this.path = path }`
        params = self._params(node) if builds else frozenset()
        return _Scope(qualname, owner if in_class else scope.owner, receivers, instance, params)

    def _js_function_binding(self, node: Node, scope: _Scope) -> bool:
        """`const f = () => ...`, `app.handle = function handle() {...}`, `x: function() {}`, and a
        function wrapped in a call: `const load = useCallback(async () => {...}, [])` (React's hooks,
        `memo`, `forwardRef`, `debounce`), so the calls in a component's handlers are the handler's."""
        if self.syntax is not _JS:
            return False
        if node.type == "variable_declarator":
            target, value = node.child_by_field_name("name"), node.child_by_field_name("value")
        elif node.type == "assignment_expression":
            target, value = node.child_by_field_name("left"), node.child_by_field_name("right")
        elif node.type == "pair":
            target, value = node.child_by_field_name("key"), node.child_by_field_name("value")
        else:
            return False
        if target is None or value is None:
            return False
        wrapper: Node | None = None
        if value.type == "call_expression" and target.type == "identifier":
            wrapper, value = value, _wrapped_function(value) or value
        if value.type not in _JS_FUNCTION_VALUES:
            self._require(node, target, value)
            return False
        if target.type == "member_expression":
            owner = _text(target.child_by_field_name("object"))
            name = _text(target.child_by_field_name("property"))
            owner = owner.removesuffix(".prototype")
            if owner in ("exports", "module.exports"):
                owner = ""
        else:
            owner, name = "", _unquote(_text(target))
        if not name or len(owner) > _MAX_RECEIVER:
            return False
        if owner:
            qualname = self._define(node, name, "method", _Scope(owner, owner, _SELF_NAMES))
            inner = _Scope(qualname, owner, _SELF_NAMES, owner)
        else:
            qualname = self._define(node, name, "function", scope)
            inner = _Scope(qualname, scope.owner, scope.receivers)
        self.walk(value, inner)
        if wrapper is not None:  # the wrapper is called, with its other arguments (`[deps]`), where it is
            self._call(wrapper, scope)
            for argument in (wrapper.child_by_field_name("arguments") or wrapper).named_children:
                if argument != value:
                    self.walk(argument, scope)
        return True

    def _rust_impl(self, node: Node, scope: _Scope) -> None:
        """`impl [Trait for] Type { fn ... }`: methods of `Type`, and `Type` implements `Trait`."""
        owner = _text(node.child_by_field_name("type")).split("<", 1)[0].strip()
        trait = node.child_by_field_name("trait")
        if trait is not None and owner:
            self.graph.definitions.append(
                GraphDefinition(
                    owner, owner, "impl", _line(node), _end_line(node), None,
                    (_text(trait).split("<", 1)[0].rsplit("::", 1)[-1],),
                )
            )  # fmt: skip
        body = node.child_by_field_name("body")
        inner = _Scope(owner, owner or None, _SELF_NAMES)
        for child in body.named_children if body is not None else ():
            self.walk(child, inner)

    def _go_receiver(self, node: Node) -> tuple[str | None, str | None]:
        receiver = node.child_by_field_name("receiver")
        for param in receiver.named_children if receiver is not None else ():
            kind = param.child_by_field_name("type")
            type_name = _text(kind).lstrip("*").split("[", 1)[0].strip()
            return (type_name or None), (_text(param.child_by_field_name("name")) or None)
        return None, None

    # bases ----------------------------------------------------------------------------------------

    def _bases(self, node: Node) -> Iterator[str]:
        if self.language == "python":
            args = node.child_by_field_name("superclasses")
            for arg in args.named_children if args is not None else ():
                if arg.type in ("identifier", "attribute"):
                    yield _text(arg).rsplit(".", 1)[-1]
        elif self.syntax is _JS:
            for child in node.named_children:
                if child.type in _JS_HERITAGE:
                    yield from self._type_names(child)
        elif self.language == "java":
            for name in ("superclass", "interfaces"):
                yield from self._type_names(node.child_by_field_name(name))
            for child in node.named_children:
                if child.type == "extends_interfaces":
                    yield from self._type_names(child)
        elif self.language == "go":
            body = node.child_by_field_name("type")
            if body is not None and body.type in ("struct_type", "interface_type"):
                for child in _descendants(body, ("field_declaration", "type_elem", "constraint_elem")):
                    if child.child_by_field_name("name") is None:
                        yield from self._type_names(child)
        elif self.language == "rust":
            yield from self._type_names(node.child_by_field_name("bounds"))

    def _type_names(self, node: Node | None) -> Iterator[str]:
        if node is None:
            return
        if node.type in ("identifier", "type_identifier"):
            yield _text(node)
            return
        if node.type in _QUALIFIED_TYPES:
            yield _text(node).replace("::", ".").rsplit(".", 1)[-1]
            return
        if node.type in ("type_arguments", "arguments", "call_expression"):
            return
        for child in node.named_children:
            yield from self._type_names(child)

    # references -----------------------------------------------------------------------------------

    def _call(self, node: Node, scope: _Scope) -> None:
        callee = node.child_by_field_name(self.syntax.calls[node.type])
        if callee is None:
            return
        if self.language == "java" and node.type == "method_invocation":
            receiver_node = node.child_by_field_name("object")
            self._reference(node, scope, _text(callee), receiver_node)
            return
        if callee.type in ("generic_type", "generic_function"):
            callee = callee.named_children[0] if callee.named_children else callee
        member = self.syntax.members.get(callee.type)
        if member is not None:
            name = _text(callee.child_by_field_name(member[1]))
            self._reference(node, scope, name, callee.child_by_field_name(member[0]))
        elif callee.type in ("identifier", "type_identifier", "field_identifier"):
            name = _text(callee)
            if name == "require" and self.syntax is _JS:
                return
            self._reference(node, scope, name, None)
        elif self.language == "go" and node.type == "composite_literal" and callee.type == "qualified_type":
            name = _text(callee.child_by_field_name("name"))
            self._reference(node, scope, name, callee.child_by_field_name("package"))

    def _reference(
        self, node: Node, scope: _Scope, name: str, receiver_node: Node | None, kind: str = "call"
    ) -> None:
        if not name or not (name[0].isalpha() or name[0] == "_"):
            return
        receiver: str | None = None
        if receiver_node is not None and _path_of(receiver_node):
            receiver = _path_receiver(_text(receiver_node))
        elif receiver_node is not None:
            raw = _text(receiver_node)
            if raw in scope.receivers or raw in _SELF_NAMES:
                receiver = RECEIVER_SELF
            elif raw.startswith(tuple(f"{word}." for word in scope.receivers | _SELF_NAMES)):
                receiver = raw.split(".", 1)[1]  # self.router.handle(): through the attribute `router`
            else:
                receiver = raw.replace("::", ".") if len(raw) <= _MAX_RECEIVER else "?"
        self.graph.references.append(GraphReference(_line(node), scope.qualname, name, kind, receiver))

    def _is_config_read(self, node: Node) -> bool:
        member = self.syntax.members[node.type]
        parent = node.parent
        if parent is not None and parent.type in self.syntax.calls:
            callee = parent.child_by_field_name(self.syntax.calls[parent.type])
            if callee is not None and callee.id == node.id:
                return False
        obj = _text(node.child_by_field_name(member[0]))
        leaf = obj.rsplit(".", 1)[-1].lower()
        return leaf in _CONFIG_RECEIVERS

    def _is_callback(self, node: Node, scope: _Scope) -> bool:
        """`run_sync(self.lookup_path, path)`: a method of this object passed to be called later."""
        parent = node.parent
        if parent is None or parent.type not in ("argument_list", "arguments"):
            return False
        obj = _text(node.child_by_field_name(self.syntax.members[node.type][0]))
        return obj in scope.receivers or obj in _SELF_NAMES

    # constructor arguments ------------------------------------------------------------------------

    def _params(self, node: Node) -> frozenset[str]:
        """The names a function's parameters bind (without `self`)."""
        params = node.child_by_field_name("parameters")
        names: set[str] = set()
        for param in params.named_children if params is not None else ():
            target = param.child_by_field_name("name") or param.child_by_field_name("left") or param
            if param.type in (
                "typed_parameter",
                "list_splat_pattern",
                "dictionary_splat_pattern",
                "rest_pattern",
            ):
                target = param.named_children[0] if param.named_children else param
            if target.type in _PARAM_NAMES:
                names.add(_text(target))
            elif target.type == "object_pattern":
                names.update(_text(d) for d in _descendants(target, _PARAM_NAMES))
        return frozenset(names - _SELF_NAMES)

    def _self_member(self, node: Node | None, scope: _Scope) -> str | None:
        """`x` of `self.x` / `this.x` / `recv.x` (a member of this instance), else None."""
        member = self.syntax.members.get(node.type) if node is not None else None
        if member is None or node is None:
            return None
        obj = _text(node.child_by_field_name(member[0]))
        if obj not in _INSTANCE_NAMES and obj not in (scope.receivers - _SELF_NAMES):
            return None
        return _text(node.child_by_field_name(member[1])) or None

    def _assignment(self, node: Node, scope: _Scope) -> None:
        """`self.timeout = timeout` in a constructor: the attribute holds a constructor argument."""
        left, right = node.child_by_field_name("left"), node.child_by_field_name("right")
        if left is None:
            return
        targets = left.named_children if left.type in ("pattern_list", "tuple_pattern") else [left]
        given = (
            scope.params
            and right is not None
            and (
                _text(right) in scope.params
                or any(_text(d) in scope.params for d in _descendants(right, ("identifier",)))
            )
        )
        for target in targets:
            name = self._self_member(target, scope)
            if name is None or scope.instance is None:
                continue
            self.targets.add(target.id)
            if given:
                self.stored.setdefault((scope.instance, name), _line(node))
                self.stores.append(GraphReference(_line(node), scope.qualname, name, "store", RECEIVER_SELF))

    def _attribute_read(self, node: Node, scope: _Scope) -> None:
        """A candidate read of `self.x` outside a constructor (kept if `x` holds a constructor argument)."""
        if node.id in self.targets or scope.instance is None:
            return
        name = self._self_member(node, scope)
        if name is not None:
            self.reads.append(
                (scope.instance, GraphReference(_line(node), scope.qualname, name, "read", RECEIVER_SELF))
            )

    def finish(self) -> FileGraph:
        """The file's graph with its constructor-argument flow: an `attribute` definition per stored
        attribute (after the file's own definitions, which win a qualified-name clash), its stores,
        and the reads of it in the class's other methods."""
        for (instance, name), line in self.stored.items():
            self.graph.definitions.append(
                GraphDefinition(name, f"{instance}.{name}", "attribute", line, line, instance)
            )
        self.graph.references += self.stores
        self.graph.references += [
            read for instance, read in self.reads if (instance, read.name) in self.stored
        ]
        return self.graph

    def _read(self, node: Node, scope: _Scope, kind: str = "read") -> None:
        member = self.syntax.members[node.type]
        name = _text(node.child_by_field_name(member[1]))
        self._reference(node, scope, name, node.child_by_field_name(member[0]), kind)

    # imports --------------------------------------------------------------------------------------

    def _import(self, node: Node) -> None:
        kind = node.type
        add = self.graph.imports.append
        line = _line(node)
        if kind == "import_statement" and self.language == "python":
            for child in node.named_children:
                if child.type == "dotted_name":
                    module = _text(child)
                    add(GraphImport(line, module, None, module.split(".", 1)[0]))
                    add(GraphImport(line, module, None, module))
                elif child.type == "aliased_import":
                    module = _text(child.child_by_field_name("name"))
                    add(GraphImport(line, module, None, _text(child.child_by_field_name("alias"))))
        elif kind == "import_from_statement":
            module = _text(node.child_by_field_name("module_name"))
            for child in node.children_by_field_name("name"):
                if child.type == "aliased_import":
                    name = _text(child.child_by_field_name("name"))
                    add(GraphImport(line, module, name, _text(child.child_by_field_name("alias"))))
                else:
                    add(GraphImport(line, module, _text(child), _text(child).rsplit(".", 1)[-1]))
        elif kind == "import_statement" and self.syntax is _JS:
            source = _unquote(_text(node.child_by_field_name("source")))
            for clause in (c for c in node.named_children if c.type == "import_clause"):
                for child in clause.named_children:
                    if child.type == "identifier":  # `import Router from './router'`
                        add(GraphImport(line, source, None, _text(child)))
                    elif child.type == "namespace_import":  # `import * as path from 'path'`
                        add(GraphImport(line, source, None, _text(child.named_children[-1])))
                    for spec in _descendants(child, ("import_specifier",)):  # `import { a, b as c }`
                        name = _text(spec.child_by_field_name("name"))
                        alias = _text(spec.child_by_field_name("alias")) or name
                        add(GraphImport(line, source, name, alias))
        elif kind == "import_spec":
            path = _unquote(_text(node.child_by_field_name("path")))
            alias = _text(node.child_by_field_name("name")) or path.rsplit("/", 1)[-1]
            add(GraphImport(line, path, None, alias))
        elif kind == "import_declaration":
            names = ("scoped_identifier", "identifier")
            target = next((c for c in node.named_children if c.type in names), None)
            path = _text(target)
            if path:
                add(GraphImport(line, path, None, path.rsplit(".", 1)[-1]))
        elif kind == "use_declaration":
            for module, alias in _rust_uses(node.child_by_field_name("argument"), ""):
                add(GraphImport(line, module, None, alias))

    def _require(self, node: Node, target: Node, value: Node) -> None:
        """`var router = require('./router')` binds a module like an import."""
        if value.type != "call_expression" or _text(value.child_by_field_name("function")) != "require":
            return
        args = value.child_by_field_name("arguments")
        if args is None or not args.named_children or target.type != "identifier":
            return
        module = _unquote(_text(args.named_children[0]))
        self.graph.imports.append(GraphImport(_line(node), module, None, _text(target)))


_JS_FUNCTION_VALUES = ("arrow_function", "function_expression", "function")


def _wrapped_function(call: Node) -> Node | None:
    """The function a call's first argument is (`useCallback(() => ...)`), if it is one."""
    arguments = call.child_by_field_name("arguments")
    first = arguments.named_children[0] if arguments is not None and arguments.named_children else None
    return first if first is not None and first.type in _JS_FUNCTION_VALUES else None


def _rust_uses(node: Node | None, prefix: str) -> Iterator[tuple[str, str]]:
    """(path, bound name) of each item a `use` brings in, paths joined with `::`."""
    if node is None:
        return

    def join(tail: str) -> str:
        return f"{prefix}::{tail}" if prefix else tail

    if node.type in ("identifier", "scoped_identifier", "crate", "self", "super"):
        path = join(_text(node))
        yield path, path.rsplit("::", 1)[-1]
    elif node.type == "use_as_clause":
        yield join(_text(node.child_by_field_name("path"))), _text(node.child_by_field_name("alias"))
    elif node.type == "scoped_use_list":
        base = join(_text(node.child_by_field_name("path")))
        yield from _rust_uses(node.child_by_field_name("list"), base)
    elif node.type == "use_list":
        for child in node.named_children:
            yield from _rust_uses(child, prefix)


def _descendants(node: Node, types: tuple[str, ...]) -> Iterator[Node]:
    for child in node.named_children:
        if child.type in types:
            yield child
        else:
            yield from _descendants(child, types)


def extract(language: str, tree: Tree) -> FileGraph | None:
    """The graph of one parsed file, or None if the language is not one the graph understands."""
    syntax = _SYNTAX.get(language)
    if syntax is None:
        return None
    extractor = _Extractor(language, syntax)
    extractor.walk(tree.root_node, _Scope(receivers=_SELF_NAMES))
    return extractor.finish()
