"""Which providers exist, their models and context windows, how each is configured, and the default.

Configuration comes from `Settings` (environment + `.env`), using deepwiki-open's variable names so
its users' `.env` files keep working. With nothing configured the `offline` provider is the default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rag.errors import ErrorCode, RepoLensError
from rag.providers.adalflow_bridge import BedrockConfig, bedrock_provider
from rag.providers.base import ChatProvider, ProviderError
from rag.providers.gemini import DEFAULT_BASE_URL as GEMINI_BASE_URL
from rag.providers.gemini import GeminiProvider
from rag.providers.offline import OfflineProvider
from rag.providers.openai_compat import OpenAICompatProvider, OpenAIConfig
from rag.redact import register_configured_secret
from rag.settings import Settings


@dataclass(frozen=True)
class ModelInfo:
    id: str
    name: str
    context_window: int
    max_output: int = 4096


@dataclass(frozen=True)
class ProviderInfo:
    """A provider's catalogue entry. `required` are the settings that must be set for it to work;
    `custom_context_window` is assumed for model ids not in `models`."""

    id: str
    name: str
    models: tuple[ModelInfo, ...]
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    supports_custom_model: bool = True
    custom_context_window: int = 32_768

    @property
    def default_model(self) -> str:
        return self.models[0].id

    def model(self, model_id: str) -> ModelInfo:
        for model in self.models:
            if model.id == model_id:
                return model
        return ModelInfo(model_id, model_id, self.custom_context_window)


def _m(model_id: str, context: int, name: str | None = None, max_output: int = 4096) -> ModelInfo:
    return ModelInfo(model_id, name or model_id, context, max_output)


@dataclass(frozen=True)
class OpenAIStyleVendor:
    """A vendor AdalFlow ships a client for whose API is OpenAI's chat completions: RepoLens streams it
    with the OpenAI SDK (docs/providers.md, "Why each path", says why not through AdalFlow's client), at
    the base URL and with the key variable AdalFlow's client uses (a test holds them equal)."""

    id: str
    name: str
    key_variable: str
    base_url: str
    models: tuple[ModelInfo, ...]

    @property
    def base_url_variable(self) -> str:
        return self.key_variable.removesuffix("_API_KEY") + "_BASE_URL"


ADALFLOW_OPENAI_VENDORS = (
    OpenAIStyleVendor(
        "deepseek",
        "DeepSeek",
        "DEEPSEEK_API_KEY",
        "https://api.deepseek.com/v1/",
        (_m("deepseek-chat", 128_000, "DeepSeek-V3 (chat)"), _m("deepseek-reasoner", 128_000, "DeepSeek-R1")),
    ),
    OpenAIStyleVendor(
        "mistral",
        "Mistral AI",
        "MISTRAL_API_KEY",
        "https://api.mistral.ai/v1",
        (
            _m("mistral-large-latest", 128_000, "Mistral Large"),
            _m("codestral-latest", 256_000, "Codestral"),
            _m("mistral-small-latest", 128_000, "Mistral Small"),
        ),
    ),
    OpenAIStyleVendor(
        "xai",
        "xAI (Grok)",
        "XAI_API_KEY",
        "https://api.x.ai/v1",
        (_m("grok-3", 131_072, "Grok 3"), _m("grok-2-latest", 131_072, "Grok 2")),
    ),
    OpenAIStyleVendor(
        "fireworks",
        "Fireworks AI",
        "FIREWORKS_API_KEY",
        "https://api.fireworks.ai/inference/v1/",
        (
            _m("accounts/fireworks/models/llama-v3p1-70b-instruct", 131_072, "Llama 3.1 70B Instruct"),
            _m("accounts/fireworks/models/llama-v3p1-8b-instruct", 131_072, "Llama 3.1 8B Instruct"),
        ),
    ),
    OpenAIStyleVendor(
        "sambanova",
        "SambaNova",
        "SAMBANOVA_API_KEY",
        "https://api.sambanova.ai/v1/",
        (
            _m("Meta-Llama-3.3-70B-Instruct", 131_072, "Llama 3.3 70B Instruct"),
            _m("Meta-Llama-3.1-8B-Instruct", 16_384, "Llama 3.1 8B Instruct"),
        ),
    ),
    OpenAIStyleVendor(
        "together",
        "Together AI",
        "TOGETHER_API_KEY",
        "https://api.together.xyz/v1",
        (
            _m("meta-llama/Llama-3.3-70B-Instruct-Turbo", 131_072, "Llama 3.3 70B Instruct Turbo"),
            _m("deepseek-ai/DeepSeek-R1", 128_000, "DeepSeek-R1"),
        ),
    ),
    OpenAIStyleVendor(
        "groq",
        "Groq",
        "GROQ_API_KEY",
        "https://api.groq.com/openai/v1",
        (
            _m("llama-3.3-70b-versatile", 131_072, "Llama 3.3 70B Versatile"),
            _m("llama-3.1-8b-instant", 131_072, "Llama 3.1 8B Instant"),
        ),
    ),
)
_VENDORS = {vendor.id: vendor for vendor in ADALFLOW_OPENAI_VENDORS}


PROVIDERS: dict[str, ProviderInfo] = {
    info.id: info
    for info in (
        ProviderInfo(
            "offline",
            "Offline (no LLM: retrieved code, grounded)",
            (_m("grounded-excerpts", 1_000_000, "Grounded excerpts"),),
            required=(),
            supports_custom_model=False,
        ),
        ProviderInfo(
            "openai",
            "OpenAI",
            (
                _m("gpt-4o-mini", 128_000, "GPT-4o mini"),
                _m("gpt-4o", 128_000, "GPT-4o"),
                _m("gpt-4.1", 1_047_576, "GPT-4.1"),
                _m("gpt-4.1-mini", 1_047_576, "GPT-4.1 mini"),
                _m("o4-mini", 200_000, "o4-mini", max_output=16_384),
            ),
            required=("OPENAI_API_KEY",),
            optional=("OPENAI_BASE_URL",),
            custom_context_window=128_000,
        ),
        ProviderInfo(
            "google",
            "Google Gemini",
            (
                _m("gemini-2.0-flash", 1_048_576, "Gemini 2.0 Flash"),
                _m("gemini-2.5-flash", 1_048_576, "Gemini 2.5 Flash", max_output=8192),
                _m("gemini-2.5-pro", 1_048_576, "Gemini 2.5 Pro", max_output=8192),
            ),
            required=("GOOGLE_API_KEY",),
            optional=("GOOGLE_API_BASE_URL",),
            custom_context_window=1_000_000,
        ),
        ProviderInfo(
            "openrouter",
            "OpenRouter",
            (
                _m("openai/gpt-4o-mini", 128_000, "OpenAI GPT-4o mini"),
                _m("anthropic/claude-3.5-sonnet", 200_000, "Claude 3.5 Sonnet"),
                _m("google/gemini-2.0-flash-001", 1_048_576, "Gemini 2.0 Flash"),
                _m("meta-llama/llama-3.1-70b-instruct", 131_072, "Llama 3.1 70B Instruct"),
            ),
            required=("OPENROUTER_API_KEY",),
            optional=("OPENROUTER_BASE_URL",),
        ),
        ProviderInfo(
            "azure",
            "Azure OpenAI",
            (
                _m("gpt-4o-mini", 128_000, "GPT-4o mini (deployment)"),
                _m("gpt-4o", 128_000, "GPT-4o (deployment)"),
            ),
            required=("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT"),
            optional=("AZURE_OPENAI_VERSION",),
            custom_context_window=128_000,
        ),
        ProviderInfo(
            "dashscope",
            "Alibaba DashScope (Qwen)",
            (
                _m("qwen-plus", 131_072, "Qwen Plus"),
                _m("qwen-turbo", 1_000_000, "Qwen Turbo"),
                _m("qwen-max", 32_768, "Qwen Max"),
            ),
            required=("DASHSCOPE_API_KEY",),
            optional=("DASHSCOPE_WORKSPACE_ID", "DASHSCOPE_BASE_URL"),
        ),
        ProviderInfo(
            "ollama",
            "Ollama (local)",
            (_m("llama3.1", 8192, "Llama 3.1 8B"), _m("qwen2.5-coder", 8192, "Qwen2.5 Coder 7B")),
            required=(),
            optional=("OLLAMA_HOST",),
            custom_context_window=8192,
        ),
        ProviderInfo(
            "anthropic",
            "Anthropic (Claude)",
            (
                _m("claude-sonnet-4-5", 200_000, "Claude Sonnet 4.5", max_output=8192),
                _m("claude-sonnet-4-20250514", 200_000, "Claude Sonnet 4", max_output=8192),
                _m("claude-opus-4-1", 200_000, "Claude Opus 4.1", max_output=8192),
                _m("claude-3-5-haiku-latest", 200_000, "Claude 3.5 Haiku", max_output=8192),
            ),
            required=("ANTHROPIC_API_KEY",),
            optional=("ANTHROPIC_BASE_URL",),
            custom_context_window=200_000,
        ),
        ProviderInfo(
            "bedrock",
            "AWS Bedrock (via AdalFlow)",
            (
                _m("anthropic.claude-3-5-sonnet-20241022-v2:0", 200_000, "Claude 3.5 Sonnet v2"),
                _m("anthropic.claude-3-sonnet-20240229-v1:0", 200_000, "Claude 3 Sonnet"),
                _m("anthropic.claude-3-haiku-20240307-v1:0", 200_000, "Claude 3 Haiku"),
                _m("anthropic.claude-3-opus-20240229-v1:0", 200_000, "Claude 3 Opus"),
                _m("amazon.nova-pro-v1:0", 300_000, "Amazon Nova Pro"),
                _m("meta.llama3-1-70b-instruct-v1:0", 128_000, "Llama 3.1 70B Instruct"),
                _m("mistral.mistral-large-2407-v1:0", 128_000, "Mistral Large (24.07)"),
                _m("cohere.command-r-plus-v1:0", 128_000, "Cohere Command R+"),
                _m("amazon.titan-text-express-v1", 8192, "Amazon Titan Text Express"),
            ),
            required=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
            optional=(
                "AWS_REGION",
                "AWS_SESSION_TOKEN",
                "AWS_ROLE_ARN",
                "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
                "AWS_ENDPOINT_URL_STS",
            ),
            custom_context_window=128_000,
        ),
        *(
            ProviderInfo(
                vendor.id,
                vendor.name,
                vendor.models,
                required=(vendor.key_variable,),
                optional=(vendor.base_url_variable,),
                custom_context_window=vendor.models[0].context_window,
            )
            for vendor in ADALFLOW_OPENAI_VENDORS
        ),
        ProviderInfo(
            "openai-compatible",
            "OpenAI-compatible server (vLLM, LM Studio, llama.cpp)",
            (_m("default", 8192, "Server default model"),),
            required=("REPOLENS_OPENAI_COMPATIBLE_BASE_URL",),
            optional=("REPOLENS_OPENAI_COMPATIBLE_API_KEY",),
            custom_context_window=8192,
        ),
    )
}

# When REPOLENS_PROVIDER is unset, the first configured provider in this order is the default.
_DEFAULT_ORDER = (
    "openai",
    "google",
    "anthropic",
    "openrouter",
    "azure",
    "bedrock",
    "dashscope",
    *_VENDORS,
    "openai-compatible",
    "ollama",
)
# Bedrock models that take tools in the Converse API; the others run deep research in JSON mode.
_BEDROCK_TOOL_MODELS = (
    "anthropic.",
    "amazon.nova",
    "meta.llama3-1",
    "meta.llama3-2",
    "mistral.mistral-large",
    "cohere.command-r",
)

DEFAULT_OPENROUTER_URL = "https://openrouter.ai/api/v1"
DEFAULT_DASHSCOPE_URL = "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"


class UnknownProviderError(RepoLensError):
    code = ErrorCode.BAD_REQUEST


def _usable(info: ProviderInfo, settings: Settings) -> bool:
    return all(settings.value(name) for name in info.required)


def is_configured(provider: str, settings: Settings) -> bool:
    """Usable and set up on purpose: Ollama works without settings (localhost) but only counts as
    configured, and so can only become the default, once OLLAMA_HOST is set."""
    info = PROVIDERS.get(provider)
    if info is None or not _usable(info, settings):
        return False
    return info.id == "offline" or any(settings.value(name) for name in info.required + info.optional)


def default_provider(settings: Settings) -> str:
    """REPOLENS_PROVIDER if set, else the first provider with credentials, else `offline`."""
    chosen = settings.provider
    if chosen:
        return chosen.strip().lower()
    return next((name for name in _DEFAULT_ORDER if is_configured(name, settings)), "offline")


def provider_info(name: str) -> ProviderInfo:
    key = name.strip().lower()
    if key not in PROVIDERS:
        raise UnknownProviderError(f"unknown provider '{name}'; choose one of: {', '.join(PROVIDERS)}")
    return PROVIDERS[key]


def resolve_model(info: ProviderInfo, settings: Settings, model: str | None) -> ModelInfo:
    """The requested model, else REPOLENS_MODEL (for the default provider), else the provider's default.

    REPOLENS_CONTEXT_WINDOW overrides the context window, e.g. for a local server started with a
    smaller or larger context than the catalogue assumes.
    """
    model_id = model or (settings.model if info.id == default_provider(settings) else None)
    if model_id and not info.supports_custom_model and model_id not in {m.id for m in info.models}:
        model_id = None
    resolved = info.model(model_id or info.default_model)
    if settings.context_window is not None:
        return ModelInfo(resolved.id, resolved.name, settings.context_window, resolved.max_output)
    return resolved


def _secret(settings: Settings, name: str) -> str:
    value = settings.secret(name)
    register_configured_secret(value)
    return value


def _openai_config(name: str, settings: Settings) -> OpenAIConfig:
    timeout = settings.llm_timeout
    if name == "openai":
        return OpenAIConfig(
            _secret(settings, "OPENAI_API_KEY"),
            settings.openai_base_url,
            "OPENAI_API_KEY",
            timeout,
            max_tokens_field="max_completion_tokens",
        )
    if name == "azure":
        return OpenAIConfig(
            _secret(settings, "AZURE_OPENAI_API_KEY"),
            None,
            "AZURE_OPENAI_API_KEY",
            timeout,
            azure_endpoint=settings.azure_openai_endpoint,
            azure_api_version=settings.azure_openai_version,
        )
    if name == "openrouter":
        base = settings.openrouter_base_url or DEFAULT_OPENROUTER_URL
        headers: tuple[tuple[str, str], ...] = (
            ("HTTP-Referer", "https://github.com/repolens"),
            ("X-Title", "RepoLens"),
        )
        return OpenAIConfig(
            _secret(settings, "OPENROUTER_API_KEY"), base, "OPENROUTER_API_KEY", timeout, headers=headers
        )
    if name == "dashscope":
        base = settings.dashscope_base_url or DEFAULT_DASHSCOPE_URL
        workspace = settings.dashscope_workspace_id
        headers = (("X-DashScope-WorkSpace", workspace),) if workspace else ()
        return OpenAIConfig(
            _secret(settings, "DASHSCOPE_API_KEY"), base, "DASHSCOPE_API_KEY", timeout, headers=headers
        )
    if name in _VENDORS:
        vendor = _VENDORS[name]
        vendor_url = settings.value(vendor.base_url_variable) or vendor.base_url
        return OpenAIConfig(_secret(settings, vendor.key_variable), vendor_url, vendor.key_variable, timeout)
    if name == "ollama":
        host = (settings.ollama_host or "http://localhost:11434").rstrip("/")
        host = host if "://" in host else f"http://{host}"
        return OpenAIConfig("ollama", f"{host}/v1", "OLLAMA_HOST", timeout)
    base = settings.openai_compatible_base_url or ""
    key = _secret(settings, "REPOLENS_OPENAI_COMPATIBLE_API_KEY") or "none"
    return OpenAIConfig(key, base, "REPOLENS_OPENAI_COMPATIBLE_API_KEY", timeout)


def configured_providers(settings: Settings) -> list[str]:
    """The providers set up here (`is_configured`), in the catalogue's order: what an error lists."""
    return [name for name in PROVIDERS if is_configured(name, settings)]


def usable_provider(name: str | None, settings: Settings) -> ProviderInfo:
    """The provider `name` (None: the default) if it can answer here; else an error that names what
    to set and which providers are configured, so a user sees what to do without reading the docs."""
    info = provider_info(name or default_provider(settings))
    if not _usable(info, settings):
        raise ProviderError(
            ErrorCode.NOT_CONFIGURED,
            f"not configured: {_setup_advice(info, settings)} (see README, Configuration); "
            f"configured: {', '.join(configured_providers(settings))}",
            provider=info.id,
        )
    return info


def _setup_advice(info: ProviderInfo, settings: Settings) -> str:
    """How to make `info` usable here: the variables to set, and on a server the restart (it read its
    settings at start: a variable set now reaches it when it restarts)."""
    missing = " and ".join(variable for variable in info.required if not settings.value(variable))
    restart = ", then restart the server to pick it up" if settings.held_by_server else ""
    return f"set {missing} in the environment or .env{restart}"


def check_model(info: ProviderInfo, model: str | None, settings: Settings) -> None:
    """Refuse a model a provider without custom models (offline) does not have, which
    `resolve_model` would quietly replace by its default: for clients that pick the model on
    purpose (the OpenAI API) and must not get an answer from another than they asked for."""
    if model and not info.supports_custom_model and model not in {m.id for m in info.models}:
        raise ProviderError(
            ErrorCode.NOT_CONFIGURED,
            f"has no model '{model}' (its models: {', '.join(m.id for m in info.models)}); "
            f"configured providers: {', '.join(configured_providers(settings))}; "
            "name one as the provider, or configure another (see README, Configuration)",
            provider=info.id,
        )


def require_choice(name: str | None, model: str | None, settings: Settings) -> ProviderInfo:
    """`usable_provider`, then `check_model`: what a client that names its provider or model on
    purpose (`repolens ask`, MCP's `ask_question`) gets instead of `provider_or_offline`'s fallback,
    which is for deepwiki-open clients (they always name `google`)."""
    info = usable_provider(name, settings)
    check_model(info, model, settings)
    return info


def get_provider(name: str | None, settings: Settings, model: str | None = None) -> ChatProvider:
    """The provider `name` (None: the default) ready to stream, or a clear error if it is not set up."""
    info = usable_provider(name, settings)
    resolved = resolve_model(info, settings, model)
    if info.id == "offline":
        return OfflineProvider()
    if info.id == "google":
        base = settings.google_api_base_url or GEMINI_BASE_URL
        return GeminiProvider(
            resolved.id, _secret(settings, "GOOGLE_API_KEY"), base_url=base, timeout_s=settings.llm_timeout
        )
    if info.id == "anthropic":
        # Imported on use: the anthropic SDK takes a while to import and most servers never need it.
        from rag.providers.anthropic_messages import DEFAULT_BASE_URL, AnthropicConfig, AnthropicProvider

        base = settings.anthropic_base_url or DEFAULT_BASE_URL
        config = AnthropicConfig(_secret(settings, "ANTHROPIC_API_KEY"), base, settings.llm_timeout)
        return AnthropicProvider(resolved.id, config)
    if info.id == "bedrock":
        return _bedrock(resolved.id, settings)
    return OpenAICompatProvider(info.id, resolved.id, _openai_config(info.id, settings))


def _bedrock(model: str, settings: Settings) -> ChatProvider:
    """Bedrock through the AdalFlow bridge, with deepwiki-open's AWS variable names."""
    config = BedrockConfig(
        access_key_id=_secret(settings, "AWS_ACCESS_KEY_ID"),
        secret_access_key=_secret(settings, "AWS_SECRET_ACCESS_KEY"),
        region=settings.aws_region,
        session_token=_secret(settings, "AWS_SESSION_TOKEN") or None,
        role_arn=settings.aws_role_arn,
        endpoint_url=settings.aws_endpoint_url_bedrock_runtime,
        sts_endpoint_url=settings.aws_endpoint_url_sts,
        timeout_s=settings.llm_timeout,
    )
    provider = bedrock_provider(model, config)
    provider.supports_tools = model.startswith(_BEDROCK_TOOL_MODELS)
    return provider


def provider_or_offline(
    name: str | None, settings: Settings, model: str | None = None
) -> tuple[ChatProvider, str | None]:
    """`get_provider`, or the offline provider (with a note saying so) when `name` is not configured on a
    server that has no provider configured at all.

    deepwiki-open clients always name a provider (`google` by default); answering offline beats
    refusing, for plain questions, deep research and wikis alike.
    """
    try:
        return get_provider(name, settings, model), None
    except ProviderError as error:
        if error.code != "not_configured" or default_provider(settings) != "offline":
            raise
        info = PROVIDERS.get((name or "").strip().lower())
        advice = f" ({_setup_advice(info, settings)})" if info and not _usable(info, settings) else ""
        note = f"{name} is not configured{advice}; answering offline from the retrieved code"
        return get_provider("offline", settings), note


def list_providers(settings: Settings) -> list[dict[str, Any]]:
    """Every provider with its models and whether it is configured (for `/api/models`)."""
    default = default_provider(settings)
    return [
        {
            "id": info.id,
            "name": info.name,
            "configured": is_configured(info.id, settings),
            "default": info.id == default,
            "default_model": resolve_model(info, settings, None).id,
            "supports_custom_model": info.supports_custom_model,
            "env": list(info.required + info.optional),
            "models": [
                {"id": m.id, "name": m.name, "context_window": m.context_window, "max_output": m.max_output}
                for m in info.models
            ],
        }
        for info in PROVIDERS.values()
    ]
