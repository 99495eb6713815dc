"""deepwiki-open's client-driven deep research: one iteration per request, numbered from the history.

The client tags a message with `[DEEP RESEARCH]`, sends "[DEEP RESEARCH] Continue the research"
after each answer and stops once an answer contains `## Final Conclusion`. So: iteration =
assistant messages + 1; iteration 1 is `## Research Plan` ... `## Next Steps`; 2–4 are
`## Research Update N`; 5 and later `## Final Conclusion`. Every iteration researches the
ORIGINAL question (the first tagged user message), with the earlier iterations' answers as
context, and may use the tools for a turn or two. We write the heading ourselves, so it is exact
whatever the model does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rag.errors import ErrorCode, RepoLensError
from rag.events import error_event, token_event
from rag.providers.base import ChatProvider, ProviderError
from rag.research import prompts
from rag.research.frames import Stats, done_frame
from rag.research.loop import ResearchCancelled, Researcher, TimeBudgetExceeded, prepare
from rag.research.offline import (
    MAX_HOPS,
    OFFLINE_LABEL,
    CodeGraphWalker,
    Node,
    walk_hops,
    write_conclusion,
)
from rag.research.options import ResearchOptions
from rag.research.services import ResearchServices
from rag.research.tools import RepoTools
from rag.tokens import count_tokens, truncate_to_tokens

DEEP_RESEARCH_TAG = "[DEEP RESEARCH]"
FINAL_ITERATION = 5
NEXT_STEPS = "## Next Steps"
PREVIOUS_TOKENS = 4_000
_CONTINUE = re.compile(
    r"^\s*(please\s+)?continue(\s+(the|with|your))?(\s+research)?\s*[.!]?\s*$", re.IGNORECASE
)
# Investigation turns per iteration: a first look with the plan, deeper updates, a last check.
_TURNS = {1: 1, FINAL_ITERATION: 1}
_UPDATE_TURNS = 2


class CompatRequestError(RepoLensError):
    code = ErrorCode.BAD_REQUEST


@dataclass(frozen=True, slots=True)
class CompatState:
    """What one compatible request asks for, read from its message history."""

    iteration: int
    question: str
    latest: str
    previous: tuple[str, ...]

    @property
    def heading(self) -> str:
        if self.iteration == 1:
            return "## Research Plan"
        if self.iteration < FINAL_ITERATION:
            return f"## Research Update {self.iteration}"
        return "## Final Conclusion"


def strip_tag(text: str) -> str:
    return text.replace(DEEP_RESEARCH_TAG, "").strip()


def is_deep_research(messages: Sequence[Mapping[str, Any]]) -> bool:
    """deepwiki's rule: any message whose content contains the tag makes the request deep research."""
    return any(DEEP_RESEARCH_TAG in str(m.get("content") or "") for m in messages)


def is_continue(text: str) -> bool:
    return bool(_CONTINUE.match(strip_tag(text)))


def compat_state(messages: Sequence[Mapping[str, Any]]) -> CompatState:
    """Iteration number, the original question and the earlier iterations' answers."""
    users = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
    if not users:
        raise CompatRequestError("No messages provided: a deep research request needs a user message")
    tagged = [text for text in users if DEEP_RESEARCH_TAG in text and not is_continue(text)]
    candidates = tagged or [text for text in users if not is_continue(text)] or users
    question = strip_tag(candidates[0])
    latest = strip_tag(users[-1])
    previous = tuple(str(m.get("content") or "") for m in messages if m.get("role") == "assistant")
    return CompatState(len(previous) + 1, question, latest, previous)


def research_so_far(state: CompatState) -> str:
    """The earlier iterations' answers as context, newest kept whole when they must be cut."""
    if not state.previous:
        return ""
    parts = [f"### Iteration {n}\n{text.strip()}" for n, text in enumerate(state.previous, 1)]
    text = "\n\n".join(parts)
    if count_tokens(text) > PREVIOUS_TOKENS:
        newest = truncate_to_tokens(parts[-1], PREVIOUS_TOKENS // 2)
        older = truncate_to_tokens("\n\n".join(parts[:-1]), PREVIOUS_TOKENS // 2)
        text = f"{older}\n… (earlier iterations cut to fit)\n\n{newest}"
    extra = (
        ""
        if is_continue(state.latest) or state.latest == state.question
        else f"\nThe user adds: {state.latest}\n"
    )
    return f"Research so far (earlier iterations of this investigation):\n{text}\n{extra}\n"


def writing_instruction(state: CompatState) -> str:
    if state.iteration == 1:
        return (
            "This is iteration 1 of a multi-turn investigation. Write the research plan (sub-questions, "
            "what to look at) and the first findings. Do not conclude. Do not repeat the heading. "
            f"End with a section headed exactly '{NEXT_STEPS}' listing what the next iterations will "
            "investigate."
        )
    if state.iteration < FINAL_ITERATION:
        return (
            f"This is iteration {state.iteration}. Report only what is new since the earlier iterations, "
            "deepening the open sub-questions. Do not conclude yet and do not write a 'Final Conclusion' "
            "heading; do not repeat the heading."
        )
    return (
        "This is the final iteration. Write the final conclusion answering the original question, drawing "
        "on all earlier iterations and the evidence. Do not repeat the heading."
    )


def _normal(line: str) -> str:
    return " ".join(line.strip().lstrip("#").split()).lower()


async def without_heading(pieces: AsyncIterator[str], heading: str) -> AsyncGenerator[str, None]:
    """The model's text minus a leading copy of `heading` (we already sent it)."""
    buffer = ""
    decided = False
    async for piece in pieces:
        if decided:
            yield piece
            continue
        buffer += piece
        stripped = buffer.lstrip()
        if "\n" not in stripped and len(stripped) < len(heading) + 20:
            continue
        decided = True
        first, _, rest = stripped.partition("\n")
        buffer = rest.lstrip("\n") if _normal(first) == _normal(heading) else stripped
        if buffer:
            yield buffer
    if not decided and buffer.strip() and _normal(buffer) != _normal(heading):
        yield buffer.lstrip()


async def compat_events(
    services: ResearchServices,
    *,
    repo_id: str,
    messages: Sequence[Mapping[str, Any]],
    provider: str | None,
    model: str | None,
    language: str,
    options: ResearchOptions,
    cancel: asyncio.Event | None,
) -> AsyncGenerator[dict[str, Any], None]:
    """One compatible iteration as `token` frames, then `done` (an `error` frame before it on failure)."""
    failed = Stats(options.max_iterations, stopped_because="error")
    try:
        state = compat_state(messages)
        chat, tools, options = await prepare(services, repo_id, provider, model, options)
    except RepoLensError as error:
        yield error_event(error.code, error.message)
        yield done_frame(failed)
        return
    if getattr(chat, "name", "") == "offline":
        async for frame in offline_compat(tools, state, options=options, cancel=cancel):
            yield frame
        return
    async for frame in _model_iteration(tools, chat, state, language, options, cancel):
        yield frame


async def _model_iteration(
    tools: RepoTools,
    chat: ChatProvider,
    state: CompatState,
    language: str,
    options: ResearchOptions,
    cancel: asyncio.Event | None,
) -> AsyncGenerator[dict[str, Any], None]:
    turns = min(_TURNS.get(min(state.iteration, FINAL_ITERATION), _UPDATE_TURNS), options.max_iterations)
    run = Researcher(
        tools,
        chat,
        question=state.question,
        language=language,
        options=dataclasses.replace(options, max_iterations=turns),
        cancel=cancel,
    )
    run.context_note = research_so_far(state)
    yield token_event(f"{state.heading}\n\n")
    body = ""
    try:
        try:
            if state.iteration == 1:
                async for _ in run.plan():
                    pass
            async for _ in run.investigate():
                pass
        except TimeBudgetExceeded:
            run.stats.stopped_because = "time_budget"
        system = prompts.conclude_system(language)
        async for piece in without_heading(run.conclude(system, writing_instruction(state)), state.heading):
            body += piece
            yield token_event(piece)
        if state.iteration == 1 and NEXT_STEPS not in body:
            yield token_event(f"\n\n{NEXT_STEPS}\n\n- Continue the research on: {state.question}\n")
    except ResearchCancelled:
        run.stats.stopped_because = "cancelled"
        yield error_event(ErrorCode.CANCELLED, "research cancelled")
    except (ProviderError, RepoLensError) as error:
        run.stats.stopped_because = "error"
        yield token_event(("\n\n---\n" if body else "") + run.findings_so_far(error.message))
        yield error_event(
            ErrorCode.PROVIDER_ERROR if isinstance(error, ProviderError) else error.code, error.message
        )
    yield done_frame(run.stats)


def offline_plan(question: str, walker: CodeGraphWalker, seeds: list[Node]) -> str:
    """Iteration 1 of compatible mode: where the walk starts and what it will follow."""
    lines = [f"{OFFLINE_LABEL}. Question: {question}", "", "Starting points found by retrieval:", ""]
    lines += [f"- `{node.name}` at {node.ref}" for node in seeds] or ["- (no code matched the question)"]
    follow = sorted({name for node in seeds for name in walker.called_names(node)})
    lines += ["", f"{NEXT_STEPS}", ""]
    lines.append("- Follow the callers and callees of the starting points, one hop per iteration.")
    if follow:
        lines.append("- Identifiers to follow: " + ", ".join(f"`{name}`" for name in follow[:12]))
    return "\n".join(lines) + "\n"


async def offline_compat(
    tools: RepoTools, state: CompatState, *, options: ResearchOptions, cancel: asyncio.Event | None
) -> AsyncGenerator[dict[str, Any], None]:
    """A compatible-mode iteration without a model: plan, then the graph `iteration - 1` hops deep."""
    stats = Stats(options.max_iterations)
    walker = CodeGraphWalker(tools)
    seeds = await asyncio.to_thread(walker.seeds, state.question)
    yield token_event(f"{state.heading}\n\n")
    if state.iteration == 1:
        text = offline_plan(state.question, walker, seeds)
    else:
        hops = MAX_HOPS if state.iteration >= FINAL_ITERATION else state.iteration - 1
        async for _ in walk_hops(walker, seeds, hops, stats, cancel):
            pass
        if stats.stopped_because == "cancelled":
            yield error_event(ErrorCode.CANCELLED, "research cancelled")
            yield done_frame(stats)
            return
        text = write_conclusion(state.question, walker, stats.turns, title=False)
    for line in text.splitlines(keepends=True):
        yield token_event(line)
    yield done_frame(stats)
