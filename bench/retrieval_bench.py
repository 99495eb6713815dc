"""Retrieval quality on real code, in two parts, each for every mode and ranking step (`RANKINGS`).

**Questions** (`bench/questions.py`): hand-written developer questions on six pinned real
repositories (starlette, requests, rich, cobra, express, axum), each with the files an answer must
cite; tuning and frozen questions reported apart.

**Describing to code** (below): does search find the function a docstring describes?

Labelled queries are built offline from two code bases in different languages:
the pure-Python `rich` package from this virtualenv and the JavaScript `undici`
library that ships inside Debian's npm (`/usr/lib/node_modules/npm/node_modules/undici`).
For every function or method with a docstring (JSDoc `/** ... */` in JavaScript)
the docstring's first sentence is the query and the function's file and line
span is the answer. Every docstring and JSDoc block is blanked out of a copy of
the sources before it is indexed, so the answer cannot be found by matching the
sentence itself; line numbers are kept.

The copies are ingested with the real pipeline and the default embedder (vectors
are cached under `build/bench/embeddings`, so reruns are fast). Reported for each
mode: Recall@1/5/10 and MRR@10 at file level (a hit in the right file) and at
span level (a hit covering at least half of the function's lines).

The tuning sample is 300 queries per code base drawn with a fixed seed; every other unique query is
**held out** (never looked at while tuning) and reported apart, for the default ranking, as the
`held_out` block. `REPOLENS_BENCH_QUERIES` caps the tuning queries evaluated per code base (default
300; the held-out set does not change with it); `REPOLENS_BENCH_PART` (`questions` or `describe`)
runs one part, `REPOLENS_BENCH_CORPORA` some question sets.

**Dev sets** (`dev` block): code no other part holds, built the same way, every unique query kept:
`dev-py` (anyio, diskcache, fsspec and GitPython from this virtualenv) and `dev-npm` (eight more of
npm's bundled libraries). A ranking change tuned on the tuning parts is kept when it does not cost
here. `REPOLENS_BENCH_SPLIT=tuning`, `dev` or `frozen` runs one part: the tuning questions and
sample, the dev sets, or the frozen questions and held-out queries (run once, at the end).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import rich

from bench import questions
from ingest import IngestOptions, ingest
from ingest.filters import FilterSpec
from rag.embedders import CachedEmbedder, Embedder, get_embedder
from rag.ranking import DEFAULT_RANKING, Ranking
from rag.retrieval import Retriever
from rag.settings import Settings
from rag.store import Store
from rag.types import SearchHit

ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = ROOT / "build" / "bench" / "embeddings"
RICH_DIR = Path(rich.__file__).parent
NPM_MODULES = Path("/usr/lib/node_modules/npm/node_modules")
# Well-documented JavaScript libraries bundled with Debian's npm, one copy of each
# (no ESM twins or minified bundles; undici's generated WebAssembly wrappers left out).
JS_SOURCES: dict[str, tuple[str, ...]] = {
    "undici": (
        "index.js",
        "lib/api/*.js",
        "lib/core/*.js",
        "lib/dispatcher/*.js",
        "lib/handler/*.js",
        "lib/interceptor/*.js",
        "lib/mock/*.js",
        "lib/util/*.js",
        "lib/web/**/*.js",
        "lib/cache/*.js",
    ),
    "ip-address": ("dist/**/*.js",),
    "smart-buffer": ("build/*.js",),
    "lru-cache": ("dist/commonjs/*.js",),
    "path-scurry": ("dist/commonjs/*.js",),
    "negotiator": ("index.js", "lib/*.js"),
    "minipass": ("dist/commonjs/*.js",),
    "socks": ("build/**/*.js",),
    "http-cache-semantics": ("index.js",),
}
# The dev sets: code no other part holds, every unique query of it a dev query. Changes tuned on the
# tuning parts are kept when they help here too (`REPOLENS_BENCH_SPLIT=dev` runs these alone).
DEV_PY_PACKAGES = ("anyio", "diskcache", "fsspec", "git")
DEV_JS_SOURCES: dict[str, tuple[str, ...]] = {
    "diff": ("libcjs/**/*.js",),
    "glob": ("dist/commonjs/*.js",),
    "minimatch": ("dist/commonjs/*.js",),
    "debug": ("src/*.js",),
    "node-gyp": ("lib/*.js",),
    "semver": ("index.js", "classes/*.js", "functions/*.js", "ranges/*.js", "internal/*.js"),
    "cacache": ("lib/**/*.js",),
    "tar": ("dist/commonjs/*.js",),
}
# Everything copied is source: the default excludes would drop the packages' `build/` and `dist/` folders.
INGEST_OPTIONS = IngestOptions(filters=FilterSpec(use_defaults=False, respect_gitignore=False))
K = 10
CUTOFFS = (1, 5, 10)
MIN_QUERY_WORDS = 3
SEED = 7
# The queries per code base tuned against; the rest of the unique queries are held out.
TUNING_QUERIES = 300
DEFAULT_VARIANT = "+paths (default)"


@dataclass(frozen=True)
class LabelledQuery:
    query: str
    path: str
    start_line: int
    end_line: int


Transform = Callable[[str, bytes], tuple[bytes, list[LabelledQuery]]]


@dataclass
class Corpus:
    """A stripped copy of a code base, its tuning queries and its held-out queries."""

    name: str
    root: Path
    queries: list[LabelledQuery]
    held_out: list[LabelledQuery]


def first_sentence(doc: str) -> str | None:
    """The docstring's first sentence on one line, or None when it is too short to be a question."""
    paragraph = inspect.cleandoc(doc).split("\n\n")[0]
    paragraph = paragraph.split("\n@")[0] if not paragraph.startswith("@") else ""
    text = " ".join(paragraph.split())
    sentence = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0].rstrip(".")
    if len(sentence.split()) < MIN_QUERY_WORDS or sentence.startswith(("@", "http", "See ", "see ")):
        return None
    return sentence


def blank(source: bytes, spans: list[tuple[int, int]], filler: bytes = b"") -> bytes:
    """Replace each byte span with `filler` plus the span's newlines, so line numbers stay put."""
    out = bytearray()
    last = 0
    for start, end in sorted(spans):
        out += source[last:start] + filler + b"\n" * source.count(b"\n", start, end)
        last = end
    return bytes(out + source[last:])


def _line_offsets(source: bytes) -> list[int]:
    offsets = [0]
    offsets.extend(i + 1 for i, byte in enumerate(source) if byte == 0x0A)
    return offsets


def python_file(path: str, source: bytes) -> tuple[bytes, list[LabelledQuery]]:
    """Docstrings replaced by `...`, and a query per documented function or method."""
    tree = ast.parse(source)
    offsets = _line_offsets(source)
    spans: list[tuple[int, int]] = []
    queries: list[LabelledQuery] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        doc = ast.get_docstring(node, clean=False)
        if doc is None:
            continue
        expr = node.body[0]
        assert expr.end_lineno is not None and expr.end_col_offset is not None
        start = offsets[expr.lineno - 1] + expr.col_offset
        spans.append((start, offsets[expr.end_lineno - 1] + expr.end_col_offset))
        sentence = first_sentence(doc)
        is_function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        if is_function and sentence and not node.name.startswith("__") and node.end_lineno:
            queries.append(LabelledQuery(sentence, path, node.lineno, node.end_lineno))
    return blank(source, spans, b"..."), queries


_JS_FUNCTIONS = {
    "function_declaration",
    "generator_function_declaration",
    "method_definition",
    "lexical_declaration",
    "variable_declaration",
    "expression_statement",
    "export_statement",
    "field_definition",
}
_JS_FUNCTION_VALUES = {"function_expression", "arrow_function", "function", "generator_function"}


def _is_js_function(node) -> bool:  # noqa: ANN001  (a tree_sitter.Node)
    """A declaration whose value is a function, possibly wrapped in `export` or an assignment."""
    if node.type in {"function_declaration", "generator_function_declaration", "method_definition"}:
        return True
    if node.type not in _JS_FUNCTIONS:
        return False
    stack = list(node.named_children)
    while stack:
        child = stack.pop()
        if child.type in _JS_FUNCTION_VALUES or child.type in {"function_declaration", "method_definition"}:
            return True
        if child.type in {"variable_declarator", "assignment_expression", "export_statement"}:
            stack.extend(child.named_children)
    return False


def javascript_file(path: str, source: bytes) -> tuple[bytes, list[LabelledQuery]]:
    """JSDoc blocks blanked, and a query per function or method documented by one."""
    import tree_sitter_javascript
    from tree_sitter import Language, Parser

    parser = Parser(Language(tree_sitter_javascript.language()))
    spans: list[tuple[int, int]] = []
    queries: list[LabelledQuery] = []
    stack = [parser.parse(source).root_node]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.type != "comment" or not source[node.start_byte : node.end_byte].startswith(b"/**"):
            continue
        spans.append((node.start_byte, node.end_byte))
        target = node.next_named_sibling
        if target is None or not _is_js_function(target):
            continue
        text = source[node.start_byte + 3 : node.end_byte - 2].decode("utf-8", "replace")
        sentence = first_sentence(re.sub(r"^\s*\* ?", "", text, flags=re.MULTILINE))
        if sentence:
            queries.append(LabelledQuery(sentence, path, target.start_point[0] + 1, target.end_point[0] + 1))
    return blank(source, spans), queries


def strip_tree(
    name: str, source_root: Path, files: Iterable[Path], dest: Path, transform: Transform, cap: int
) -> Corpus:
    """Copy `files` under `dest` with docstrings removed and split the unambiguous queries.

    The tuning sample is always the same `TUNING_QUERIES` draw (so the held-out set, every other
    unique query, never depends on `cap`); `cap` only limits how many tuning queries are kept.
    """
    queries: list[LabelledQuery] = []
    for file in sorted(files):
        relative = file.relative_to(source_root).as_posix()
        stripped, found = transform(relative, file.read_bytes())
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(stripped)
        queries.extend(found)
    counts: dict[str, int] = {}
    for item in queries:
        counts[item.query.lower()] = counts.get(item.query.lower(), 0) + 1
    unique = [item for item in queries if counts[item.query.lower()] == 1]
    tuning = random.Random(SEED).sample(unique, min(TUNING_QUERIES, len(unique)))
    chosen = set(tuning)
    held_out = [item for item in unique if item not in chosen]
    return Corpus(name, dest, sorted(tuning[:cap], key=_query_order), sorted(held_out, key=_query_order))


def _query_order(query: LabelledQuery) -> tuple[str, int]:
    return query.path, query.start_line


def js_files(sources: dict[str, tuple[str, ...]] = JS_SOURCES) -> list[Path]:
    files: set[Path] = set()
    for package, patterns in sources.items():
        for pattern in patterns:
            files.update(path for path in (NPM_MODULES / package).glob(pattern) if path.is_file())
    return sorted(files)


def corpora(workdir: Path, cap: int) -> list[Corpus]:
    found: list[Corpus] = []
    if RICH_DIR.is_dir():
        found.append(strip_tree("rich", RICH_DIR, RICH_DIR.rglob("*.py"), workdir / "rich", python_file, cap))
    if NPM_MODULES.is_dir():
        found.append(strip_tree("npm-js", NPM_MODULES, js_files(), workdir / "npm-js", javascript_file, cap))
    return found


def dev_corpora(workdir: Path) -> list[Corpus]:
    """The dev sets (`DEV_PY_PACKAGES` from this virtualenv, `DEV_JS_SOURCES` from Debian's npm),
    each with all its unique queries."""
    found: list[Corpus] = []
    site = RICH_DIR.parent
    py_files = [file for package in DEV_PY_PACKAGES for file in (site / package).rglob("*.py")]
    if py_files:
        found.append(strip_tree("dev-py", site, py_files, workdir / "dev-py", python_file, TUNING_QUERIES))
    if NPM_MODULES.is_dir():
        js = js_files(DEV_JS_SOURCES)
        found.append(
            strip_tree("dev-npm", NPM_MODULES, js, workdir / "dev-npm", javascript_file, TUNING_QUERIES)
        )
    every = [sorted(c.queries + c.held_out, key=_query_order) for c in found]
    return [Corpus(c.name, c.root, queries, []) for c, queries in zip(found, every, strict=True)]


def first_relevant(hits: list[SearchHit], query: LabelledQuery, span: bool) -> int | None:
    """1-based rank of the first hit in the right file (and covering half the function, for `span`)."""
    found = _first_relevant_hit(hits, query, span)
    return found[0] if found else None


def _first_relevant_hit(
    hits: list[SearchHit], query: LabelledQuery, span: bool
) -> tuple[int, SearchHit] | None:
    needed = (query.end_line - query.start_line + 1) / 2
    for rank, hit in enumerate(hits, start=1):
        if hit.path != query.path:
            continue
        overlap = min(hit.end_line, query.end_line) - max(hit.start_line, query.start_line) + 1
        if not span or overlap >= needed:
            return rank, hit
    return None


def span_width(hits: list[SearchHit], query: LabelledQuery) -> tuple[int, float] | None:
    """Lines of the first hit that covers the function (a span hit in the top `K`), and that
    width over the function's own lines: how much a reader gets beyond the answer."""
    found = _first_relevant_hit(hits[:K], query, span=True)
    if found is None:
        return None
    hit = found[1]
    lines = hit.end_line - hit.start_line + 1
    return lines, lines / (query.end_line - query.start_line + 1)


def span_precision(widths: list[tuple[int, float]]) -> dict[str, float]:
    """Median and 90th percentile of the span hits' lines and of their width over the function's.

    Span@10 only asks that a hit cover half the function, so a 500-line merged hit counts as well
    as the function itself; these figures show what such a hit costs a reader (or a prompt)."""
    if not widths:
        return {}
    lines = sorted(width for width, _ in widths)
    ratios = sorted(ratio for _, ratio in widths)
    return {
        "lines_p50": float(_percentile(lines, 50)),
        "lines_p90": float(_percentile(lines, 90)),
        "ratio_p50": round(_percentile(ratios, 50), 2),
        "ratio_p90": round(_percentile(ratios, 90), 2),
    }


def _percentile(values: list, percent: int) -> float:
    """The nearest-rank percentile of sorted `values`."""
    rank = max(1, -(-percent * len(values) // 100))
    return values[rank - 1]


def metrics(ranks: list[int | None]) -> dict[str, float]:
    total = max(len(ranks), 1)
    figures = {f"recall@{c}": sum(1 for r in ranks if r is not None and r <= c) / total for c in CUTOFFS}
    figures["mrr@10"] = sum(1 / r for r in ranks if r is not None and r <= K) / total
    return {name: round(value, 4) for name, value in figures.items()}


@dataclass
class Scores:
    """One ranking variant on one query set."""

    file: dict[str, float]
    span: dict[str, float]
    ms_per_query: float
    precision: dict[str, float]


def score(retriever: Retriever, queries: list[LabelledQuery], variant: str) -> Scores:
    """File-level and span-level figures of one ranking variant, its milliseconds per query and the
    width of its span hits (`span_precision`)."""
    mode, ranking = RANKINGS[variant]
    ranked = Retriever(retriever.index, retriever.embedder, ranking=ranking)
    file_ranks: list[int | None] = []
    span_ranks: list[int | None] = []
    widths: list[tuple[int, float]] = []
    started = time.perf_counter()
    for query in queries:
        hits = ranked.search(query.query, K, mode=mode)  # type: ignore[arg-type]
        file_ranks.append(first_relevant(hits, query, span=False))
        span_ranks.append(first_relevant(hits, query, span=True))
        if (width := span_width(hits, query)) is not None:
            widths.append(width)
    elapsed = time.perf_counter() - started
    ms_per_query = round(1000 * elapsed / max(len(queries), 1), 2)
    return Scores(metrics(file_ranks), metrics(span_ranks), ms_per_query, span_precision(widths))


def evaluate(retriever: Retriever, queries: list[LabelledQuery], variant: str) -> dict[str, object]:
    scores = score(retriever, queries, variant)
    return {
        "file": scores.file,
        "span": scores.span,
        "ms_per_query": scores.ms_per_query,
        "span_precision": scores.precision,
    }


def headline(evaluated: dict, queries: int) -> dict[str, float]:
    """The goal figures of an `evaluate` result: file MRR@10 and Span@10 (a hit covering the function
    in the top 10), and how wide those span hits are (median and p90 lines, and × the function's)."""
    figures = {
        "queries": queries,
        "mrr@10": evaluated["file"]["mrr@10"],
        "span@10": evaluated["span"]["recall@10"],
    }
    figures.update({f"span_{name}": value for name, value in evaluated["span_precision"].items()})
    return figures


def macro(rows: Iterable[dict[str, float]]) -> dict[str, float]:
    kept = list(rows)
    count = max(len(kept), 1)
    return {name: round(sum(row[name] for row in kept) / count, 4) for name in ("mrr@10", "span@10")}


def bench_embedder(home: Path) -> Embedder:
    """The default embedder with a vector cache that outlives the temporary store."""
    inner = get_embedder(Settings.from_env({**os.environ, "REPOLENS_HOME": str(home)}), cache_vectors=False)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    return CachedEmbedder(inner, CACHE_DIR)


def markdown_table(results: dict[str, dict]) -> str:
    lines = [
        "| code base | mode | file R@1 | file R@5 | file R@10 | file MRR@10 "
        "| span R@1 | span R@5 | span R@10 | span MRR@10 | ms/query |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        for mode, figures in result["modes"].items():
            file, span = figures["file"], figures["span"]
            cells = [name + f" ({result['queries']} q)", mode]
            cells += [f"{100 * file[m]:.1f}" for m in ("recall@1", "recall@5", "recall@10", "mrr@10")]
            cells += [f"{100 * span[m]:.1f}" for m in ("recall@1", "recall@5", "recall@10", "mrr@10")]
            cells.append(f"{figures['ms_per_query']:.1f}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def headline_table(parts: dict[str, dict[str, dict[str, float]]]) -> str:
    """The default ranking's goal figures per part (tuning, held out), code base and macro, with
    the width of the span hits (lines p50 / p90, and × the function's lines p50 / p90)."""
    lines = [
        "| queries | code base | file MRR@10 | Span@10 | span hit lines p50 / p90 | × function p50 / p90 |",
        "|---|---|---|---|---|---|",
    ]
    for part, rows in parts.items():
        for name, row in rows.items():
            count = f" ({int(row['queries'])} q)" if "queries" in row else ""
            figures = f"{100 * row['mrr@10']:.1f} | {100 * row['span@10']:.1f}"
            if "span_lines_p50" in row:
                figures += f" | {row['span_lines_p50']:.0f} / {row['span_lines_p90']:.0f}"
                figures += f" | {row['span_ratio_p50']:.2f} / {row['span_ratio_p90']:.2f}"
            else:
                figures += " | | "
            lines.append(f"| {part} | {name}{count} | {figures} |")
    return "\n".join(lines)


FUSION_ONLY = Ranking(roles=False, links=False, whole_definitions=False, names=False, paths=False)
# Each ranking step added in turn on top of the plain fusion; the last is the default.
RANKINGS: dict[str, tuple[str, Ranking]] = {
    "dense": ("dense", FUSION_ONLY),
    "lexical": ("lexical", FUSION_ONLY),
    "hybrid": ("hybrid", FUSION_ONLY),
    "+roles": ("hybrid", dataclasses.replace(FUSION_ONLY, roles=True)),
    "+links": ("hybrid", dataclasses.replace(FUSION_ONLY, roles=True, links=True)),
    "+spans": ("hybrid", dataclasses.replace(FUSION_ONLY, roles=True, links=True, whole_definitions=True)),
    "+names": ("hybrid", dataclasses.replace(DEFAULT_RANKING, paths=False)),
    "+paths (default)": ("hybrid", DEFAULT_RANKING),
}


def question_variants() -> dict[str, questions.Search]:
    """The modes and ranking variants compared on the question sets."""

    def variant(mode: str, ranking: Ranking) -> questions.Search:
        def search(retriever: Retriever, text: str) -> list[SearchHit]:
            ranked = Retriever(retriever.index, retriever.embedder, ranking=ranking)
            return ranked.search(text, K, mode=mode)  # type: ignore[arg-type]

        return search

    return {name: variant(mode, ranking) for name, (mode, ranking) in RANKINGS.items()}


def run() -> dict:
    """Both parts; `REPOLENS_BENCH_PART=questions` (or `describe`) runs one of them."""
    part = os.environ.get("REPOLENS_BENCH_PART", "").strip()
    result: dict[str, object] = {}
    if part in ("", "questions") and set(questions.selected_parts()) & set(questions.PARTS):
        home = Path(tempfile.mkdtemp(prefix="repolens-retrieval-bench-"))
        try:
            result["questions"] = questions.run(bench_embedder(home), question_variants())
        finally:
            shutil.rmtree(home, ignore_errors=True)
    if part in ("", "describe"):
        result["describe"] = run_describe()
    return result


def run_describe() -> dict:
    cap = int(os.environ.get("REPOLENS_BENCH_QUERIES", "300"))
    workdir = Path(tempfile.mkdtemp(prefix="repolens-retrieval-bench-"))
    try:
        store = Store(workdir / "home")
        embedder = bench_embedder(workdir / "home")
        results: dict[str, dict] = {}
        tuning: dict[str, dict[str, float]] = {}
        held_out: dict[str, dict[str, float]] = {}
        parts = questions.selected_parts()
        scored = corpora(workdir / "corpora", cap) if {"tuning", "frozen"} & set(parts) else []
        for corpus in scored:
            started = time.perf_counter()
            report = ingest(str(corpus.root), INGEST_OPTIONS, store=store, embedder=embedder)
            index = store.open(report.repo_id)
            retriever = Retriever(index, embedder)
            ingest_s = round(time.perf_counter() - started, 1)
            if "tuning" in parts:
                results[corpus.name] = {
                    "files": report.record.file_count,
                    "chunks": report.record.chunk_count,
                    "queries": len(corpus.queries),
                    "ingest_s": ingest_s,
                    "modes": {variant: evaluate(retriever, corpus.queries, variant) for variant in RANKINGS},
                }
                default = results[corpus.name]["modes"][DEFAULT_VARIANT]
                tuning[corpus.name] = headline(default, len(corpus.queries))
            if "frozen" in parts:
                held_out_figures = evaluate(retriever, corpus.held_out, DEFAULT_VARIANT)
                held_out[corpus.name] = headline(held_out_figures, len(corpus.held_out))
        dev: dict[str, dict[str, float]] = {}
        if "dev" in parts:
            for corpus in dev_corpora(workdir / "corpora"):
                report = ingest(str(corpus.root), INGEST_OPTIONS, store=store, embedder=embedder)
                retriever = Retriever(store.open(report.repo_id), embedder)
                dev[corpus.name] = headline(
                    evaluate(retriever, corpus.queries, DEFAULT_VARIANT), len(corpus.queries)
                )
        shown = {"tuning": tuning, "dev": dev, "held out": held_out}
        for rows in shown.values():
            if rows:
                rows["macro"] = macro(rows.values())
        table = (
            markdown_table(results) + "\n\n" + headline_table({p: rows for p, rows in shown.items() if rows})
        )
        print(table, file=sys.stderr)
        return {
            "k": K,
            "results": results,
            "tuning": tuning,
            "dev": dev,
            "held_out": held_out,
            "table": table,
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
