"""The deepwiki-style comparison's counting (bench/deepwiki_bench.py): its windows are adalflow's, and
the tokens reported for RepoLens are those of the texts its embedder was really given."""

from __future__ import annotations

from pathlib import Path

from bench.deepwiki_bench import OVERLAP_WORDS, WINDOW_WORDS, RecordingEmbedder, token_counts, word_windows
from ingest import ingest
from rag.embedders import get_embedder
from rag.settings import Settings
from rag.store import Store


def test_word_windows_are_350_words_with_100_overlapping() -> None:
    words = [f"w{n}" for n in range(800)]
    windows = word_windows(" ".join(words))
    step = WINDOW_WORDS - OVERLAP_WORDS
    assert [window.split(" ")[0] for window in windows] == [words[0], words[step], words[2 * step]]
    assert all(len(window.split(" ")) == WINDOW_WORDS for window in windows[:2])
    assert windows[-1].split(" ")[-1] == words[-1]
    assert word_windows("   ") == []


def test_token_counts_cap_each_text_at_the_window() -> None:
    short, long = "def add(a, b): return a + b", " ".join(["word"] * 400)
    total, embedded = token_counts([short, long], 256)
    assert total > embedded
    assert embedded == 256 + total - (400 + 2)


def _method(number: int) -> str:
    """A method of ~120 tokens: four of them make the class too long for one chunk."""
    steps = [f"        total += self.weights[{step}] * values[{step}]  # step {step}" for step in range(8)]
    head = [f"    def score_{number}(self, values):", f'        """Score number {number}."""']
    lines = [*head, "        total = 0"]
    return "\n".join([*lines, *steps, "        return total", ""])


def test_the_repolens_side_counts_what_its_embedder_is_given(tmp_path: Path) -> None:
    """Header and context lines included: a method's text names its class, which the stored chunk
    (and so a count made from the index) does not show."""
    root = tmp_path / "repo"
    root.mkdir()
    methods = "\n".join(_method(number) for number in range(4))
    (root / "scoring.py").write_text(f'class Scorer:\n    """Weighted scores."""\n\n{methods}')
    inner = get_embedder(Settings.from_env(), cache_vectors=False)
    recording = RecordingEmbedder(inner)
    report = ingest(str(root), store=Store(tmp_path / "home"), embedder=recording)
    assert len(recording.texts) == len(set(recording.texts)) == report.record.dense_total > 1
    assert any(text.split("\n")[1].startswith("class Scorer") for text in recording.texts)
    total, embedded = token_counts(recording.texts, inner.max_tokens)
    assert total == embedded == sum(map(inner.count_tokens, recording.texts))
    assert recording.token_counter()("def f(): pass") == inner.count_tokens("def f(): pass")
