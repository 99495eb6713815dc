"""Budgets for one deep-research run, validated at the edge so the loop can trust them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rag.errors import ErrorCode, RepoLensError

MIN_ITERATIONS = 1
MAX_ITERATIONS = 10


class ResearchOptionsError(RepoLensError):
    code = ErrorCode.BAD_REQUEST


@dataclass(frozen=True)
class ResearchOptions:
    """How far one research run may go; every limit is reported in the final `done` frame.

    `max_iterations` counts investigation turns (the plan and the conclusion are extra).
    `max_tokens` caps prompt + completion tokens summed over every model call of the run;
    `max_seconds` caps wall time. `max_tool_calls` caps tool calls over the whole run and
    `max_calls_per_turn` the calls honoured from one model turn (the rest are refused with a note).
    `context_tokens` bounds each prompt (further capped by the model's context window);
    `tool_output_tokens` bounds each tool result. `tool_mode` picks native tool calling or the
    plain-text JSON action format (`auto`: native where the provider has it).
    Once a budget is reached the investigation stops and the conclusion is written.
    """

    max_iterations: int = 5
    max_tool_calls: int = 40
    max_calls_per_turn: int = 8
    max_tokens: int = 200_000
    max_seconds: float = 300.0
    tool_output_tokens: int = 1_500
    context_tokens: int = 24_000
    tool_mode: Literal["auto", "native", "json"] = "auto"

    def __post_init__(self) -> None:
        if not MIN_ITERATIONS <= self.max_iterations <= MAX_ITERATIONS:
            raise ResearchOptionsError(
                f"max_iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}, "
                f"got {self.max_iterations}"
            )
        for name in (
            "max_tool_calls",
            "max_calls_per_turn",
            "max_tokens",
            "tool_output_tokens",
            "context_tokens",
        ):
            if getattr(self, name) < 1:
                raise ResearchOptionsError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_seconds <= 0:
            raise ResearchOptionsError(f"max_seconds must be positive, got {self.max_seconds}")
        if self.tool_mode not in ("auto", "native", "json"):
            raise ResearchOptionsError(f"tool_mode must be auto, native or json, got {self.tool_mode!r}")
