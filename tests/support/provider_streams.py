"""What the provider tests share (`test_providers`, `test_providers_vendors`): the question and the
tool they send, and reading a provider's stream to the end."""

from __future__ import annotations

from rag.providers import ChatProvider, ChatRequest, Message, StreamEvent, TextDelta, ToolSpec

QUESTION = [Message("system", "Answer briefly."), Message("user", "What does main.py do?")]
GREP = ToolSpec("grep", "Search the code", {"type": "object", "properties": {"pattern": {"type": "string"}}})


async def collect(provider: ChatProvider, request: ChatRequest) -> list[StreamEvent]:
    """Every event of one answer, in order."""
    return [event async for event in provider.stream(request)]


def text_of(events: list[StreamEvent]) -> str:
    """The answer's text: its text deltas joined."""
    return "".join(event.text for event in events if isinstance(event, TextDelta))
