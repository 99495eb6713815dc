"""What the chunk pool's workers pickle comes back equal, pickled as constructor arguments."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from ingest.chunk_pool import ChunkedFile
from rag.graph_types import FileGraph, GraphDefinition, GraphImport, GraphReference
from rag.pickling import pickled_by_fields
from rag.types import Chunk


def test_chunks_and_graphs_come_back_equal() -> None:
    chunks = [
        Chunk("src/app.py", "python", 1, 4, "Client.send", "def send(self):\n    pass", "class Client:"),
        Chunk("README.md", "markdown", 1, 1, None, "# Title"),
    ]
    graph = FileGraph(
        [
            GraphDefinition("send", "Client.send", "method", 1, 4, "Client"),
            GraphDefinition("C", "C", "class", 5, 6),
        ],
        [GraphImport(1, "os", None, "os")],
        [GraphReference(2, "Client.send", "close", "call", "self"), GraphReference(3, "", "run", "call")],
    )
    sent = ChunkedFile(
        chunks,
        graph,
        0.25,
        [("src app py", "client.send client send", "def send")],
        ["ab", "cd"],
        frozenset({1}),
    )
    back = pickle.loads(pickle.dumps([sent, *chunks, graph], protocol=pickle.HIGHEST_PROTOCOL))
    assert back == [sent, *chunks, graph]
    assert Chunk.__reduce__(chunks[1]) == (Chunk, ("README.md", "markdown", 1, 1, None, "# Title", None))


def test_only_positional_fields_can_be_pickled_by_fields() -> None:
    @dataclasses.dataclass(frozen=True)
    class Keyword:
        name: str
        size: int = dataclasses.field(kw_only=True, default=0)

    with pytest.raises(TypeError, match="positional"):
        pickled_by_fields(Keyword)
