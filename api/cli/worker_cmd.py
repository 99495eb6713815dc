"""`repolens worker`: run the ingest jobs of the shared Redis queue (`REPOLENS_REDIS_URL`).

API replicas (`repolens serve` with the same `REPOLENS_REDIS_URL`) only queue jobs; workers clone,
index and commit them into the shared store, `--jobs` at once per process, and report progress
that every replica streams (see `ingest.redis_queue`). Stop a worker with Ctrl-C or SIGTERM: its
running jobs stop and another worker retries them; a worker that dies is retried the same way once
its lease (`REPOLENS_QUEUE_LEASE_S`) runs out.
"""

from __future__ import annotations

import urllib.parse
from typing import Annotated

import typer

from api.cli.app import app, cli_errors, err_console
from rag.errors import ConfigError
from rag.redact import register_secret
from rag.settings import Settings
from rag.store import open_store


@app.command()
def worker(
    jobs: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Jobs run at once (default: REPOLENS_INGEST_WORKERS)."),
    ] = None,
    burst: Annotated[bool, typer.Option("--burst", help="Run the jobs already queued, then exit.")] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Exit 0 if a worker on this host is taking jobs, else 1 (a container health check).",
        ),
    ] = False,
) -> None:
    """Run ingest jobs from the shared Redis queue (REPOLENS_REDIS_URL).

    Give every worker the API replicas' store (the same REPOLENS_DATABASE_URL,
    or the same REPOLENS_HOME) and REPOLENS_QUEUE_KEY (private repositories).
    The embedder loads before any job is taken; if it cannot, or Redis cannot
    be reached, the worker exits with the reason. Ctrl-C or SIGTERM hands the
    running jobs back to the queue; a killed worker's jobs run again elsewhere
    once its lease (REPOLENS_QUEUE_LEASE_S) runs out.
    """
    with cli_errors():
        from ingest.redis_queue import IngestWorker, ping_queue, worker_alive

        settings = Settings.from_env()
        if settings.redis_url is None:
            raise ConfigError("repolens worker needs REPOLENS_REDIS_URL (the queue the API replicas use)")
        for secret in settings.secrets():
            register_secret(secret)
        if check:
            alive = worker_alive(settings)
        else:
            ping_queue(settings)
            with open_store(settings) as store:  # closed when the worker stops
                runner = IngestWorker(settings, store, jobs=jobs or settings.ingest_workers)
                err_console.print(
                    f"repolens worker {runner.name}: loading the embedder", highlight=False, soft_wrap=True
                )
                embedder = runner.load_embedder()
                err_console.print(
                    f"repolens worker {runner.name}: embedder {embedder.name} ready; writing to "
                    f"{store_description(settings)}; taking jobs, {runner.jobs} at once",
                    highlight=False,
                    soft_wrap=True,
                )
                runner.arq_worker(burst=burst).run()
    if check and not alive:  # outside `cli_errors`, which would take the exit for an error
        raise typer.Exit(1)


def store_description(settings: Settings) -> str:
    """The store this worker writes to, without credentials: operators check that it is the API's."""
    if settings.database_url is None:
        return f"the local store in {settings.home}"
    parts = urllib.parse.urlsplit(settings.database_url.get_secret_value())
    host = parts.hostname or urllib.parse.parse_qs(parts.query).get("host", ["localhost"])[0]
    port = f":{parts.port}" if parts.port else ""
    return f"PostgreSQL database {parts.path.lstrip('/') or '(default)'} on {host}{port}"
