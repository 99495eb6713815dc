"""The embedders: the offline MiniLM (ONNX vs a numpy reference), the vector cache, remote APIs, setup.

Remote embedders are tested against a small HTTP server on loopback that speaks
the real OpenAI / Azure / Ollama and Google wire formats.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from api.cli import app
from rag.embedders import CachedEmbedder, Embedder, EmbedderError, get_embedder
from rag.embedders.cache import cache_file
from rag.embedders.local import (
    FLOAT_MODEL,
    INT8_MODEL,
    LEGACY_INT8_MODEL,
    UNFUSED,
    OnnxForward,
    ensure_model,
    model_filename,
    session_options,
)
from rag.embedders.minilm import MiniLMEmbedder, load_tokenizer
from rag.embedders.reference import NumpyForward
from rag.settings import Settings
from rag.types import Chunk

ROOT = Path(__file__).resolve().parent.parent
SORT_CODE = "def sort_items(items):\n    return sorted(items, key=lambda item: item.name)"
TEXTS = [
    SORT_CODE,
    "class HTTPClient:\n    def send(self, request):\n        return self.transport.handle(request)",
    "The weather in Lisbon is sunny today.",
    "x",
    "import os\n" * 60,
]


def settings(**env: str) -> Settings:
    """Settings from an explicit environment: this test's data dir plus `env`, no `.env` file."""
    environ = {"REPOLENS_HOME": os.environ["REPOLENS_HOME"], **env}
    return Settings.from_env(environ=environ, dotenv=Path("/nonexistent/.env"))


@pytest.fixture(scope="module")
def float_embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder(OnnxForward(ensure_model(Settings.from_env(), FLOAT_MODEL)), FLOAT_MODEL)


@pytest.fixture(scope="module")
def reference_embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder(NumpyForward(), "reference")


def code_chunks(count: int) -> list[str]:
    """Real code from this repository, cut into windows of ~250 WordPiece tokens."""
    tokenizer = load_tokenizer(None)
    chunks: list[str] = []
    for path in sorted((ROOT / "rag").rglob("*.py")):
        text = path.read_text()
        offsets = tokenizer.encode(text, add_special_tokens=False).offsets
        for start in range(0, len(offsets) - 250, 250):
            chunks.append(text[offsets[start][0] : offsets[start + 249][1]])
            if len(chunks) == count:
                return chunks
    return chunks


# ---------------------------------------------------------------- local MiniLM


def test_onnx_graph_matches_numpy_reference(float_embedder: MiniLMEmbedder, reference_embedder) -> None:
    texts = [*TEXTS, *code_chunks(1)]  # mixed lengths: padding inside a batch must not leak into vectors
    onnx_vectors = float_embedder.embed_documents(texts)
    reference = reference_embedder.embed_documents(texts)
    assert np.abs(onnx_vectors - reference).max() < 1e-4


@pytest.mark.parametrize("model", [INT8_MODEL, LEGACY_INT8_MODEL])
def test_int8_models_stay_close_to_the_reference_on_real_code(reference_embedder, model: str) -> None:
    # Without the float outlier channels (onnx_export.OUTLIER_CHANNELS) the default model's mean falls
    # to ~0.992 and its minimum to ~0.98 on real code.
    chunks = code_chunks(12)
    int8 = get_embedder(settings(REPOLENS_EMBEDDING_MODEL=model), cache_vectors=False)
    assert int8.name == model
    cosine = (int8.embed_documents(chunks) * reference_embedder.embed_documents(chunks)).sum(axis=1)
    assert cosine.min() >= 0.99 and cosine.mean() >= 0.994


def test_default_int8_model_runs_on_any_x86_cpu() -> None:
    """7-bit weights: u8 x s8 pairs summed in 16 bits cannot saturate on AVX2 CPUs without VNNI, so a
    model file built on one CPU gives the same vectors on another."""
    model = onnx.load(str(ensure_model(Settings.from_env(), INT8_MODEL)))
    quantised = [tensor for tensor in model.graph.initializer if tensor.data_type == onnx.TensorProto.INT8]
    assert len(quantised) >= 24  # 6 layers x (qkv, attention output, FFN up, FFN down)
    for tensor in quantised:
        assert np.abs(numpy_helper.to_array(tensor).astype(np.int16)).max() <= 64, tensor.name


def test_layer_norms_stay_unfused(tmp_path: Path) -> None:
    """onnxruntime's CPU SkipLayerNormalization is ~5x slower than Add + LayerNormalization."""
    import onnxruntime as ort

    options = session_options()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    path = ensure_model(Settings.from_env(), INT8_MODEL)
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=UNFUSED)
    ops = {node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}
    assert "LayerNormalization" in ops and "SkipLayerNormalization" not in ops


def test_embedder_contract_and_order_is_preserved() -> None:
    embedder = get_embedder(settings(), cache_vectors=False)
    assert isinstance(embedder, Embedder)
    assert (embedder.dimension, embedder.max_tokens) == (384, 256)
    assert embedder.count_tokens("hello world") == 4  # [CLS] hello world [SEP]
    assert embedder.count_tokens("word " * 1000) == 1002  # counting never truncates
    seen: list[tuple[int, int]] = []
    vectors = embedder.embed_documents(TEXTS, progress=lambda done, total: seen.append((done, total)))
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    for text, vector in zip(TEXTS, vectors, strict=True):
        # rows come back in input order despite length sorting and parallel batches, and a text's
        # vector does not depend on what it was batched with
        assert np.allclose(vector, embedder.embed_query(text), atol=1e-6)
    assert seen[-1] == (len(TEXTS), len(TEXTS)) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert embedder.embed_documents([]).shape == (0, 384)


def test_window_is_256_tokens_not_the_packaged_128(float_embedder: MiniLMEmbedder) -> None:
    words = [f"token{index % 50}" for index in range(600)]
    text = " ".join(words)
    encoding = load_tokenizer(None).encode(text, add_special_tokens=False)
    head = text[: encoding.offsets[253][1]]  # 254 content tokens + [CLS] + [SEP] = 256
    short = text[: encoding.offsets[125][1]]
    full, window, first_128 = float_embedder.embed_documents([text, head, short])
    assert float(full @ window) > 0.99999
    assert float(full @ first_128) < 0.9999


def test_meaning_ranks_code_above_unrelated_text() -> None:
    embedder = get_embedder(settings(), cache_vectors=False)
    documents = embedder.embed_documents(TEXTS[:3])
    scores = documents @ embedder.embed_query("how are the items sorted by name?")
    assert int(np.argmax(scores)) == 0


def test_concurrent_queries_give_the_same_vectors() -> None:
    embedder = get_embedder(settings(), cache_vectors=False)
    expected = [embedder.embed_query(text) for text in TEXTS]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(embedder.embed_query, TEXTS * 4))
    for index, vector in enumerate(results):
        assert np.allclose(vector, expected[index % len(TEXTS)], atol=1e-6)


def test_float_model_is_selectable_and_named_apart() -> None:
    embedder = get_embedder(settings(REPOLENS_EMBEDDING_MODEL="minilm-l6-v2"))
    assert embedder.name == FLOAT_MODEL != INT8_MODEL


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REPOLENS_EMBEDDER": "word2vec"}, "unknown embedder 'word2vec'"),
        ({"REPOLENS_EMBEDDING_MODEL": "bert-huge"}, "unknown local embedding model 'bert-huge'"),
        ({"REPOLENS_EMBEDDER": "openai"}, "needs OPENAI_API_KEY"),
        ({"REPOLENS_EMBEDDER": "azure", "AZURE_OPENAI_API_KEY": "k" * 8}, "needs AZURE_OPENAI_ENDPOINT"),
        ({"REPOLENS_EMBEDDER": "google"}, "needs GOOGLE_API_KEY"),
        ({"REPOLENS_EMBEDDER_THREADS": "many"}, "REPOLENS_EMBEDDER_THREADS"),
        ({"REPOLENS_EMBEDDER": "ollama", "REPOLENS_EMBEDDING_TIMEOUT": "soon"}, "REPOLENS_EMBEDDING_TIMEOUT"),
    ],
)
def test_bad_configuration_is_a_clear_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(EmbedderError, match=message) as raised:
        get_embedder(settings(**env))
    assert raised.value.code == "embedder_error"


def test_unwritable_model_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(EmbedderError, match="REPOLENS_MODEL_DIR"):
        get_embedder(settings(REPOLENS_MODEL_DIR=str(blocker / "models")))


@pytest.mark.slow
def test_missing_or_damaged_model_is_built_on_first_use(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / model_filename(INT8_MODEL)).write_bytes(b"truncated garbage")
    stale = models / "minilm-l6-v2.v0.onnx"
    stale.write_bytes(b"an older graph version")
    (models / ".minilm-l6-v2.v2.onnx.abc.tmp").write_bytes(b"left by a killed build")
    embedder = get_embedder(settings(REPOLENS_MODEL_DIR=str(models)), cache_vectors=False)
    assert embedder.name == INT8_MODEL
    assert embedder.embed_query(SORT_CODE).shape == (384,)
    assert (models / model_filename(FLOAT_MODEL)).stat().st_size > 80_000_000
    assert not list(models.glob("*.tmp")) and not stale.exists()
    installed = get_embedder(settings(), cache_vectors=False)
    assert np.allclose(embedder.embed_query(SORT_CODE), installed.embed_query(SORT_CODE), atol=1e-6)


def test_setup_command_seeds_tiktoken_and_reports_models(tmp_path: Path) -> None:
    cache = tmp_path / "tiktoken"
    result = CliRunner().invoke(app, ["setup", "--json"], env={"TIKTOKEN_CACHE_DIR": str(cache)})
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["embedder"] == INT8_MODEL and summary["dimension"] == 384
    assert set(summary["models"]) == {FLOAT_MODEL, INT8_MODEL, LEGACY_INT8_MODEL}
    assert all(Path(path).is_file() for path in summary["models"].values())
    assert len(list(cache.iterdir())) == 2  # cl100k_base and o200k_base


# ---------------------------------------------------------------- vector cache


@dataclass
class CountingEmbedder:
    """The real local embedder, counting which texts actually reach it."""

    inner: Embedder
    calls: list[list[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.name, self.dimension, self.max_tokens = (
            self.inner.name,
            self.inner.dimension,
            self.inner.max_tokens,
        )

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def embed_documents(self, texts: Sequence[str], progress: Callable[[int, int], None] | None = None):
        self.calls.append(list(texts))
        return self.inner.embed_documents(texts, progress)

    def embed_query(self, text: str) -> np.ndarray:
        return self.inner.embed_query(text)


def test_cache_embeds_each_text_once_and_persists(repolens_home: Path) -> None:
    counting = CountingEmbedder(get_embedder(settings(), cache_vectors=False))
    cache_dir = repolens_home / "cache" / "embeddings"
    first = CachedEmbedder(counting, cache_dir)
    vectors = first.embed_documents([TEXTS[0], TEXTS[1], TEXTS[0]])
    assert counting.calls == [[TEXTS[0], TEXTS[1]]]  # duplicates embedded once
    assert np.array_equal(vectors[0], vectors[2])
    first.close()

    reopened = CachedEmbedder(counting, cache_dir)
    progress: list[tuple[int, int]] = []
    again = reopened.embed_documents(
        [TEXTS[1], TEXTS[2], TEXTS[0]], progress=lambda d, t: progress.append((d, t))
    )
    assert counting.calls[1:] == [[TEXTS[2]]]  # only the new text
    assert np.array_equal(again[0], vectors[1]) and np.array_equal(again[2], vectors[0])
    assert progress[0] == (2, 3) and progress[-1] == (3, 3)
    assert reopened.path == cache_file(cache_dir, INT8_MODEL) == cache_dir / f"{INT8_MODEL}.sqlite"


def test_a_chunks_content_hash_looks_up_the_vector_cached_for_its_text(repolens_home: Path) -> None:
    """An ingest asks the cache by the hashes its chunk workers computed, never hashing a text again."""
    counting = CountingEmbedder(get_embedder(settings(), cache_vectors=False))
    cache = CachedEmbedder(counting, repolens_home / "cache")
    chunk = Chunk(
        "src/naïve.py", "python", 3, 4, "Client.send", "def send(self):\n    return 'ü'", "class Client:"
    )
    (vector,) = cache.embed_documents([chunk.embed_text])
    found = cache.lookup([chunk.content_hash, hashlib.sha256(b"never embedded").hexdigest()])
    assert found[0] is not None and np.array_equal(found[0], vector) and found[1] is None
    assert cache.lookup([]) == []


def test_get_embedder_caches_under_the_data_dir(repolens_home: Path) -> None:
    embedder = get_embedder(settings())
    assert isinstance(embedder, CachedEmbedder)
    embedder.embed_documents(TEXTS)
    with sqlite3.connect(repolens_home / "cache" / "embeddings" / f"{INT8_MODEL}.sqlite") as db:
        assert db.execute("SELECT count(*) FROM vectors").fetchone()[0] == len(TEXTS)


def test_cache_ignores_rows_of_the_wrong_size(repolens_home: Path) -> None:
    counting = CountingEmbedder(get_embedder(settings(), cache_vectors=False))
    cache = CachedEmbedder(counting, repolens_home / "cache")
    with sqlite3.connect(cache.path) as db:  # a row left by a bug or another dimension
        db.execute(
            "INSERT INTO vectors VALUES (?, ?)", (hashlib.sha256(TEXTS[0].encode()).digest(), b"\0" * 12)
        )
    vector = cache.embed_documents([TEXTS[0]])[0]
    assert counting.calls == [[TEXTS[0]]] and abs(float(np.linalg.norm(vector)) - 1) < 1e-5


def test_unreadable_cache_file_is_replaced(repolens_home: Path) -> None:
    cache_dir = repolens_home / "cache" / "embeddings"
    cache_dir.mkdir(parents=True)
    cache_file(cache_dir, INT8_MODEL).write_bytes(b"this is not a database" * 100)
    embedder = get_embedder(settings())
    assert embedder.embed_documents(TEXTS[:2]).shape == (2, 384)
    with sqlite3.connect(cache_file(cache_dir, INT8_MODEL)) as db:
        assert db.execute("SELECT count(*) FROM vectors").fetchone()[0] == 2


@pytest.mark.slow
def test_cache_is_safe_for_concurrent_processes(repolens_home: Path) -> None:
    script = (
        "import sys; from rag.embedders import get_embedder;"
        "texts = [f'def f{i}(): return {i}' for i in range(int(sys.argv[1]), int(sys.argv[1]) + 40)];"
        "[get_embedder().embed_documents(texts[j:j + 5]) for j in range(0, 40, 5)]"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script, str(start)], cwd=ROOT) for start in (0, 20, 30)
    ]
    assert [process.wait(timeout=120) for process in processes] == [0, 0, 0]
    with sqlite3.connect(repolens_home / "cache" / "embeddings" / f"{INT8_MODEL}.sqlite") as db:
        assert db.execute("SELECT count(*) FROM vectors").fetchone()[0] == 70


# ---------------------------------------------------------------- remote embedders over loopback

API_KEY = "sk-test-embeddings-0123456789"


FAKE_DIMENSIONS = {"text-embedding-3-small": 1536, "nomic-embed-text": 768}


def fake_vector(text: str, model: str = "") -> list[float]:
    """Deterministic per text; as long as the real model's vectors when the model is a known one."""
    dimension = FAKE_DIMENSIONS.get(model, 8)
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
    return np.random.default_rng(seed).normal(size=dimension).round(6).tolist()


@dataclass
class FakeEmbeddingsAPI:
    """Records requests; `script` holds (status, headers, body) answers to give before the normal ones."""

    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    script: list[tuple[int, dict[str, str], Any]] = field(default_factory=list)
    delay: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, dict[str, str], Any]:
        self.requests.append({"path": path, "headers": headers, "body": body})
        if self.script:
            return self.script.pop(0)
        parsed = urlparse(path)
        if parsed.path.endswith(":batchEmbedContents"):
            if headers.get("x-goog-api-key") != API_KEY:
                return (
                    400,
                    {},
                    {
                        "error": {
                            "code": 400,
                            "message": f"API key not valid: {headers.get('x-goog-api-key')}",
                        }
                    },
                )
            return (
                200,
                {},
                {
                    "embeddings": [
                        {"values": fake_vector(r["content"]["parts"][0]["text"])} for r in body["requests"]
                    ]
                },
            )
        if parsed.path.endswith("/embeddings"):
            key = headers.get("authorization", "").removeprefix("Bearer ") or headers.get("api-key", "")
            if "/openai/deployments/" in parsed.path and key != API_KEY:
                return (
                    401,
                    {},
                    {"error": {"code": "401", "message": "Access denied due to invalid subscription key."}},
                )
            if parsed.path.startswith("/v1/") and key not in (API_KEY, ""):
                return (
                    401,
                    {},
                    {
                        "error": {
                            "message": f"Incorrect API key provided: {key}.",
                            "type": "invalid_request_error",
                        }
                    },
                )
            data = [
                {"object": "embedding", "index": i, "embedding": fake_vector(t, body["model"])}
                for i, t in enumerate(body["input"])
            ]
            return (
                200,
                {},
                {"object": "list", "data": data[::-1], "model": body["model"], "usage": {"prompt_tokens": 1}},
            )
        return 404, {}, {"error": {"message": "no such route"}}


@pytest.fixture
def fake_api() -> Iterator[FakeEmbeddingsAPI]:
    api = FakeEmbeddingsAPI()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("content-length", 0))
            body = json.loads(self.rfile.read(length) or b"null")
            status, headers, payload = api.answer(
                self.path, {k.lower(): v for k, v in self.headers.items()}, body
            )
            if api.delay:  # the client has given up by now: answer nothing
                threading.Event().wait(api.delay)
                return
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    api.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield api
    server.shutdown()
    server.server_close()


def openai_settings(api: FakeEmbeddingsAPI, **env: str) -> Settings:
    base = {"REPOLENS_EMBEDDER": "openai", "OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": f"{api.url}/v1"}
    return settings(**{**base, **env})


def test_openai_embedder_speaks_the_wire_format_in_batches(fake_api: FakeEmbeddingsAPI) -> None:
    embedder = get_embedder(
        openai_settings(fake_api, REPOLENS_EMBEDDING_MODEL="my-embedder"), cache_vectors=False
    )
    assert embedder.name == "openai:my-embedder"
    texts = [f"chunk {index}" for index in range(70)]
    progress: list[tuple[int, int]] = []
    vectors = embedder.embed_documents(texts, progress=lambda d, t: progress.append((d, t)))
    assert embedder.dimension == 8 and vectors.shape == (70, 8)
    expected = np.array([fake_vector(text) for text in texts], dtype=np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(vectors, expected, atol=1e-5)  # answers arrive out of order; `index` puts them back
    assert [len(r["body"]["input"]) for r in fake_api.requests] == [64, 6]
    assert progress == [(64, 70), (70, 70)]
    first = fake_api.requests[0]
    assert first["path"] == "/v1/embeddings"
    assert first["headers"]["authorization"] == f"Bearer {API_KEY}"
    assert first["body"]["model"] == "my-embedder" and first["body"]["encoding_format"] == "float"
    assert embedder.max_tokens == 512 and embedder.count_tokens("hello world") == 2


def test_wrong_key_is_a_clear_error_without_the_key(fake_api: FakeEmbeddingsAPI) -> None:
    wrong = "sk-wrong-key-abcdefghijkl"
    embedder = get_embedder(openai_settings(fake_api, OPENAI_API_KEY=wrong), cache_vectors=False)
    with pytest.raises(EmbedderError) as raised:
        embedder.embed_documents(["hello"])
    message = str(raised.value)
    assert "authentication failed" in message and "OPENAI_API_KEY" in message
    assert wrong not in message and raised.value.code == "embedder_error"


def test_rate_limit_is_retried_then_persistent_errors_fail(fake_api: FakeEmbeddingsAPI) -> None:
    embedder = get_embedder(openai_settings(fake_api), cache_vectors=False)
    fake_api.script = [(429, {"retry-after": "0"}, {"error": {"message": "slow down"}})]
    assert embedder.embed_query("hello").shape == (1536,)
    assert len(fake_api.requests) == 2
    fake_api.script = [(503, {"retry-after": "0"}, {"error": {"message": "overloaded"}})] * 3
    with pytest.raises(EmbedderError, match="HTTP 503: overloaded"):
        embedder.embed_query("hello")
    assert len(fake_api.requests) == 5


def test_malformed_answer_and_unreachable_server_are_clear_errors(fake_api: FakeEmbeddingsAPI) -> None:
    embedder = get_embedder(openai_settings(fake_api), cache_vectors=False)
    fake_api.script = [(200, {}, {"data": [{"index": 0}]})]
    with pytest.raises(EmbedderError, match="unexpected response shape"):
        embedder.embed_query("hello")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    unreachable = get_embedder(
        settings(
            REPOLENS_EMBEDDER="openai",
            OPENAI_API_KEY=API_KEY,
            OPENAI_BASE_URL=f"http://127.0.0.1:{closed_port}/v1",
        ),
        cache_vectors=False,
    )
    with pytest.raises(EmbedderError, match=f"cannot reach http://127.0.0.1:{closed_port}"):
        unreachable.embed_query("hello")


def test_slow_server_times_out(fake_api: FakeEmbeddingsAPI) -> None:
    fake_api.delay = 1.0
    embedder = get_embedder(openai_settings(fake_api, REPOLENS_EMBEDDING_TIMEOUT="0.2"), cache_vectors=False)
    with pytest.raises(EmbedderError, match="no answer within 0.2s"):
        embedder.embed_query("hello")


def test_azure_uses_deployment_path_and_api_key_header(fake_api: FakeEmbeddingsAPI) -> None:
    env = {
        "REPOLENS_EMBEDDER": "azure",
        "AZURE_OPENAI_API_KEY": API_KEY,
        "AZURE_OPENAI_ENDPOINT": fake_api.url,
        "AZURE_OPENAI_VERSION": "2024-02-01",
        "REPOLENS_EMBEDDING_MODEL": "embed-deployment",
    }
    embedder = get_embedder(settings(**env), cache_vectors=False)
    assert embedder.name == "azure:embed-deployment"
    assert embedder.embed_documents(["a", "b"]).shape == (2, 8)
    request = fake_api.requests[0]
    parsed = urlparse(request["path"])
    assert parsed.path == "/openai/deployments/embed-deployment/embeddings"
    assert parse_qs(parsed.query) == {"api-version": ["2024-02-01"]}
    assert request["headers"]["api-key"] == API_KEY and "authorization" not in request["headers"]


def test_ollama_uses_its_openai_compatible_api_without_a_key(fake_api: FakeEmbeddingsAPI) -> None:
    embedder = get_embedder(
        settings(REPOLENS_EMBEDDER="ollama", OLLAMA_HOST=f"127.0.0.1:{fake_api.port}"), cache_vectors=False
    )
    assert embedder.name == "ollama:nomic-embed-text" and embedder.dimension == 768
    assert embedder.embed_query("hello").shape == (768,)
    assert fake_api.requests[0]["path"] == "/v1/embeddings"
    assert "authorization" not in fake_api.requests[0]["headers"]


def test_google_batch_embed_contents(fake_api: FakeEmbeddingsAPI) -> None:
    env = {
        "REPOLENS_EMBEDDER": "google",
        "GOOGLE_API_KEY": API_KEY,
        "GOOGLE_API_BASE_URL": f"{fake_api.url}/v1beta",
        "REPOLENS_EMBEDDING_MODEL": "my-gemini-embedder",
    }
    embedder = get_embedder(settings(**env), cache_vectors=False)
    assert embedder.name == "google:my-gemini-embedder"
    texts = [f"text {index}" for index in range(130)]
    vectors = embedder.embed_documents(texts)
    assert vectors.shape == (130, 8)
    assert [len(r["body"]["requests"]) for r in fake_api.requests] == [100, 30]
    request = fake_api.requests[0]
    assert request["path"] == "/v1beta/models/my-gemini-embedder:batchEmbedContents"
    assert request["headers"]["x-goog-api-key"] == API_KEY
    assert request["body"]["requests"][0] == {
        "model": "models/my-gemini-embedder",
        "content": {"parts": [{"text": "text 0"}]},
        "taskType": "RETRIEVAL_DOCUMENT",
    }
    embedder.embed_query("where is the client?")
    assert fake_api.requests[-1]["body"]["requests"][0]["taskType"] == "RETRIEVAL_QUERY"


def test_google_bad_key_error_hides_the_key(fake_api: FakeEmbeddingsAPI) -> None:
    wrong = "AIzaWrongKey1234567890"
    env = {"REPOLENS_EMBEDDER": "google", "GOOGLE_API_KEY": wrong, "GOOGLE_API_BASE_URL": fake_api.url}
    with pytest.raises(EmbedderError, match="API key not valid") as raised:
        get_embedder(settings(**env), cache_vectors=False).embed_documents(["x"])
    assert wrong not in str(raised.value)


def test_remote_vectors_are_cached_by_content(fake_api: FakeEmbeddingsAPI, repolens_home: Path) -> None:
    embedder = get_embedder(openai_settings(fake_api))
    first = embedder.embed_documents(["alpha", "beta"])
    second = embedder.embed_documents(["beta", "alpha"])
    assert len(fake_api.requests) == 1 and np.array_equal(first[::-1], second)
    assert (repolens_home / "cache" / "embeddings" / "openai%3Atext-embedding-3-small.sqlite").is_file()
