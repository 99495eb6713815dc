"""Prompt building: layout the model can cite from, languages, and fitting the context window."""

from __future__ import annotations

import pytest

from rag.prompt import LANGUAGES, ContextLengthError, PinnedFile, build_prompt, language_name
from rag.providers.base import Message
from rag.tokens import count_tokens
from rag.types import SearchHit


def hit(
    path: str, start: int, lines: int, score: float, symbol: str | None = None, word: str = "value"
) -> SearchHit:
    text = "\n".join(f"{word}_{start + n} = compute({n})  # line {start + n}" for n in range(lines))
    return SearchHit(path, "python", start, start + lines - 1, symbol, text, score)


def exact_tokens(messages: list[Message]) -> int:
    return sum(count_tokens(message.content) + 4 for message in messages) + 3


def test_context_is_grouped_by_file_with_numbered_lines_and_symbols() -> None:
    hits = [
        hit("pkg/b.py", 40, 2, 0.9, "Client.send"),
        hit("pkg/a.py", 1, 2, 0.8),
        hit("pkg/b.py", 10, 2, 0.7, "Client.__init__"),
    ]
    result = build_prompt("How is a request sent?", [], hits, model_context=8000, reserve_output=1000)
    system, user = result.messages
    assert system.role == "system" and "path:start-end" in system.content and "English" in system.content
    assert "say so" in system.content
    body = user.content
    assert body.index("## File: pkg/b.py") < body.index("## File: pkg/a.py"), "files ordered by best hit"
    assert body.index("### pkg/b.py:10-11 (Client.__init__)") < body.index("### pkg/b.py:40-41 (Client.send)")
    assert body.count("## File: pkg/b.py") == 1
    assert "40: value_40 = compute(0)  # line 40" in body
    assert body.rstrip().endswith("Question: How is a request sent?")
    assert result.used_hits == hits and result.dropped_hits == [] and result.dropped_turns == 0
    assert result.prompt_tokens == exact_tokens(result.messages)


@pytest.mark.parametrize(
    ("code", "name"), [("ja", "Japanese"), ("zh-tw", "Traditional Chinese"), ("kr", "Korean")]
)
def test_answer_language(code: str, name: str) -> None:
    result = build_prompt("q?", [], [], language=code, model_context=4000, reserve_output=500)
    assert f"Respond in {LANGUAGES[code]}" in result.messages[0].content
    assert name in language_name(code)


def test_unknown_language_falls_back_to_english() -> None:
    assert language_name("xx") == "English"
    assert language_name(None) == "English"
    assert set(LANGUAGES) == {"en", "ja", "zh", "zh-tw", "es", "kr", "vi", "pt-br", "fr", "ru"}


def test_history_is_kept_in_order_before_the_question() -> None:
    history = [Message("user", "What is A?"), Message("assistant", "A is a class.")]
    result = build_prompt("And B?", history, [], model_context=4000, reserve_output=500)
    assert [m.role for m in result.messages] == ["system", "user", "assistant", "user"]
    assert result.messages[1].content == "What is A?"
    assert result.messages[-1].content.endswith("Question: And B?")


def test_budget_drops_least_relevant_context_first_then_oldest_turns() -> None:
    hits = [hit(f"pkg/m{n}.py", 1, 30, 1.0 - n / 100) for n in range(12)]
    history = []
    for n in range(10):
        history += [
            Message("user", f"old question {n} " + "pad " * 150),
            Message("assistant", f"answer {n} " + "x " * 150),
        ]
    window, reserve = 4000, 1000
    result = build_prompt(
        "Where is compute defined?", history, hits, model_context=window, reserve_output=reserve
    )

    assert result.prompt_tokens == exact_tokens(result.messages) <= window - reserve
    assert result.used_hits == hits[: len(result.used_hits)], "the most relevant hits are the ones kept"
    assert result.dropped_hits == hits[len(result.used_hits) :]
    assert len(result.used_hits) >= 1
    assert result.dropped_turns > 0 and result.dropped_turns % 2 == 0, "turns go in user/assistant pairs"
    kept_turns = result.messages[1:-1]
    assert kept_turns == history[result.dropped_turns :], "the oldest turns are the ones dropped"
    assert result.messages[-1].content.endswith("Question: Where is compute defined?")


def test_hit_token_counts_are_remembered_by_text_and_follow_an_updated_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hit seen before is not counted again; the same chunk after a re-index (new code, shifted lines)
    is, and the prompt's budget and totals stay exact either way."""
    import rag.prompt

    counted: list[str] = []

    def counting(text: str) -> int:
        counted.append(text)
        return count_tokens(text)

    monkeypatch.setattr(rag.prompt, "count_tokens", counting)
    rag.prompt.hit_tokens.cache_clear()
    hits = [hit(f"pkg/m{n}.py", 1, 30, 1.0 - n / 100) for n in range(4)]
    window, reserve = 4000, 1000
    first = build_prompt("Where is compute defined?", [], hits, model_context=window, reserve_output=reserve)
    rendered = {rag.prompt.render_hit(h) for h in hits}
    assert rendered <= set(counted)
    counted.clear()
    again = build_prompt("Where is compute defined?", [], hits, model_context=window, reserve_output=reserve)
    assert not rendered & set(counted), "hits already counted are not counted again"
    assert again.prompt_tokens == first.prompt_tokens == exact_tokens(first.messages)

    updated = [hit("pkg/m0.py", 3, 60, 1.0, word="changed"), *hits[1:]]  # re-indexed: new code, new lines
    counted.clear()
    result = build_prompt(
        "Where is compute defined?", [], updated, model_context=window, reserve_output=reserve
    )
    assert rag.prompt.render_hit(updated[0]) in counted
    assert rag.prompt.hit_tokens(rag.prompt.render_hit(updated[0])) == count_tokens(
        rag.prompt.render_hit(updated[0])
    )
    assert result.prompt_tokens == exact_tokens(result.messages) <= window - reserve


def test_context_is_dropped_before_any_turn() -> None:
    hits = [hit(f"pkg/m{n}.py", 1, 20, 1.0 - n / 100) for n in range(6)]
    history = [Message("user", "short question"), Message("assistant", "short answer")]
    big = build_prompt("q?", history, hits, model_context=100_000, reserve_output=1000)
    window = big.prompt_tokens - 300 + 1000
    result = build_prompt("q?", history, hits, model_context=window, reserve_output=1000)
    assert result.dropped_turns == 0
    assert 1 <= len(result.used_hits) < len(hits)
    assert result.prompt_tokens <= window - 1000


def test_question_alone_too_long_is_a_clear_error() -> None:
    question = "explain " * 5000
    with pytest.raises(ContextLengthError) as caught:
        build_prompt(question, [], [hit("a.py", 1, 5, 1.0)], model_context=4000, reserve_output=1000)
    assert caught.value.code == "context_length"
    assert "too long" in caught.value.message and "4000" in caught.value.message


def test_pinned_file_is_included_with_line_numbers() -> None:
    pinned = PinnedFile("src/app.py", "import os\n\ndef main():\n    return os.getcwd()\n")
    result = build_prompt(
        "What does main do?", [], [], file_pin=pinned, model_context=8000, reserve_output=1000
    )
    body = result.messages[-1].content
    assert "## Pinned file: src/app.py" in body
    assert "### src/app.py:1-" in body and "3: def main():" in body
    assert not result.pinned_truncated


def test_oversized_pinned_file_is_truncated_to_fit() -> None:
    text = "\n".join(f"line_{n} = {n} * factor + offset_{n}" for n in range(3000))
    result = build_prompt(
        "Summarise", [], [], file_pin=PinnedFile("big.py", text), model_context=4000, reserve_output=1000
    )
    assert result.pinned_truncated
    assert result.prompt_tokens <= 3000
    assert "1: line_0 = 0" in result.messages[-1].content


def test_huge_pinned_file_leaves_room_for_retrieved_code_and_history() -> None:
    text = "\n".join(f"row_{n} = {n}" for n in range(20_000))
    history = [Message("user", "earlier question"), Message("assistant", "earlier answer")]
    hits = [hit("pkg/a.py", 1, 10, 0.9)]
    result = build_prompt(
        "q?", history, hits, file_pin=PinnedFile("big.py", text), model_context=8000, reserve_output=1000
    )
    assert result.pinned_truncated
    assert result.used_hits == hits and result.dropped_turns == 0
    assert result.prompt_tokens <= 7000
