"""Remote embedders chosen by configuration: OpenAI-compatible (OpenAI, Azure OpenAI, Ollama) and Google.

Both speak plain HTTPS through httpx: batched requests, a timeout, a short retry
on rate limits and server errors, and errors that name the provider and the
variable to check, with every key masked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from rag.embedders.base import EmbedderError, Progress, batches, empty, l2_normalize
from rag.redact import redact, register_configured_secret
from rag.settings import Settings
from rag.tokens import count_tokens

# tiktoken tokens per chunk: small enough for precise retrieval, within every model's input limit
DEFAULT_WINDOW = 512
GOOGLE_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
RETRIES = 2
DEFAULT_TIMEOUT = 60.0
_MAX_RETRY_WAIT = 10.0
_KNOWN_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
    "nomic-embed-text": 768,
    "mxbai-embed-large": 1024,
    "all-minilm": 384,
    "text-embedding-004": 768,
    "gemini-embedding-001": 3072,
}
DEFAULT_MODELS = {
    "openai": "text-embedding-3-small",
    "azure": "text-embedding-3-small",
    "ollama": "nomic-embed-text",
    "google": "text-embedding-004",
}

# (texts, is_query) -> one request's (url, headers, json body); response json -> list of vectors
BuildRequest = Callable[[Sequence[str], bool], tuple[str, dict[str, str], dict[str, Any]]]
ParseResponse = Callable[[Any], list[list[float]]]


@dataclass
class RemoteEmbedder:
    """One HTTP embeddings API; `dimension` is learnt from the first answer when the model is unknown."""

    name: str
    build_request: BuildRequest
    parse_response: ParseResponse
    key_variable: str
    secret: str = ""
    batch_size: int = 64
    max_tokens: int = DEFAULT_WINDOW
    timeout: float = DEFAULT_TIMEOUT
    _dimension: int | None = None
    _client: httpx.Client = field(init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self._client = httpx.Client(timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)))

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self.embed_query("dimension probe")
        assert self._dimension is not None
        return self._dimension

    def count_tokens(self, text: str) -> int:
        return count_tokens(text)

    def embed_documents(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        if not texts:
            return empty(self.dimension)
        parts: list[np.ndarray] = []
        done = 0
        for batch in batches(range(len(texts)), self.batch_size):
            parts.append(self._embed([texts[index] for index in batch], is_query=False))
            done += len(batch)
            if progress is not None:
                progress(done, len(texts))
        return np.concatenate(parts)

    def embed_query(self, text: str) -> np.ndarray:
        result: np.ndarray = self._embed([text], is_query=True)[0]
        return result

    def _embed(self, texts: list[str], *, is_query: bool) -> np.ndarray:
        url, headers, body = self.build_request(texts, is_query)
        payload = self._post(url, headers, body)
        try:
            vectors = np.asarray(self.parse_response(payload), dtype=np.float32)
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise self._error(f"unexpected response shape ({type(error).__name__}: {error})") from None
        if vectors.ndim != 2 or vectors.shape[0] != len(texts) or vectors.shape[1] == 0:
            raise self._error(f"expected {len(texts)} vectors, got an array of shape {vectors.shape}")
        with self._lock:
            if self._dimension is None:
                self._dimension = int(vectors.shape[1])
        if vectors.shape[1] != self._dimension:
            raise self._error(f"vectors of {vectors.shape[1]} dimensions, expected {self._dimension}")
        return l2_normalize(vectors)

    def _post(self, url: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
        for attempt in range(RETRIES + 1):
            try:
                response = self._client.post(url, headers=headers, json=body)
            except httpx.TimeoutException:
                raise self._error(f"no answer within {self.timeout:g}s from {self._host(url)}") from None
            except httpx.HTTPError as error:
                raise self._error(f"cannot reach {self._host(url)} ({type(error).__name__})") from None
            if response.status_code in (429, 500, 502, 503, 504) and attempt < RETRIES:
                time.sleep(self._retry_wait(response, attempt))
                continue
            if response.status_code >= 400:
                raise self._error(self._describe_failure(response))
            try:
                return response.json()
            except ValueError:
                raise self._error("the answer is not JSON") from None
        raise AssertionError("unreachable: the last attempt returns or raises")

    @staticmethod
    def _retry_wait(response: httpx.Response, attempt: int) -> float:
        header = response.headers.get("retry-after", "")
        try:
            return min(float(header), _MAX_RETRY_WAIT)
        except ValueError:
            result: float = min(0.5 * 2**attempt, _MAX_RETRY_WAIT)
            return result

    def _describe_failure(self, response: httpx.Response) -> str:
        detail = _error_detail(response)
        if response.status_code in (401, 403):
            return f"authentication failed (HTTP {response.status_code}): check {self.key_variable}{detail}"
        if response.status_code == 404:
            return f"model or endpoint not found (HTTP 404): check REPOLENS_EMBEDDING_MODEL{detail}"
        if response.status_code == 429:
            return f"rate limited (HTTP 429) after {RETRIES + 1} attempts{detail}"
        return f"HTTP {response.status_code}{detail}"

    @staticmethod
    def _host(url: str) -> str:
        parsed = httpx.URL(url)
        return f"{parsed.scheme}://{parsed.host}" + (f":{parsed.port}" if parsed.port else "")

    def _error(self, message: str) -> EmbedderError:
        return EmbedderError(redact(f"embedder {self.name}: {message}", [self.secret]))

    def close(self) -> None:
        self._client.close()


def _error_detail(response: httpx.Response) -> str:
    """The provider's own explanation, short; both OpenAI and Google put it in error.message."""
    try:
        error = response.json().get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        message = response.text
    message = " ".join(str(message or "").split())[:300]
    return f": {message}" if message else ""


def _openai_parse(payload: Any) -> list[list[float]]:
    items = sorted(payload["data"], key=lambda item: item["index"])
    return [item["embedding"] for item in items]


def _google_parse(payload: Any) -> list[list[float]]:
    return [item["values"] for item in payload["embeddings"]]


def _options(settings: Settings) -> dict[str, Any]:
    """The tunables shared by every remote embedder."""
    return {"max_tokens": settings.embedding_max_tokens, "timeout": settings.embedding_timeout}


def _require(settings: Settings, variable: str, provider: str) -> str:
    value = settings.value(variable)
    if not value:
        raise EmbedderError(f"REPOLENS_EMBEDDER={provider} needs {variable} to be set")
    register_configured_secret(value)
    return value


def openai_compatible(settings: Settings, provider: str) -> RemoteEmbedder:
    """OpenAI, Azure OpenAI or Ollama (through its OpenAI-compatible /v1 API)."""
    model = settings.embedding_model or DEFAULT_MODELS[provider]
    headers = {"Content-Type": "application/json"}
    key_variable, secret = "OPENAI_API_KEY", ""
    if provider == "azure":
        key_variable = "AZURE_OPENAI_API_KEY"
        secret = _require(settings, key_variable, provider)
        endpoint = _require(settings, "AZURE_OPENAI_ENDPOINT", provider).rstrip("/")
        version = settings.azure_openai_version
        url = f"{endpoint}/openai/deployments/{model}/embeddings?api-version={version}"
        headers["api-key"] = secret
    elif provider == "ollama":
        key_variable = "OLLAMA_HOST"
        host = (settings.ollama_host or "http://localhost:11434").rstrip("/")
        url = f"{host if '://' in host else 'http://' + host}/v1/embeddings"
    else:
        secret = _require(settings, key_variable, provider)
        base = (settings.openai_base_url or "https://api.openai.com/v1").rstrip("/")
        url = f"{base}/embeddings"
        headers["Authorization"] = f"Bearer {secret}"

    def build(texts: Sequence[str], is_query: bool) -> tuple[str, dict[str, str], dict[str, Any]]:
        return url, headers, {"model": model, "input": list(texts), "encoding_format": "float"}

    return RemoteEmbedder(
        name=f"{provider}:{model}",
        build_request=build,
        parse_response=_openai_parse,
        key_variable=key_variable,
        secret=secret,
        **_options(settings),
        _dimension=_KNOWN_DIMENSIONS.get(model),
    )


def google(settings: Settings) -> RemoteEmbedder:
    """Google's Generative Language API, `batchEmbedContents` (at most 100 texts a request)."""
    model = (settings.embedding_model or DEFAULT_MODELS["google"]).removeprefix("models/")
    secret = _require(settings, "GOOGLE_API_KEY", "google")
    base = (settings.google_api_base_url or GOOGLE_BASE_URL).rstrip("/")
    url = f"{base}/models/{model}:batchEmbedContents"
    headers = {"Content-Type": "application/json", "x-goog-api-key": secret}

    def build(texts: Sequence[str], is_query: bool) -> tuple[str, dict[str, str], dict[str, Any]]:
        task = "RETRIEVAL_QUERY" if is_query else "RETRIEVAL_DOCUMENT"
        requests = [
            {"model": f"models/{model}", "content": {"parts": [{"text": text}]}, "taskType": task}
            for text in texts
        ]
        return url, headers, {"requests": requests}

    return RemoteEmbedder(
        name=f"google:{model}",
        build_request=build,
        parse_response=_google_parse,
        key_variable="GOOGLE_API_KEY",
        secret=secret,
        **_options(settings),
        _dimension=_KNOWN_DIMENSIONS.get(model),
        batch_size=100,
    )
