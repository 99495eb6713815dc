"""Deep research: an agent loop that explores an indexed repository with tools before answering.

Entry points (both async generators of the typed event dicts of docs/ARCHITECTURE.md):

- `run_research(services, repo_id=..., question=..., ...)` for events mode (`deep_research: true`
  on `/ws/chat`, `repolens ask --deep`): streams `research` progress frames, the conclusion as
  `token` frames, `sources`, `citations`, then exactly one `done` (or an `error` followed by `done`).
- `compat_iteration(services, repo_id=..., messages=..., ...)` for deepwiki-compatible requests
  whose messages carry `[DEEP RESEARCH]`: one iteration per request, numbered from the history,
  yielding `token` frames whose texts form the whole answer (then `done`; `error` on failure).

`services` is anything with `.store` (`rag.store.Store`), `.embedder` and `.settings`, such as
`api.services.Services`. With provider `offline` (or none configured) both work without a model by
following the code graph (`rag.research.offline`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

from rag.research.compat import DEEP_RESEARCH_TAG, compat_events, is_deep_research
from rag.research.loop import research_events
from rag.research.options import ResearchOptions, ResearchOptionsError
from rag.research.services import ResearchServices

__all__ = [
    "DEEP_RESEARCH_TAG",
    "ResearchOptions",
    "ResearchOptionsError",
    "ResearchServices",
    "compat_iteration",
    "is_deep_research",
    "run_research",
]


def run_research(
    services: ResearchServices,
    *,
    repo_id: str,
    question: str,
    history: Sequence[Mapping[str, str]] = (),
    provider: str | None = None,
    model: str | None = None,
    language: str = "en",
    options: ResearchOptions | None = None,
    cancel: asyncio.Event | None = None,
) -> AsyncGenerator[dict[str, Any], None]:
    """Research `question` over the indexed `repo_id` and stream typed events.

    `history` is the earlier conversation as `{role, content}` dicts (context for the plan).
    `provider`/`model` default to the configured ones; `offline` researches without a model.
    Setting `cancel` (or cancelling the consuming task) stops at once, closing the provider
    stream; the run then ends with an `error` frame of code `cancelled` and a `done` frame.
    The last frame is always `done` with `research: {turns, tool_calls, tokens, seconds,
    stopped_because}` and `usage`.
    """
    return research_events(
        services,
        repo_id=repo_id,
        question=question,
        history=history,
        provider=provider,
        model=model,
        language=language,
        options=options or ResearchOptions(),
        cancel=cancel,
    )


def compat_iteration(
    services: ResearchServices,
    *,
    repo_id: str,
    messages: Sequence[Mapping[str, str]],
    provider: str | None = None,
    model: str | None = None,
    language: str = "en",
    options: ResearchOptions | None = None,
    cancel: asyncio.Event | None = None,
) -> AsyncGenerator[dict[str, Any], None]:
    """One deepwiki-style research iteration for the full `messages` history of a request.

    Iteration = number of assistant messages + 1. The `[DEEP RESEARCH]` tag is stripped, and a
    "continue the research" message continues the first user question of the research.
    Iteration 1 starts with `## Research Plan` and ends with `## Next Steps`; 2–4 start with
    `## Research Update N`; 5 and later start with `## Final Conclusion`. Yields `token` frames
    (the compatible API forwards only their text), then `done`; on failure an `error` frame.
    """
    return compat_events(
        services,
        repo_id=repo_id,
        messages=messages,
        provider=provider,
        model=model,
        language=language,
        options=options or ResearchOptions(),
        cancel=cancel,
    )
