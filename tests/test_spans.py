"""Span precision: a hit cites the whole function that answers, not a piece of it nor the whole class.

On a fixture repository ingested for real (chunker, code graph, store): a method too long for one
chunk, a class whose first lines open the chunk of that method, and a function too long to cite whole.
"""

from __future__ import annotations

import pytest

from ingest import IngestOptions, ingest
from rag.embedders import Embedder
from rag.ranking import Ranking
from rag.retrieval import MAX_DEFINITION_LINES, Retriever, complete_definitions
from rag.store import RepoIndex, Store
from rag.types import SearchHit

pytest_plugins = ["tests.support.repos"]

OPTIONS = [f"        self.option_{i} = options.get('option_{i}', {i})\n" for i in range(60)]
SETTINGS = [
    f"    setting_{i} = load_setting('setting_{i}', default={i})\n" for i in range(MAX_DEFINITION_LINES)
]
HANDLER = f'''import socket


class Handler:
    """Serves one connection."""

    timeout = 30

    def __init__(self, connection, options):
        self.connection = connection
{"".join(OPTIONS[:30])}        self.frobnicate_interval = options.get("frobnicate_interval", 5)
{"".join(OPTIONS[30:])}        self.ready = True

    def close(self):
        self.connection.close()


def load_everything(loader):
{"".join(SETTINGS[:75])}    quux_threshold = load_setting("quux_threshold", default=7)
{"".join(SETTINGS[75:])}    return loader
'''


def line_of(needle: str) -> int:
    return next(number for number, line in enumerate(HANDLER.split("\n"), start=1) if needle in line)


INIT_START = line_of("def __init__")
INIT_END = line_of("self.ready = True")


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, shared_embedder: Embedder) -> RepoIndex:
    root = tmp_path_factory.mktemp("spans") / "handler-repo"
    (root / "server").mkdir(parents=True)
    (root / "server" / "handler.py").write_text(HANDLER)
    store = Store(tmp_path_factory.mktemp("spans-home"))
    report = ingest(str(root), IngestOptions(), store=store, embedder=shared_embedder)
    return store.open(report.repo_id)


def hit(start: int, end: int) -> SearchHit:
    return SearchHit("server/handler.py", "python", start, end, None, "", 1.0)


def test_a_hit_on_a_piece_of_a_method_cites_the_whole_method(index: RepoIndex) -> None:
    pieces = [c for c in index.chunks_for_file("server/handler.py") if c.symbol == "Handler.__init__"]
    assert len(pieces) > 1, "the fixture no longer splits the method"
    whole = Retriever(index, None).search("frobnicate_interval", 3, mode="lexical")[0]
    assert whole.start_line == line_of("class Handler")
    assert INIT_END <= whole.end_line < line_of("def close"), "the rest of the class is not cited"
    piece = Retriever(index, None, ranking=Ranking(whole_definitions=False))
    cut = piece.search("frobnicate_interval", 3, mode="lexical")[0]
    assert cut.start_line > INIT_START or cut.end_line < INIT_END


def test_a_hit_holding_a_functions_first_lines_grows_to_its_end(index: RepoIndex) -> None:
    """The code graph's definitions decide, whatever symbol the hit carries (here none)."""
    [widened] = complete_definitions([hit(line_of("class Handler"), INIT_START + 3)], index)
    assert (widened.start_line, widened.end_line) == (line_of("class Handler"), INIT_END)
    assert widened.text.startswith("class Handler:") and widened.text.endswith("self.ready = True")


def test_a_hit_inside_a_function_grows_to_the_innermost_function_only(index: RepoIndex) -> None:
    middle = line_of("frobnicate_interval")
    [widened] = complete_definitions([hit(middle - 2, middle + 2)], index)
    assert (widened.start_line, widened.end_line) == (INIT_START, INIT_END)


def test_a_function_too_long_to_cite_whole_is_left_as_it_is(index: RepoIndex) -> None:
    middle = line_of("quux_threshold")
    [kept] = complete_definitions([hit(middle - 2, middle + 2)], index)
    assert (kept.start_line, kept.end_line) == (middle - 2, middle + 2)


SLOT_OPTIONS = [f"        self.option_{i} = options.get('option_{i}', {i})\n" for i in range(60)]
for row in (1, 2, 3, 56, 57, 58):
    SLOT_OPTIONS[row] = f"        self.zanzibar_{row} = options.get('zanzibar', {row})  # zanzibar\n"
WORKER = f"""class Worker:
    def __init__(self, options):
{"".join(SLOT_OPTIONS)}        self.ready = True
"""
JOB = '''def run_job_{i}(queue):
    """Runs job {i} from the zanzibar queue."""
    return queue.pop({i})
'''


@pytest.fixture(scope="module")
def slots_index(tmp_path_factory: pytest.TempPathFactory, shared_embedder: Embedder) -> RepoIndex:
    root = tmp_path_factory.mktemp("slots") / "worker-repo"
    (root / "jobs").mkdir(parents=True)
    (root / "worker.py").write_text(WORKER)
    for i in range(6):
        (root / "jobs" / f"job_{i}.py").write_text(JOB.format(i=i))
    store = Store(tmp_path_factory.mktemp("slots-home"))
    report = ingest(str(root), IngestOptions(), store=store, embedder=shared_embedder)
    return store.open(report.repo_id)


def test_a_hit_grown_over_another_frees_its_slot_for_the_next(slots_index: RepoIndex) -> None:
    """The first and last pieces of `Worker.__init__` rank first as two hits; both grow to the whole
    method and fold into one, and the next-ranked chunk fills the freed slot: k hits, none twice."""
    pieces = [c for c in slots_index.chunks_for_file("worker.py") if c.symbol == "Worker.__init__"]
    assert len(pieces) >= 3, "the fixture no longer splits the method into three pieces or more"
    plain = Retriever(slots_index, None, ranking=Ranking(whole_definitions=False))
    cut = plain.search("zanzibar", 4, mode="lexical")
    assert [hit.path for hit in cut[:2]] == ["worker.py", "worker.py"], "the two pieces no longer rank first"
    hits = Retriever(slots_index, None).search("zanzibar", 4, mode="lexical")
    assert len(hits) == 4
    assert [hit.path for hit in hits].count("worker.py") == 1
    [worker] = [hit for hit in hits if hit.path == "worker.py"]
    assert (worker.start_line, worker.end_line) == (1, WORKER.count("\n"))
