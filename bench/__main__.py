"""`make bench`: run every `bench/*_bench.py` module's `run()` and print one JSON document.

`python -m bench ingest retrieval` runs only the named benchmarks.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path


def _bench_modules(selected: list[str]) -> list[str]:
    names = sorted(
        info.name
        for info in pkgutil.iter_modules([str(Path(__file__).parent)])
        if info.name.endswith("_bench")
    )
    if selected:
        names = [name for name in names if name.removesuffix("_bench") in selected]
    return names


def main(argv: list[str]) -> int:
    results: dict[str, object] = {}
    for name in _bench_modules(argv):
        module = importlib.import_module(f"bench.{name}")
        started = time.perf_counter()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results[name.removesuffix("_bench")] = module.run()
        print(f"{name} took {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
