"""Pickling a slotted dataclass as its constructor's arguments.

The chunk pool's workers send every chunk, with its file's code graph, back to the ingest's process
by pickle: tens of thousands of small frozen dataclasses per large ingest. A slotted dataclass's own
`__getstate__`/`__setstate__` call `dataclasses.fields()` for every object, which made unpickling
them a CPU-second of a 2,000-file ingest's writer; `(cls, (field values...))` is what pickle does
fastest, in C. The objects that come back are equal to the ones sent (`tests/test_pickling.py`).
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any, TypeVar

T = TypeVar("T")


def pickled_by_fields(cls: type[T]) -> type[T]:
    """Class decorator (outermost, on a dataclass whose fields are all positional `__init__`
    arguments): pickle its objects as `cls(*field values)`."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]  # a dataclass, checked here at runtime
    if any(not field.init or field.kw_only for field in fields):
        raise TypeError(f"{cls.__name__}: every field must be a positional __init__ argument")
    names = [field.name for field in fields]
    values = operator.attrgetter(*names)

    def reduce(self: Any) -> tuple[type[T], tuple[Any, ...]]:
        return cls, values(self) if len(names) > 1 else (values(self),)

    cls.__reduce__ = reduce  # type: ignore[method-assign]
    return cls
