"""The key-code excerpts of the offline answer: in a long definition, the lines retrieval found (not
the ones that repeat the definition's own name), and no two steps showing the same lines."""

from __future__ import annotations

import re

from rag.graph_walk import Chain, Link
from rag.providers.offline import explained_answer, key_excerpt
from rag.store.schema import CodeDefinition
from rag.types import SearchHit

# A 60-line handler: its prompt is built in lines 30-33; its error handling, at the end, says
# "websocket" on every line.
HANDLER = "\n".join(
    [
        "async def handle_websocket_chat(websocket):",
        *[f"    step_{n} = {n}" for n in range(2, 30)],
        "    prompt = system_prompt",
        "    prompt += context_text",
        "    prompt += query",
        "    await websocket.send_text(prompt)",
        *[f"    other_{n} = {n}" for n in range(34, 55)],
        "    except WebSocketDisconnect:",
        "        logger.info('WebSocket disconnected')",
        "    except Exception as error:",
        "        logger.error(f'Error in WebSocket handler: {error}')",
        "        await websocket.send_text(str(error))",
        "        await websocket.close()",
    ]
)
TERMS = {"websocket", "chat", "handler", "build", "prompt"}


def _hit(start: int, end: int, text: str = HANDLER, score: float = 1.0) -> SearchHit:
    lines = text.splitlines()[start - 1 : end]
    return SearchHit("api/ws.py", "python", start, end, "handle_websocket_chat", "\n".join(lines), score)


def _numbers(excerpt: list[tuple[int, str]]) -> list[int]:
    return [number for number, _ in excerpt]


def test_the_window_stays_inside_the_lines_retrieval_found() -> None:
    whole = _hit(1, 60)
    anywhere = key_excerpt(whole, TERMS)
    assert _numbers(anywhere)[1] > 50  # "websocket" on every line of the error handling wins
    focused = key_excerpt(whole, TERMS, focus=[(28, 34)])
    assert _numbers(focused) == [1, *range(28, 35)]
    # A focus shorter than the window is held whole; one at the span's edge is clipped to it.
    assert set(range(30, 33)) <= set(_numbers(key_excerpt(whole, TERMS, focus=[(30, 32)])))
    assert _numbers(key_excerpt(whole, TERMS, focus=[(58, 60)]))[-1] == 60


def test_a_window_already_on_the_page_gives_way_to_a_fresh_one() -> None:
    whole = _hit(1, 60)
    first = key_excerpt(whole, TERMS)
    again = key_excerpt(whole, TERMS, shown=frozenset(_numbers(first)[1:]))
    assert not set(_numbers(first)[1:]) & set(_numbers(again)[1:])
    assert _numbers(again)[0] == 1  # the signature stays


def test_the_answer_shows_the_retrieved_lines_of_a_long_handler() -> None:
    handler = CodeDefinition(
        1, "api/ws.py", "handle_websocket_chat", "handle_websocket_chat", "function", None, 1, 60
    )
    chain = Chain(links=[Link(handler)])
    hits = [_hit(55, 60, score=0.9), _hit(29, 33, score=0.8), _hit(1, 60, score=0.0)]
    answer = explained_answer(
        "How does the websocket chat handler build the prompt?", chain, hits, lambda path: HANDLER
    )
    shown = [int(n) for n in re.findall(r"^\s*(\d+) \|", answer, re.M)]
    # Both retrieved spans are candidates; inside the handler "websocket", "chat" and "handler" are
    # its own name, so "build" and "prompt" choose the lines.
    assert set(range(30, 34)) <= set(shown) and 57 not in shown
