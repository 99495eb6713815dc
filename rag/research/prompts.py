"""The research prompts and the plain-text JSON action format for models without native tool calling.

JSON action format (used when the provider has no native tool calling, or `tool_mode="json"`):
the model replies with one JSON object per action, anywhere in its text (a fenced block is fine)::

    {"action": "tool", "tool": "grep", "args": {"pattern": "def send", "path_glob": "*.py"}}
    {"action": "tool", "tool": "read_file", "args": {"path": "pkg/client.py", "start_line": 1}}
    {"action": "finish", "summary": "HttpClient.send builds the request at pkg/client.py:12-30"}

Several `tool` actions in one reply run concurrently; `finish` (or a reply with no action) ends
the investigation. Tool results come back in the next user message, one section per call.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rag.prompt import language_name
from rag.research.tools import tool_schemas

CITE_RULE = (
    "Cite every claim about the code as path:start-end (for example pkg/client.py:12-30), "
    "using only spans you have seen in tool results."
)

LEAD_TITLE = "Code graph chain for the question (from the trace tool; a lead: check it with callees/callers)"


def language_rule(language: str) -> str:
    return f"Write in {language_name(language)}."


def plan_system(language: str) -> str:
    return (
        "You are planning an investigation of a code repository to answer a question. "
        "Write a short research plan: 2 to 5 sub-questions, and for each what to look for "
        "(identifiers, file names, patterns to grep). Do not answer the question yet. "
        + language_rule(language)
    )


def investigate_system(language: str, *, json_actions: bool) -> str:
    text = (
        "You are investigating a code repository with tools to answer a question. In each turn, call "
        "the tools you need (several calls per turn run in parallel): search for concepts, grep for "
        "identifiers, find_symbol for definitions and callers, read_file for exact lines. Follow code "
        "across files with the code graph: definition for a function's code, callees for what it "
        "calls (and the settings it reads), callers for who calls it, references for every use, "
        "subclasses for the classes that override a method, trace for the chain that answers a "
        "question; name definitions as search results show them (Class.method). The code graph chain "
        "above is trace's answer to the question: start from it, check its steps, look for what it "
        "misses (trace a sub-question, search), and cite the chain you confirm with what it uses. Walk "
        "from the entry point the question implies down to the code that does the work. Refine your "
        "queries from what earlier results showed instead of repeating the question. Alongside the "
        "calls, state briefly what you learned so far, citing path:start-end. When the evidence is "
        "enough to answer, stop calling tools and reply with a one-paragraph summary of the findings. "
        + CITE_RULE
        + " "
        + language_rule(language)
    )
    if not json_actions:
        return text
    tools = "\n".join(json.dumps(schema) for schema in tool_schemas())
    return (
        f"{text}\n\nYou cannot call functions directly. To use a tool, write a JSON object on its own line:\n"
        '{"action": "tool", "tool": "<name>", "args": {...}}\n'
        "You may write several such lines in one reply. When you have enough evidence, write\n"
        '{"action": "finish", "summary": "<what you found, with path:start-end citations>"}\n'
        f"The tools (JSON schema of their args):\n{tools}"
    )


def conclude_system(language: str) -> str:
    return (
        "You are writing the final answer of a code investigation. Answer the question from the "
        "findings and evidence below only, in well-structured Markdown: lead with the direct answer, "
        "then explain the path through the code step by step. Say what remains uncertain. "
        + CITE_RULE
        + " "
        + language_rule(language)
    )


@dataclass(frozen=True, slots=True)
class Action:
    kind: str
    tool: str = ""
    args: dict[str, Any] | None = None
    summary: str = ""


def _json_objects(text: str) -> Iterator[dict[str, Any]]:
    decoder = json.JSONDecoder()
    index = text.find("{")
    while index >= 0:
        try:
            value, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError:
            index = text.find("{", index + 1)
            continue
        if isinstance(value, dict):
            yield value
        index = text.find("{", end)


def parse_actions(text: str) -> list[Action]:
    """The JSON actions in a model reply, in order; objects without an `action` key are ignored."""
    actions = []
    for item in _json_objects(text):
        if item.get("action") == "tool" and isinstance(item.get("tool"), str):
            args = item.get("args")
            actions.append(Action("tool", item["tool"], args if isinstance(args, dict) else {}))
        elif item.get("action") == "finish":
            actions.append(Action("finish", summary=str(item.get("summary") or "")))
    return actions
