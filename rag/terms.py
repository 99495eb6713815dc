"""The words of a question worth matching against code: identifiers and words, snake/camel parts split.

Shared by the offline answer (`rag.providers.offline`), offline research and the code-graph walk
(`rag.graph_walk`), so they all read a question the same way.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STOPWORDS = frozenset(
    re.findall(
        r"\w+",
        "the a an and or of to in on for is are was be how what where which who why does do did this that "
        "with from by it its as at can i you we use used using when into there their about code file files "
        "function class method work works",
    )
)


def question_terms(question: str) -> set[str]:
    """Lower-cased identifiers and words worth matching, with snake/camel parts split out."""
    terms: set[str] = set()
    for word in _WORD.findall(question):
        parts = [word, *re.split(r"_|(?<=[a-z0-9])(?=[A-Z])", word)]
        terms.update(part.lower() for part in parts if len(part) > 2)
    return terms - _STOPWORDS


__all__ = ["question_terms"]
