"""Hybrid retrieval over a real store, real FAISS, real SQLite FTS5 and the real MiniLM embedder.

The corpus is written so that each ranking fails somewhere: an error code only
BM25 can find (`E4471` among near-identical siblings), and a question about
mail that shares no word with the mailer code but several with distractors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from rag.embedders import Embedder, get_embedder
from rag.errors import EmbedderMismatchError
from rag.ranking import Ranking
from rag.retrieval import (
    RANK_DEPTH,
    Retriever,
    SearchError,
    fuse,
    merge_chunks,
    named_paths,
    named_symbols,
    rrf,
)
from rag.settings import Settings
from rag.store import RepoIndex, Store
from rag.types import Chunk, RepoRecord, SearchHit

Blocks = list[tuple[str | None, str]]

CORPUS: dict[str, tuple[str, Blocks]] = {
    "netlib/client.py": (
        "python",
        [
            ("HttpClient", 'class HttpClient:\n    """An HTTP client over a connection pool."""\n'),
            (
                "HttpClient.send",
                "def send(self, request):\n"
                "        conn = self.pool.acquire(request.host)\n"
                "        try:\n"
                "            return conn.roundtrip(request)\n"
                "        finally:\n"
                "            self.pool.release(conn)",
            ),
            (
                "HttpClient._follow_redirects",
                "def _follow_redirects(self, response, limit=5):\n"
                "        while response.status in (301, 302, 307, 308) and limit > 0:\n"
                '            location = response.headers["Location"]\n'
                '            response = self.pool.roundtrip(Request("GET", location))\n'
                "            limit -= 1\n"
                "        return response",
            ),
        ],
    ),
    "netlib/retry.py": (
        "python",
        [
            (
                "compute_backoff",
                "def compute_backoff(attempt, base=0.5, cap=30.0):\n"
                "    delay = min(cap, base * 2 ** attempt)\n"
                "    return delay * random.uniform(0.5, 1.0)",
            ),
            (
                "retry_with_backoff",
                "def retry_with_backoff(operation, attempts=4):\n"
                "    for attempt in range(attempts):\n"
                "        try:\n"
                "            return operation()\n"
                "        except TransientError:\n"
                "            time.sleep(compute_backoff(attempt))\n"
                "    raise RetriesExhausted(attempts)",
            ),
        ],
    ),
    "netlib/quota.py": (
        "python",
        [
            (
                f"check_{name}_capacity",
                f"def check_{name}_capacity({name}, needed):\n"
                f"    if {name}.free < needed:\n"
                f'        raise CapacityError("{code}: {name} quota exhausted")\n'
                f"    {name}.reserve(needed)",
            )
            for name, code in (("shard", "E4471"), ("disk", "E4470"), ("memory", "E4472"), ("queue", "E4473"))
        ],
    ),
    "notify/mailer.py": (
        "python",
        [
            (
                "dispatch_mail",
                "def dispatch_mail(recipient, subject, body):\n"
                "    message = MIMEText(body)\n"
                '    message["Subject"] = subject\n'
                '    message["To"] = recipient\n'
                "    with smtplib.SMTP(SMTP_HOST) as smtp:\n"
                "        smtp.sendmail(SENDER, [recipient], message.as_string())",
            )
        ],
    ),
    "notify/preferences.py": (
        "python",
        [
            (
                "ChannelPreferences",
                "class ChannelPreferences:\n"
                "    def for_member(self, member_id):\n"
                "        return self.table.get(member_id, DEFAULT_SETTINGS)",
            )
        ],
    ),
    "web/notifications.js": (
        "javascript",
        [
            (
                "showNotification",
                "export function showNotification(user, text) {\n"
                '  const banner = document.createElement("div");\n'
                "  banner.textContent = `${user.name}: ${text}`;\n"
                "  document.body.append(banner);\n"
                "}",
            )
        ],
    ),
    "web/json.js": (
        "javascript",
        [("parseJSONValue", "export function parseJSONValue(raw) {\n  return JSON.parse(raw);\n}")],
    ),
    "store/cache.go": (
        "go",
        [
            (
                "Cache.Get",
                "func (c *Cache) Get(key string) (string, bool) {\n"
                "\tvalue, ok := c.items[key]\n"
                "\treturn value, ok\n"
                "}",
            ),
            ("Cache.Evict", "func (c *Cache) Evict(key string) {\n\tdelete(c.items, key)\n}"),
        ],
    ),
    "docs/guide.md": (
        "markdown",
        [
            (None, "# Guide\n\nThe client retries transient failures with exponential backoff."),
            (None, "## Caching\n\nResponses are cached in memory and evicted when the cache is full."),
        ],
    ),
}

REPO_ID = "local/corpus"


@dataclass(frozen=True)
class CorpusFile:
    """What the store's builder needs to know about a file."""

    path: str
    language: str
    text: str
    sha256: str
    size: int


def corpus_file(path: str, language: str, blocks: Blocks) -> tuple[CorpusFile, list[Chunk]]:
    """The file (blocks separated by one blank line) and one chunk per block."""
    chunks: list[Chunk] = []
    line = 1
    for symbol, text in blocks:
        end = line + text.count("\n")
        chunks.append(Chunk(path, language, line, end, symbol, text))
        line = end + 2
    text = "\n\n".join(block for _, block in blocks) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()
    return CorpusFile(path, language, text, digest, len(text)), chunks


def build(store: Store, embedder: Embedder, files: Mapping[str, tuple[str, Blocks]], removed=()) -> RepoIndex:
    """Write a version of the corpus through the real builder (an update when one exists)."""
    base = store.open(REPO_ID) if store.get(REPO_ID) else None
    record = RepoRecord(REPO_ID, "/corpus", "local", None, None, embedder.name, embedder.dimension)
    with store.builder(record, base) as builder:
        for path in removed:
            builder.remove_file(path)
        for path, (language, blocks) in files.items():
            file, chunks = corpus_file(path, language, blocks)
            builder.add_file(file, chunks, embedder.embed_documents([c.embed_text for c in chunks]))
        builder.commit()
    return store.open(REPO_ID)


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    return get_embedder(Settings(home=tmp_path_factory.mktemp("embedder-home")), cache_vectors=False)


@pytest.fixture(scope="module")
def retriever(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Retriever:
    store = Store(tmp_path_factory.mktemp("corpus-home"))
    return Retriever(build(store, embedder, CORPUS), embedder)


def top(hits: Sequence[SearchHit]) -> SearchHit:
    assert hits, "no results"
    return hits[0]


def test_hybrid_finds_an_exact_identifier_that_dense_misses(retriever: Retriever) -> None:
    dense = retriever.search("E4471", 3, mode="dense")
    assert "E4471" not in top(dense).text
    hybrid = top(retriever.search("E4471", 3))
    assert hybrid.path == "netlib/quota.py"
    assert hybrid.symbol == "check_shard_capacity"
    assert "E4471" in hybrid.text


def test_hybrid_finds_a_paraphrase_that_bm25_misses(retriever: Retriever) -> None:
    query = "send an email notification to a user"
    lexical = retriever.search(query, 10, mode="lexical")
    assert lexical, "BM25 should match the distractors"
    assert "notify/mailer.py" not in [hit.path for hit in lexical]
    # The embedding alone: `web/notifications.js` is named with the question's words (path weight).
    unweighted = Retriever(retriever.index, retriever.embedder, ranking=Ranking(paths=False))
    assert top(unweighted.search(query, 3, mode="dense")).path == "notify/mailer.py"
    assert "notify/mailer.py" in [hit.path for hit in retriever.search(query, 3)]


@pytest.mark.parametrize(
    ("query", "path", "symbol"),
    [
        ("client.py", "netlib/client.py", None),
        ("netlib/quota.py", "netlib/quota.py", None),
        ("what does retry.py do", "netlib/retry.py", None),
        ("HttpClient.send", "netlib/client.py", "HttpClient.send"),
        ("send", "netlib/client.py", "HttpClient.send"),
        ("where is dispatch_mail called", "notify/mailer.py", "dispatch_mail"),
        ("parseJSONValue()", "web/json.js", "parseJSONValue"),
        ("Cache.Evict", "store/cache.go", "Cache.Evict"),
    ],
)
@pytest.mark.parametrize("mode", ["hybrid", "lexical"])
def test_a_named_path_or_symbol_ranks_first(
    retriever: Retriever, query: str, path: str, symbol: str | None, mode: str
) -> None:
    hit = top(retriever.search(query, 5, mode=mode))
    assert hit.path == path
    if symbol:
        assert hit.symbol == symbol


@pytest.mark.parametrize(
    ("query", "paths", "symbols"),
    [
        ("rag/prompt.py and foo.bar", ["rag/prompt.py", "foo.bar"], ["prompt.py", "foo.bar"]),
        ("how is the width computed", [], []),
        ("width", [], ["width"]),
        ("the", [], []),
        ("call send_all then sendAll or emit()", [], ["send_all", "sendAll", "emit"]),
        ("the host bracketed, e.g. [::1]; private, i.e. not routed", ["e.g", "i.e"], []),
    ],
)
def test_named_paths_and_symbols_come_from_code_looking_tokens(
    query: str, paths: list[str], symbols: list[str]
) -> None:
    assert named_paths(query) == paths
    assert named_symbols(query) == symbols


def test_adjacent_chunks_of_a_file_are_merged(retriever: Retriever) -> None:
    hits = retriever.search("retry backoff", 5)
    retry_hits = [hit for hit in hits if hit.path == "netlib/retry.py"]
    assert len(retry_hits) == 1
    merged = retry_hits[0]
    file_text = retriever.index.file_text("netlib/retry.py")
    assert file_text is not None
    assert (merged.start_line, merged.end_line) == (1, len(file_text.splitlines()))
    assert merged.text == file_text.rstrip("\n")
    assert merged.text.count("def compute_backoff") == 1


@pytest.mark.parametrize(
    "query", ["E4471", "retry backoff", "cache", "client", "quota exhausted", "send an email", "json"]
)
def test_no_two_hits_of_a_file_overlap_or_touch(retriever: Retriever, query: str) -> None:
    for mode in ("hybrid", "dense", "lexical"):
        hits = retriever.search(query, 10, mode=mode)
        for i, a in enumerate(hits):
            for b in hits[i + 1 :]:
                if a.path == b.path:
                    assert a.end_line + 3 < b.start_line or b.end_line + 3 < a.start_line, (query, mode)
        assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)


def test_merge_joins_touching_spans_only(retriever: Retriever) -> None:
    shard, disk, memory, queue = retriever.index.chunks_for_file("netlib/quota.py")
    apart = merge_chunks([(shard, 0.9), (queue, 0.8)], 5, retriever.index.file_text)
    assert [(hit.start_line, hit.end_line) for hit in apart] == [(1, 4), (16, 19)]
    joined = merge_chunks([(disk, 0.9), (shard, 0.8), (queue, 0.7)], 5, retriever.index.file_text)
    assert [(hit.start_line, hit.end_line, hit.symbol, hit.score) for hit in joined] == [
        (1, 9, "check_disk_capacity", 0.9),
        (16, 19, "check_queue_capacity", 0.7),
    ]
    assert joined[0].text.splitlines() == shard.text.splitlines() + [""] + disk.text.splitlines()
    # Its symbol is its best chunk's (what ranking goes by); readers see both names, in line order.
    assert joined[0].label == joined[0].to_json()["symbol"] == "check_shard_capacity, check_disk_capacity"
    # A chunk between two hits bridges them into one.
    bridged = merge_chunks([(shard, 0.9), (memory, 0.8), (disk, 0.7)], 5, retriever.index.file_text)
    assert [(hit.start_line, hit.end_line) for hit in bridged] == [(1, 14)]
    assert bridged[0].label == "check_shard_capacity, check_disk_capacity, check_memory_capacity"
    # Without the stored file the spans' own lines are joined, none twice.
    no_file = merge_chunks([(shard, 0.9), (disk, 0.8)], 5, lambda path: None)
    assert no_file[0].text.splitlines() == shard.text.splitlines() + disk.text.splitlines()
    assert len(merge_chunks([(shard, 0.9), (queue, 0.8)], 1, retriever.index.file_text)) == 1


@pytest.mark.parametrize(
    ("options", "accept"),
    [
        ({"path_glob": "*.js"}, lambda hit: hit.path.endswith(".js")),
        ({"path_glob": "netlib"}, lambda hit: hit.path.startswith("netlib/")),
        ({"path_glob": "notify/**/*.py"}, lambda hit: hit.path.startswith("notify/")),
        ({"language": "go"}, lambda hit: hit.language == "go"),
        ({"language": "python", "path_glob": "notify"}, lambda hit: hit.path.startswith("notify/")),
    ],
)
@pytest.mark.parametrize("mode", ["hybrid", "dense", "lexical"])
@pytest.mark.parametrize("query", ["HttpClient.send", "cache", "send an email", "client.py"])
def test_filters_apply_to_every_mode_and_to_exact_matches(
    retriever: Retriever, options: dict, accept: Callable[[SearchHit], bool], mode: str, query: str
) -> None:
    hits = retriever.search(query, 10, mode=mode, **options)
    assert all(accept(hit) for hit in hits), [hit.path for hit in hits]
    if mode != "lexical":
        assert hits, "dense ranking returns every chunk that passes the filter"


def test_filter_that_matches_nothing_returns_nothing(retriever: Retriever) -> None:
    assert retriever.search("client", 5, path_glob="nowhere/") == []
    assert retriever.search("client", 5, language="cobol") == []


@pytest.mark.parametrize(
    ("query", "k", "mode", "message"),
    [
        ("   ", 5, "hybrid", "empty"),
        ("client", 0, "hybrid", "between 1 and 100"),
        ("client", 101, "hybrid", "between 1 and 100"),
        ("client", 5, "fuzzy", "unknown search mode"),
    ],
)
def test_bad_requests_are_clear_errors(retriever: Retriever, query: str, k: int, mode, message: str) -> None:
    with pytest.raises(SearchError, match=message) as caught:
        retriever.search(query, k, mode=mode)
    assert caught.value.code == "bad_request"


class RenamedEmbedder:
    """The real embedder under another name: the index must refuse its vectors."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = "other-model"
        self.dimension = inner.dimension
        self.max_tokens = inner.max_tokens

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def embed_documents(self, texts, progress=None) -> np.ndarray:
        return self.inner.embed_documents(texts, progress)

    def embed_query(self, text: str) -> np.ndarray:
        return self.inner.embed_query(text)


def test_embedder_mismatch_is_refused_but_lexical_still_works(
    retriever: Retriever, embedder: Embedder
) -> None:
    other = Retriever(retriever.index, RenamedEmbedder(embedder))
    with pytest.raises(EmbedderMismatchError, match="re-index"):
        other.search("client", 5)
    assert top(other.search("E4471", 5, mode="lexical")).path == "netlib/quota.py"
    without = Retriever(retriever.index, None)
    assert top(without.search("E4471", 5, mode="lexical")).path == "netlib/quota.py"
    with pytest.raises(SearchError, match="needs an embedder"):
        without.search("client", 5)


class CountingEmbedder(RenamedEmbedder):
    def __init__(self, inner: Embedder) -> None:
        super().__init__(inner)
        self.name = inner.name
        self.queries: list[str] = []

    def embed_query(self, text: str) -> np.ndarray:
        self.queries.append(text)
        return self.inner.embed_query(text)


def test_query_embeddings_are_cached(retriever: Retriever, embedder: Embedder) -> None:
    counting = CountingEmbedder(embedder)
    cached = Retriever(retriever.index, counting)
    first = cached.search("how are redirects followed", 3)
    second = Retriever(retriever.index, counting).search("how are redirects followed", 3)
    assert counting.queries == ["how are redirects followed"]
    assert first == second
    assert top(first).symbol == "HttpClient._follow_redirects"


def test_rrf_rewards_agreement() -> None:
    scores = rrf([(1.0, [1, 2, 3]), (1.0, [3, 1])])
    assert max(scores, key=scores.get) == 1
    assert scores[3] > scores[2]
    assert scores[1] == pytest.approx(1 / 61 + 1 / 62)


def test_fusion_reads_each_ranking_past_the_candidates() -> None:
    """Chunk 1 is dense's first and BM25's fifth: with two candidates per ranking it is still a
    candidate, and its BM25 rank counts, so it outranks chunk 9 (BM25's first, absent from dense)."""
    dense, lexical = [1, 2, 3, 4, 5], [9, 8, 7, 6, 1]
    scores = fuse([(1.0, dense), (1.5, lexical)], 2)
    assert set(scores) == {1, 2, 9, 8}
    assert scores[1] == pytest.approx(1 / 61 + 1.5 / 65)
    assert max(scores, key=scores.get) == 1
    cut = rrf([(1.0, dense[:2]), (1.5, lexical[:2])])
    assert max(cut, key=cut.get) == 9, "read only two deep, the agreement is lost"


def test_a_hybrid_search_reads_both_rankings_deep(
    retriever: Retriever, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fusion gets each ranking `RANK_DEPTH` deep; a single-ranking search needs only its candidates."""
    asked: list[tuple[str, int]] = []
    index = retriever.index
    dense, lexical = index.dense_search, index.lexical_search
    monkeypatch.setattr(
        index, "dense_search", lambda v, k, **f: asked.append(("dense", k)) or dense(v, k, **f)
    )
    monkeypatch.setattr(
        index, "lexical_search", lambda q, k, **f: asked.append(("lexical", k)) or lexical(q, k, **f)
    )
    retriever.search("how are redirects followed", 5)
    assert asked[:2] == [("dense", RANK_DEPTH), ("lexical", RANK_DEPTH)]
    asked.clear()
    retriever.search("how are redirects followed", 5, mode="lexical")
    assert asked[0] == ("lexical", retriever.candidates)
    asked.clear()
    Retriever(index, retriever.embedder, rank_depth=0).search("how are redirects followed", 5)
    assert asked[:2] == [("dense", retriever.candidates), ("lexical", retriever.candidates)]


def test_an_update_keeps_dense_and_lexical_consistent(tmp_path: Path, embedder: Embedder) -> None:
    store = Store(tmp_path / "home")
    build(store, embedder, CORPUS)
    changed = {
        "notify/mailer.py": ("python", [("dispatch_mail", "def dispatch_mail(to):\n    post(to, 'E9321')")])
    }
    index = build(store, embedder, changed, removed=["netlib/quota.py"])
    retriever = Retriever(index, embedder)
    assert index.size == sum(info.chunk_count for info in index.list_files())
    for mode in ("hybrid", "dense", "lexical"):
        for query in ("E4471", "quota exhausted", "netlib/quota.py", "check_shard_capacity", "smtplib SMTP"):
            hits = retriever.search(query, 20, mode=mode)
            assert "netlib/quota.py" not in [hit.path for hit in hits], (mode, query)
            assert not any("smtplib" in hit.text for hit in hits), (mode, query)
    assert top(retriever.search("E9321", 3)).path == "notify/mailer.py"


def test_incremental_ingest_never_returns_a_deleted_file(
    indexed_repo: tuple[Store, str], fixture_repo: Path
) -> None:
    from ingest import ingest
    from tests.support.repos import RARE_IDENTIFIER, commit_all

    store, repo_id = indexed_repo
    embedder = get_embedder(Settings.from_env())
    before = Retriever(store.open(repo_id), embedder)
    assert top(before.search(RARE_IDENTIFIER, 3)).path == "weatherline/client.py"
    assert "weatherline/storage.py" in [hit.path for hit in before.search("persist forecasts history", 5)]

    (fixture_repo / "weatherline" / "storage.py").unlink()
    client = fixture_repo / "weatherline" / "client.py"
    client.write_text(client.read_text().replace(RARE_IDENTIFIER, "MAX_ATTEMPTS"))
    commit_all(fixture_repo, "drop storage, rename the ceiling")
    ingest(str(fixture_repo), store=store, embedder=embedder)

    after = Retriever(store.open(repo_id), embedder)
    for mode in ("hybrid", "dense", "lexical"):
        for query in ("persist forecasts history", "storage.py", "persist_forecasts", RARE_IDENTIFIER):
            hits = after.search(query, 20, mode=mode)
            assert "weatherline/storage.py" not in [hit.path for hit in hits], (mode, query)
            assert not any(RARE_IDENTIFIER in hit.text for hit in hits), (mode, query)
    assert top(after.search("MAX_ATTEMPTS", 3)).path == "weatherline/client.py"
