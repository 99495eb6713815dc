"""Runtime configuration: one typed `Settings`, read once from the environment and a `.env` file.

Every variable RepoLens reads is a field here (deepwiki-open's names, so its users' `.env` files
keep working); keys and tokens are `SecretStr`, so they never show in a repr, a log or an error.
The process environment wins over `.env` (read from the current directory). A bad value fails when
the settings are loaded, with a `ConfigError` (code `bad_config`) that names the variable; bad
embedder settings raise `EmbedderError` (`embedder_error`) like every other embedder misconfiguration.

Load once at start-up (`Settings.from_env()`: the CLI commands, `create_app`) and pass the object
down; nothing else reads `os.environ` for configuration. A server holds its settings for as long as it
runs (`for_server`): a message that says to set a variable says to restart it too.

Adding a setting: add one field below with `setting("VARIABLE_NAME", default, "what it does")`
(a type with constraints, `SecretStr | None` for a secret), read it as `settings.<field>`, and
regenerate the README's settings table with `python -m rag.settings` (a test checks it).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from rag.errors import ConfigError, EmbedderError

EmbedderKind = Literal["local", "openai", "azure", "ollama", "google"]
IngestIsolation = Literal["process", "thread"]
EMBEDDER_KINDS: tuple[str, ...] = ("local", "openai", "azure", "ollama", "google")
TOKEN_VARIABLES = {"github": "GITHUB_TOKEN", "gitlab": "GITLAB_TOKEN", "bitbucket": "BITBUCKET_TOKEN"}

# An explicit environment for `Settings.from_env(environ=...)` (tests, embedding RepoLens), read by the
# env source instead of `os.environ` while one load runs.
_explicit_environ: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "repolens_settings_environ", default=None
)


def setting(variable: str, default: Any = None, description: str = "", **constraints: Any) -> Any:
    """A field read from the environment variable `variable`."""
    return Field(default, validation_alias=AliasChoices(variable), description=description, **constraints)


class _Environ(EnvSettingsSource):
    """The environment source, reading the explicit mapping of `from_env(environ=...)` when given."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        explicit = _explicit_environ.get()
        if explicit is None:
            return super()._load_env_vars()
        return {key.lower(): value for key, value in explicit.items() if value != ""}


class Settings(BaseSettings):
    """Everything configurable, with the embedded offline defaults."""

    model_config = SettingsConfigDict(
        env_file=".env", env_ignore_empty=True, extra="ignore", frozen=True, populate_by_name=True
    )

    # Data and server
    home: Path = Field(
        default_factory=lambda: Path.home() / ".repolens",
        validation_alias=AliasChoices("REPOLENS_HOME"),
        description="data directory (indexes, clones, caches)",
    )
    host: str = setting("REPOLENS_HOST", "127.0.0.1", "address `repolens serve` binds")
    port: int = setting("PORT", 8000, "port `repolens serve` listens on", ge=1, le=65535)
    max_request_bytes: int = setting(
        "REPOLENS_MAX_REQUEST_BYTES", 1_000_000, "largest chat request (WebSocket frame or HTTP body)", ge=1
    )
    allowed_origins: str = setting(
        "REPOLENS_ALLOWED_ORIGINS",
        "",
        "extra browser origins allowed to use the chat (comma-separated, or `*`)",
    )
    stream_coalesce_ms: float = setting(
        "REPOLENS_STREAM_COALESCE_MS", 20.0, "window merging token frames (ms, 0-1000; 0: no timed merging)"
    )
    api_key: SecretStr | None = setting("REPOLENS_API_KEY", None, "key clients must send to use the server")
    allow_local: bool = setting(
        "REPOLENS_ALLOW_LOCAL", False, "let the server read local folders (`1` to allow)"
    )
    local_roots: str = setting(
        "REPOLENS_LOCAL_ROOTS",
        "",
        "the only folders the server may read (`:`-separated; set, they allow local folders under them)",
    )
    allow_private_hosts: bool = setting(
        "REPOLENS_ALLOW_PRIVATE_HOSTS",
        False,
        "let the server fetch from hosts on loopback, private or link-local addresses (`1` to allow)",
    )
    allowed_hosts: str = setting(
        "REPOLENS_ALLOWED_HOSTS",
        "",
        "extra `Host` names the server answers to (comma-separated, `*.example.com`, or `*`)",
    )
    rate_limit_chat: str = setting(
        "REPOLENS_RATE_LIMIT_CHAT", "60/minute", "chat requests per client (`limits` syntax; empty: none)"
    )
    rate_limit_ingest: str = setting(
        "REPOLENS_RATE_LIMIT_INGEST", "10/minute", "ingest and update requests per client (`limits` syntax)"
    )
    max_body_bytes: int = setting(
        "REPOLENS_MAX_BODY_BYTES", 8_000_000, "largest HTTP request body of any route (bytes)", ge=1024
    )
    database_url: SecretStr | None = setting(
        "REPOLENS_DATABASE_URL",
        None,
        "PostgreSQL (with pgvector) holding the indexes, shared by replicas and workers "
        "(`postgresql://user:pass@host/db`; unset: FAISS + SQLite under `REPOLENS_HOME`)",
    )
    pg_pool_size: int = setting(
        "REPOLENS_PG_POOL_SIZE", 8, "PostgreSQL connections each process keeps for queries", ge=1, le=1000
    )
    pg_ef_search: int = setting(
        "REPOLENS_PG_EF_SEARCH",
        200,
        "HNSW candidates per dense query (`hnsw.ef_search`: higher finds more true neighbours, slower)",
        ge=10,
        le=1000,
    )
    pg_hnsw_m: int = setting(
        "REPOLENS_PG_HNSW_M", 16, "HNSW links per vector of an index built from now on (`m`)", ge=2, le=100
    )
    pg_ef_construction: int = setting(
        "REPOLENS_PG_EF_CONSTRUCTION",
        128,
        "HNSW candidates while building an index from now on (`ef_construction`, at least 2 x `m`)",
        ge=4,
        le=1000,
    )

    # LLM providers
    provider: str | None = setting("REPOLENS_PROVIDER", None, "default LLM provider id")
    model: str | None = setting("REPOLENS_MODEL", None, "default model of the default provider")
    context_window: int | None = setting(
        "REPOLENS_CONTEXT_WINDOW", None, "override the model's context window (tokens)", ge=256
    )
    llm_timeout: float = setting(
        "REPOLENS_LLM_TIMEOUT", 120.0, "seconds to wait for the model between pieces"
    )
    openai_api_key: SecretStr | None = setting("OPENAI_API_KEY", None, "OpenAI key (chat and embeddings)")
    openai_base_url: str | None = setting("OPENAI_BASE_URL", None, "OpenAI-compatible gateway URL")
    google_api_key: SecretStr | None = setting("GOOGLE_API_KEY", None, "Gemini key (chat and embeddings)")
    google_api_base_url: str | None = setting("GOOGLE_API_BASE_URL", None, "Gemini API base URL")
    openrouter_api_key: SecretStr | None = setting("OPENROUTER_API_KEY", None, "OpenRouter key")
    openrouter_base_url: str | None = setting("OPENROUTER_BASE_URL", None, "OpenRouter base URL")
    azure_openai_api_key: SecretStr | None = setting("AZURE_OPENAI_API_KEY", None, "Azure OpenAI key")
    azure_openai_endpoint: str | None = setting("AZURE_OPENAI_ENDPOINT", None, "Azure OpenAI endpoint")
    azure_openai_version: str = setting("AZURE_OPENAI_VERSION", "2024-10-21", "Azure OpenAI API version")
    dashscope_api_key: SecretStr | None = setting("DASHSCOPE_API_KEY", None, "DashScope (Qwen) key")
    dashscope_workspace_id: str | None = setting("DASHSCOPE_WORKSPACE_ID", None, "DashScope workspace")
    dashscope_base_url: str | None = setting("DASHSCOPE_BASE_URL", None, "DashScope base URL")
    ollama_host: str | None = setting("OLLAMA_HOST", None, "Ollama server (chat and embeddings)")
    openai_compatible_base_url: str | None = setting(
        "REPOLENS_OPENAI_COMPATIBLE_BASE_URL", None, "vLLM / LM Studio / llama.cpp server URL"
    )
    openai_compatible_api_key: SecretStr | None = setting(
        "REPOLENS_OPENAI_COMPATIBLE_API_KEY", None, "key of the OpenAI-compatible server"
    )
    anthropic_api_key: SecretStr | None = setting("ANTHROPIC_API_KEY", None, "Anthropic (Claude) key")
    anthropic_base_url: str | None = setting("ANTHROPIC_BASE_URL", None, "Anthropic API base URL")
    aws_access_key_id: SecretStr | None = setting("AWS_ACCESS_KEY_ID", None, "AWS key id (Bedrock)")
    aws_secret_access_key: SecretStr | None = setting(
        "AWS_SECRET_ACCESS_KEY", None, "AWS secret key (Bedrock)"
    )
    aws_session_token: SecretStr | None = setting("AWS_SESSION_TOKEN", None, "AWS session token (Bedrock)")
    aws_region: str = setting("AWS_REGION", "us-east-1", "AWS region of Bedrock")
    aws_role_arn: str | None = setting(
        "AWS_ROLE_ARN", None, "IAM role to assume (STS) before calling Bedrock"
    )
    aws_endpoint_url_bedrock_runtime: str | None = setting(
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME", None, "Bedrock runtime endpoint (a gateway or a test server)"
    )
    aws_endpoint_url_sts: str | None = setting("AWS_ENDPOINT_URL_STS", None, "STS endpoint for AWS_ROLE_ARN")
    deepseek_api_key: SecretStr | None = setting("DEEPSEEK_API_KEY", None, "DeepSeek key")
    deepseek_base_url: str | None = setting("DEEPSEEK_BASE_URL", None, "DeepSeek base URL")
    mistral_api_key: SecretStr | None = setting("MISTRAL_API_KEY", None, "Mistral AI key")
    mistral_base_url: str | None = setting("MISTRAL_BASE_URL", None, "Mistral AI base URL")
    xai_api_key: SecretStr | None = setting("XAI_API_KEY", None, "xAI (Grok) key")
    xai_base_url: str | None = setting("XAI_BASE_URL", None, "xAI base URL")
    fireworks_api_key: SecretStr | None = setting("FIREWORKS_API_KEY", None, "Fireworks AI key")
    fireworks_base_url: str | None = setting("FIREWORKS_BASE_URL", None, "Fireworks AI base URL")
    sambanova_api_key: SecretStr | None = setting("SAMBANOVA_API_KEY", None, "SambaNova key")
    sambanova_base_url: str | None = setting("SAMBANOVA_BASE_URL", None, "SambaNova base URL")
    together_api_key: SecretStr | None = setting("TOGETHER_API_KEY", None, "Together AI key")
    together_base_url: str | None = setting("TOGETHER_BASE_URL", None, "Together AI base URL")
    groq_api_key: SecretStr | None = setting("GROQ_API_KEY", None, "Groq key")
    groq_base_url: str | None = setting("GROQ_BASE_URL", None, "Groq base URL")

    # Embedders
    embedder: EmbedderKind = setting(
        "REPOLENS_EMBEDDER", "local", "embedder: local, openai, azure, ollama, google"
    )
    embedding_model: str | None = setting("REPOLENS_EMBEDDING_MODEL", None, "embedding model id")
    embedder_threads: int | None = setting(
        "REPOLENS_EMBEDDER_THREADS", None, "threads of the local embedder", ge=1
    )
    embedding_timeout: float = setting(
        "REPOLENS_EMBEDDING_TIMEOUT", 60.0, "seconds a remote embedding request may take", ge=0.1
    )
    embedding_max_tokens: int = setting(
        "REPOLENS_EMBEDDING_MAX_TOKENS", 512, "tokens per chunk for remote embedders", ge=16
    )
    model_dir: Path | None = setting("REPOLENS_MODEL_DIR", None, "where derived local model files are kept")
    tiktoken_cache_dir: Path | None = setting(
        "TIKTOKEN_CACHE_DIR", None, "tiktoken's encodings (default: `<REPOLENS_HOME>/cache/tiktoken`)"
    )

    # Ingest
    max_file_bytes: int = setting("REPOLENS_MAX_FILE_BYTES", 1_000_000, "largest file indexed (bytes)", ge=1)
    max_files: int = setting("REPOLENS_MAX_FILES", 20_000, "most files indexed per repository", ge=1)
    max_bytes: int = setting("REPOLENS_MAX_BYTES", 200_000_000, "most bytes indexed per repository", ge=1)
    dense_commit_s: float = setting(
        "REPOLENS_DENSE_COMMIT_S", 10.0, "seconds between dense index versions while an ingest embeds", ge=0
    )
    graph_wait_s: float = setting(
        "REPOLENS_GRAPH_WAIT_S",
        5.0,
        "seconds a server chat waits for the code graph of a repository still being indexed "
        "(`repolens ask` waits up to 60)",
        ge=0,
        le=60,
    )
    ingest_workers: int = setting("REPOLENS_INGEST_WORKERS", 2, "ingest jobs run at once", ge=1, le=64)
    chunk_processes: int = setting(
        "REPOLENS_CHUNK_PROCESSES",
        0,
        "processes chunking an ingest of 300 files or more (0: one per core, 1: none)",
        ge=0,
        le=64,
    )
    ingest_isolation: IngestIsolation = setting(
        "REPOLENS_INGEST_ISOLATION",
        "process",
        "where the server runs ingest jobs: `process` (worker processes, so answers never wait on an "
        "ingest) or `thread` (in the server process)",
    )
    ingest_nice: int = setting(
        "REPOLENS_INGEST_NICE", 10, "CPU niceness added to the server's ingest worker processes", ge=0, le=19
    )
    repolens_token: SecretStr | None = setting("REPOLENS_TOKEN", None, "git token for every host")
    github_token: SecretStr | None = setting("GITHUB_TOKEN", None, "git token for github.com")
    gitlab_token: SecretStr | None = setting("GITLAB_TOKEN", None, "git token for gitlab.com")
    bitbucket_token: SecretStr | None = setting("BITBUCKET_TOKEN", None, "git token for bitbucket.org")

    # Job queue (several API replicas and `repolens worker` processes; unset: jobs run inside the server)
    redis_url: SecretStr | None = setting(
        "REPOLENS_REDIS_URL", None, "Redis URL of the shared ingest queue (`redis://host:6379/0`)"
    )
    queue_key: SecretStr | None = setting(
        "REPOLENS_QUEUE_KEY",
        None,
        "key sealing per-request git tokens on the queue (the same on API replicas and workers)",
    )
    queue_lease_s: float = setting(
        "REPOLENS_QUEUE_LEASE_S",
        30.0,
        "seconds a silent worker keeps its job and repository lock before another worker retries it",
        ge=1,
        le=3600,
    )

    @field_validator("embedder", mode="before")
    @classmethod
    def _embedder_kind(cls, value: Any) -> Any:
        kind = str(value).strip().lower()
        if kind not in EMBEDDER_KINDS:
            raise ValueError(f"unknown embedder {value!r}: use {', '.join(EMBEDDER_KINDS)}")
        return kind

    @field_validator("llm_timeout", mode="before")
    @classmethod
    def _positive_timeout(cls, value: Any) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = 0.0
        if not seconds > 0:  # also refuses nan
            raise ValueError("must be a positive number of seconds")
        return seconds

    @field_validator("stream_coalesce_ms", mode="before")
    @classmethod
    def _lenient_window(cls, value: Any) -> float:
        """A tuning knob: an unreadable value keeps the default, others are clamped to 0-1000 ms."""
        try:
            window = float(value)
        except (TypeError, ValueError):
            window = 20.0
        return max(0.0, min(window, 1000.0))

    @field_validator("pg_ef_construction")
    @classmethod
    def _at_least_twice_m(cls, value: int, info: ValidationInfo) -> int:
        m = info.data.get("pg_hnsw_m")
        if m is not None and value < 2 * m:
            raise ValueError(f"must be at least 2 x REPOLENS_PG_HNSW_M ({2 * m}), as pgvector requires")
        return value

    @field_validator("max_file_bytes", "max_files", "max_bytes", mode="before")
    @classmethod
    def _underscored_int(cls, value: Any) -> Any:
        return value.replace("_", "") if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _Environ(settings_cls), dotenv_settings

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, dotenv: Path | None = None) -> Settings:
        """The settings of `environ` (default: the process environment) over `dotenv` (default `./.env`).

        Raises `ConfigError` (or `EmbedderError` for an embedder setting) naming the bad variable.
        """
        marker = _explicit_environ.set(environ)
        try:
            return cls(_env_file=dotenv or Path.cwd() / ".env")
        except ValidationError as error:
            raise _config_error(error) from None
        finally:
            _explicit_environ.reset(marker)

    # Set by `for_server`; not a variable, so not a field (the settings table lists fields).
    _held_by_server: bool = PrivateAttr(False)

    def for_server(self) -> Settings:
        """These settings as a long-running server holds them (`create_app`, `repolens mcp`): read once,
        at its start, so setting a variable changes nothing until it restarts. Messages that say to
        set one say so (`held_by_server`); a CLI command reads them afresh each run."""
        held = self.model_copy()
        held._held_by_server = True
        return held

    @property
    def held_by_server(self) -> bool:
        return self._held_by_server

    def value(self, variable: str) -> str | None:
        """The value of the field read from `variable`, as text (for tables keyed by variable name,
        like the provider catalogue's required settings). Unknown names are a bug: KeyError."""
        raw = getattr(self, _FIELD_BY_VARIABLE[variable])
        if isinstance(raw, SecretStr):
            raw = raw.get_secret_value()
        return None if raw is None or raw == "" else str(raw)

    def secret(self, variable: str) -> str:
        """A secret setting's plain value ("" when unset)."""
        return self.value(variable) or ""

    def git_token(self, platform: str) -> str | None:
        """`REPOLENS_TOKEN`, else the platform's own token variable."""
        for variable in ("REPOLENS_TOKEN", TOKEN_VARIABLES.get(platform)):
            if variable and (token := self.value(variable)) and token.strip():
                return token.strip()
        return None

    def secrets(self) -> Iterator[str]:
        """Every configured secret value (registered with `rag.redact` at start-up)."""
        for name in type(self).model_fields:
            raw = getattr(self, name)
            if isinstance(raw, SecretStr) and raw.get_secret_value():
                yield raw.get_secret_value()


def variable_of(field: FieldInfo) -> str:
    alias = field.validation_alias
    assert isinstance(alias, AliasChoices)
    first = alias.choices[0]
    assert isinstance(first, str)
    return first


_FIELD_BY_VARIABLE = {variable_of(field): name for name, field in Settings.model_fields.items()}
_EMBEDDER_FIELDS = {
    "embedder",
    "embedding_model",
    "embedder_threads",
    "embedding_timeout",
    "embedding_max_tokens",
}


def _config_error(error: ValidationError) -> ConfigError | EmbedderError:
    """One message naming every bad variable, with the value given and what is expected."""
    problems = []
    embedder = False
    for item in error.errors():
        name = str(item["loc"][0]) if item["loc"] else "?"
        field_name = name if name in Settings.model_fields else _FIELD_BY_VARIABLE.get(name.upper(), name)
        variable = (
            variable_of(Settings.model_fields[field_name]) if field_name in Settings.model_fields else name
        )
        embedder = embedder or field_name in _EMBEDDER_FIELDS
        reason = str(item["msg"]).removeprefix("Value error, ")
        reason = reason if reason.startswith("must") else f"is invalid ({reason[:1].lower()}{reason[1:]})"
        problems.append(f"{variable} {reason}, got {item.get('input')!r}")
    message = "; ".join(problems)
    return EmbedderError(message) if embedder else ConfigError(message)


def markdown_table() -> str:
    """The README's table of every setting, generated from the fields."""
    lines = ["| variable | default | what |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = "" if field.default is None else f"`{field.default}`"
        if name == "home":
            default = "`~/.repolens`"
        secret = " (secret)" if "SecretStr" in str(field.annotation) else ""
        lines.append(f"| `{variable_of(field)}` | {default} | {field.description}{secret} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
