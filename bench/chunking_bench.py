"""Chunking throughput: must stay far above embedding speed (~25-40 chunks/s) so it never limits ingest.

Corpus: the Python standard library of the running interpreter (about 800 modules, 12 MB, without
tests and site-packages), plus one generated multi-language set so every grammar is exercised.
Chunked twice, with the two counters the chunker meets in practice: tiktoken cl100k (the default)
and the MiniLM WordPiece counter the default embedder passes, both with its 256-token window.

Figures per counter: files, chunks, seconds, files/s, chunks/s, mean tokens per chunk (fill of the
window) and the largest chunk seen (must be <= 256). Environment: `REPOLENS_BENCH_CHUNK_FILES`
caps the number of stdlib files (default: all).
"""

from __future__ import annotations

import os
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ingest.chunking import Chunker
from ingest.filters import FileFilter, FilterSpec
from ingest.languages import language_for
from ingest.reader import Limits, SourceFile, iter_source_files
from rag.embedders.minilm import load_tokenizer
from rag.tokens import count_tokens

WINDOW = 256
_SNIPPETS = {
    ".js": "export class Store {{\n  get{i}(key) {{\n    return this.items.get(key) ?? {i};\n  }}\n}}\n",
    ".ts": "export function handle{i}(input: string): number {{\n  return input.length * {i};\n}}\n",
    ".go": "package p\n\nfunc (s *Server) Handle{i}(n int) int {{\n\treturn n * {i}\n}}\n",
    ".java": "class Job{i} {{\n    int run(int n) {{\n        return n * {i};\n    }}\n}}\n",
    ".rs": "impl Job{i} {{\n    pub fn run(&self, n: u32) -> u32 {{\n        n * {i}\n    }}\n}}\n",
    ".c": "int job_{i}(int n) {{\n    return n * {i};\n}}\n",
    ".cpp": "namespace jobs {{\nint Job{i}::run(int n) const {{\n    return n * {i};\n}}\n}}\n",
    ".rb": "class Job{i}\n  def run(n)\n    n * {i}\n  end\nend\n",
    ".php": "<?php\nclass Job{i} {{\n    public function run($n) {{ return $n * {i}; }}\n}}\n",
    ".cs": "class Job{i} {{\n    public int Run(int n) {{ return n * {i}; }}\n}}\n",
    ".md": "# Job {i}\n\n## Usage\n\nRun job {i} with `make job-{i}`.\n",
}


def _stdlib_files(limit: int | None) -> list[SourceFile]:
    root = Path(sysconfig.get_paths()["stdlib"])
    spec = FilterSpec(include_files=["*.py"], exclude_dirs=["site-packages", "test", "tests", "idle_test"])
    limits = Limits(max_files=100_000, max_total_bytes=10**10)
    files = list(iter_source_files(root, FileFilter.from_spec(spec, root), limits))
    return files[:limit] if limit else files


def _generated_files() -> list[SourceFile]:
    files = []
    for suffix, template in _SNIPPETS.items():
        text = "\n".join(template.format(i=i) for i in range(60))
        path = f"generated/many{suffix}"
        files.append(SourceFile(path, language_for(path, text), text, "", len(text)))
    return files


def _measure(files: list[SourceFile], counter: Callable[[str], int]) -> dict[str, Any]:
    chunker = Chunker(WINDOW, counter)
    started = time.perf_counter()
    chunks = [chunk for file in files for chunk in chunker.chunk(file)]
    seconds = time.perf_counter() - started
    sizes = [counter(chunk.embed_text) for chunk in chunks]
    return {
        "files": len(files),
        "chunks": len(chunks),
        "seconds": round(seconds, 2),
        "files_per_s": round(len(files) / seconds, 1),
        "chunks_per_s": round(len(chunks) / seconds, 1),
        "mean_tokens_per_chunk": round(sum(sizes) / len(sizes), 1),
        "max_tokens_seen": max(sizes),
    }


def run() -> dict[str, Any]:
    limit = int(os.environ.get("REPOLENS_BENCH_CHUNK_FILES", "0")) or None
    files = _stdlib_files(limit) + _generated_files()
    wordpiece = load_tokenizer(None)
    counters: dict[str, Callable[[str], int]] = {
        "tiktoken_cl100k": count_tokens,
        "minilm_wordpiece": lambda text: len(wordpiece.encode(text).ids),
    }
    count_tokens("warm up the encoding")
    return {
        "corpus_bytes": sum(file.size for file in files),
        "window": WINDOW,
        **{name: _measure(files, counter) for name, counter in counters.items()},
    }
