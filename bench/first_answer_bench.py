"""The first answer on a repository being indexed: how soon its code graph is live, and what the first
`repolens ask` on a fresh path gives.

Per corpus (`bench.corpus`: cobra, rich; and `generated_2000`, `ingest_bench`'s 2,000-file generated
repository, the size the searchable target is stated for), on a fresh data dir and vector cache:
- `searchable_s`, `graph_live_s`: an in-process ingest's searchable milestone and its `graph` milestone
  (the version that publishes the code graph), `graph_after_searchable_s` their difference (what a chat
  asked at the searchable milestone waits: target <= `REPOLENS_GRAPH_WAIT_S`, 5 s). The ingest is
  cancelled at its first embedding report after the graph: the dense phase is not measured here.
- cobra only, `first_ask`: the real command `repolens ask <path> QUESTION --plain` on a fresh data dir
  (a subprocess, the default ingest worker process): `seconds` to its exit, `graph_answer` (the answer is
  the one explained from the code graph, not the retrieval list), `exited` (within 300 s). The dense
  phase it hands to a background `repolens embed` is waited for before the data dir is removed.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.corpus import CorpusUnavailable, working_copy
from bench.ingest_bench import full_scale_repo
from ingest import ingest
from ingest.errors import IngestCancelled
from ingest.pipeline import Progress
from rag.embedders import get_embedder
from rag.providers.offline import labels
from rag.settings import Settings
from rag.store import Store

CORPORA = ("cobra", "rich")
QUESTION = "How does Execute run a command?"
ASK_TIMEOUT_S = 300.0
GRAPH_TARGET_S = 5.0


def _milestones(path: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="repolens-first-") as home:
        settings = Settings.from_env({**os.environ, "REPOLENS_HOME": home})
        cancel = threading.Event()
        marks: dict[str, float] = {}
        started = time.monotonic()

        def progress(event: Progress) -> None:
            marks.setdefault(event.stage, round(time.monotonic() - started, 2))
            if "graph" in marks and event.stage == "embedding":
                cancel.set()

        with contextlib.suppress(IngestCancelled):  # at the first embedding report after the graph
            ingest(
                str(path),
                store=Store(settings.home),
                embedder=get_embedder(settings),
                progress=progress,
                cancel=cancel,
            )
    result: dict[str, Any] = {"searchable_s": marks.get("searchable"), "graph_live_s": marks.get("graph")}
    if "graph" in marks and "searchable" in marks:
        result["graph_after_searchable_s"] = round(marks["graph"] - marks["searchable"], 2)
        result["within_target"] = result["graph_after_searchable_s"] <= GRAPH_TARGET_S
    return result


def _first_ask(path: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="repolens-ask-") as home:
        env = {**os.environ, "REPOLENS_HOME": home}
        env.pop("REPOLENS_INGEST_ISOLATION", None)
        command = [
            sys.executable,
            "-c",
            "from api.cli import main; main()",
            "ask",
            str(path),
            QUESTION,
            "--plain",
        ]
        started = time.monotonic()
        asking = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = asking.communicate(timeout=ASK_TIMEOUT_S)
            exited = True
        except subprocess.TimeoutExpired:
            os.killpg(asking.pid, 9)
            out, err = asking.communicate()
            exited = False
        seconds = round(time.monotonic() - started, 2)
        background = re.search(r"background \(pid (\d+)", err)
        deadline = time.monotonic() + ASK_TIMEOUT_S
        while background and Path(f"/proc/{background.group(1)}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
    return {
        "seconds": seconds,
        "exited": exited,
        "graph_answer": out.startswith(f"**{labels('en')['title']}**"),
        "handed_to_background": background is not None,
    }


def run() -> dict[str, Any]:
    results: dict[str, Any] = {"load_average": [round(x, 2) for x in os.getloadavg()]}
    for name in CORPORA:
        try:
            path = working_copy(name)
        except CorpusUnavailable as missing:
            results[name] = {"skipped": str(missing)}
            continue
        results[name] = _milestones(path)
        if name == "cobra":
            results[name]["first_ask"] = _first_ask(path)
    with tempfile.TemporaryDirectory(prefix="repolens-first-generated-") as workdir:
        repo, _ = full_scale_repo(Path(workdir))
        results["generated_2000"] = _milestones(repo)
    return results
