"""Chunking an ingest's files on every core: a process pool for large runs, the same chunks as one process.

Parsing, the code graph, chunking and the chunks' lexical terms are pure Python over each file alone
(the chunker plans a file from that file only, so it chunks the same way whatever came before it),
which makes them the part of an ingest that parallelises: a pool of worker processes (forked from
a server that imported the chunker once) chunks files in input order while the ingest's own process
writes the index (`ingest.pipeline` writes each file as its chunks arrive).
`tests/test_chunk_pool.py` proves the chunks and graphs equal a run in one process.

A worker costs a fraction of a CPU-second to start, so the pool is used only from `POOL_MIN_FILES`
files on, with a token counter that can be sent to another process, and when Python's rule for
worker processes holds: the main module must be safe to import again (`python -m ...`, a console
script, or a script guarded by `if __name__ == "__main__":`). Otherwise, or if the workers cannot
start, the files are chunked in this process: same chunks, one core. Each worker ends when the
process that started the pool ends, however it ends (a SIGTERMed or SIGKILLed server leaves no
worker, forkserver or resource tracker behind: `tests/test_chunk_pool.py`).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import pickle
import select
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import forkserver
from pathlib import Path

from ingest import graph as code_graph
from ingest.chunking import Chunker
from ingest.lexical_only import lexical_only
from ingest.reader import SourceFile
from rag.embedders.local import available_cpus
from rag.graph_types import FileGraph
from rag.lexical import ChunkTerms, chunk_terms
from rag.pickling import pickled_by_fields
from rag.types import Chunk

# Fewer files than this are chunked in the ingest's process: starting workers would cost more.
POOL_MIN_FILES = 300
# Files sent to a worker at a time (fewer round trips, still an even share of the work).
_BATCH_FILES = 16
_PRELOAD = ["ingest.chunk_pool"]


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class ChunkedFile:
    """One file's chunks, code graph (None: a language the graph does not understand), and what the
    index needs of each chunk besides: its lexical terms, its content hash, and whether it is never
    embedded."""

    chunks: list[Chunk]
    graph: FileGraph | None
    graph_s: float
    terms: list[ChunkTerms]  # `rag.lexical.chunk_terms`, row for row
    hashes: list[str]  # `Chunk.content_hash`, row for row
    lexical_only: frozenset[int]  # `ingest.lexical_only`


def chunk_file(chunker: Chunker, file: SourceFile) -> ChunkedFile:
    """Parse `file` once, extract its code graph from the tree, chunk it, and tokenize and hash the
    chunks for the index (most of the index writer's own work, done here on every core: the writer
    is one process, and a chunk's hash needs its header built)."""
    tree = chunker.parse(file)
    started = time.monotonic()
    file_graph = code_graph.extract(file.language, tree) if tree is not None else None
    graph_s = time.monotonic() - started
    chunks = chunker.chunk(file, tree)
    terms = [chunk_terms(chunk) for chunk in chunks]
    hashes = [chunk.content_hash for chunk in chunks]
    return ChunkedFile(chunks, file_graph, graph_s, terms, hashes, lexical_only(file, chunks))


def pool_size(files: int, requested: int) -> int:
    """Processes for a run of `files` files: `requested` (0: one per usable core), 1 below the threshold."""
    if requested == 0:
        requested = available_cpus()
    return 1 if files < POOL_MIN_FILES else max(1, requested)


def chunk_files(
    files: Sequence[SourceFile],
    max_tokens: int,
    count_tokens: Callable[[str], int],
    processes: int = 1,
) -> Generator[ChunkedFile, None, None]:
    """Every file's `ChunkedFile`, in the order of `files`, on `processes` processes (1: this one).

    A counter that cannot be pickled (a remote embedder's) chunks in this process. Stopping the
    iteration early (a cancelled ingest) stops the workers.
    """
    if processes > 1 and _picklable(count_tokens) and _main_can_be_imported_again():
        try:
            yield from _pooled(files, max_tokens, count_tokens, processes)
            return
        except BrokenProcessPool:
            pass  # nothing was yielded: a worker dies before its first batch is back
    chunker = Chunker(max_tokens, count_tokens)
    for file in files:
        yield chunk_file(chunker, file)


def prepare(requested: int) -> None:
    """Start the pool's forkserver now if a run of `POOL_MIN_FILES` files would chunk on the pool
    (`requested` as for `pool_size`): its import of the chunker is most of a worker's start (a second
    or more of a 2,000-file run's critical path). The pipeline calls it once its scan has found that
    many files to chunk, so the import overlaps the rest of the scan; the pool's workers then fork
    from it, as they do from the one a server's earlier ingest started."""
    if pool_size(POOL_MIN_FILES, requested) > 1 and _main_can_be_imported_again():
        _context()
        forkserver.ensure_running()


def _context() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    return context


def _main_can_be_imported_again() -> bool:
    """Whether a worker may import `__main__` (multiprocessing does, unless it ran as `-m pkg`)."""
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None and (name == "__main__" or name.endswith(".__main__")):
        return True  # not imported again
    path = getattr(main, "__file__", None)
    if path is None:
        return True  # an interactive session
    try:
        source = Path(path).read_text(errors="replace")
    except OSError:
        return False
    return any(guard in source for guard in ("__name__ == '__main__'", '__name__ == "__main__"'))


def _picklable(value: object) -> bool:
    try:
        pickle.dumps(value)
    except Exception:  # noqa: BLE001  # whatever pickling raises, the answer is "no"
        return False
    return True


def _pooled(
    files: Sequence[SourceFile], max_tokens: int, count_tokens: Callable[[str], int], processes: int
) -> Iterator[ChunkedFile]:
    context = _context()
    batches = [files[start : start + _BATCH_FILES] for start in range(0, len(files), _BATCH_FILES)]
    pool = ProcessPoolExecutor(
        max_workers=min(processes, len(batches)),
        mp_context=context,
        initializer=_start_worker,
        initargs=(max_tokens, count_tokens, os.getpid()),
    )
    try:
        results = pool.map(_chunk_batch, batches)
        first = next(results)  # a pool that cannot start fails here, before anything is yielded
        yield from first
        for chunked in results:
            yield from chunked
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_worker_chunker: Chunker | None = None


def _start_worker(max_tokens: int, count_tokens: Callable[[str], int], owner: int) -> None:
    global _worker_chunker
    _worker_chunker = Chunker(max_tokens, count_tokens)
    threading.Thread(target=_exit_after, args=(owner,), name="chunk-pool-owner", daemon=True).start()


def _exit_after(owner: int) -> None:
    """End this worker when the process that started the pool ends, however it ends (SIGTERM, SIGKILL).

    Otherwise a worker waits forever on a queue whose other end died with that process (or blocks
    sending it a result), and holds the forkserver (and its resource tracker) alive with it."""
    try:
        handle = os.pidfd_open(owner)
    except ProcessLookupError:
        os._exit(0)
    except (AttributeError, OSError):  # no pidfd (not Linux): look every second instead
        while _alive(owner):
            time.sleep(1.0)
        os._exit(0)
    select.select([handle], [], [])  # readable once the owner has exited
    os._exit(0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _chunk_batch(files: Sequence[SourceFile]) -> list[ChunkedFile]:
    assert _worker_chunker is not None, "the pool's initializer builds the chunker"
    return [chunk_file(_worker_chunker, file) for file in files]
