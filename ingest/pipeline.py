"""The ingest pipeline: source -> checkout -> read + filter -> chunk -> embed -> new index version.

Every run is an update: files are diffed by SHA-256 against the live version,
so only added and changed files are chunked and embedded, removed files leave,
and chunks whose text did not change keep their vectors. An index chunked by
another `CHUNKER_VERSION` (RepoLens was upgraded) has every file chunked again,
changed or not; chunks that come out the same keep their vectors. The new version is
built beside the live one and swapped in atomically (see `rag.store`), so a
crash, a kill or a cancel leaves the previous index as it was, and the next
run cleans up and starts again (the vector cache keeps what was embedded).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ingest import chunk_pool
from ingest import graph as code_graph
from ingest.chunk_pool import ChunkedFile, chunk_files, pool_size
from ingest.chunking import CHUNKER_VERSION, Chunker, outdated_chunker
from ingest.errors import AmbiguousRepoError, IngestCancelled, IngestError
from ingest.filters import FileFilter, FilterSpec, parse_patterns
from ingest.git import checkout, local_commit, token_for, uses_token
from ingest.policy import SourcePolicy
from ingest.reader import Limits, SkipStats, SourceFile, iter_source_files
from ingest.sources import RepoSource, resolve_source
from rag.embedders import CachedEmbedder, Embedder
from rag.embedders.base import embedder_for, run_token_counter
from rag.errors import ErrorCode, NotFoundError, RepoLensError
from rag.graph_types import GRAPH_VERSION, FileGraph, graph_change
from rag.roles import file_role
from rag.settings import Settings
from rag.store import IndexWriter, Store
from rag.store.layout import InvalidRepoIdError
from rag.types import RepoRecord

Patterns = str | Sequence[str] | None

Stage = Literal["cloning", "scanning", "chunking", "writing", "searchable", "graph", "embedding", "done"]
ProgressCallback = Callable[["Progress"], None]

# Texts per embedder call: small enough that progress, cancel and the vector
# cache (written after each call) stay fresh, large enough to batch well.
EMBED_SLICE = 64
_PROGRESS_INTERVAL_S = 0.2
# The backfill only borrows a chunker's parsers: its token budget is never used.
MIN_PARSER_TOKENS = 256


class EmptyRepositoryError(IngestError):
    """Nothing is left to index after the filters: an empty index would only answer 'no context'."""

    code = ErrorCode.EMPTY


@dataclass
class IngestOptions:
    """How to fetch and filter a repository. The token is used for this run only, never stored."""

    platform: str | None = None
    ref: str | None = None
    token: str | None = field(default=None, repr=False)
    username: str | None = None
    filters: FilterSpec = field(default_factory=FilterSpec)
    limits: Limits = field(default_factory=Limits.from_env)
    clone_timeout: float = 300.0
    reindex: bool = False
    # False: stop at the searchable milestone; `finish_embedding` (`repolens embed`) does the rest.
    dense: bool = True
    # Lexical-first ingest: a new dense version is committed this often while vectors are computed.
    dense_commit_s: float = field(default_factory=lambda: Settings.from_env().dense_commit_s)
    # Processes chunking a large run (0: one per core; see `ingest.chunk_pool`).
    chunk_processes: int = field(default_factory=lambda: Settings.from_env().chunk_processes)
    # The server's rules for client-named sources (`ingest.policy`); None: the CLI's, anything goes.
    policy: SourcePolicy | None = field(default=None, repr=False)

    @classmethod
    def from_fields(
        cls,
        settings: Settings,
        *,
        platform: str | None = None,
        ref: str | None = None,
        token: str | None = None,
        username: str | None = None,
        included_dirs: Patterns = None,
        excluded_dirs: Patterns = None,
        included_files: Patterns = None,
        excluded_files: Patterns = None,
        use_default_excludes: bool = True,
        max_files: int | None = None,
        max_bytes: int | None = None,
        max_file_bytes: int | None = None,
        clone_timeout: float | None = None,
        reindex: bool = False,
    ) -> IngestOptions:
        """The options of one run from request fields or CLI flags (filters as lists or deepwiki's
        newline/comma-separated strings), limits not given taken from `settings`."""
        filters = FilterSpec(
            include_dirs=parse_patterns(included_dirs),
            exclude_dirs=parse_patterns(excluded_dirs),
            include_files=parse_patterns(included_files),
            exclude_files=parse_patterns(excluded_files),
            use_defaults=use_default_excludes,
        )
        limits = Limits.from_settings(
            settings, max_files=max_files, max_total_bytes=max_bytes, max_file_bytes=max_file_bytes
        )
        return cls(
            platform=platform,
            ref=ref,
            token=token,
            username=username,
            filters=filters,
            limits=limits,
            clone_timeout=cls.clone_timeout if clone_timeout is None else clone_timeout,
            reindex=reindex,
            dense_commit_s=settings.dense_commit_s,
            chunk_processes=settings.chunk_processes,
        )


@dataclass
class Progress:
    stage: Stage
    files_done: int = 0
    files_total: int = 0
    chunks_done: int = 0
    chunks_total: int = 0
    rate: float = 0.0
    eta_s: float | None = None
    message: str = ""
    index_state: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["rate"] = round(self.rate, 2)
        data["eta_s"] = None if self.eta_s is None else round(self.eta_s, 1)
        return data


@dataclass
class IngestReport:
    """What a run did; `to_json()` is the `--json` output of `repolens ingest` and `update`."""

    record: RepoRecord
    files: dict[str, int]
    chunks: dict[str, int]
    timings: dict[str, float]
    skipped: dict[str, int] = field(default_factory=dict)
    # Why unchanged files were chunked again (`chunker version 3 -> 4`), None if they were not.
    rechunk_reason: str | None = None
    # Why unchanged files had their code graph extracted again (`graph version 5 -> 6`; `files.regraphed`
    # counts them), None if none had.
    graph_reason: str | None = None

    @property
    def repo_id(self) -> str:
        return self.record.id

    @property
    def commit(self) -> str | None:
        return self.record.commit

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.record.id,
            "url": self.record.url,
            "commit": self.record.commit,
            "version": self.record.version,
            "index_state": self.record.index_state,
            "dense_chunks": self.record.dense_chunks,
            "dense_total": self.record.dense_total,
            "chunker_version": self.record.chunker_version,
            "rechunk_reason": self.rechunk_reason,
            "graph_reason": self.graph_reason,
            "files": self.files,
            "chunks": self.chunks,
            "skipped": self.skipped,
            "timings": {name: round(value, 3) for name, value in self.timings.items()},
        }


class _Reporter:
    """Turns pipeline steps into throttled `Progress` events with a rate and an ETA."""

    def __init__(
        self, callback: ProgressCallback | None, cancel: threading.Event | None, repo_id: str
    ) -> None:
        self._callback = callback
        self._cancel = cancel
        self._repo_id = repo_id
        self._stage: Stage | None = None
        self._stage_started = time.monotonic()
        self._last_emit = 0.0

    def check_cancel(self) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise IngestCancelled(f"ingest of {self._repo_id} cancelled; the previous index is unchanged")

    def __call__(
        self, stage: Stage, message: str = "", index_state: str | None = None, **counts: int
    ) -> None:
        """Report a step; a new stage, a finished count or a new `index_state` (a version landed)
        is always reported, other steps at most every `_PROGRESS_INTERVAL_S`."""
        self.check_cancel()
        now = time.monotonic()
        new_stage = stage != self._stage
        if new_stage:
            self._stage, self._stage_started = stage, now
        if self._callback is None:
            return
        done_key = "chunks" if stage == "embedding" else "files"
        done, total = counts.get(f"{done_key}_done", 0), counts.get(f"{done_key}_total", 0)
        final = total > 0 and done >= total
        if not (new_stage or final or index_state or now - self._last_emit >= _PROGRESS_INTERVAL_S):
            return
        self._last_emit = now
        elapsed = now - self._stage_started
        rate = done / elapsed if elapsed > 0 and done else 0.0
        eta = (total - done) / rate if rate > 0 and total >= done else None
        progress = Progress(
            stage=stage, rate=rate, eta_s=eta, message=message, index_state=index_state, **counts
        )
        self._callback(progress)


@dataclass
class _Graphs:
    """The code graphs of the files chunked in this run (extracted while chunking, stored and resolved
    after the lexical version is searchable), and the seconds spent on the graph."""

    files: dict[str, FileGraph] = field(default_factory=dict)
    seconds: float = 0.0
    regraphed: int = 0  # kept files given a graph by this extractor (theirs was older, or none)

    def store(self, builder: IndexWriter) -> None:
        """Store the graph of every file chunked in this run, and of kept files graphed by an older
        extractor (or none); the next commit resolves it."""
        started = time.monotonic()
        for path, file_graph in self.files.items():
            builder.set_file_graph(path, file_graph, GRAPH_VERSION)
        self.files.clear()
        self.regraphed += _backfill_graph(builder)
        self.seconds += time.monotonic() - started


@dataclass
class _Diff:
    """The files of this run against the version being replaced."""

    files: list[SourceFile]
    added: list[SourceFile]
    changed: list[SourceFile]
    removed: list[str]
    # Unchanged files chunked again: the version being replaced was chunked by another chunker.
    rechunked: list[SourceFile] = field(default_factory=list)

    @classmethod
    def between(cls, files: list[SourceFile], old: dict[str, str], *, rechunk: bool = False) -> _Diff:
        """`rechunk`: the old chunks were made by another `CHUNKER_VERSION`, so no file keeps them."""
        current = {file.path for file in files}
        return cls(
            files=files,
            added=[f for f in files if f.path not in old],
            changed=[f for f in files if f.path in old and old[f.path] != f.sha256],
            removed=sorted(set(old) - current),
            rechunked=[f for f in files if old.get(f.path) == f.sha256] if rechunk else [],
        )

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed or self.rechunked)

    @property
    def changes(self) -> bool:
        """Files were added, changed or removed (not only chunked again)."""
        return bool(self.added or self.changed or self.removed)

    @property
    def to_chunk(self) -> list[SourceFile]:
        return self.added + self.changed + self.rechunked

    def counts(self, skipped: int, regraphed: int) -> dict[str, int]:
        return {
            "added": len(self.added),
            "changed": len(self.changed),
            "removed": len(self.removed),
            "unchanged": len(self.files) - len(self.added) - len(self.changed),
            "rechunked": len(self.rechunked),
            "regraphed": regraphed,
            "skipped": skipped,
        }

    def kept(self, paths: Iterable[str]) -> list[str]:
        """The `paths` this run neither writes nor removes (their files stay as they are)."""
        touched = {file.path for file in self.to_chunk} | set(self.removed)
        return [path for path in paths if path not in touched]


@dataclass(frozen=True)
class PublicationPlan:
    """How a run that wrote files publishes its versions (`publication_plan`).

    `searchable`: the searchable version is a `checkpoint` (the build goes on from it), the last
    `commit`, or none (`live`: the live version serves, whole, until a held re-chunk is complete).
    `graph`: the code graph of the files written is stored `with_searchable` (and resolved by it), goes
    live in a version of its own right after it (`own_checkpoint`, or `own_commit` when nothing
    follows), is left to `finish_embedding` (`later`: `ingest --no-wait`), or there is `none` to publish.
    `hold`: the dense phase commits one version, when complete. `final`: the build's last version
    ends it (False: the held re-chunk of the unchanged files follows)."""

    searchable: Literal["checkpoint", "commit", "live"]
    graph: Literal["with_searchable", "own_checkpoint", "own_commit", "later", "none"]
    hold: bool = False
    final: bool = True


# A run whose new version would equal the live one (or whose live version is only being embedded further).
NOTHING_TO_PUBLISH = PublicationPlan(searchable="live", graph="none")


def publication_plan(
    *, pending: bool, dense: bool, rechunk: bool, new_graphs: bool, more_follows: bool = False
) -> PublicationPlan:
    """The plan for a run that wrote its files: `pending`, chunks wait for vectors; `dense`, this run
    embeds them (False: `ingest --no-wait` hands them to `finish_embedding`); `rechunk`, unchanged files
    were chunked again (an upgrade); `new_graphs`, files with a code graph were written; `more_follows`,
    the held re-chunk of the unchanged files follows these changes (which therefore never end the build)."""
    hand_off = pending and not dense
    # After an upgrade the live version is whole, if chunked the old way: it serves until the re-chunked
    # one is complete, not a lexical version with few vectors (after `--no-wait` nothing can hold).
    hold = pending and dense and rechunk
    if hand_off:
        graph: Literal["with_searchable", "own_checkpoint", "own_commit", "later", "none"] = "later"
    elif (new_graphs or pending) and not hold:  # searchable first; the graph a moment later, before vectors
        graph = "own_checkpoint" if pending or more_follows else "own_commit"
    else:
        graph = "with_searchable"
    if hold:
        searchable: Literal["checkpoint", "commit", "live"] = "live"
    elif graph in ("own_checkpoint", "own_commit") or more_follows:
        searchable = "checkpoint"
    else:
        searchable = "commit"
    return PublicationPlan(searchable, graph, hold=hold, final=not more_follows)


def ingest(
    location: str,
    options: IngestOptions | None = None,
    *,
    store: Store,
    embedder: Embedder,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> IngestReport:
    """Index `location` (URL or path); if it is already indexed, update it incrementally.

    With nothing changed (same commit, files, filters and `CHUNKER_VERSION`) no new version is written.
    """
    options = options or IngestOptions()
    started = time.monotonic()
    source = resolve_source(location, platform=options.platform, ref=options.ref)
    pins = options.policy.admit(source) if options.policy is not None else ()
    report = _Reporter(progress, cancel, source.repo_id)
    base = None if options.reindex or store.get(source.repo_id) is None else store.open(source.repo_id)
    if base is not None:  # an update embeds with its index's model (`--reindex` moves to the configured one)
        embedder = embedder_for(embedder, base.record.embedder)
    record = RepoRecord(
        id=source.repo_id,
        url=source.url,
        platform=source.platform,
        ref=source.ref,
        commit=None,
        embedder=embedder.name,
        dimension=embedder.dimension,
        filters=options.filters.model_dump(mode="json"),
        private=_is_private(source, options, store.get(source.repo_id)),
        chunker_version=CHUNKER_VERSION,
    )
    timings: dict[str, float] = {}
    with store.builder(record, base) as builder:
        with _timed(timings, "clone_s"):
            root, record.commit = _fetch(source, options, store, report, cancel, pins)
        skipped = SkipStats()
        live = builder.base
        old_chunker = live.record.chunker_version if live is not None else CHUNKER_VERSION
        with _timed(timings, "scan_s"):
            old_files, rechunk = builder.file_hashes(), old_chunker != CHUNKER_VERSION
            scanned = _scan(
                root,
                options,
                skipped,
                report,
                lambda file: rechunk or old_files.get(file.path) != file.sha256,
            )
            diff = _Diff.between(scanned, old_files, rechunk=rechunk)
        if not diff.files:
            raise EmptyRepositoryError(
                f"no files to index in {source.repo_id} after filters ({_describe(skipped)}); "
                "check --include-dirs/--include-files or use --no-default-excludes"
            )
        graphs = _Graphs()
        rechunk_reason: str | None = None
        written = _Written()
        plan, changes_first = NOTHING_TO_PUBLISH, False
        needing_graph = builder.files_needing_graph(GRAPH_VERSION, code_graph.LANGUAGES)
        graph_current = not needing_graph
        # Kept files graphed by an older extractor (RepoLens was upgraded), or by none: graphed again.
        regraph = len(diff.kept(path for path, _, _ in needing_graph))
        old_graph = live.graph_version if live is not None else None
        graph_reason = graph_change(old_graph, GRAPH_VERSION) or "files without a code graph"
        if live is not None and graph_current and _same_as_live(live.record, record, diff):
            committed = live.record
            timings.update(chunk_s=0.0, write_s=0.0)
        else:
            if diff.rechunked:
                rechunk_reason = outdated_chunker(old_chunker, CHUNKER_VERSION)
            # A re-chunk with files changed too: the changes are published first, as any update's
            # (searchable, graph, dense), in versions still marked with the old chunker; the unchanged
            # files are re-chunked after, held until complete (`_rechunk_held`).
            changes_first = bool(diff.rechunked) and diff.changes and options.dense and live is not None
            part = dataclasses.replace(diff, rechunked=[]) if changes_first else diff
            if changes_first:
                builder.record.chunker_version = old_chunker
            elif diff.rechunked:
                files = len(diff.to_chunk)
                report("chunking", f"re-chunking {files} files: {rechunk_reason}", files_total=files)
            _chunk_and_write(
                builder, part, embedder, report, graphs, options.chunk_processes, timings, written
            )
            committing = time.monotonic()
            # One commit, no per-file steps: no count that would sit at 0/N for the whole step.
            report("writing", f"writing the new index version ({written.files} files)")
            # Lexical first: this version answers (BM25 everywhere, dense where vectors exist);
            # the code graph is built next and goes live in a version of its own, seconds later.
            plan = publication_plan(
                pending=builder.pending_count() > 0,
                dense=options.dense,
                rechunk=bool(part.rechunked),
                new_graphs=bool(graphs.files),
                more_follows=changes_first,
            )
            if regraph and plan.graph != "later":
                report("graph", f"rebuilding the code graph of {regraph} unchanged files: {graph_reason}")
            if plan.graph == "with_searchable":
                graphs.store(builder)
            if plan.searchable == "live" and live is not None:
                committed = live.record
            elif plan.searchable == "checkpoint":
                committed = builder.checkpoint(resolve_graph=plan.graph == "with_searchable")
            else:
                committed = builder.commit(resolve_graph=plan.graph == "with_searchable")
            timings["write_s"] += time.monotonic() - committing
        timings["searchable_s"] = time.monotonic() - started
        report(
            "searchable",
            f"{committed.id} is searchable ({committed.index_state})"
            + (
                f"; version {committed.version} serves until the re-chunked one is embedded"
                if plan.hold
                else ""
            )
            + (
                f"; {len(diff.rechunked)} unchanged files are re-chunked next ({rechunk_reason})"
                if changes_first
                else ""
            ),
            chunks_done=committed.dense_chunks,
            chunks_total=committed.dense_total,
            index_state=committed.index_state,
        )
        if plan.graph in ("own_checkpoint", "own_commit"):
            graphs.store(builder)
            committed = builder.commit() if plan.graph == "own_commit" else builder.checkpoint()
            report("graph", f"the code graph of {committed.id} is live", index_state=committed.index_state)
        with _timed(timings, "embed_s"):
            if plan.hold:  # one version, when complete
                committed = _embed_pending(builder, embedder, report, math.inf, 0, builder.pending_count())
            elif committed.index_state != "complete" and options.dense:
                committed = _embed_pending(
                    builder,
                    embedder,
                    report,
                    options.dense_commit_s,
                    committed.dense_chunks,
                    committed.dense_total,
                    final=plan.final,
                )
            if changes_first:
                committed = _rechunk_held(
                    builder,
                    dataclasses.replace(diff, added=[], changed=[], removed=[]),
                    embedder,
                    report,
                    graphs,
                    options.chunk_processes,
                    timings,
                    written,
                    rechunk_reason or "",
                )
    timings["graph_s"] = graphs.seconds + builder.graph_resolve_s
    timings["total_s"] = time.monotonic() - started
    rebuilt = f"; code graph rebuilt for {graphs.regraphed} unchanged files ({graph_reason})"
    report(
        "done",
        f"indexed {committed.id}: {committed.file_count} files, {committed.chunk_count} chunks"
        + (rebuilt if graphs.regraphed else ""),
        files_done=committed.file_count,
        files_total=committed.file_count,
        chunks_done=committed.chunk_count,
        chunks_total=committed.chunk_count,
    )
    return IngestReport(
        record=committed,
        files=diff.counts(skipped.total, graphs.regraphed),
        chunks=written.counts(committed.chunk_count),
        timings=timings,
        skipped=skipped.as_dict(),
        rechunk_reason=rechunk_reason,
        graph_reason=graph_reason if graphs.regraphed else None,
    )


def update(
    repo_id: str,
    options: IngestOptions | None = None,
    *,
    store: Store,
    embedder: Embedder,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> IngestReport:
    """Re-fetch an indexed repository with its stored URL, ref and filters.

    `options` supplies what is never stored (token, user name) and per-run
    choices (limits, timeout, reindex); its platform, ref and filters are ignored.
    """
    record = store.get(repo_id)
    if record is None:
        raise NotFoundError(f"{repo_id} is not indexed; see `repolens list`")
    given = options or IngestOptions()
    stored = IngestOptions(
        platform=record.platform,
        ref=record.ref,
        token=given.token,
        username=given.username,
        filters=FilterSpec.model_validate(record.filters),
        limits=given.limits,
        clone_timeout=given.clone_timeout,
        reindex=given.reindex,
        dense=given.dense,
        dense_commit_s=given.dense_commit_s,
        policy=given.policy,
    )
    return ingest(record.url, stored, store=store, embedder=embedder, progress=progress, cancel=cancel)


def finish_embedding(
    repo_id: str,
    *,
    store: Store,
    embedder: Embedder,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    dense_commit_s: float | None = None,
) -> RepoRecord:
    """The dense phase alone, for an index left `lexical` or `partial` (an ingest run with
    `dense=False`, killed or cancelled): embeds what has no vector yet, committing versions as an
    ingest does. Returns the live record (at once if it is already complete)."""
    live = store.get(repo_id)
    if live is None:
        raise NotFoundError(f"{repo_id} is not indexed; see `repolens list`")
    if live.index_state == "complete":
        return live
    report = _Reporter(progress, cancel, repo_id)
    interval = Settings.from_env().dense_commit_s if dense_commit_s is None else dense_commit_s
    base = store.open(repo_id)
    with store.builder(dataclasses.replace(base.record), base) as builder:
        record = builder.base.record if builder.base is not None else base.record
        graphed = _backfill_graph(builder)  # an ingest with `dense=False` left the graph to this
        if not builder.pending_count():
            return builder.commit() if graphed else record
        if graphed:  # the graph goes live now, as an ingest's does, not with the first dense version
            committed = builder.checkpoint()
            report("graph", f"the code graph of {committed.id} is live", index_state=committed.index_state)
        embedder = embedder_for(embedder, record.embedder)
        committed = _embed_pending(
            builder, embedder, report, interval, record.dense_chunks, record.dense_total
        )
    report(
        "done",
        f"embedded {committed.id}: {committed.index_state}",
        chunks_done=committed.dense_chunks,
        chunks_total=committed.dense_total,
    )
    return committed


def resolve_repo_id(store: Store, text: str) -> str:
    """The id of an indexed repository named by its id, its URL, its path, or its id's unique last part."""
    with contextlib.suppress(InvalidRepoIdError):  # a path such as ./repo is not an id, but may name one
        if store.get(text) is not None:
            return text
    wanted = text.strip().rstrip("/").removesuffix(".git")
    for record in store.list():
        if record.url.rstrip("/").removesuffix(".git") == wanted:
            return record.id
    try:
        repo_id = resolve_source(text).repo_id
    except RepoLensError:
        repo_id = None
    if repo_id is not None and store.get(repo_id) is not None:
        return repo_id
    if (named := repo_id_by_last_part(store, wanted)) is not None:
        return named
    if repo_id is not None:  # a repository it could index: say how (a newcomer's search before ingest)
        raise NotFoundError(
            f"{text!r} is not indexed yet: `repolens ingest {text}` indexes it "
            "(`repolens list` shows what is)"
        )
    raise NotFoundError(
        f"no indexed repository matches {text!r}{did_you_mean(store, wanted)}; see `repolens list`"
    )


def did_you_mean(store: Store, name: str) -> str:
    """` (did you mean <id>?)` for the indexed ids whose last part is close to `name`'s (a typo:
    `cobar` for `cobra`), else ``: a not-found message that names the likely fix saves a `list`."""
    ids_by_part: dict[str, list[str]] = {}
    for record in store.list():
        ids_by_part.setdefault(record.id.rsplit("/", 1)[-1], []).append(record.id)
    close = difflib.get_close_matches(name.rsplit("/", 1)[-1], list(ids_by_part), n=3, cutoff=0.75)
    ids = sorted(repo_id for part in close for repo_id in ids_by_part[part])
    return f" (did you mean {' or '.join(ids)}?)" if ids else ""


def repo_id_by_last_part(store: Store, name: str) -> str | None:
    """The id whose last part is `name` (`starlette` for github.com/encode/starlette) when only one id
    ends so; None when none does. Reads no disk but the store's records: what a server may resolve for
    a client (the OpenAI API's model names), where a path or URL must not be looked at."""
    named = sorted(record.id for record in store.list() if record.id.rsplit("/", 1)[-1] == name)
    if len(named) > 1:
        several = ", ".join(named)
        raise AmbiguousRepoError(f"{name!r} names several indexed repositories ({several}): use the id")
    return named[0] if named else None


def _fetch(
    source: RepoSource,
    options: IngestOptions,
    store: Store,
    report: _Reporter,
    cancel: threading.Event | None,
    pins: Sequence[str] = (),
) -> tuple[Path, str | None]:
    """The folder to read and its commit: the local folder itself, or a fresh clone/fetch."""
    if source.local_path is not None:
        report("cloning", f"reading local folder {source.local_path}")
        return source.local_path, local_commit(source.local_path)
    report("cloning", f"fetching {source.url}")
    dest = store.clone_dir(source.repo_id)
    commit = checkout(
        source,
        dest,
        token=options.token,
        username=options.username,
        timeout=options.clone_timeout,
        progress=lambda line: report("cloning", line),
        cancel=cancel,
        resolve=pins,
    )
    return dest, commit


def _is_private(source: RepoSource, options: IngestOptions, live: RepoRecord | None) -> bool:
    """Cloned with a token (given, pasted in the URL, or from the environment), or private before:
    a public-looking update (say over ssh, the same repo id) must not open a repository that was
    private. Local folders are never private; ssh remotes send no token."""
    if source.is_local:
        return False
    if live is not None and live.private:
        return True
    return uses_token(source) and token_for(source.platform, options.token or source.url_token) is not None


def _scan(
    root: Path,
    options: IngestOptions,
    skipped: SkipStats,
    report: _Reporter,
    to_chunk: Callable[[SourceFile], bool],
) -> list[SourceFile]:
    """The files to index. Once `chunk_pool.POOL_MIN_FILES` of them are to be chunked (`to_chunk`:
    not in the old version as they are), the chunk pool's forkserver starts, while the scan goes on."""
    file_filter = FileFilter.from_spec(options.filters, root)
    files: list[SourceFile] = []
    chunking = 0
    for file in iter_source_files(root, file_filter, options.limits, skipped):
        files.append(file)
        if to_chunk(file):
            chunking += 1
            if chunking == chunk_pool.POOL_MIN_FILES:
                chunk_pool.prepare(options.chunk_processes)
        report("scanning", file.path, files_done=len(files))
    return files


@dataclass
class _Written:
    """What `_chunk_and_write` put in the new version, and the chunks it took out."""

    files: int = 0  # added, changed and re-chunked files
    reused: int = 0  # their chunks with the previous version's vector
    # Texts (content hashes, one per chunk) of the chunks taken out (removed files, the old copies of
    # rewritten ones) and of the chunks written: their overlap is what was replaced by the same text.
    old_texts: Counter[str] = field(default_factory=Counter)
    new_texts: Counter[str] = field(default_factory=Counter)

    def counts(self, total: int) -> dict[str, int]:
        """The report's chunk counts, so that `total` = the previous total + `added` - `removed`:
        `added` chunks have a text the run took out nowhere, `removed` ones a text that no written
        chunk has, and `replaced` ones came back with the same text (a re-chunked file's, or a
        changed file's unchanged parts: rewritten, not new). `reused`: chunks given the previous
        version's vector, so not embedded."""
        replaced = (self.old_texts & self.new_texts).total()
        return {
            "added": self.new_texts.total() - replaced,
            "replaced": replaced,
            "removed": self.old_texts.total() - replaced,
            "reused": self.reused,
            "total": total,
        }


# Files written at a time: one lookup of known vectors (previous version, cache) per group.
_WRITE_FILES = 16


def _chunk_and_write(
    builder: IndexWriter,
    diff: _Diff,
    embedder: Embedder,
    report: _Reporter,
    graphs: _Graphs,
    processes: int,
    timings: dict[str, float],
    written: _Written,
) -> None:
    """Apply the diff to the new version: removed files leave; added, changed and re-chunked files are chunked
    (each parsed once, its code graph landing in `graphs`) and written as their chunks come, so on
    large runs the chunk pool (`ingest.chunk_pool`, `processes`) chunks ahead while this process
    writes. Chunks without a known vector wait for the dense phase. What was written adds to
    `written`; `timings` to `chunk_s` (chunking, or waiting for the pool) and `write_s` (writing)."""
    files = diff.to_chunk
    clock = time.monotonic()
    for start in range(0, len(diff.removed), _WRITE_FILES):
        paths = diff.removed[start : start + _WRITE_FILES]
        written.old_texts.update(builder.chunk_hashes(paths))
        for path in paths:
            builder.remove_file(path)
    chunk_s, write_s = 0.0, time.monotonic() - clock
    results = chunk_files(
        files, embedder.max_tokens, run_token_counter(embedder), pool_size(len(files), processes)
    )
    group: list[tuple[SourceFile, ChunkedFile]] = []
    clock = time.monotonic()
    with contextlib.closing(results):
        for done, (file, result) in enumerate(zip(files, results, strict=True), start=1):
            now = time.monotonic()
            chunk_s, clock = chunk_s + now - clock, now
            if result.graph is not None:
                graphs.files[file.path] = result.graph
            graphs.seconds += result.graph_s
            group.append((file, result))
            if len(group) >= _WRITE_FILES or done == len(files):
                _write_group(builder, group, embedder, written)
                group = []
            report("chunking", file.path, files_done=done, files_total=len(files))
            now = time.monotonic()
            write_s, clock = write_s + now - clock, now
    timings["chunk_s"] = timings.get("chunk_s", 0.0) + chunk_s
    timings["write_s"] = timings.get("write_s", 0.0) + write_s


def _cached_vectors(
    hashes: Sequence[str], known: dict[str, np.ndarray], embedder: Embedder
) -> dict[str, np.ndarray]:
    """Vectors the embedder's cache already holds for chunk texts (by their content hashes) not in
    `known` (no embedding)."""
    if not isinstance(embedder, CachedEmbedder):
        return {}
    pending = [content_hash for content_hash in dict.fromkeys(hashes) if content_hash not in known]
    found = embedder.lookup(pending)
    return {
        content_hash: vector
        for content_hash, vector in zip(pending, found, strict=True)
        if vector is not None
    }


def _embed_pending(
    builder: IndexWriter,
    embedder: Embedder,
    report: _Reporter,
    commit_every_s: float,
    done: int,
    total: int,
    *,
    final: bool = True,
) -> RepoRecord:
    """The dense phase: embed the chunks without vectors in priority order (source, tests, docs, rest),
    committing a new version every `commit_every_s` seconds and at the end (a checkpoint, if not
    `final`: more follows). Returns the last record. `done` of `total` chunks have vectors already
    (the progress counts)."""
    report("embedding", f"{total - done} chunks to embed", chunks_done=done, chunks_total=total)
    last_commit = time.monotonic()
    while pending := builder.pending_texts(EMBED_SLICE):
        hashes, texts = [h for h, _ in pending], [t for _, t in pending]

        def on_progress(count: int, _: int, offset: int = done) -> None:
            report("embedding", "", chunks_done=min(total, offset + count), chunks_total=total)

        batch = np.asarray(embedder.embed_documents(texts, progress=on_progress), dtype=np.float32)
        done += builder.add_vectors(dict(zip(hashes, batch, strict=True)))
        report("embedding", "", chunks_done=done, chunks_total=total)
        if builder.pending_count() == 0:
            break
        if time.monotonic() - last_commit >= commit_every_s:
            committed = builder.checkpoint()
            last_commit = time.monotonic()
            report(
                "embedding",
                f"dense version {committed.version}: {committed.index_state}",
                chunks_done=done,
                chunks_total=total,
                index_state=committed.index_state,
            )
    return builder.commit() if final else builder.checkpoint()


# Embedding order: what answers most questions first (file roles of `rag.roles`). Lower is earlier.
_ROLE_PRIORITY: dict[str, int] = {
    "source": 0,
    "test": 1,
    "example": 2,
    "docs": 3,
    "changelog": 4,
    "config": 5,
    "generated": 6,
    "vendored": 6,
}


def embed_priority(path: str, text: str = "") -> int:
    """When the dense phase embeds a file: source first, then tests, examples, docs, the rest."""
    return _ROLE_PRIORITY.get(file_role(path, text), 0)


def _rechunk_held(
    builder: IndexWriter,
    diff: _Diff,
    embedder: Embedder,
    report: _Reporter,
    graphs: _Graphs,
    processes: int,
    timings: dict[str, float],
    written: _Written,
    reason: str,
) -> RepoRecord:
    """Re-chunk the unchanged files (`diff.rechunked`) after the changes went live: the live version
    keeps their old chunks, whole, until the re-chunked ones are embedded; one commit, marked with
    this `CHUNKER_VERSION` (a crash before it leaves the old chunker's version to the next run)."""
    files = len(diff.rechunked)
    report("chunking", f"re-chunking {files} files: {reason}", files_total=files)
    _chunk_and_write(builder, diff, embedder, report, graphs, processes, timings, written)
    builder.record.chunker_version = CHUNKER_VERSION
    graphs.store(builder)
    return _embed_pending(builder, embedder, report, math.inf, 0, builder.pending_count())


def _same_as_live(live: RepoRecord, record: RepoRecord, diff: _Diff) -> bool:
    """Same commit, same filters, same files: a new version would be identical to the live one."""
    return diff.empty and (live.commit, live.filters, live.private) == (
        record.commit,
        record.filters,
        record.private,
    )


def _write_group(
    builder: IndexWriter, group: list[tuple[SourceFile, ChunkedFile]], embedder: Embedder, written: _Written
) -> None:
    """Write a few chunked files, with the vectors already known for their chunks (the previous
    version's, then the embedder's cache)."""
    hashes = [content_hash for _, result in group for content_hash in result.hashes]
    vectors = builder.reusable_vectors(hashes)
    written.files += len(group)
    written.old_texts.update(builder.chunk_hashes([file.path for file, _ in group]))
    written.new_texts.update(hashes)
    written.reused += sum(1 for content_hash in hashes if content_hash in vectors)
    vectors.update(_cached_vectors(hashes, vectors, embedder))
    for file, result in group:
        builder.add_file(
            file,
            result.chunks,
            [vectors.get(content_hash) for content_hash in result.hashes],
            priority=embed_priority(file.path, file.text),
            skip=result.lexical_only,
            terms=result.terms,
            hashes=result.hashes,
        )


def _backfill_graph(builder: IndexWriter) -> int:
    """Graph the kept files that have none yet (a version indexed before the graph existed, or by
    an ingest with `dense=False`); returns how many files got one."""
    chunker: Chunker | None = None
    graphed = 0
    for path, language, text in builder.files_needing_graph(GRAPH_VERSION, code_graph.LANGUAGES):
        chunker = chunker or Chunker(MIN_PARSER_TOKENS)
        parser = chunker.parser(language)
        if parser is None:
            continue
        file_graph = code_graph.extract(language, parser.parse(text.encode("utf-8")))
        if file_graph is not None:
            builder.set_file_graph(path, file_graph, GRAPH_VERSION)
            graphed += 1
    return graphed


@contextlib.contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        timings[name] = time.monotonic() - started


def _describe(skipped: SkipStats) -> str:
    counts = skipped.as_dict()
    return ", ".join(f"{count} {reason}" for reason, count in counts.items() if count) or "no files found"


__all__ = [
    "EmptyRepositoryError",
    "IngestOptions",
    "IngestReport",
    "Progress",
    "PublicationPlan",
    "finish_embedding",
    "ingest",
    "publication_plan",
    "resolve_repo_id",
    "update",
]
