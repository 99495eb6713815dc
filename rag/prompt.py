"""The prompt for repository Q&A, fitted to the model's context window.

The model gets the retrieved code grouped by file, every line prefixed with its number, so it can
cite real `path:start-end` ranges. When everything does not fit, the least relevant context goes
first, then the oldest conversation turns; the question itself is never cut, and a request that
cannot fit is refused here rather than sent and rejected (or silently truncated) by the provider.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby

from rag.errors import ErrorCode, RepoLensError
from rag.providers.base import Message
from rag.tokens import count_tokens, truncate_to_tokens
from rag.types import SearchHit

LANGUAGES: dict[str, str] = {
    "en": "English",
    "ja": "Japanese (日本語)",
    "zh": "Mandarin Chinese (中文)",
    "zh-tw": "Traditional Chinese (繁體中文)",
    "es": "Spanish (Español)",
    "kr": "Korean (한국어)",
    "vi": "Vietnamese (Tiếng Việt)",
    "pt-br": "Brazilian Portuguese (Português Brasileiro)",
    "fr": "Français (French)",
    "ru": "Русский (Russian)",
}
DEFAULT_LANGUAGE = "en"
# The most retrieved passages one answer may take into its prompt (a chat request's `k`, `ask -k`).
MAX_ANSWER_K = 50

# Chat formats add a few tokens per message (role markers) and per reply (priming).
MESSAGE_OVERHEAD = 4
REPLY_OVERHEAD = 3
# Context kept while older turns are dropped: an answer with no code at all is worthless.
MIN_HITS = 1

SYSTEM_PROMPT = """You are RepoLens, an expert engineer answering questions about the code repository {repo}.

Rules:
- Answer only from the code context given in the user's message and the conversation. Do not invent \
files, functions or behaviour that the context does not show.
- If the context is not enough to answer, say so plainly and say what is missing (which file or \
symbol to look at), instead of guessing.
- Cite every claim about the code as `path:start-end` (for example `src/app.py:12-30`), using the file \
paths and the line numbers shown at the start of each context line.
- Be concise and concrete; use Markdown, with code blocks for code.
- Respond in {language}. Keep code, identifiers and file paths unchanged."""


class ContextLengthError(RepoLensError):
    """Even the question alone does not fit the model's context window."""

    code = ErrorCode.CONTEXT_LENGTH


@dataclass(frozen=True, slots=True)
class PinnedFile:
    """A file the user asked to focus on (`filePath`), included whole when it fits."""

    path: str
    text: str


@dataclass
class PromptResult:
    """The messages to send and what was left out; hit lists keep the input's relevance order."""

    messages: list[Message]
    used_hits: list[SearchHit]
    dropped_hits: list[SearchHit]
    dropped_turns: int
    prompt_tokens: int
    pinned_truncated: bool = False


def known_language(code: str) -> str:
    """`code` if answers and wikis are written in it, else a `bad_request` that names the codes: for a
    client that names one on purpose (`repolens ask`, `repolens wiki`), where an answer in English
    instead would go unexplained. A chat request's unknown code falls back to English
    (`language_name`), as deepwiki-open's does."""
    if code not in LANGUAGES:
        raise RepoLensError(
            f"unknown language {code!r}; choose one of: {', '.join(LANGUAGES)}", code=ErrorCode.BAD_REQUEST
        )
    return code


def language_name(code: str | None) -> str:
    """The language to answer in; unknown codes fall back to English."""
    return LANGUAGES.get((code or DEFAULT_LANGUAGE).strip().lower(), LANGUAGES[DEFAULT_LANGUAGE])


def numbered(text: str, first_line: int) -> str:
    return "\n".join(f"{first_line + offset}: {line}" for offset, line in enumerate(text.splitlines()))


def render_hit(hit: SearchHit) -> str:
    symbol = f" ({hit.symbol})" if hit.symbol else ""
    return f"### {hit.path}:{hit.start_line}-{hit.end_line}{symbol}\n```{hit.language}\n" + (
        numbered(hit.text, hit.start_line) + "\n```"
    )


def render_context(hits: Sequence[SearchHit]) -> str:
    """Hits grouped by file (files in order of their best hit), spans in line order within a file."""
    order = {hit.path: index for index, hit in reversed(list(enumerate(hits)))}
    ranked = sorted(hits, key=lambda hit: (order[hit.path], hit.start_line))
    sections = []
    for path, group in groupby(ranked, key=lambda hit: hit.path):
        sections.append(f"## File: {path}\n\n" + "\n\n".join(render_hit(hit) for hit in group))
    return "\n\n".join(sections)


def render_pinned(pinned: PinnedFile, text: str) -> str:
    lines = text.count("\n") + 1
    heading = f"## Pinned file: {pinned.path} (the user is asking about this file)"
    return f"{heading}\n### {pinned.path}:1-{lines}\n```\n{numbered(text, 1)}\n```"


def user_message(question: str, context: str, pinned: str) -> str:
    parts = []
    if pinned:
        parts.append(pinned)
    parts.append(
        f"<context>\n{context}\n</context>" if context else "<context>\n(no code was retrieved)\n</context>"
    )
    parts.append(f"Question: {question}")
    return "\n\n".join(parts)


def _cost(text: str) -> int:
    return count_tokens(text) + MESSAGE_OVERHEAD


@functools.lru_cache(maxsize=2048)
def hit_tokens(rendered: str) -> int:
    """Tokens of one rendered hit (`render_hit`), remembered: the same chunks come back across the
    questions about a repository, and counting them was most of a prompt's CPU. Keyed by the rendered
    text itself (path, lines, symbol and code), so a re-indexed chunk (new code or shifted lines) is
    counted afresh and a count can never be stale."""
    return count_tokens(rendered)


def _total(messages: Sequence[Message]) -> int:
    return sum(_cost(message.content) for message in messages) + REPLY_OVERHEAD


def build_prompt(
    question: str,
    history: Sequence[Message],
    hits: Sequence[SearchHit],
    *,
    file_pin: PinnedFile | None = None,
    language: str = DEFAULT_LANGUAGE,
    model_context: int,
    reserve_output: int,
    repo: str = "the repository",
) -> PromptResult:
    """Messages that fit in `model_context - reserve_output` tokens; `hits` ordered most relevant first.

    Per-piece token counts guide the dropping; the final messages are then counted exactly and, in
    the rare case merging pieces cost more tokens than their sum, one more piece is dropped.
    """
    budget = model_context - reserve_output
    system = SYSTEM_PROMPT.format(repo=repo, language=language_name(language))
    fixed = _cost(system) + _cost(user_message(question, "", "")) + REPLY_OVERHEAD
    if fixed > budget:
        raise ContextLengthError(
            f"the question is too long: it needs {fixed} tokens with the instructions, but the model accepts "
            f"{model_context} tokens minus {reserve_output} reserved for the answer; shorten the question"
        )
    kept_hits = list(hits)
    turns = list(history)
    hit_costs = [hit_tokens(render_hit(hit)) + 8 for hit in kept_hits]
    turn_costs = [_cost(turn.content) for turn in turns]
    pinned_text = file_pin.text if file_pin else ""
    # A pinned file may take at most half the room, so one huge file cannot push out all retrieved
    # code and the whole conversation.
    pinned_room = (budget - fixed) // 2
    pinned_truncated = count_tokens(pinned_text) > pinned_room
    if pinned_truncated:
        pinned_text = truncate_to_tokens(pinned_text, pinned_room)
    pinned_cost = count_tokens(render_pinned(file_pin, pinned_text)) if file_pin else 0
    dropped: list[SearchHit] = []
    dropped_turns = 0

    def shrink_once() -> bool:
        """Drop the next piece in priority order; False when nothing is left to drop."""
        nonlocal pinned_text, pinned_cost, pinned_truncated, dropped_turns
        if len(kept_hits) > MIN_HITS:
            dropped.append(kept_hits.pop())
            hit_costs.pop()
        elif turns:
            # A turn's partner goes with it so the history stays user/assistant pairs.
            pair = 2 if len(turns) >= 2 and turns[0].role == "user" and turns[1].role == "assistant" else 1
            del turns[:pair], turn_costs[:pair]
            dropped_turns += pair
        elif kept_hits:
            dropped.append(kept_hits.pop())
            hit_costs.pop()
        elif file_pin and pinned_text:
            room = budget - fixed - sum(turn_costs) - 64
            pinned_text = truncate_to_tokens(pinned_text, max(0, min(room, count_tokens(pinned_text) - 64)))
            pinned_cost = count_tokens(render_pinned(file_pin, pinned_text)) if pinned_text else 0
            pinned_truncated = True
        else:
            return False
        return True

    while fixed + sum(hit_costs) + sum(turn_costs) + pinned_cost > budget and shrink_once():
        pass
    while True:
        pinned = render_pinned(file_pin, pinned_text) if file_pin and pinned_text else ""
        messages = [
            Message("system", system),
            *turns,
            Message("user", user_message(question, render_context(kept_hits), pinned)),
        ]
        total = _total(messages)
        if total <= budget:
            break
        if not shrink_once():
            raise ContextLengthError(f"the prompt needs {total} tokens but only {budget} are available")
    return PromptResult(
        messages=messages,
        used_hits=kept_hits,
        dropped_hits=dropped[::-1],
        dropped_turns=dropped_turns,
        prompt_tokens=total,
        pinned_truncated=pinned_truncated,
    )
