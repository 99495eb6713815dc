"""Per-repository indexes: FAISS vectors plus SQLite metadata, versioned and swapped atomically.

The rest of RepoLens sees only this small interface, so another backend (a
shared PostgreSQL + pgvector store for multi-machine deployments is planned)
can replace it without touching ingest, retrieval or the API:

- `Store(home)`: `list()`, `get(id)`, `open(id) -> RepoIndex`, `builder(record, base) -> IndexBuilder`,
  `delete(id)`, `clone_dir(id)`.
- `RepoIndex`: `record`, `check_embedder`, `dense_search`, `lexical_search`, `get_chunks`,
  `chunks_for_file`, `find_symbol`, `file_text`, `list_files`, `file_hashes`.
- `IndexBuilder`: `file_hashes`, `reusable_vectors`, `remove_file`, `add_file`, `commit`.

No pickles anywhere: FAISS's own file format, SQLite, and JSON for the record.
"""

from rag.store.backends import open_store
from rag.store.builder import IndexBuilder
from rag.store.index import RepoIndex
from rag.store.layout import IndexBusyError, repo_folder
from rag.store.schema import FileInfo, StoredChunk
from rag.store.store import Store

__all__ = [
    "FileInfo",
    "IndexBuilder",
    "IndexBusyError",
    "RepoIndex",
    "StoredChunk",
    "Store",
    "open_store",
    "repo_folder",
]
