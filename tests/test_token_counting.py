"""The fast counting paths of an ingest give exactly what the slow definitions give.

The chunker counts every candidate chunk with the embedder's tokenizer; `WordTokenCounter` counts a
text from remembered per-word counts, so the chunks must come out identical. BM25 terms and the
lexical-only rule are computed with caches and regular expressions: same results as their
character-by-character definitions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models

from ingest.chunking import Chunker
from ingest.languages import language_for
from ingest.lexical_only import _BLOB_RUN, no_semantic_value
from ingest.reader import SourceFile
from rag import lexical
from rag.embedders.base import run_token_counter
from rag.embedders.minilm import MiniLMEmbedder, WordPieces, WordTokenCounter

ROOT = Path(__file__).resolve().parent.parent
# Characters where BERT's normaliser and pre-tokeniser differ from a plain split: controls it drops,
# format characters, combining marks, CJK, compatibility forms, Unicode spaces and punctuation, the
# special-token literals, and the ASCII the counter splits at.
TRICKY = (
    " \t\n\r\x0b\x0c\x00\x01\x1c\x7f\u200d\u00ad\ufeff\u0301\u037e\u1fef\u00a0\u2003\u3000\u2028"
    "é中文ｆİßﬁ\U0001f600\ufffd«»–…"
    "[]SEPMASKCLSUNKPAD_-.,;:!?#'\"/\\abcXYZ0123"
)


def _no_forward(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    raise AssertionError("counting never runs the model")


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder(_no_forward, "count-only")


def test_the_embedder_gives_the_chunker_its_word_counter(embedder: MiniLMEmbedder) -> None:
    assert isinstance(run_token_counter(embedder), WordTokenCounter)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=TRICKY, max_size=300) | st.text(max_size=200))
def test_word_counts_equal_the_tokenizer_on_any_text(embedder: MiniLMEmbedder, text: str) -> None:
    assert embedder.token_counter()(text) == embedder.count_tokens(text)


def test_word_counts_equal_the_tokenizer_with_a_warm_cache_and_long_words(embedder: MiniLMEmbedder) -> None:
    counter = embedder.token_counter()
    texts = [path.read_text() for path in sorted((ROOT / "rag").rglob("*.py"))[:15]]
    texts += ["x" * 150 + " y" + "é" * 99 + "\n" + "[SEP] [MASK]x [CLS" + "a_b" * 60]
    for text in texts:
        for start in range(0, len(text), 997):
            piece = text[start : start + 2_500]
            assert counter(piece) == embedder.count_tokens(piece)


def test_a_full_word_cache_starts_again_and_stays_exact(embedder: MiniLMEmbedder) -> None:
    counter = WordTokenCounter(embedder._counter, ["[SEP]"], max_words=5)
    for text in ["alpha beta gamma", "delta epsilon zeta eta theta", "alpha iota kappa lambda mu nu xi"]:
        assert counter(text) == embedder.count_tokens(text)


def test_a_full_line_cache_starts_again_and_stays_exact(embedder: MiniLMEmbedder) -> None:
    counter = WordTokenCounter(embedder._counter, ["[SEP]"], max_lines=3)
    texts = ["a = 1\nb = 2", "c = 3\nd = 4\ne = 5", "a = 1\nf(x)\n\ng.h", "a = 1\nb = 2"]
    for text in texts:
        assert counter(text) == embedder.count_tokens(text)


# Words of ASCII letters and digits, as code has them: identifiers with numbers, long and short,
# upper case, words past the tokenizer's 100 characters, and pieces no vocabulary entry starts.
ASCII_WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ0123456789", min_size=1, max_size=120)


@settings(max_examples=500, deadline=None)
@given(st.lists(ASCII_WORDS, min_size=1, max_size=20))
def test_word_pieces_counted_in_python_equal_the_tokenizer(
    embedder: MiniLMEmbedder, words: list[str]
) -> None:
    pieces = WordPieces.of(embedder._counter)
    assert pieces is not None
    expected = [len(e.ids) for e in embedder._counter.encode_batch_fast(words, add_special_tokens=False)]
    assert [pieces(word) for word in words] == expected


def test_word_pieces_of_this_repository_and_unknown_words_equal_the_tokenizer(
    embedder: MiniLMEmbedder,
) -> None:
    pieces = WordPieces.of(embedder._counter)
    assert pieces is not None
    words = sorted({word for path in (ROOT / "rag").rglob("*.py") for word in path.read_text().split()})
    words = [word for word in words if word.isascii() and word.isalnum()]
    words += ["x" * 100, "x" * 101, "Q" * 30, "zzzzqqqq", "a1b2c3d4e5f6"]
    expected = [len(e.ids) for e in embedder._counter.encode_batch_fast(words, add_special_tokens=False)]
    assert [pieces(word) for word in words] == expected
    assert len(words) > 500


def test_only_bert_s_uncased_tokenizer_is_counted_in_python() -> None:
    """Another tokenizer's words all go to the tokenizer itself."""
    assert WordPieces.of(Tokenizer(models.BPE())) is None


def _source(path: str, text: str) -> SourceFile:
    return SourceFile(path, language_for(path, text), text, "0" * 64, len(text.encode()))


def _repository_files() -> list[SourceFile]:
    code = sorted((ROOT / "rag").rglob("*.py"))[:25]
    paths = [*code, *sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
    files = [_source(str(path.relative_to(ROOT)), path.read_text()) for path in paths]
    # Over-long lines are cut by a binary search of exact counts: the counter's hardest case.
    blob = ", ".join(f'"key_{n}": "value {n} ü"' for n in range(900))
    files.append(_source("data/long.json", "{" + blob + "}\n" + "q" * 5_000 + "\n"))
    return files


def test_chunks_are_identical_with_the_word_counter(embedder: MiniLMEmbedder) -> None:
    files = _repository_files()
    plain = Chunker(embedder.max_tokens, embedder.count_tokens)
    fast = Chunker(embedder.max_tokens, run_token_counter(embedder))
    total = 0
    for file in files:
        expected = plain.chunk(file)
        assert fast.chunk(file) == expected, file.path
        total += len(expected)
    assert total > 300


def _reference_words(text: str) -> list[str]:
    """`lexical.words` as first written: no caches."""
    tokens = [match.group().lower() for match in lexical._DOTTED.finditer(text)]
    for match in lexical._WORD.finditer(text):
        word = match.group()
        whole = word.strip("_").lower()
        parts = lexical.split_identifier(word)
        if whole and (len(parts) != 1 or parts[0] != whole):
            tokens.append(whole)
        tokens.extend(parts)
    return [token for token in tokens if token not in lexical.STOPWORDS]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab_AB.c1 é中İ\nXMLHttp__init__ the and-", max_size=120))
def test_cached_lexical_terms_equal_their_definition(text: str) -> None:
    text = text + " " + "Long_" * 20 + text  # a word past the cached length too
    expected = _reference_words(text)
    assert lexical.words(text) == expected
    stem = lexical._stemmer().stemWord
    assert lexical.tokenize(text) == [w if "_" in w or "." in w else stem(w) for w in expected]
    assert lexical._joined(text) == " ".join(lexical.tokenize(text))  # what the index columns hold


def _reference_no_semantic_value(text: str) -> bool:
    """`no_semantic_value` character by character, as first written."""
    if not text.strip():
        return True
    runs = _BLOB_RUN.findall(text)
    if runs and sum(map(len, runs)) > len(text) / 2:
        return True
    visible = [char for char in text if not char.isspace()]
    letters = sum(char.isalpha() or not char.isascii() for char in visible)
    return len(visible) >= 200 and letters / len(visible) < 0.3


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abc XYZ 0123456789 ,.;{}[]\t\n\x1c\x0b\xa0é中\u2003=+/", min_size=150, max_size=700))
def test_the_lexical_only_rule_equals_its_definition(text: str) -> None:
    assert no_semantic_value(text) == _reference_no_semantic_value(text)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(alphabet=st.characters(max_codepoint=127), min_size=150, max_size=700),
        st.text(alphabet="abcXYZ 0123456789,.;\t\n\x1c\x0b\x0e\x7f", min_size=150, max_size=700),
    )
)
def test_the_lexical_only_rule_counts_ascii_text_as_its_definition(text: str) -> None:
    """ASCII text is counted by bytes (`bytes.translate`), the rest by patterns: the same rule."""
    assert no_semantic_value(text) == _reference_no_semantic_value(text)
