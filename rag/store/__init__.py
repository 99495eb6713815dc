"""Per-repository indexes, versioned and swapped atomically, behind one small interface.

Two backends, picked by `open_store(settings)` (the one place that decides): the local store, FAISS
vectors plus SQLite metadata under `REPOLENS_HOME` (the zero-configuration default), and, with
`REPOLENS_DATABASE_URL`, PostgreSQL + pgvector (`rag.store.pg`) shared by API replicas and ingest
workers on many machines. The rest of RepoLens sees only this interface:

- `Store`: `list()`, `get(id)`, `open(id) -> RepoIndex`, `builder(record, base) -> IndexWriter`,
  `delete(id)`, `clone_dir(id)`, `close()`.
- `RepoIndex`: `record`, `check_embedder`, `dense_search`, `lexical_search`, `get_chunks`,
  `chunks_for_file`, `find_symbol`, `file_text`, `list_files`, `file_hashes`, roles and graph lookups.
- `IndexWriter` (`rag.store.writer`): `file_hashes`, `reusable_vectors`, `remove_file`, `add_file`,
  the dense phase (`pending_texts`, `add_vectors`), `checkpoint`, `commit`.

No pickles anywhere: FAISS's own file format, SQLite, and JSON for the record.
"""

from rag.store.backends import open_store
from rag.store.builder import IndexBuilder
from rag.store.index import RepoIndex
from rag.store.layout import IndexBusyError, repo_folder
from rag.store.schema import FileInfo, StoredChunk
from rag.store.store import Store
from rag.store.writer import IndexWriter

__all__ = [
    "FileInfo",
    "IndexBuilder",
    "IndexBusyError",
    "IndexWriter",
    "RepoIndex",
    "StoredChunk",
    "Store",
    "open_store",
    "repo_folder",
]
