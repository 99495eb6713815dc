"""`repolens setup`: prepare everything RepoLens needs offline (run by `make install`).

It seeds tiktoken's cache from the bundled encodings and builds the ONNX files
of the local embedder, so the first ingest neither downloads nor waits.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from api.cli.app import app, cli_errors, console
from rag.embedders.local import DEFAULT_MODEL, LOCAL_MODELS, ensure_model, load_local_embedder
from rag.settings import Settings
from rag.tokens import seed_tiktoken_cache


@app.command()
def setup(
    force: Annotated[bool, typer.Option("--force", help="Rebuild the model files even if present.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Seed the tokenizer cache and build the offline embedding models (no network needed)."""
    with cli_errors(as_json):
        settings = Settings.from_env()
        started = time.perf_counter()
        tiktoken_dir = seed_tiktoken_cache(settings)
        models: dict[str, Path] = {
            model: ensure_model(settings, model, rebuild=force) for model in LOCAL_MODELS
        }
        embedder = load_local_embedder(settings, DEFAULT_MODEL)
        check = embedder.embed_query("def hello(): return 'world'")
        summary = {
            "tiktoken_cache": str(tiktoken_dir),
            "models": {name: str(path) for name, path in models.items()},
            "embedder": embedder.name,
            "dimension": int(check.shape[0]),
            "seconds": round(time.perf_counter() - started, 2),
        }
        if as_json:
            print(json.dumps(summary))
            return
        console.print(f"tiktoken cache: {tiktoken_dir}", soft_wrap=True)
        for name, path in models.items():
            console.print(f"model {name}: {path}", soft_wrap=True)
        console.print(f"embedder [bold]{embedder.name}[/] ready ({summary['dimension']} dimensions)")
