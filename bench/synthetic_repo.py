"""A deterministic, realistic-looking source tree for ingest benchmarks.

Files in Python, JavaScript, TypeScript, Go, Java, Rust and Markdown, each a
handful of documented functions built from a seeded vocabulary, so every
chunk's text is distinct (nothing is served from the vector cache by accident)
and the same seed always gives the same bytes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

_WORDS = [
    "account",
    "balance",
    "buffer",
    "cache",
    "channel",
    "client",
    "config",
    "connection",
    "cursor",
    "digest",
    "document",
    "event",
    "factory",
    "filter",
    "frame",
    "handler",
    "header",
    "index",
    "invoice",
    "job",
    "ledger",
    "limit",
    "listener",
    "message",
    "metric",
    "node",
    "order",
    "packet",
    "parser",
    "payload",
    "policy",
    "pool",
    "queue",
    "quota",
    "record",
    "region",
    "report",
    "request",
    "response",
    "retry",
    "route",
    "schema",
    "session",
    "shard",
    "signal",
    "snapshot",
    "socket",
    "stream",
    "tenant",
    "token",
    "transaction",
    "upload",
    "user",
    "vector",
    "window",
    "worker",
]
_VERBS = [
    "build",
    "check",
    "compute",
    "decode",
    "encode",
    "fetch",
    "flush",
    "load",
    "merge",
    "parse",
    "publish",
    "read",
    "render",
    "resolve",
    "scan",
    "send",
    "store",
    "sync",
    "validate",
    "write",
]

Writer = Callable[[random.Random, int], str]


def _name(rng: random.Random) -> tuple[str, str]:
    return rng.choice(_VERBS), rng.choice(_WORDS)


def _sentence(rng: random.Random) -> str:
    verb, noun = _name(rng)
    return (
        f"{verb.capitalize()} the {noun} {rng.choice(_WORDS)} and return the {rng.choice(_WORDS)} it produced"
    )


def _lines(rng: random.Random, template: str, serial: int, low: int = 4, high: int = 12) -> str:
    """Lines from `template`, filling `{w}` (a word), `{n}` (a number) and `{i}` (the line)."""
    return "\n".join(
        template.format(w=rng.choice(_WORDS), n=rng.randint(0, 999), i=i + serial)
        for i in range(rng.randint(low, high))
    )


def _functions(rng: random.Random, serial: int, render: Callable[[str, str, int, str], str]) -> str:
    """8-14 documented functions, each rendered by `render(verb, noun, n, doc)`."""
    return "".join(render(*_name(rng), n, _sentence(rng)) for n in range(rng.randint(8, 14)))


def _python(rng: random.Random, serial: int) -> str:
    def render(verb: str, noun: str, n: int, doc: str) -> str:
        body = _lines(rng, f"    {{w}}_{{i}} = {noun}.get('{{w}}', {{n}}) * {{i}}", serial)
        return (
            f"\ndef {verb}_{noun}_{serial}_{n}({noun}: dict, limit: int = 10) -> dict:\n"
            f'    """{doc}."""\n{body}\n    return {{"{noun}": limit}}\n'
        )

    return f'"""Module {serial}: {_sentence(rng)}."""\n\nimport json\n' + _functions(rng, serial, render)


def _javascript(rng: random.Random, serial: int) -> str:
    def render(verb: str, noun: str, n: int, doc: str) -> str:
        body = _lines(rng, f"  const {{w}}{{i}} = {noun}.{{w}} ?? {{n}} + {{i}};", serial)
        name = f"{verb}{noun.capitalize()}{serial}_{n}"
        signature = f"export function {name}({noun}, options = {{}})"
        return f"\n/** {doc}. */\n{signature} {{\n{body}\n  return {noun};\n}}\n"

    return f"// Module {serial}: {_sentence(rng)}.\n" + _functions(rng, serial, render)


def _typescript(rng: random.Random, serial: int) -> str:
    def render(verb: str, noun: str, n: int, doc: str) -> str:
        body = _lines(rng, "    const {w}{i}: number = this.count * {n} + {i};", serial, 3, 10)
        signature = f"{verb}{noun.capitalize()}{n}(input: string): number"
        return f"\n  /** {doc}. */\n  {signature} {{\n{body}\n    return 1;\n  }}\n"

    verb, noun = _name(rng)
    header = f"// Module {serial}: {_sentence(rng)}.\n"
    header += f"export class {noun.capitalize()}{verb.capitalize()}{serial} {{\n"
    return header + f"  private count = {serial};\n" + _functions(rng, serial, render) + "}\n"


def _go(rng: random.Random, serial: int) -> str:
    def render(verb: str, noun: str, n: int, doc: str) -> str:
        body = _lines(rng, f"\t{{w}}{{i}} := {noun} * {{n}} + {{i}}\n\t_ = {{w}}{{i}}", serial, 3, 9)
        name = f"{verb.capitalize()}{noun.capitalize()}{n}"
        tail = f"\treturn fmt.Sprint({noun})\n}}\n"
        return f"\n// {name}: {doc}.\nfunc {name}({noun} int) string {{\n{body}\n{tail}"

    return f'// Package mod{serial}: {_sentence(rng)}.\npackage mod{serial}\n\nimport "fmt"\n' + _functions(
        rng, serial, render
    )


def _java(rng: random.Random, serial: int) -> str:
    def render(verb: str, noun: str, n: int, doc: str) -> str:
        body = _lines(rng, f"        long {{w}}{{i}} = {noun} * {{n}}L + {{i}};", serial, 3, 10)
        signature = f"public long {verb}{noun.capitalize()}{n}(long {noun})"
        return f"\n    /** {doc}. */\n    {signature} {{\n{body}\n        return {noun};\n    }}\n"

    verb, noun = _name(rng)
    header = f"package bench.mod{serial};\n\n/** {_sentence(rng)}. */\n"
    return (
        header
        + f"public class {noun.capitalize()}{verb.capitalize()}{serial} {{\n"
        + _functions(rng, serial, render)
        + "}\n"
    )


def _rust(rng: random.Random, serial: int) -> str:
    def render(verb: str, noun: str, n: int, doc: str) -> str:
        body = _lines(rng, f"    let {{w}}_{{i}} = {noun} * {{n}} + {{i}};", serial, 3, 9)
        return f"\n/// {doc}.\npub fn {verb}_{noun}_{n}({noun}: u64) -> u64 {{\n{body}\n    {noun}\n}}\n"

    return f"//! Module {serial}: {_sentence(rng)}.\n" + _functions(rng, serial, render)


def _markdown(rng: random.Random, serial: int) -> str:
    def render(verb: str, noun: str, n: int, doc: str) -> str:
        paragraph = " ".join(_sentence(rng) + "." for _ in range(rng.randint(3, 8)))
        return f"\n## {verb.capitalize()} {noun} {n}\n\n{doc}. {paragraph}\n"

    return f"# Guide {serial}\n\n{_sentence(rng)}.\n" + _functions(rng, serial, render)


_LANGUAGES: tuple[tuple[str, str, Writer], ...] = (
    ("py", "service", _python),
    ("js", "web", _javascript),
    ("ts", "client", _typescript),
    ("go", "server", _go),
    ("java", "jvm", _java),
    ("rs", "core", _rust),
    ("md", "docs", _markdown),
)


def file_path(serial: int) -> Path:
    extension, folder, _ = _LANGUAGES[serial % len(_LANGUAGES)]
    return Path(folder) / f"pkg{serial % 40}" / f"module_{serial}.{extension}"


def generate(dest: Path, files: int, seed: int = 7) -> int:
    """Write `files` source files under `dest`; returns the total number of bytes written."""
    total = 0
    for serial in range(files):
        rng = random.Random(seed * 1_000_003 + serial)
        writer = _LANGUAGES[serial % len(_LANGUAGES)][2]
        target = dest / file_path(serial)
        target.parent.mkdir(parents=True, exist_ok=True)
        total += target.write_bytes(writer(rng, serial).encode("utf-8"))
    return total


def touch(dest: Path, serials: list[int], revision: int) -> None:
    """Edit the given files (a comment line appended to each), as a small commit would."""
    for serial in serials:
        target = dest / file_path(serial)
        comment = "//" if target.suffix != ".py" else "#"
        target.write_text(target.read_text() + f"\n{comment} revision {revision}: {serial} was edited\n")
