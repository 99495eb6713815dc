"""Side-by-side runs of two RepoLens source trees: the one setting that names the other tree, and the
summary of a figure measured in alternating rounds (`chat_bench`, `ingest_bench`).

On a shared machine absolute times move with the other sessions' load; two trees measured in the same
run, alternating which goes first, share it, so the ratio of their medians is the figure to read.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any


def source_tree(setting: str, variable: str) -> Path:
    """The directory of `tree:<dir>` (e.g. `git archive <commit> | tar -x -C <dir>`), which must hold
    a RepoLens source tree; `variable` names the setting in the error."""
    tree = Path(setting.removeprefix("tree:")).expanduser().resolve()
    if not (tree / "api" / "server.py").is_file():
        raise SystemExit(f"{variable}: {tree} is not a RepoLens source tree")
    return tree


def over_repeats(sides: dict[str, list[float]], digits: int = 1) -> dict[str, Any]:
    """One figure's values per side (the measured one first, then the baseline), their medians and
    the ratio of the medians, measured / baseline (below 1: the measured side is faster or smaller)."""
    (ours, theirs) = sides
    medians = {
        label: round(statistics.median(values), digits) if values else None for label, values in sides.items()
    }
    a, b = medians[ours], medians[theirs]
    return {
        **sides,
        **{f"{label}_median": median for label, median in medians.items()},
        "ratio_of_medians": round(a / b, 2) if a is not None and b else None,
    }
