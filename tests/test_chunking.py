"""Syntax-aware chunking: boundaries and symbols per language, headings, coverage and the token budget.

Token counts are real (tiktoken cl100k through `rag.tokens`, and a second, differently shaped counter
to show the budget holds for whatever tokenizer the embedder brings).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from ingest.chunking import Chunker
from ingest.languages import language_for
from ingest.reader import SourceFile
from rag.tokens import count_tokens
from rag.types import Chunk

_RAW_SOURCES = {
    "client.py": r'''
import os
import sys


class Client:
    """Sends requests to the server and keeps the connection open."""

    def send(self, request):
        payload = self.encode(request)
        response = self.transport.write(payload, timeout=self.timeout)
        return self.decode(response.body, response.headers)

    @property
    def closed(self):
        state = self.transport.state if self.transport else None
        return state is None or state.closed or state.error is not None


def helper(values):
    total = 0
    for value in values:
        total += value * value
    return total
''',
    "foo.js": r"""
import { readFile } from "fs";

class Foo {
  bar(items) {
    const doubled = items.map((item) => item * 2 + this.offset);
    return doubled.filter((value) => value > this.threshold);
  }

  baz(name) {
    const greeting = `Hello, ${name}! Welcome back to ${this.place}.`;
    return greeting.toUpperCase() + this.suffix.repeat(3);
  }
}

export const handler = async (event) => {
  const body = JSON.parse(event.body || "{}");
  return { statusCode: 200, body: JSON.stringify(body.items.length) };
};
""",
    "service.ts": r"""
export interface Options {
  retries: number;
  timeout: number;
}

export class Service<T> {
  private cache = new Map<string, T>();

  async fetchItem(id: string, options: Options): Promise<T | undefined> {
    const cached = this.cache.get(id);
    return cached ?? (await this.load(id, options.retries, options.timeout));
  }

  clear(prefix: string): void {
    for (const key of Array.from(this.cache.keys())) {
      if (key.startsWith(prefix)) this.cache.delete(key);
    }
  }
}
""",
    "reader.go": r"""
package reader

import "io"

type Reader struct {
	source io.Reader
	buffer []byte
}

func (r *Reader) Read(p []byte) (int, error) {
	n, err := r.source.Read(r.buffer[:len(p)])
	copy(p, r.buffer[:n])
	return n, err
}

func NewReader(source io.Reader, size int) *Reader {
	buffer := make([]byte, size)
	return &Reader{source: source, buffer: buffer}
}
""",
    "Inventory.java": r"""
package com.example;

import java.util.List;

public class Inventory {
    private final List<String> items;

    public Inventory(List<String> items) {
        this.items = items;
        System.out.println("Created inventory with " + items.size() + " items");
    }

    public int countMatching(String prefix) {
        int count = 0;
        for (String item : items) { if (item.startsWith(prefix)) { count++; } }
        return count;
    }
}
""",
    "cache.rs": r"""
use std::collections::HashMap;

pub struct Cache {
    entries: HashMap<String, Vec<u8>>,
}

impl Cache {
    pub fn get(&self, key: &str) -> Option<&Vec<u8>> {
        let normalised = key.trim().to_lowercase();
        self.entries.get(&normalised).filter(|value| !value.is_empty())
    }

    pub fn insert(&mut self, key: String, value: Vec<u8>) -> bool {
        let existed = self.entries.contains_key(&key);
        self.entries.insert(key.trim().to_lowercase(), value);
        !existed
    }
}
""",
    "lines.c": r"""
#include <stdio.h>
#include <string.h>

struct buffer {
    char *data;
    size_t length;
};

static int count_lines(const struct buffer *buf) {
    int lines = 0;
    for (size_t i = 0; i < buf->length; i++) { if (buf->data[i] == '\n') lines++; }
    return lines;
}

int main(int argc, char **argv) {
    struct buffer buf = { argv[1], strlen(argv[1]) };
    printf("%d lines in %s with %d arguments\n", count_lines(&buf), argv[1], argc);
    return 0;
}
""",
    "polygon.cpp": r"""
#include <vector>

namespace geometry {

class Polygon {
public:
    double area() const {
        double sum = 0.0;
        for (size_t i = 0; i < n; ++i) { sum += cross(points[i], points[(i + 1) % n]); }
        return sum / 2.0;
    }
    std::vector<Point> points;
};

double Polygon::perimeter() const {
    double total = 0.0;
    for (size_t i = 0; i < n; ++i) { total += distance(points[i], points[(i + 1) % n]); }
    return total;
}

}  // namespace geometry
""",
    "invoice.rb": r"""
require "json"

module Billing
  class Invoice
    def total(discount)
      subtotal = @lines.sum { |line| line.quantity * line.unit_price }
      (subtotal - discount).round(2).clamp(0, subtotal)
    end

    def to_json(*args)
      { number: @number, total: total(0), lines: @lines.map(&:to_h) }.to_json(*args)
    end
  end
end
""",
    "invoice.php": r"""
<?php
namespace App\Billing;

class Invoice
{
    public function total(float $discount): float
    {
        $subtotal = array_sum(array_map(fn ($line) => $line->quantity * $line->price, $this->lines));
        return max(0, round($subtotal - $discount, 2));
    }

    public function number(): string
    {
        return sprintf('%s-%06d-%s', $this->prefix, $this->sequence, strtoupper($this->suffix));
    }
}
""",
    "Invoice.cs": r"""
using System;
using System.Linq;

namespace Shop.Billing
{
    public class Invoice
    {
        public decimal Total(decimal discount)
        {
            var subtotal = Lines.Sum(line => line.Quantity * line.UnitPrice);
            return Math.Max(0, Math.Round(subtotal - discount, 2));
        }

        public string Number()
        {
            return string.Format("{0}-{1:D6}-{2}", Prefix, Sequence, Suffix.ToUpperInvariant());
        }
    }
}
""",
}
SOURCES = {name: text.removeprefix("\n") for name, text in _RAW_SOURCES.items()}

# (file, line containing this text, symbol of the chunk holding it, whether a chunk starts on that line)
EXPECTED = [
    ("client.py", "return self.decode(", "Client.send", False),
    ("client.py", "@property", "Client.closed", True),
    ("client.py", "state = self.transport.state", "Client.closed", False),
    ("client.py", "def helper(values):", "helper", True),
    ("foo.js", "const doubled = items.map(", "Foo.bar", False),
    ("foo.js", "baz(name) {", "Foo.baz", True),
    ("foo.js", "export const handler", "handler", True),
    ("service.ts", "async fetchItem(", "Service.fetchItem", True),
    ("service.ts", "clear(prefix: string)", "Service.clear", True),
    ("reader.go", "func (r *Reader) Read(", "Reader.Read", True),
    ("reader.go", "func NewReader(", "NewReader", True),
    ("Inventory.java", "public Inventory(List<String> items)", "Inventory.Inventory", False),
    ("Inventory.java", "public int countMatching(", "Inventory.countMatching", True),
    ("cache.rs", "let normalised = key.trim()", "Cache.get", False),
    ("cache.rs", "pub fn insert(", "Cache.insert", True),
    ("lines.c", "static int count_lines(", "count_lines", True),
    ("lines.c", "int main(", "main", True),
    ("polygon.cpp", "double area() const {", "Polygon.area", True),
    ("polygon.cpp", "double Polygon::perimeter() const {", "Polygon.perimeter", True),
    ("invoice.rb", "subtotal = @lines.sum", "Billing.Invoice.total", False),
    ("invoice.rb", "def to_json(*args)", "Billing.Invoice.to_json", True),
    ("invoice.php", "public function total(", "Invoice.total", True),
    ("invoice.php", "public function number(", "Invoice.number", True),
    ("Invoice.cs", "public decimal Total(", "Invoice.Total", False),
    ("Invoice.cs", "public string Number()", "Invoice.Number", True),
]
BUDGET = 70


def source(path: str, text: str, language: str | None = None) -> SourceFile:
    return SourceFile(path, language or language_for(path, text), text, "0" * 64, len(text.encode()))


def line_of(text: str, needle: str) -> int:
    return next(number for number, line in enumerate(text.split("\n"), start=1) if needle in line)


def covering(chunks: list[Chunk], line: int) -> list[Chunk]:
    return [chunk for chunk in chunks if chunk.start_line <= line <= chunk.end_line]


def assert_complete(chunks: list[Chunk], text: str, max_tokens: int, count=count_tokens) -> None:
    """Every line is in a chunk, chunk texts are the lines they claim, and every chunk fits."""
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    covered = {line for chunk in chunks for line in range(chunk.start_line, chunk.end_line + 1)}
    assert covered == set(range(1, len(lines) + 1))
    for chunk in chunks:
        claimed = "\n".join(lines[chunk.start_line - 1 : chunk.end_line])
        assert chunk.text in claimed if chunk.start_line == chunk.end_line else chunk.text == claimed
        assert count(chunk.embed_text) <= max_tokens, chunk


@pytest.fixture(scope="module")
def chunked() -> dict[str, list[Chunk]]:
    chunker = Chunker(BUDGET)
    return {name: chunker.chunk(source(name, text)) for name, text in SOURCES.items()}


@pytest.mark.parametrize(("name", "needle", "symbol", "starts"), EXPECTED)
def test_chunks_follow_definitions(chunked, name: str, needle: str, symbol: str, starts: bool) -> None:
    line = line_of(SOURCES[name], needle)
    holders = covering(chunked[name], line)
    assert [chunk.symbol for chunk in holders] == [symbol], [
        (c.start_line, c.end_line, c.symbol) for c in holders
    ]
    if starts:
        # The chunk opens at the definition, or at lines above it that define nothing (a
        # namespace's or class's first lines), never inside another definition.
        above = SOURCES[name].split("\n")[holders[0].start_line - 1 : line - 1]
        others = [other for file, other, _, _ in EXPECTED if file == name and other != needle]
        assert not [row for row in above if any(other in row for other in others)], above


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_line_covered_and_within_budget(chunked, name: str) -> None:
    assert_complete(chunked[name], SOURCES[name], BUDGET)
    assert chunked[name][0].language == language_for(name)


def test_small_neighbours_merge_into_one_chunk_with_the_definition_symbol() -> None:
    chunks = Chunker(256).chunk(source("small.py", "import os\n\n\ndef only():\n    return os.sep\n"))
    assert [(c.start_line, c.end_line, c.symbol) for c in chunks] == [(1, 5, "only")]
    two = Chunker(256).chunk(source("two.py", "def a():\n    return 1\n\n\ndef b():\n    return 2\n"))
    assert [(c.start_line, c.end_line, c.symbol) for c in two] == [(1, 6, "a, b")]
    many = "".join(f"def f{i}():\n    return {i}\n\n\n" for i in range(5))
    listed = Chunker(256).chunk(source("many.py", many))
    assert [c.symbol for c in listed] == ["f0, f1, f2, …"]


def test_small_definitions_of_a_file_over_the_budget_get_chunks_of_their_own() -> None:
    """A file that fits the window is one chunk; past it, two definitions never share a chunk, so a
    search for what one small method does finds that method under its own name."""
    methods = "".join(f"  isRange{i}() {{\n    return this.inSubnet(RANGE_{i});\n  }}\n\n" for i in range(12))
    text = f"const RANGES = loadRanges();\n\nclass Address {{\n{methods}}}\n"
    chunks = Chunker(120).chunk(source("address.js", text))
    assert_complete(chunks, text, 120)
    for i in range(12):
        holders = covering(chunks, line_of(text, f"isRange{i}()"))
        assert [c.symbol for c in holders] == [f"Address.isRange{i}"], holders
    first = covering(chunks, line_of(text, "const RANGES"))[0]
    assert first.symbol == "Address.isRange0", "lines that define nothing join the definition beside them"


def test_a_merged_chunk_is_named_after_all_it_holds_not_its_last_part() -> None:
    """Three small sections of one page merged into a chunk are named after the page, not the third."""
    sections = "".join(f"## Step {i}\n\nRun stage {i} of the build and check it.\n\n" for i in range(3))
    text = "# Guide\n\n" + sections + "# Reference\n\n" + "Every option of the tool in detail.\n" * 40
    chunks = Chunker(120).chunk(source("guide.md", text))
    assert_complete(chunks, text, 120)
    holder = covering(chunks, line_of(text, "Run stage 2"))[0]
    assert holder.start_line <= line_of(text, "Run stage 0"), "the small sections merge"
    assert holder.symbol == "Guide"


def test_a_class_first_line_opens_the_chunk_of_its_split_first_method() -> None:
    """`class Route:` is not a one-line chunk when the method after it had to be split."""
    body = "".join(f"        self.option_{i} = options.get('option_{i}', {i})\n" for i in range(40))
    text = f"import re\n\n\nclass Route(BaseRoute):\n    def __init__(self, options):\n{body}"
    text += "\n    def matches(self, scope):\n        return re.match(self.option_1, scope)\n"
    chunks = Chunker(120).chunk(source("routing.py", text))
    assert_complete(chunks, text, 120)
    holder = covering(chunks, line_of(text, "class Route"))[0]
    assert holder.end_line > line_of(text, "def __init__"), [(c.start_line, c.end_line) for c in chunks]
    assert holder.symbol == "Route.__init__"


def test_large_function_is_split_inside_and_keeps_its_qualified_symbol() -> None:
    body = "".join(
        f"        value_{i} = compute(value_{i - 1}, factor={i}) + offset\n" for i in range(1, 120)
    )
    text = f"class Engine:\n    def run(self):\n        value_0 = 0\n{body}        return value_119\n"
    text += "\n    def stop(self):\n        def inner():\n            return self.halt(now=True)\n"
    text += "".join(f"        self.log('stopping step {i}', level='debug', flush=True)\n" for i in range(30))
    text += "        return inner()\n"
    chunks = Chunker(80).chunk(source("engine.py", text))
    assert_complete(chunks, text, 80)
    run_chunks = [c for c in chunks if c.symbol == "Engine.run"]
    assert len(run_chunks) >= 5
    assert covering(chunks, line_of(text, "return value_119"))[0].symbol == "Engine.run"
    assert covering(chunks, line_of(text, "return self.halt"))[0].symbol in {
        "Engine.stop.inner",
        "Engine.stop",
    }
    assert all(c.symbol and c.symbol.startswith("Engine") for c in chunks)


def test_tiny_budget_and_an_overlong_line_still_fit() -> None:
    minified = "var a=" + "+".join(f"f{i}(x,{i})" for i in range(2500)) + ";"
    text = f"function first() {{\n  return 1;\n}}\n{minified}\nfunction last() {{ return 2; }}\n"
    chunks = Chunker(24).chunk(source("bundle.js", text))
    assert_complete(chunks, text, 24)
    long_line = line_of(text, "var a=")
    pieces = [c for c in chunks if c.start_line == c.end_line == long_line]
    assert len(pieces) > 10
    assert "".join(piece.text for piece in pieces) == minified


def test_budget_holds_for_another_tokenizer() -> None:
    def wordpiece_like(text: str) -> int:
        return 2 + sum(max(1, len(word) // 3) for word in text.split())

    chunker = Chunker(48, wordpiece_like)
    for name, text in SOURCES.items():
        assert_complete(chunker.chunk(source(name, text)), text, 48, wordpiece_like)


def test_markdown_splits_by_heading_path() -> None:
    install = "\n".join(
        f"Step {i}: run the installer with option number {i} and check the output." for i in range(12)
    )
    text = (
        "# Project\n\nIntro paragraph.\n\n## Install\n\n### From pip\n\n" + install
        + "\n\n### From source\n\n```sh\n# not a heading\nmake install\n```\n\nThen run the tests.\n"
        + "\n## Usage\n\nCall `project.run()` with a path.\n"
    )  # fmt: skip
    chunks = Chunker(90).chunk(source("README.md", text))
    assert_complete(chunks, text, 90)
    assert covering(chunks, line_of(text, "Step 11"))[0].symbol == "Project > Install > From pip"
    from_source = covering(chunks, line_of(text, "# not a heading"))
    assert from_source[0].symbol == "Project > Install > From source"
    assert from_source[0].start_line == line_of(text, "### From source")
    assert covering(chunks, line_of(text, "project.run()"))[-1].symbol in {"Project > Usage", "Project"}


def test_rst_splits_by_underlined_titles() -> None:
    body = "\n".join(f"Sentence {i} about configuring the service in production." for i in range(15))
    text = f"Guide\n=====\n\nSetup\n-----\n\n{body}\n\nTuning\n------\n\nRaise the worker count.\n"
    chunks = Chunker(80).chunk(source("guide.rst", text))
    assert_complete(chunks, text, 80)
    assert covering(chunks, line_of(text, "Sentence 14"))[0].symbol == "Guide > Setup"
    assert covering(chunks, line_of(text, "Raise the worker"))[-1].symbol in {"Guide > Tuning", "Guide"}


def test_plain_text_uses_overlapping_line_windows() -> None:
    text = "".join(f"line {i} of a plain configuration file with some words\n" for i in range(200))
    chunks = Chunker(160, overlap_lines=2).chunk(source("notes.txt", text))
    assert_complete(chunks, text, 160)
    assert len(chunks) > 5
    for previous, current in zip(chunks, chunks[1:], strict=False):
        assert current.start_line == previous.end_line - 1
        assert current.symbol is None


def could_take_next_line(chunk: Chunk, text: str, max_tokens: int, count=count_tokens) -> bool:
    """Whether `chunk` with the line after it would still fit: a window filled to the budget never could."""
    lines = text.split("\n")
    longer = replace(chunk, end_line=chunk.end_line + 1, text=chunk.text + "\n" + lines[chunk.end_line])
    return count(longer.embed_text) <= max_tokens


def test_line_windows_are_filled_to_the_budget_by_exact_counts() -> None:
    # Indented code whose words are one token each: about 7 characters per token, where the chunker's
    # prior guess is 3, so windows planned from the estimate alone held well under half the budget.
    def words(text: str) -> int:
        return 2 + len(text.split())

    text = "".join(f"            total_{i} = combine(total_{i - 1}, weight_{i})\n" for i in range(300))
    chunks = Chunker(64, words).chunk(source("totals.cfg", text))
    assert_complete(chunks, text, 64, words)
    assert len(chunks) > 5
    for chunk in chunks[:-1]:
        assert not could_take_next_line(chunk, text, 64, words), chunk


def test_a_test_file_is_cut_into_full_line_windows_not_one_chunk_per_test() -> None:
    tests = "".join(
        f"def test_case_{i}(client):\n    response = client.get('/items/{i}')\n"
        f"    assert response.status_code == 200\n\n\n"
        for i in range(30)
    )
    text = "import pytest\n\n\n" + tests
    windows = Chunker(120).chunk(source("tests/test_items.py", text))
    assert_complete(windows, text, 120)
    assert {chunk.symbol for chunk in windows} == {None}
    assert all(not could_take_next_line(chunk, text, 120) for chunk in windows[:-1])
    # The same code outside a test folder keeps one chunk per function, named after it.
    per_function = Chunker(120).chunk(source("items_checks.py", text))
    assert covering(per_function, line_of(text, "def test_case_7("))[0].symbol == "test_case_7"
    assert len(windows) < len(per_function) / 2


def test_empty_and_blank_files_have_no_chunks() -> None:
    assert Chunker(64).chunk(source("empty.py", "")) == []
    assert Chunker(64).chunk(source("blank.md", "\n\n   \n")) == []


def test_unparsable_code_is_still_fully_chunked() -> None:
    text = "def broken(:\n    return ((\n" + "x = 1\n" * 80 + "class Fine:\n    pass\n"
    chunks = Chunker(40).chunk(source("broken.py", text))
    assert_complete(chunks, text, 40)


def test_parsers_are_cached_per_language() -> None:
    chunker = Chunker(64)
    assert chunker.parser("python") is chunker.parser("python")
    assert chunker.parser("markdown") is None


def test_budget_below_minimum_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        Chunker(4)


def test_text_far_denser_than_the_estimate_still_packs_lines_and_fits() -> None:
    """CJK text has ~4x the tokens per character of code; windows adapt instead of going line by line."""
    text = "".join(f"{i} 这是一个关于配置服务的中文说明，包含许多字符。\n" for i in range(300))
    chunks = Chunker(128).chunk(source("说明.txt", text))
    assert_complete(chunks, text, 128)
    assert len(chunks) < 150
    assert all(chunk.text in text for chunk in chunks)


def test_a_file_chunks_the_same_whatever_was_chunked_before() -> None:
    """Stable chunks keep their content hash, so an update reuses every cached vector."""
    fresh = Chunker(BUDGET).chunk(source("client.py", SOURCES["client.py"]))
    used = Chunker(BUDGET)
    for name, text in SOURCES.items():
        used.chunk(source(name, text))
    used.chunk(source("notes.txt", "这是中文。\n" * 400))
    assert used.chunk(source("client.py", SOURCES["client.py"])) == fresh


def test_headers_name_the_enclosing_definitions_the_text_does_not_show() -> None:
    body = "".join(f"        total_{i} = step(total_{i - 1}, weight={i})\n" for i in range(1, 60))
    text = (
        "class Ledger:\n"
        '    """Books every payment twice."""\n\n'
        "    def owner(self):\n"
        "        return self._owner\n\n"
        "    def balance(self, account):\n"
        '        """Sum of the account\'s entries."""\n'
        f"        total_0 = 0\n{body}        return total_59\n"
    )
    chunks = Chunker(120).chunk(source("ledger.py", text))
    assert_complete(chunks, text, 120)
    first, *rest = [c for c in chunks if c.symbol == "Ledger.balance"]
    assert rest, "the method should be split"
    assert first.context == "class Ledger: — Books every payment twice."
    for piece in rest:
        assert piece.context is not None
        assert piece.context.splitlines() == [
            "class Ledger: — Books every payment twice.",
            "def balance(self, account): — Sum of the account's entries.",
        ]
        assert piece.embed_text.startswith(f"{piece.header}\n") and piece.context in piece.header
    assert all(count_tokens(c.embed_text) <= 120 for c in chunks)


def test_a_class_assigned_to_module_exports_is_split_by_its_methods() -> None:
    methods = "".join(
        f"  method{i}(value) {{\n"
        + "".join(f"    value = transform{j}(value, {i});\n" for j in range(8))
        + "    return value;\n  }\n"
        for i in range(6)
    )
    text = f"module.exports = class CachePolicy {{\n{methods}}};\n"
    chunks = Chunker(120).chunk(source("index.js", text))
    assert_complete(chunks, text, 120)
    assert {c.symbol for c in chunks} >= {f"CachePolicy.method{i}" for i in range(6)}


def test_methods_with_computed_names_are_definitions_of_their_own() -> None:
    """`[kConnect](opts) {...}` and `[Symbol.iterator]() {...}` (symbol-keyed methods, common in Node
    libraries) each get chunks under their own name instead of joining the method above them."""
    body = "".join(f"    this.step{j} = compute{j}(options);\n" for j in range(8))
    text = (
        "class Pool {\n"
        f"  connect(options) {{\n{body}  }}\n"
        f"  [kConnect](options) {{\n{body}  }}\n"
        f"  [Symbol.iterator]() {{\n{body}  }}\n"
        f"  get ['async']() {{\n{body}  }}\n"
        "}\n"
    )
    chunks = Chunker(120).chunk(source("pool.js", text))
    assert_complete(chunks, text, 120)
    by_symbol = {c.symbol: c for c in chunks}
    assert {"Pool.connect", "Pool.[kConnect]", "Pool.[Symbol.iterator]", "Pool.['async']"} <= set(by_symbol)
    assert by_symbol["Pool.[kConnect]"].text.lstrip().startswith("[kConnect](options)")
    assert by_symbol["Pool.[Symbol.iterator]"].text.lstrip().startswith("[Symbol.iterator]()")


def test_the_first_piece_of_a_split_function_is_named_for_the_function_not_its_nested_def() -> None:
    """A split function's first piece holds its signature and a nested helper: it answers for the
    function, so it is labelled with the function (not with the helper, which has its own lines)."""
    body = "".join(f"        total_{i} = step(total_{i - 1}, weight={i})\n" for i in range(1, 60))
    text = (
        "class Report:\n"
        "    def render(self, rows):\n"
        "        def sort_items(item):\n"
        "            return item.key\n"
        f"        total_0 = sorted(rows, key=sort_items)\n{body}        return total_59\n"
    )
    chunks = Chunker(120).chunk(source("report.py", text))
    assert_complete(chunks, text, 120)
    first = next(c for c in chunks if "def render" in c.text)
    assert first.symbol == "Report.render"
    assert len([c for c in chunks if c.symbol == "Report.render"]) > 1, "the method should be split"


def test_a_setter_chunk_does_not_get_its_getters_signature_as_context() -> None:
    """`get encoding()` and `set encoding(v)` share a name: each piece's header shows the signature
    of the accessor it is in, not the first one defined."""
    body = "".join(f"    this.step{j} = compute{j}(value, this.options, this.state);\n" for j in range(14))
    text = (
        "class Stream {\n"
        f"  get encoding() {{\n{body}    return this.step0;\n  }}\n"
        f"  set encoding(value) {{\n{body}    this.value = value;\n  }}\n"
        "}\n"
    )
    chunks = Chunker(120).chunk(source("stream.js", text))
    assert_complete(chunks, text, 120)
    setter = [
        c
        for c in chunks
        if c.symbol == "Stream.encoding" and c.start_line > text[: text.index("set encoding")].count("\n") + 1
    ]
    assert setter, "the setter should be split into pieces of its own"
    for piece in setter:
        assert piece.context is not None and "get encoding()" not in piece.context
        assert "set encoding(value) {" in piece.context


def test_camel_case_names_are_spelled_out_in_the_header_within_the_budget() -> None:
    """The embedder's tokenizer splits `send_all` at `_` but not `fromUnsignedByteArray` at its
    capitals: the header spells such names in words, and chunks still fit with the longer header."""
    body = "".join(
        f"    const part{j} = bytes.slice({j}, {j + 1}).map((b) => b & 0xff);\n" for j in range(12)
    )
    text = (
        "class Address6 {\n"
        f"  fromUnsignedByteArray(bytes) {{\n{body}    return this;\n  }}\n"
        "  send_all(items) {\n    return items;\n  }\n"
        "}\n"
    )
    for budget in range(40, 130, 3):
        chunks = Chunker(budget).chunk(source("address.js", text))
        assert_complete(chunks, text, budget)
        named = [c for c in chunks if c.symbol == "Address6.fromUnsignedByteArray"]
        assert named and all(
            c.header.startswith(f"# address.js:{c.start_line}-{c.end_line} Address6.fromUnsignedByteArray (")
            and "Array (from unsigned byte array)" in c.header
            for c in named
        )
        assert all(" (" not in c.header.splitlines()[0] for c in chunks if c.symbol == "Address6.send_all")
