"""A small, real git repository to ingest in tests, and a fixture that indexes it.

`make_fixture_repo(dest)` writes a project ("weatherline") with Python, JavaScript,
Go and Markdown files and commits it with git (fixed author and dates, so the
commit sha is the same on every run). What tests can rely on:

- a call chain across three Python files: `weatherline/cli.py: main()` ->
  `weatherline/service.py: ForecastService.run()` -> `weatherline/client.py: HttpClient.send()`;
- docstrings on every public function (`persist_forecasts` in `weatherline/storage.py`
  is described only in plain words, a target for paraphrased questions);
- `RARE_IDENTIFIER` (`ZORBLAX_RETRY_CEILING`), defined once in `weatherline/client.py`
  and used in no other file;
- `README.md`, `docs/architecture.md` (headings), `web/chart.js`, `web/format.js`,
  `server/main.go`, and files the default filters exclude (`node_modules/`, `build/`,
  a `.gitignore`d `debug.log`).

Usage (registered by tests/conftest.py)::

    def test_something(indexed_repo):
        store, repo_id = indexed_repo
        index = store.open(repo_id)

`shared_embedder` (session scope) is the real default embedder with a vector cache shared
by all tests: use it to ingest fixture content cheaply. `commit_all(repo, message)` commits
later edits (for update tests); `write_files(repo, files)` writes several files at once.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from ingest import ingest
from rag.embedders import Embedder, get_embedder
from rag.settings import Settings
from rag.store import Store

RARE_IDENTIFIER = "ZORBLAX_RETRY_CEILING"
CALL_CHAIN = (
    ("weatherline/cli.py", "main"),
    ("weatherline/service.py", "ForecastService.run"),
    ("weatherline/client.py", "HttpClient.send"),
)

_GIT_ENV = {
    "GIT_AUTHOR_NAME": "Fixture",
    "GIT_AUTHOR_EMAIL": "fixture@example.invalid",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z",
    "GIT_COMMITTER_NAME": "Fixture",
    "GIT_COMMITTER_EMAIL": "fixture@example.invalid",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}

FILES: Mapping[str, str] = {
    "README.md": """\
# Weatherline

Weatherline fetches weather forecasts for a city from a remote forecast API and
prints them in the terminal or draws them as a chart in the browser.

## Usage

```bash
weatherline --city Lisbon --days 3
```

## How it works

The command line (`weatherline/cli.py`) builds a `ForecastService`, which asks the
`HttpClient` for the raw forecast, parses it into `Forecast` objects and stores them.
""",
    "docs/architecture.md": """\
# Architecture

## Command line

`main()` parses the arguments and runs the service.

## Service layer

`ForecastService.run()` coordinates fetching, parsing and persistence.

## HTTP client

`HttpClient.send()` performs the request with retries and exponential backoff.
""",
    "weatherline/__init__.py": '"""Weatherline: weather forecasts in the terminal."""\n',
    "weatherline/cli.py": '''\
"""The `weatherline` command: parse arguments and run the forecast service."""

from __future__ import annotations

import argparse

from weatherline.client import HttpClient
from weatherline.service import ForecastService


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read --city and --days from the command line."""
    parser = argparse.ArgumentParser(prog="weatherline")
    parser.add_argument("--city", required=True)
    parser.add_argument("--days", type=int, default=3)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point: build the service and print each day's forecast."""
    args = parse_args(argv)
    service = ForecastService(HttpClient("https://forecast.example.invalid"))
    for forecast in service.run(args.city, args.days):
        print(forecast.summary())
    return 0
''',
    "weatherline/service.py": '''\
"""Coordinates fetching, parsing and storing forecasts."""

from __future__ import annotations

from weatherline.client import HttpClient
from weatherline.models import Forecast, parse_forecasts
from weatherline.storage import persist_forecasts


class ForecastService:
    """Fetches forecasts for a city through an HttpClient."""

    def __init__(self, client: HttpClient) -> None:
        self.client = client

    def run(self, city: str, days: int) -> list[Forecast]:
        """Fetch, parse and store the forecast for `city` over `days` days."""
        payload = self.client.send("GET", f"/v1/forecast?city={city}&days={days}")
        forecasts = parse_forecasts(payload)
        persist_forecasts(forecasts)
        return forecasts
''',
    "weatherline/client.py": '''\
"""A tiny HTTP client with retries."""

from __future__ import annotations

import json
import time
import urllib.request

ZORBLAX_RETRY_CEILING = 7


def backoff_delay(attempt: int) -> float:
    """Seconds to wait before retry number `attempt` (exponential, capped)."""
    return min(0.1 * (2**attempt), 5.0)


class HttpClient:
    """Sends JSON requests to one base URL."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def send(self, method: str, path: str) -> dict:
        """Perform the request, retrying failed attempts up to ZORBLAX_RETRY_CEILING times."""
        last_error: Exception | None = None
        for attempt in range(ZORBLAX_RETRY_CEILING):
            try:
                request = urllib.request.Request(self.base_url + path, method=method)
                with urllib.request.urlopen(request, timeout=10) as response:
                    return json.loads(response.read())
            except OSError as error:
                last_error = error
                time.sleep(backoff_delay(attempt))
        raise RuntimeError(f"request failed: {last_error}")
''',
    "weatherline/models.py": '''\
"""Forecast values and parsing of the API's JSON."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Forecast:
    """One day's forecast."""

    day: str
    temperature_c: float
    rain_mm: float

    def summary(self) -> str:
        """A one-line description such as `Mon: 21.5 C, 0.0 mm`."""
        return f"{self.day}: {self.temperature_c:.1f} C, {self.rain_mm:.1f} mm"


def parse_forecasts(payload: dict) -> list[Forecast]:
    """Turn the API's `days` list into Forecast objects."""
    return [Forecast(d["day"], float(d["temp"]), float(d.get("rain", 0))) for d in payload["days"]]
''',
    "weatherline/storage.py": '''\
"""Keeps forecasts on disk."""

from __future__ import annotations

import json
from pathlib import Path

CACHE_FILE = Path.home() / ".weatherline" / "history.jsonl"


def persist_forecasts(forecasts: list) -> None:
    """Append every forecast as one JSON line to the history file in the home folder."""
    CACHE_FILE.parent.mkdir(parents=True, exist_ok=True)
    with CACHE_FILE.open("a", encoding="utf-8") as handle:
        for forecast in forecasts:
            handle.write(json.dumps(forecast.__dict__) + "\\n")
''',
    "web/chart.js": """\
/** Draws the temperature of each day as a bar chart on a canvas. */
export function renderTemperatureChart(canvas, forecasts) {
  const ctx = canvas.getContext("2d");
  const width = canvas.width / Math.max(forecasts.length, 1);
  forecasts.forEach((forecast, index) => {
    const height = forecast.temperature_c * 4;
    ctx.fillRect(index * width, canvas.height - height, width - 2, height);
  });
}
""",
    "web/format.js": """\
/** Formats a temperature in degrees Celsius for display. */
export function formatCelsius(value) {
  return `${value.toFixed(1)} °C`;
}
""",
    "server/main.go": """\
// Package main serves cached forecasts over HTTP.
package main

import (
\t"fmt"
\t"net/http"
)

// healthHandler reports that the server is alive.
func healthHandler(w http.ResponseWriter, r *http.Request) {
\tfmt.Fprintln(w, "ok")
}

func main() {
\thttp.HandleFunc("/healthz", healthHandler)
\thttp.ListenAndServe(":8080", nil)
}
""",
    ".gitignore": "*.log\n",
    "debug.log": "this file is ignored by .gitignore\n",
    "node_modules/leftpad/index.js": "module.exports = function leftpad() {};\n",
    "build/output.py": "GENERATED = True\n",
}

INDEXED_PATHS = sorted(
    path for path in FILES if not path.startswith(("node_modules/", "build/")) and path != "debug.log"
)


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` with a fixed identity and dates; returns stdout."""
    env = {**os.environ, **_GIT_ENV}
    result = subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True)
    return result.stdout.strip()


def commit_all(repo: Path, message: str) -> str:
    """Stage everything (including deletions) and commit; returns the new sha."""
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def write_files(repo: Path, files: Mapping[str, str]) -> None:
    for relative, text in files.items():
        target = repo / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def make_fixture_repo(dest: Path) -> Path:
    """Create the weatherline repository at `dest` (a new folder) with one commit."""
    dest.mkdir(parents=True)
    write_files(dest, FILES)
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A", "-f")
    git(dest, "commit", "-q", "-m", "weatherline fixture")
    return dest


@pytest.fixture
def fixture_repo(tmp_path: Path) -> Path:
    return make_fixture_repo(tmp_path / "weatherline")


@pytest.fixture(scope="session")
def shared_embedder(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    """The real default embedder with one vector cache for the whole session.

    Vectors are a pure function of the text, so sharing the cache changes no
    result; it only saves re-embedding the same fixture files in every test.
    """
    cache_home = tmp_path_factory.mktemp("shared-embeddings")
    return get_embedder(Settings.from_env({**os.environ, "REPOLENS_HOME": str(cache_home)}))


@pytest.fixture
def indexed_repo(fixture_repo: Path, shared_embedder: Embedder) -> tuple[Store, str]:
    """The fixture repository ingested with the real default embedder into this test's REPOLENS_HOME."""
    store = Store(Settings.from_env().home)
    report = ingest(str(fixture_repo), store=store, embedder=shared_embedder)
    return store, report.repo_id
