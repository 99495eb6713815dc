"""The research loop: plan, investigate with tools for a few turns, then conclude from the findings.

`Researcher` holds one run's state (tools, evidence, findings, budgets) and exposes the phases as
async generators of typed events, so events mode (`research_events`) and deepwiki-compatible
iterations (`rag.research.compat`) assemble the same parts differently. Every model call is raced
against the cancel event (and, while investigating, the time budget); losing the race cancels the
call's task, which closes the provider stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator, Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rag.citations import extract_citations
from rag.embedders.base import embedder_for
from rag.errors import ErrorCode, NotFoundError, RepoLensError
from rag.events import error_event, token_event
from rag.providers.base import (
    ChatProvider,
    ChatRequest,
    Message,
    ProviderError,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
    Usage,
)
from rag.providers.catalog import provider_info, provider_or_offline, resolve_model
from rag.redact import redact
from rag.research import prompts
from rag.research.evidence import EvidenceSet, Finding, render_findings
from rag.research.frames import (
    Stats,
    citations_frame,
    done_frame,
    research_frame,
    sources_frame,
)
from rag.research.offline import offline_events
from rag.research.options import ResearchOptions
from rag.research.services import ResearchServices
from rag.research.tools import Evidence, RepoTools, ToolResult, numbered, tool_schemas
from rag.retrieval import Retriever
from rag.tokens import count_tokens

T = TypeVar("T")

PLAN_MAX_TOKENS = 600
TURN_MAX_TOKENS = 1_200
ANSWER_MAX_TOKENS = 2_500
SINGLE_LINE_CONTEXT = 2
LEAD_SHARE = 0.25  # of the time budget, at most, for the code graph's chain before planning


class ResearchCancelled(Exception):
    """The cancel event fired."""


class ToolFailure(RepoLensError):
    """A tool broke (not a refused call, which goes back to the model): research ends with its findings."""

    code = ErrorCode.TOOL_ERROR


class TimeBudgetExceeded(Exception):
    """The wall-time budget ran out during a model call."""


@dataclass
class Completion:
    text: str = ""
    calls: list[ToolCallEvent] = field(default_factory=list)


def open_tools(services: ResearchServices, repo_id: str, options: ResearchOptions) -> RepoTools:
    """The tools over `repo_id`'s current index (blocking: run it in a thread)."""
    if services.store.get(repo_id) is None:
        raise NotFoundError(
            f"repository {repo_id!r} is not indexed: ingest it first (`repolens ingest LOCATION`)"
        )
    index = services.store.open(repo_id)
    embedder = embedder_for(services.embedder, index.record.embedder)
    index.check_embedder(embedder)
    return RepoTools(index, Retriever(index, embedder), output_tokens=options.tool_output_tokens)


class Researcher:
    """One research run over one repository with one provider."""

    def __init__(
        self,
        tools: RepoTools,
        provider: ChatProvider,
        *,
        question: str,
        history: Sequence[Mapping[str, str]] = (),
        language: str = "en",
        options: ResearchOptions,
        cancel: asyncio.Event | None = None,
    ) -> None:
        self.tools = tools
        self.provider = provider
        self.question = question
        self.history = history
        self.language = language
        self.options = options
        self.cancel = cancel
        self.stats = Stats(options.max_iterations)
        self.evidence = EvidenceSet()
        self.findings: list[Finding] = []
        self.plan_text = ""
        self.lead_text = ""
        self.lead_evidence: list[Evidence] = []
        self.context_note = ""
        self._last_turn: list[Message] = []
        self.json_actions = options.tool_mode == "json" or (
            options.tool_mode == "auto" and not getattr(provider, "supports_tools", True)
        )

    def event(self, phase: str, kind: str, *, summary: str = "", **extra: Any) -> dict[str, Any]:
        return research_frame(self.stats, phase, kind, summary=summary, **extra)

    # ---- model calls --------------------------------------------------------------------------

    async def guarded(self, awaitable: Awaitable[T], *, timed: bool, limit: float | None = None) -> T:
        """`awaitable`'s result, unless cancel fires (ResearchCancelled) or, if `timed`, time runs out
        (the run's budget, or `limit` seconds if sooner: TimeBudgetExceeded)."""
        task = asyncio.ensure_future(awaitable)
        waiters: set[asyncio.Future[Any]] = {task}
        cancel_wait = asyncio.ensure_future(self.cancel.wait()) if self.cancel else None
        if cancel_wait:
            waiters.add(cancel_wait)
        timeout = max(self.options.max_seconds - self.stats.seconds, 0.0) if timed else None
        if limit is not None:
            timeout = min(timeout, limit) if timeout is not None else limit
        try:
            done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if cancel_wait:
                cancel_wait.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if task in done:
            return task.result()
        if cancel_wait is not None and cancel_wait in done:
            raise ResearchCancelled
        raise TimeBudgetExceeded

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise ResearchCancelled

    def _count_usage(self, request: ChatRequest, completion: Completion, usage: Usage | None) -> None:
        if usage is not None:
            self.stats.prompt_tokens += usage.prompt_tokens
            self.stats.completion_tokens += usage.completion_tokens
            return
        self.stats.prompt_tokens += sum(count_tokens(m.content) for m in request.messages)
        self.stats.completion_tokens += count_tokens(completion.text) + 20 * len(completion.calls)

    async def _complete(self, request: ChatRequest) -> Completion:
        completion = Completion()
        usage: Usage | None = None
        async with contextlib.aclosing(self.provider.stream(request)) as stream:
            async for item in stream:
                if isinstance(item, TextDelta):
                    completion.text += item.text
                elif isinstance(item, ToolCallEvent):
                    completion.calls.append(item)
                elif isinstance(item, Usage):
                    usage = item
        self._count_usage(request, completion, usage)
        return completion

    async def complete(self, request: ChatRequest, *, timed: bool) -> Completion:
        self.check_cancel()
        return await self.guarded(self._complete(request), timed=timed)

    async def stream_text(self, request: ChatRequest) -> AsyncGenerator[str, None]:
        """The model's answer piece by piece; cancel stops it between (and during) pieces."""
        self.check_cancel()
        text = ""
        usage: Usage | None = None
        async with contextlib.aclosing(self.provider.stream(request)) as stream:
            iterator = aiter(stream)
            while True:
                try:
                    item = await self.guarded(anext(iterator), timed=False)
                except StopAsyncIteration:
                    break
                if isinstance(item, TextDelta) and item.text:
                    text += item.text
                    yield item.text
                elif isinstance(item, Usage):
                    usage = item
        self._count_usage(request, Completion(text=text), usage)

    def request(self, messages: list[Message], *, tools: bool, max_tokens: int) -> ChatRequest:
        specs = None
        if tools and not self.json_actions:
            specs = [ToolSpec(s["name"], s["description"], s["parameters"]) for s in tool_schemas()]
        return ChatRequest(messages=messages, model=self.provider.model, tools=specs, max_tokens=max_tokens)

    # ---- phases -------------------------------------------------------------------------------

    def brief(self) -> str:
        """The question and the plan, which head every investigation and conclusion prompt."""
        plan = self.plan_text or "(none)"
        return f"{self.context_note}Question: {self.question}\n\n{self.lead_text}Research plan:\n{plan}\n\n"

    def _history_text(self) -> str:
        turns = [f"{m.get('role', 'user')}: {m.get('content', '')}" for m in self.history[-6:]]
        return "Earlier conversation:\n" + "\n".join(turns) + "\n\n" if turns else ""

    async def plan(self) -> AsyncGenerator[dict[str, Any], None]:
        """Ask for sub-questions and what to look for, grounded in a first retrieval, the layout and
        the code graph's chain for the question (the `trace` tool, run first: offline research's
        answer, so a model that follows it starts from at least what offline research finds)."""
        lead = await self.lead()
        overview = await asyncio.to_thread(self._overview)
        messages = [
            Message("system", prompts.plan_system(self.language)),
            Message(
                "user",
                f"{self._history_text()}{self.context_note}Question: {self.question}\n\n"
                f"{prompts.LEAD_TITLE}:\n{lead.output}\n\n{overview}"
                if lead
                else overview,
            ),
        ]
        completion = await self.complete(
            self.request(messages, tools=False, max_tokens=PLAN_MAX_TOKENS), timed=True
        )
        self.plan_text = completion.text.strip()
        yield self.event("plan", "plan", summary=self.plan_text)
        if lead is not None:
            yield self.event(
                "plan", "tool_result", tool=lead.tool, args=lead.args, summary=lead.summary, files=lead.files
            )

    async def lead(self) -> ToolResult | None:
        """Run `trace` for the question and keep it as the first finding, and its steps (without their
        code, which the plan prompt shows) as a lead in every later prompt. None without a graph, or
        when it would take more than `LEAD_SHARE` of the time budget (the run goes on without it)."""
        if not getattr(self.tools.index, "has_graph", False):
            return None
        self.stats.tool_calls += 1
        trace = asyncio.to_thread(self.tools.run, "trace", {"question": self.question})
        try:
            result = await self.guarded(trace, timed=True, limit=self.options.max_seconds * LEAD_SHARE)
        except TimeBudgetExceeded:
            return None
        if result.is_error:
            return None
        finding = Finding(0, "The code graph's chain for the question (a lead to check).", [result])
        finding.new_refs = [item.ref for item in result.evidence]
        self.findings.append(finding)
        self.lead_evidence = result.evidence
        steps = result.output.split("\n## ", 1)[0]
        self.lead_text = f"{prompts.LEAD_TITLE}:\n{steps}\n\n"
        return result

    def _overview(self) -> str:
        top = self.tools.run("list_dir", {"path": ""})
        hits = self.tools.run("search", {"query": self.question, "k": 6})
        spans = ", ".join(item.ref + (f" ({item.symbol})" if item.symbol else "") for item in hits.evidence)
        return (
            f"Repository top level:\n{top.output}\n\nFirst search results for the question: {spans or 'none'}"
        )

    def budget_reason(self) -> str | None:
        if self.stats.turns >= self.options.max_iterations:
            return "max_iterations"
        if self.stats.tokens >= self.options.max_tokens:
            return "token_budget"
        if self.stats.seconds >= self.options.max_seconds:
            return "time_budget"
        if self.stats.tool_calls >= self.options.max_tool_calls:
            return "tool_budget"
        return None

    def _turn_messages(self) -> list[Message]:
        """System, the question with plan and findings (compacted to fit), then the last turn in full."""
        system = Message("system", prompts.investigate_system(self.language, json_actions=self.json_actions))
        recent = sum(count_tokens(m.content) + 10 for m in self._last_turn)
        fixed = count_tokens(system.content) + count_tokens(self.brief()) + 100
        budget = max(self.options.context_tokens - fixed - recent, 300)
        findings = render_findings(self.findings, budget)
        remaining = self.options.max_iterations - self.stats.turns
        user = Message(
            "user",
            f"{self.brief()}Findings so far:\n{findings}\n\nInvestigation turn {self.stats.turns + 1} "
            f"({remaining} left). Call tools, or stop when the evidence suffices.",
        )
        return [system, user, *self._last_turn]

    def _calls_from(self, completion: Completion) -> tuple[list[ToolCallEvent], bool]:
        """The turn's tool calls and whether the model said it is done."""
        if not self.json_actions:
            return completion.calls, not completion.calls
        actions = prompts.parse_actions(completion.text)
        calls = [
            ToolCallEvent(f"action_{self.stats.turns}_{i}", a.tool, a.args or {})
            for i, a in enumerate(actions)
            if a.kind == "tool"
        ]
        finished = any(a.kind == "finish" for a in actions) or not calls
        return calls, finished

    async def _run_calls(self, calls: list[ToolCallEvent]) -> AsyncGenerator[tuple[int, ToolResult], None]:
        """Execute calls concurrently in threads, yielding (index, result) as each completes."""
        allowed = min(self.options.max_calls_per_turn, self.options.max_tool_calls - self.stats.tool_calls)
        pending: dict[asyncio.Future[ToolResult], int] = {}
        for index, call in enumerate(calls):
            if index < allowed:
                pending[
                    asyncio.ensure_future(asyncio.to_thread(self.tools.run, call.name, call.arguments))
                ] = index
            else:
                note = f"not run: at most {allowed} tool calls are allowed in this turn"
                yield (
                    index,
                    ToolResult(call.name, dict(call.arguments), f"ERROR: {note}", note, is_error=True),
                )
        self.stats.tool_calls += len(pending)
        try:
            while pending:
                done, _ = await self.guarded(
                    asyncio.wait(set(pending), return_when=asyncio.FIRST_COMPLETED), timed=False
                )
                for future in done:
                    index = pending.pop(future)
                    try:
                        result = future.result()
                    except Exception as error:
                        raise ToolFailure(
                            f"the {calls[index].name} tool failed: "
                            f"{redact(str(error)) or type(error).__name__}"
                        ) from error
                    yield index, result
        finally:
            for future in pending:
                future.cancel()

    async def investigate_turn(self) -> AsyncGenerator[dict[str, Any], None]:
        """One turn: ask for tool calls, run them, record the finding; sets `stopped_because` to stop."""
        messages = self._turn_messages()
        estimate = sum(count_tokens(m.content) for m in messages)
        if self.stats.tokens + estimate > self.options.max_tokens:
            self.stats.stopped_because = "token_budget"
            return
        completion = await self.complete(
            self.request(messages, tools=True, max_tokens=TURN_MAX_TOKENS), timed=True
        )
        calls, finished = self._calls_from(completion)
        self.stats.turns += 1
        if finished and not calls:
            self.findings.append(Finding(self.stats.turns, completion.text))
            yield self.event("investigate", "finding", summary=completion.text.strip() or "evidence suffices")
            self.stats.stopped_because = "enough_evidence"
            return
        calls = [
            ToolCallEvent(call.id or f"call_{self.stats.turns}_{i}", call.name, call.arguments)
            for i, call in enumerate(calls)
        ]
        for call in calls:
            yield self.event("investigate", "tool_call", tool=call.name, args=call.arguments)
        results: list[ToolResult | None] = [None] * len(calls)
        async for index, result in self._run_calls(calls):
            results[index] = result
            yield self.event(
                "investigate",
                "tool_result",
                tool=result.tool,
                args=result.args,
                summary=result.summary,
                files=result.files,
            )
        finding = Finding(self.stats.turns, completion.text, [r for r in results if r is not None])
        for result in finding.results:
            for item in result.evidence:
                if self.evidence.add(item):
                    finding.new_refs.append(item.ref)
        self.findings.append(finding)
        self._last_turn = self._transcript(completion, calls, finding.results)
        new_files = list(dict.fromkeys(ref.rsplit(":", 1)[0] for ref in finding.new_refs))
        summary = completion.text.strip() or f"{len(finding.new_refs)} new spans"
        yield self.event("investigate", "finding", summary=summary, files=new_files)
        if finished:
            self.stats.stopped_because = "enough_evidence"
        elif not finding.new_refs:
            self.stats.stopped_because = "no_new_evidence"

    def _transcript(
        self, completion: Completion, calls: list[ToolCallEvent], results: list[ToolResult]
    ) -> list[Message]:
        """The turn as the provider expects to see it replayed: the calls, then their results."""
        if self.json_actions:
            body = "\n\n".join(f"### {r.tool} {r.args}\n{r.output}" for r in results)
            return [Message("assistant", completion.text), Message("user", f"Tool results:\n\n{body}")]
        assistant = Message(
            "assistant",
            completion.text,
            tool_calls=tuple(ToolCall(call.id, call.name, dict(call.arguments)) for call in calls),
        )
        tool_messages = [
            Message("tool", result.output, tool_call_id=call.id, name=call.name)
            for call, result in zip(calls, results, strict=True)
        ]
        return [assistant, *tool_messages]

    async def investigate(self) -> AsyncGenerator[dict[str, Any], None]:
        """Turns until the model is done, nothing new turns up, or a budget is reached."""
        while not self.stats.stopped_because:
            reason = self.budget_reason()
            if reason:
                self.stats.stopped_because = reason
                break
            try:
                async for frame in self.investigate_turn():
                    yield frame
            except TimeBudgetExceeded:
                self.stats.stopped_because = "time_budget"
        self.adopt_lead()
        yield self.event(
            "investigate", "note", summary=f"investigation stopped: {self.stats.stopped_because}"
        )

    def adopt_lead(self) -> None:
        """Make the lead's spans citable evidence, first. Not before: a turn that checks the lead's
        steps (as the prompt advises) must not count as finding nothing new."""
        evidence = EvidenceSet()
        for item in [*self.lead_evidence, *self.evidence.merged()]:
            evidence.add(item)
        self.evidence = evidence

    # ---- conclusion ---------------------------------------------------------------------------

    def evidence_excerpts(self, budget: int) -> str:
        """The text of the evidence spans (single lines with a little context), within `budget` tokens."""
        blocks: list[str] = []
        used = 0
        for item in self.evidence.merged():
            lines = self.tools.lines(item.path)
            start, end = item.start_line, item.end_line
            if start == end:
                start, end = max(1, start - SINGLE_LINE_CONTEXT), min(len(lines), end + SINGLE_LINE_CONTEXT)
            block = f"## {item.path}:{start}-{end}\n{numbered(lines[start - 1 : end], start)}"
            cost = count_tokens(block)
            if used + cost > budget:
                blocks.append(f"(further spans not shown: {item.ref} and later)")
                break
            blocks.append(block)
            used += cost
        return "\n\n".join(blocks) or "(no evidence collected)"

    def conclusion_messages(self, system: str, instruction: str = "") -> list[Message]:
        findings_budget = self.options.context_tokens // 4
        findings = render_findings(self.findings, findings_budget)
        fixed = (
            count_tokens(system)
            + count_tokens(findings)
            + count_tokens(self.brief())
            + count_tokens(instruction)
            + 100
        )
        excerpts = self.evidence_excerpts(max(self.options.context_tokens - fixed, 500))
        user = f"{self.brief()}Findings:\n{findings}\n\nEvidence:\n{excerpts}\n\n{instruction}".rstrip()
        return [Message("system", system), Message("user", user)]

    def findings_so_far(self, reason: str) -> str:
        """The marked fallback answer when the run failed: every finding and span, nothing lost."""
        lines = [f"**Research ended early ({reason}).** Findings so far, unverified by a conclusion:", ""]
        for finding in self.findings:
            lines.append(f"- {finding.full()}".replace("\n", "\n  "))
        if not self.findings:
            lines.append("- (no findings yet)")
        refs = [item.ref for item in self.evidence.merged()]
        if refs:
            lines += ["", "Evidence examined: " + ", ".join(refs)]
        if self.plan_text:
            lines += ["", "Research plan:", self.plan_text]
        return "\n".join(lines) + "\n"

    async def conclude(self, system: str, instruction: str = "") -> AsyncGenerator[str, None]:
        messages = self.conclusion_messages(system, instruction)
        async for piece in self.stream_text(
            self.request(messages, tools=False, max_tokens=ANSWER_MAX_TOKENS)
        ):
            yield piece


def resolve_provider(
    services: ResearchServices, provider: str | None, model: str | None, options: ResearchOptions
) -> tuple[Any, ResearchOptions]:
    """The chat provider, and `options` with the prompt budget fitted to the model's context window."""
    chat, _ = provider_or_offline(provider, services.settings, model)
    info = provider_info(chat.name)
    window = resolve_model(info, services.settings, model).context_window
    fitted = min(options.context_tokens, max(window - ANSWER_MAX_TOKENS - 500, 2_000))
    return chat, dataclasses.replace(options, context_tokens=fitted)


async def prepare(
    services: ResearchServices,
    repo_id: str,
    provider: str | None,
    model: str | None,
    options: ResearchOptions,
) -> tuple[Any, RepoTools, ResearchOptions]:
    """Provider, tools and fitted options for a run; raises a `RepoLensError` the caller reports."""
    chat, options = resolve_provider(services, provider, model, options)
    tools = await asyncio.to_thread(open_tools, services, repo_id, options)
    return chat, tools, options


async def research_events(
    services: ResearchServices,
    *,
    repo_id: str,
    question: str,
    history: Sequence[Mapping[str, str]],
    provider: str | None,
    model: str | None,
    language: str,
    options: ResearchOptions,
    cancel: asyncio.Event | None,
) -> AsyncGenerator[dict[str, Any], None]:
    """The events-mode run; see `rag.research.run_research`."""
    failed = Stats(options.max_iterations, stopped_because="error")
    try:
        chat, tools, options = await prepare(services, repo_id, provider, model, options)
    except RepoLensError as error:
        yield error_event(error.code, error.message)
        yield done_frame(failed)
        return
    if getattr(chat, "name", "") == "offline":
        async for frame in offline_events(
            tools, question=question, options=options, cancel=cancel, language=language
        ):
            yield frame
        return
    run = Researcher(
        tools, chat, question=question, history=history, language=language, options=options, cancel=cancel
    )
    async for frame in run_phases(run):
        yield frame


def cited_evidence(evidence: Sequence[Evidence], answer: str) -> list[Evidence]:
    """The evidence spans that a `path:start-end` citation of `answer` overlaps, in evidence order."""
    citations = extract_citations(answer)
    return [
        item
        for item in evidence
        if any(
            c.path == item.path and c.start_line <= item.end_line and c.end_line >= item.start_line
            for c in citations
        )
    ]


async def run_phases(run: Researcher) -> AsyncGenerator[dict[str, Any], None]:
    """Plan, investigate, conclude; on failure the findings so far, then `error`; always `done`."""
    answer = ""
    failure: dict[str, Any] | None = None
    try:
        try:
            async for frame in run.plan():
                yield frame
            async for frame in run.investigate():
                yield frame
        except TimeBudgetExceeded:
            run.stats.stopped_because = "time_budget"
        yield run.event("conclude", "note", summary="writing the conclusion from the findings")
        yield sources_frame(run.tools, run.evidence.merged())
        async for piece in run.conclude(prompts.conclude_system(run.language)):
            answer += piece
            yield token_event(piece)
        cited = cited_evidence(run.evidence.merged(), answer)
        if cited:
            # The final sources are the evidence the answer cites, not every span a tool showed.
            yield sources_frame(run.tools, cited)
    except ResearchCancelled:
        run.stats.stopped_because = "cancelled"
        yield error_event(ErrorCode.CANCELLED, "research cancelled")
        yield done_frame(run.stats)
        return
    except (ProviderError, RepoLensError) as error:
        run.stats.stopped_because = "error"
        code = ErrorCode.PROVIDER_ERROR if isinstance(error, ProviderError) else error.code
        failure = error_event(code, error.message)
        salvage = ("\n\n---\n" if answer else "") + run.findings_so_far(error.message)
        if not answer:
            yield sources_frame(run.tools, run.evidence.merged())
        answer += salvage
        yield token_event(salvage)
    yield citations_frame(run.tools, run.evidence.merged(), answer)
    if failure:
        yield failure
    yield done_frame(run.stats)
