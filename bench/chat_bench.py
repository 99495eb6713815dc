"""Chat API overhead and concurrency: `/ws/chat` (events mode) against a fake provider.

Three processes, so the load generator never shares an event loop (or GIL) with what it
measures: the fake OpenAI-style provider (`tests.support.fake_provider`, scripted with a fixed
first-token delay and chunk pace), `repolens serve` on a data dir where the fixture repository
is indexed, and this process driving the clients.

Figures:
- `added_first_token_ms`: one conversation at a time, request sent → first `token` frame,
  minus the provider's own first-token delay (200 ms). That is the server's work before the
  model speaks (validation, hybrid retrieval with the query embedding, prompt building, the
  provider request over loopback) plus the frame's way back. Short answers (5 chunks).
- `levels`: for 1, 50, 100 and 200 concurrent conversations (starts spread over a 4 s ramp,
  each answer streaming 100 chunks at 20 chunks/s, so all are streaming at the peak): added
  first-token p50/p95 through the server (as above), the first-token p50/p95 of the same load
  sent straight to the fake provider (`provider_direct_*`: how far the provider and the machine
  themselves drift from the nominal 200 ms at that concurrency, for reading the added figures),
  completed streams, errors, and the CPU use (cores) of the server, the fake provider and the
  clients. `sustained_streams` is the largest level with no errors and an added p95 under the
  50 ms target.
Questions rotate over a fixed set, as in a team asking about one repository. The clients' garbage
collector is off while they measure (`_without_collections`), so their own collections do not delay
the readings. The machine's other
load shows up in every figure: run it on an idle machine.
- `inter_token_*`: gaps between token frames at the client (the provider sends a piece every
  50 ms; `added_inter_token_*` subtracts that), and `token_frames_per_stream` (coalescing merges
  pieces that queue up). A stream whose text differs from what the provider sent counts as error
  `lost_tokens`.
- `idle_sockets`: 1,000 events-mode sockets opened, held 5 s, then pinged: how many answer.
- `load_average`: the machine's at the start and the end (the other sessions' load shows in every
  latency; read figures taken at a load above ~1 as that machine's, not the code's).
Environment: `REPOLENS_BENCH_CHAT_LEVELS=1,50,100,200,400` to change the levels (a level may repeat:
`200,200,200,200`);
`REPOLENS_BENCH_PROFILE=<file>` records the server with py-spy during the levels (raw stacks);
`REPOLENS_BENCH_CHAT_PROBE=1` runs the server with `bench.loop_probe` on its event loop and adds, per
level, `server_probe` (loop lag p50/p95/p99/max; stalls of 20 ms or more, split into time on the loop's
thread, other threads' CPU and waiting for a core; garbage collections per generation with their
longest pause) next to `client_probe`, the same for the clients' own loop (always on: a late reading
there is the bench's, not the server's), and `server_tracked_objects` (what a full collection walks);
`REPOLENS_BENCH_CHAT_COMPARE=tree:<dir>` runs every level on a second server serving another source
tree's code (e.g. `git archive <commit> | tar -x -C <dir>`; same venv, same fake provider, same data
dir), alternating which goes first, and reports both side by side (`tree_side_by_side`: per level and,
`over_repeats`, each figure's values, medians and the ratio of the medians, this tree / baseline);
`REPOLENS_BENCH_CHAT_COMPARE=retrieval_pool` does the same with this tree's server with retrieval on
the default executor (as before `rag.answer`'s retrieval pool: `retrieval_pool_side_by_side`);
`REPOLENS_BENCH_CHAT_WORKERS=2` serves with `repolens serve --workers 2` (the server's CPU and memory
figures count the process manager and its worker processes together; the probe sees only one process,
so leave it off there).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.compare import over_repeats, source_tree
from bench.loop_probe import LoopProbe, summary

PROVIDER_FIRST_DELAY_S = 0.2
CHUNKS = 100
SHORT_CHUNKS = 5
CHUNK_DELAY_S = 0.05
TARGET_ADDED_P95_MS = 100.0
DEFAULT_LEVELS = (1, 50, 100, 200, 400)
TARGET_INTER_TOKEN_P95_MS = 50.0
IDLE_SOCKETS = 1000
IDLE_HOLD_S = 5.0
RAMP_S = 4.0
WARMUP = 5
SAMPLES = 30
LEVEL_TIMEOUT_S = 60.0
QUESTIONS = (
    "How does the CLI reach the HTTP client?",
    "Where are forecasts persisted?",
    "What does ForecastService.run do?",
    "How are retries limited?",
    "Which module parses the forecast payload?",
    "How is the chart drawn in the web page?",
    "What does the Go server expose?",
    "How is the backoff delay computed?",
)
ROOT = Path(__file__).resolve().parent.parent
LONG_ANSWER = " ".join(f"word{i}" for i in range(CHUNKS))


def _serve_provider(short: int, long: int) -> None:
    """Subprocess entry: a fake provider scripted with `short` short answers, then `long` long ones."""
    from tests.support.fake_provider import FakeProvider, FakeResponse

    provider = FakeProvider()
    provider.start()
    # The fake waits `first_delay + delay` before the first piece: together, the provider's own delay.
    first_delay = PROVIDER_FIRST_DELAY_S - CHUNK_DELAY_S
    for count, chunks in ((short, SHORT_CHUNKS), (long, CHUNKS)):
        answer = " ".join(f"word{i}" for i in range(chunks))
        scripted = FakeResponse(text=answer, chunks=chunks, first_delay=first_delay, delay=CHUNK_DELAY_S)
        provider.script(*[scripted] * count)
    print(provider.base_url, flush=True)
    sys.stdin.read()


def _serve_without_retrieval_pool() -> None:
    """Subprocess entry: `repolens serve` with retrieval and prompt building on the default executor
    (`asyncio.to_thread`, the code before the retrieval pool): the baseline of the side-by-side."""
    import rag.answer
    from api.cli import main

    async def on_default_executor(func: Any, *args: Any) -> Any:
        return await asyncio.to_thread(func, *args)

    rag.answer._in_retrieval_pool = on_default_executor  # type: ignore[assignment]  # the bench's baseline
    main()


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 1)


async def _conversation(
    ws_url: str, body: dict[str, Any], delay: float, expected: str | None = None
) -> dict[str, Any]:
    """One request on its own socket: first-token latency and the gaps between token frames, or the
    error that ended it (`lost_tokens` if the text differs from `expected`)."""
    from websockets.asyncio.client import connect

    await asyncio.sleep(delay)
    try:
        async with connect(f"{ws_url}/ws/chat", open_timeout=30, max_size=None) as ws:
            sent = time.perf_counter()
            await ws.send(json.dumps(body))
            first: float | None = None
            arrivals: list[float] = []
            text: list[str] = []
            timings: dict[str, Any] = {}
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if frame["type"] == "token":
                    arrivals.append(time.perf_counter())
                    text.append(frame["text"])
                    first = arrivals[0]
                elif frame["type"] == "error":
                    return {"error": frame["code"]}
                elif frame["type"] == "done":
                    timings = frame["timings"]
                    break
        if first is None:
            return {"error": "no_tokens"}
        if expected is not None and "".join(text) != expected:
            return {"error": "lost_tokens"}
        return {
            "first_ms": (first - sent) * 1000,
            "gaps_ms": [(b - a) * 1000 for a, b in zip(arrivals, arrivals[1:], strict=False)],
            "frames": len(arrivals),
            "retrieval_ms": timings["retrieval_ms"],
            "server_first_ms": timings["first_token_ms"],
        }
    except Exception as error:
        return {"error": type(error).__name__}


def _request(repo: Path, question: str) -> dict[str, Any]:
    return {
        "repo_url": str(repo),
        "type": "local",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "protocol": "events",
        "messages": [{"role": "user", "content": question}],
    }


def _with_children(process: psutil.Process) -> list[psutil.Process]:
    """`process` and its live descendants (`--workers N`: the worker processes do the serving)."""
    with contextlib.suppress(psutil.Error):
        return [process, *process.children(recursive=True)]
    return [process]


def _cpu_seconds(processes: dict[str, psutil.Process]) -> dict[str, float]:
    """User + system CPU of each process, the server's workers included."""
    totals = {}
    for name, process in processes.items():
        group = _with_children(process) if name == "server" else [process]
        total = 0.0
        for member in group:
            with contextlib.suppress(psutil.Error):
                total += sum(member.cpu_times()[:2])
        totals[name] = total
    return totals


def _rss(process: psutil.Process) -> int:
    total = 0
    for member in _with_children(process):
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total


async def _direct_stream(client: httpx.AsyncClient, provider_url: str, delay: float) -> float | None:
    """First-token ms of one streaming request sent straight to the provider (OpenAI wire format)."""
    await asyncio.sleep(delay)
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": QUESTIONS[0]}]}
    sent = time.perf_counter()
    first: float | None = None
    async with client.stream("POST", f"{provider_url}/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if first is None and line.startswith("data: {"):
                choices = json.loads(line[6:]).get("choices") or [{}]
                if choices[0].get("delta", {}).get("content"):
                    first = (time.perf_counter() - sent) * 1000
    return first


async def _provider_direct(provider_url: str, streams: int) -> list[float]:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=None)) as client:
        firsts = await asyncio.wait_for(
            asyncio.gather(
                *(_direct_stream(client, provider_url, i * RAMP_S / streams) for i in range(streams))
            ),
            LEVEL_TIMEOUT_S,
        )
    return [first for first in firsts if first is not None]


async def _level(
    ws_url: str, provider_url: str, repo: Path, streams: int, processes: dict[str, psutil.Process]
) -> dict[str, Any]:
    """`streams` conversations starting over `RAMP_S`; each streams longer than the ramp, so all overlap."""
    direct = await _provider_direct(provider_url, streams)
    bodies = [_request(repo, QUESTIONS[i % len(QUESTIONS)]) for i in range(streams)]
    started = time.perf_counter()
    window_start = time.monotonic()
    client_probe = LoopProbe()
    client_probe.start()
    cpu_before = _cpu_seconds(processes)
    results = await asyncio.wait_for(
        asyncio.gather(
            *(_conversation(ws_url, body, i * RAMP_S / streams, LONG_ANSWER) for i, body in enumerate(bodies))
        ),
        LEVEL_TIMEOUT_S,
    )
    wall = time.perf_counter() - started
    cpu_after = _cpu_seconds(processes)
    client_probe.stop()
    firsts = [result["first_ms"] for result in results if "first_ms" in result]
    errors: dict[str, int] = {}
    for result in results:
        if "error" in result:
            errors[result["error"]] = errors.get(result["error"], 0) + 1
    figures: dict[str, Any] = {"streams": streams, "completed": len(firsts), "errors": errors}
    for name, fraction in (("p50", 0.5), ("p95", 0.95)):
        through = _percentile(firsts, fraction)
        nominal = PROVIDER_FIRST_DELAY_S * 1000
        figures[f"added_{name}_ms"] = None if through is None else round(through - nominal, 1)
        figures[f"provider_direct_first_token_{name}_ms"] = _percentile(direct, fraction)
        for key in ("retrieval_ms", "server_first_ms"):
            values = [result[key] for result in results if key in result]
            figures[f"{key.removesuffix('_ms')}_{name}_ms"] = _percentile(values, fraction)
    gaps = [gap for result in results for gap in result.get("gaps_ms", [])]
    frames = sum(result.get("frames", 0) for result in results)
    for name, fraction in (("p50", 0.5), ("p95", 0.95)):
        gap = _percentile(gaps, fraction)
        figures[f"inter_token_{name}_ms"] = gap
        figures[f"added_inter_token_{name}_ms"] = (
            None if gap is None else round(gap - CHUNK_DELAY_S * 1000, 1)
        )
    figures["token_frames_per_stream"] = round(frames / len(firsts), 1) if firsts else None
    figures["wall_s"] = round(wall, 2)
    figures["cpu_cores"] = {name: round((cpu_after[name] - cpu_before[name]) / wall, 2) for name in processes}
    # CPU the server spent per answer stream: what the lean path and coalescing save, and a figure
    # the machine's other load disturbs far less than latencies.
    figures["server_cpu_ms_per_stream"] = round(
        (cpu_after["server"] - cpu_before["server"]) * 1000 / streams, 1
    )
    # Where a tail comes from: the clients' own loop (a late reading is the bench's, not the server's);
    # the server's is cut from its probe file afterwards (`_add_server_probe`).
    figures["window"] = (window_start, time.monotonic())
    figures["client_probe"] = summary(client_probe.dump(), *figures["window"])
    return figures


async def _idle_sockets(ws_url: str, count: int, server: psutil.Process) -> dict[str, Any]:
    """Open `count` events-mode sockets, hold them `IDLE_HOLD_S`, then ping each: how many still answer,
    and the server's memory while they are held."""
    from websockets.asyncio.client import connect

    async def open_one(index: int) -> Any:
        await asyncio.sleep(index * 0.002)
        return await connect(f"{ws_url}/ws/chat?protocol=events", open_timeout=30, max_size=None)

    async def ping(ws: Any) -> bool:
        try:
            await ws.send(json.dumps({"type": "ping"}))
            return json.loads(await asyncio.wait_for(ws.recv(), 20)).get("type") == "pong"
        except Exception:
            return False

    rss_before = _rss(server)
    opened = await asyncio.gather(*(open_one(i) for i in range(count)), return_exceptions=True)
    sockets = [ws for ws in opened if not isinstance(ws, BaseException)]
    await asyncio.sleep(IDLE_HOLD_S)
    started = time.perf_counter()
    alive = await asyncio.gather(*(ping(ws) for ws in sockets))
    ping_s = time.perf_counter() - started
    rss_held = _rss(server)
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return {
        "requested": count,
        "opened": len(sockets),
        "answered_ping_after_hold": sum(alive),
        "hold_s": IDLE_HOLD_S,
        "ping_all_s": round(ping_s, 2),
        "server_rss_added_mb": round((rss_held - rss_before) / 2**20, 1),
    }


async def _sequential(ws_url: str, repo: Path) -> list[dict[str, float]]:
    """Added first-token latency of one conversation at a time (after a warm-up)."""
    results = []
    for i in range(WARMUP + SAMPLES):
        body = _request(repo, QUESTIONS[i % len(QUESTIONS)])
        result = await _conversation(ws_url, body, 0.0)
        if i >= WARMUP and "first_ms" in result:
            results.append(result)
    return results


async def _warm_up(ws_url: str, repo: Path) -> None:
    """`WARMUP` conversations, so a server's first level does not pay for loading the index and model."""
    for i in range(WARMUP):
        await _conversation(ws_url, _request(repo, QUESTIONS[i % len(QUESTIONS)]), 0.0)


def _start_profiler(pid: int) -> subprocess.Popen[bytes] | None:
    """With `REPOLENS_BENCH_PROFILE=<file>`: py-spy samples the server during the levels (collapsed
    stacks, one line per stack: `grep`/`sort` them, or load them in speedscope)."""
    target = os.environ.get("REPOLENS_BENCH_PROFILE")
    if not target:
        return None
    command = ["py-spy", "record", "-p", str(pid), "-r", "50", "-f", "raw", "-o", target]
    spy = Path(sys.executable).parent / "py-spy"
    return subprocess.Popen([str(spy) if spy.exists() else "py-spy", *command[1:]], stdout=subprocess.DEVNULL)


def _stop_profiler(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is not None:
        profiler.send_signal(2)  # SIGINT: py-spy writes its output and exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            profiler.wait(30)


def _wait_for_health(base_url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("repolens serve exited during startup")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError("repolens serve did not become healthy")


@dataclass
class BenchServer:
    """A `repolens serve` process answering through the fake provider process, both on loopback."""

    base_url: str
    ws_url: str
    provider_url: str
    processes: dict[str, psutil.Process]


@contextlib.contextmanager
def bench_server(
    env: dict[str, str],
    *,
    warmup: int,
    streams: int,
    baseline: Baseline | None = None,
    probe_file: Path | None = None,
    **settings: str,
) -> Iterator[BenchServer]:
    """Start the fake provider (`warmup` sequential answers, room for `streams` concurrent ones) and a
    server pointed at it with `settings` added to `env`; both are stopped on exit. `baseline`: serve
    the side-by-side's baseline instead (another source tree's code, or this one's without the
    retrieval pool). `probe_file`: the server runs with `bench.loop_probe` on its loop and writes its
    samples there when it stops (not for the retrieval-pool baseline).

    The per-client chat limit is off: hundreds of conversations come from one address.
    """
    from tests.support.live_server import free_port

    provider = subprocess.Popen(
        [sys.executable, "-c", f"import bench.chat_bench as b; b._serve_provider({warmup}, {streams})"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    port = free_port()
    server: subprocess.Popen[bytes] | None = None
    try:
        assert provider.stdout is not None
        provider_url = provider.stdout.readline().decode().strip()
        server_env = {
            **env,
            "OPENAI_API_KEY": "sk-bench-0000000000",
            "OPENAI_BASE_URL": provider_url,
            "REPOLENS_RATE_LIMIT_CHAT": "off",
            **settings,
        }
        code = baseline.tree if baseline is not None and baseline.tree is not None else ROOT
        server_env["PYTHONPATH"] = str(code)
        if baseline is not None and baseline.without_pool:
            entry = [sys.executable, "-c", "import bench.chat_bench as b; b._serve_without_retrieval_pool()"]
        elif probe_file is not None:
            # Run as a script, so it probes another tree's server too (whose `bench` may not have it).
            entry = [sys.executable, str(ROOT / "bench" / "loop_probe.py"), str(probe_file)]
        else:
            entry = [str(Path(sys.executable).parent / "repolens")]
        server = subprocess.Popen(
            [
                *entry,
                "serve",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--workers",
                os.environ.get("REPOLENS_BENCH_CHAT_WORKERS", "1"),
            ],
            cwd=code,
            env=server_env,
        )
        base_url = f"http://127.0.0.1:{port}"
        _wait_for_health(base_url, server)
        processes = {
            "server": psutil.Process(server.pid),
            "provider": psutil.Process(provider.pid),
            "clients": psutil.Process(),
        }
        yield BenchServer(base_url, f"ws://127.0.0.1:{port}", provider_url, processes)
    finally:
        for process in (server, provider):
            if process is not None:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(10)


@contextlib.contextmanager
def _without_collections() -> Iterator[None]:
    """The clients' garbage collector off while they measure, and run once they stop: a collection in
    this process (it holds ~170k objects: ingest, the test helpers) held every reading here for
    106-413 ms, charged to whichever server was being measured. Reference counting still frees nearly
    everything meanwhile; cycles wait for the collection at the end."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


def run() -> dict[str, Any]:
    from ingest import ingest
    from rag.embedders import get_embedder
    from rag.settings import Settings
    from rag.store import Store
    from tests.support.repos import make_fixture_repo

    load_start = [round(load, 2) for load in os.getloadavg()]
    levels = [int(n) for n in os.environ.get("REPOLENS_BENCH_CHAT_LEVELS", "").split(",") if n] or list(
        DEFAULT_LEVELS
    )
    with tempfile.TemporaryDirectory(prefix="repolens-chat-bench-") as scratch:
        home = Path(scratch) / "home"
        env = {**os.environ, "REPOLENS_HOME": str(home), "PYTHONPATH": str(ROOT)}
        settings = Settings.from_env(environ=env, dotenv=Path(scratch) / "no.env")
        repo = make_fixture_repo(Path(scratch) / "weatherline")
        ingest(str(repo), store=Store(settings.home), embedder=get_embedder(settings))

        compare = _baseline(os.environ.get("REPOLENS_BENCH_CHAT_COMPARE", ""))
        probing = bool(os.environ.get("REPOLENS_BENCH_CHAT_PROBE"))
        probe_file = Path(scratch) / "server-probe.json" if probing else None
        baseline_probe_file = (
            Path(scratch) / "baseline-probe.json"
            if probing and compare and not compare.without_pool
            else None
        )
        streams_needed = 2 * sum(levels)
        with contextlib.ExitStack() as servers:
            served = servers.enter_context(
                bench_server(env, warmup=WARMUP + SAMPLES, streams=streams_needed, probe_file=probe_file)
            )
            without = (
                servers.enter_context(
                    bench_server(
                        env,
                        warmup=WARMUP,
                        streams=streams_needed,
                        baseline=compare,
                        probe_file=baseline_probe_file,
                    )
                )
                if compare
                else None
            )
            with _without_collections():
                sequential = asyncio.run(_sequential(served.ws_url, repo))
            if without is not None:
                asyncio.run(_warm_up(without.ws_url, repo))
            profiler = _start_profiler(served.processes["server"].pid)
            results: list[dict[str, Any]] = []
            baseline: list[dict[str, Any]] = []
            for number, streams in enumerate(levels):
                pair = (
                    [(served, results), (without, baseline)] if without is not None else [(served, results)]
                )
                for server, figures in pair if number % 2 == 0 else reversed(pair):
                    assert server is not None
                    with _without_collections():
                        measured = _level(server.ws_url, server.provider_url, repo, streams, server.processes)
                        figures.append(asyncio.run(measured))
            _stop_profiler(profiler)
            idle = asyncio.run(_idle_sockets(served.ws_url, IDLE_SOCKETS, served.processes["server"]))
        probe = _read_probe(probe_file)
        baseline_probe = _read_probe(baseline_probe_file)
        for levels_run, samples in ((results, probe), (baseline, baseline_probe)):
            for level in levels_run:
                window = level.pop("window")
                if samples is not None:
                    level["server_probe"] = summary(samples, *window)

    sustained = max(
        (
            level["streams"]
            for level in results
            if not level["errors"]
            and level["completed"] == level["streams"]
            and level["added_p95_ms"] is not None
            and level["added_p95_ms"] < TARGET_ADDED_P95_MS
            and level["added_inter_token_p95_ms"] is not None
            and level["added_inter_token_p95_ms"] < TARGET_INTER_TOKEN_P95_MS
        ),
        default=0,
    )
    added = [result["first_ms"] - PROVIDER_FIRST_DELAY_S * 1000 for result in sequential]
    side_by_side: dict[str, Any] = {}
    if compare is not None:
        rows = _side_by_side(results, baseline, compare.labels)
        side_by_side[compare.name] = {
            "baseline": str(compare.tree) if compare.tree else "this tree without the retrieval pool",
            "over_repeats": _over_repeats(rows, compare.labels),
            "levels": rows,
        }
    tracked = {"server_tracked_objects": probe["tracked_objects"]} if probe is not None else {}
    return {
        "load_average": {"start": load_start, "end": [round(load, 2) for load in os.getloadavg()]},
        **side_by_side,
        **tracked,
        "provider_first_token_delay_ms": PROVIDER_FIRST_DELAY_S * 1000,
        "stream": {"chunks": CHUNKS, "chunk_delay_ms": CHUNK_DELAY_S * 1000},
        "added_first_token_ms": {
            "requests": len(sequential),
            "p50": _percentile(added, 0.5),
            "p95": _percentile(added, 0.95),
            "of_which_retrieval_p50": _percentile([result["retrieval_ms"] for result in sequential], 0.5),
        },
        "levels": results,
        "sustained_streams": sustained,
        "idle_sockets": idle,
        "target": {
            "streams": 200,
            "added_p95_ms": TARGET_ADDED_P95_MS,
            "added_inter_token_p95_ms": TARGET_INTER_TOKEN_P95_MS,
            "idle_sockets": IDLE_SOCKETS,
        },
    }


def _level_figure(key: str) -> Callable[[dict[str, Any]], float | None]:
    """A figure of a level's results."""

    def figure(level: dict[str, Any]) -> float | None:
        value = level.get(key)
        return None if value is None else float(value)

    return figure


def _probe_figure(section: str, key: str) -> Callable[[dict[str, Any]], float | None]:
    """A figure of a level's `server_probe` (None without the probe)."""

    def figure(level: dict[str, Any]) -> float | None:
        probe = level.get("server_probe")
        if probe is None:
            return None
        if section == "gc_gen2":  # no full collection in the level: 0 ms
            return float(probe["gc"].get("2", {}).get(key, 0.0))
        value = probe[section][key]
        return None if value is None else float(value)

    return figure


_COMPARED: dict[str, Callable[[dict[str, Any]], float | None]] = {
    **{
        key: _level_figure(key)
        for key in (
            "added_p50_ms",
            "added_p95_ms",
            "retrieval_p95_ms",
            "server_first_p95_ms",
            "added_inter_token_p50_ms",
            "added_inter_token_p95_ms",
            "server_cpu_ms_per_stream",
        )
    },
    "server_loop_lag_p99_ms": _probe_figure("loop_lag_ms", "p99"),
    "server_loop_lag_max_ms": _probe_figure("loop_lag_ms", "max"),
    "server_gc_gen2_max_ms": _probe_figure("gc_gen2", "max_ms"),
    "server_gc_gen2_max_cpu_ms": _probe_figure("gc_gen2", "max_cpu_ms"),
}


def _side_by_side(
    measured: list[dict[str, Any]], baseline: list[dict[str, Any]], labels: tuple[str, str]
) -> list[dict[str, Any]]:
    """Per level, each compared figure of the measured server and of the baseline, and their ratio
    (measured / baseline: below 1 means the measured server is faster)."""
    rows = []
    for ours, theirs in zip(measured, baseline, strict=True):
        row: dict[str, Any] = {
            "streams": ours["streams"],
            "errors": {labels[0]: ours["errors"], labels[1]: theirs["errors"]},
        }
        for key, figure in _COMPARED.items():
            a, b = figure(ours), figure(theirs)
            if a is None and b is None:
                continue
            ratio = round(a / b, 2) if a is not None and b else None
            row[key] = {labels[0]: a, labels[1]: b, "ratio": ratio}
        rows.append(row)
    return rows


def _over_repeats(rows: list[dict[str, Any]], labels: tuple[str, str]) -> list[dict[str, Any]]:
    """A level repeated (`REPOLENS_BENCH_CHAT_LEVELS=200,200,200,200`): each figure's values over the
    repeats, their medians and the ratio of the medians (one noisy repeat does not decide it)."""
    summaries = []
    for streams in sorted({row["streams"] for row in rows}):
        same = [row for row in rows if row["streams"] == streams]
        entry: dict[str, Any] = {"streams": streams, "repeats": len(same)}
        for key in _COMPARED:
            sides = {
                label: [row[key][label] for row in same if key in row and row[key][label] is not None]
                for label in labels
            }
            if any(sides.values()):
                entry[key] = over_repeats(sides)
        summaries.append(entry)
    return summaries


@dataclass(frozen=True)
class Baseline:
    """The second server of a side-by-side run (`REPOLENS_BENCH_CHAT_COMPARE`)."""

    name: str  # the key of its figures in the output
    labels: tuple[str, str]  # the measured server's and the baseline's, in each figure
    tree: Path | None = None  # serve this source tree's code (`tree:<dir>`)
    without_pool: bool = False  # this tree on the default executor (`retrieval_pool`)


def _baseline(setting: str) -> Baseline | None:
    if not setting:
        return None
    if setting == "retrieval_pool":
        return Baseline("retrieval_pool_side_by_side", ("pool", "default_executor"), without_pool=True)
    if setting.startswith("tree:"):
        tree = source_tree(setting, "REPOLENS_BENCH_CHAT_COMPARE")
        return Baseline("tree_side_by_side", ("this_tree", "baseline_tree"), tree=tree)
    raise SystemExit(f"REPOLENS_BENCH_CHAT_COMPARE={setting!r}: use retrieval_pool or tree:<dir>")


def _read_probe(path: Path | None) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path is not None and path.exists() else None
