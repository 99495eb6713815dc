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

_WORDS = ["account", "balance", "buffer", "cache", "channel", "client", "config", "connection", "cursor", "digest", "document", "event", "factory", "filter", "frame", "handler", "header", "index", "invoice", "job", "ledger", "limit", "listener", "message", "metric", "node", "order", "packet", "parser", "payload", "policy", "pool", "queue", "quota", "record", "region", "report", "request", "response", "retry", "route", "schema", "session", "shard", "signal", "snapshot", "socket", "stream", "tenant", "token", "transaction", "upload", "user", "vector", "window", "worker"]
_VERBS = ["build", "check", "compute", "decode", "encode", "fetch", "flush", "load", "merge", "parse", "publish", "read", "render", "resolve", "scan", "send", "store", "sync", "validate", "write"]

Writer = Callable[[random.Random, int], str]


def _name(rng: random.Random) -> tuple[str, str]:
    return rng.choice(_VERBS), rng.choice(_WORDS)


def _sentence(rng: random.Random) -> str:
    verb, noun = _name(rng)
    return (
        f"{verb.capitalize()} the {noun} {rng.choice(_WORDS)} and return the {rng.choice(_WORDS)} it produced"
    )


def _python(rng: random.Random, serial: int) -> str:
    parts = [f'"""Module {serial}: {_sentence(rng)}."""\n\nimport json\nimport os\n']
    for n in range(rng.randint(5, 9)):
        verb, noun = _name(rng)
        body = "\n".join(
            f"    {rng.choice(_WORDS)}_{i} = {noun}.get('{rng.choice(_WORDS)}', {rng.randint(0, 999)}) * {i + serial}"
            for i in range(rng.randint(4, 12))
        )
        parts.append(
            f"\ndef {verb}_{noun}_{serial}_{n}({noun}: dict, limit: int = {rng.randint(1, 100)}) -> dict:\n"
            f'    """{_sentence(rng)}."""\n{body}\n    return {{"{noun}": limit, "serial": {serial}}}\n'
        )
    return "".join(parts)


def _javascript(rng: random.Random, serial: int) -> str:
    parts = [f"// Module {serial}: {_sentence(rng)}.\n"]
    for n in range(rng.randint(5, 9)):
        verb, noun = _name(rng)
        body = "\n".join(
            f"  const {rng.choice(_WORDS)}{i} = {noun}.{rng.choice(_WORDS)} ?? {rng.randint(0, 999)} + {i * serial};"
            for i in range(rng.randint(4, 12))
        )
        parts.append(
            f"\n/** {_sentence(rng)}. */\nexport function {verb}{noun.capitalize()}{serial}_{n}({noun}, options = {{}}) {{\n"
            f"{body}\n  return {{ {noun}, serial: {serial} }};\n}}\n"
        )
    return "".join(parts)


def _typescript(rng: random.Random, serial: int) -> str:
    verb, noun = _name(rng)
    methods = []
    for n in range(rng.randint(4, 8)):
        m_verb, m_noun = _name(rng)
        body = "\n".join(
            f"    const {rng.choice(_WORDS)}{i}: number = this.{noun}Count * {rng.randint(1, 99)} + {i};"
            for i in range(rng.randint(3, 10))
        )
        methods.append(
            f"  /** {_sentence(rng)}. */\n  {m_verb}{m_noun.capitalize()}{n}(input: string): number {{\n"
            f"{body}\n    return input.length + {serial};\n  }}\n"
        )
    return (
        f"// Module {serial}: {_sentence(rng)}.\nexport class {noun.capitalize()}{verb.capitalize()}{serial} {{\n"
        f"  private {noun}Count = {serial};\n\n" + "\n".join(methods) + "}\n"
    )


def _go(rng: random.Random, serial: int) -> str:
    parts = [f'// Package mod{serial}: {_sentence(rng)}.\npackage mod{serial}\n\nimport "fmt"\n']
    for n in range(rng.randint(5, 9)):
        verb, noun = _name(rng)
        body = "\n".join(
            f"\t{rng.choice(_WORDS)}{i} := {noun} * {rng.randint(1, 999)} + {i * serial}\n\t_ = {rng.choice(_WORDS)}{i}"
            for i in range(rng.randint(3, 9))
        )
        parts.append(
            f"\n// {verb.capitalize()}{noun.capitalize()}{n}: {_sentence(rng)}.\n"
            f"func {verb.capitalize()}{noun.capitalize()}{n}({noun} int) string {{\n{body}\n"
            f'\treturn fmt.Sprintf("%d-{serial}", {noun})\n}}\n'
        )
    return "".join(parts)


def _java(rng: random.Random, serial: int) -> str:
    verb, noun = _name(rng)
    methods = []
    for n in range(rng.randint(4, 8)):
        m_verb, m_noun = _name(rng)
        body = "\n".join(
            f"        long {rng.choice(_WORDS)}{i} = {m_noun} * {rng.randint(1, 999)}L + {i};"
            for i in range(rng.randint(3, 10))
        )
        methods.append(
            f"    /** {_sentence(rng)}. */\n    public long {m_verb}{m_noun.capitalize()}{n}(long {m_noun}) {{\n"
            f"{body}\n        return {m_noun} + {serial};\n    }}\n"
        )
    return (
        f"package bench.mod{serial};\n\n/** {_sentence(rng)}. */\n"
        f"public class {noun.capitalize()}{verb.capitalize()}{serial} {{\n" + "\n".join(methods) + "}\n"
    )


def _rust(rng: random.Random, serial: int) -> str:
    parts = [f"//! Module {serial}: {_sentence(rng)}.\n"]
    for n in range(rng.randint(5, 9)):
        verb, noun = _name(rng)
        body = "\n".join(
            f"    let {rng.choice(_WORDS)}_{i} = {noun} * {rng.randint(1, 999)} + {i * serial};"
            for i in range(rng.randint(3, 9))
        )
        parts.append(
            f"\n/// {_sentence(rng)}.\npub fn {verb}_{noun}_{n}({noun}: u64) -> u64 {{\n{body}\n    {noun} + {serial}\n}}\n"
        )
    return "".join(parts)


def _markdown(rng: random.Random, serial: int) -> str:
    sections = []
    for n in range(rng.randint(3, 6)):
        verb, noun = _name(rng)
        paragraph = " ".join(_sentence(rng) + "." for _ in range(rng.randint(3, 8)))
        sections.append(f"## {verb.capitalize()} {noun} {n}\n\n{paragraph}\n")
    return f"# Guide {serial}\n\n{_sentence(rng)}.\n\n" + "\n".join(sections)


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
    """Change the given files the way an edit would: one function appended at the end."""
    for serial in serials:
        target = dest / file_path(serial)
        comment = "//" if target.suffix != ".py" else "#"
        target.write_text(target.read_text() + f"\n{comment} revision {revision}: {serial} was edited\n")
