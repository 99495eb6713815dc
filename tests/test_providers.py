"""Providers against the fake provider server over loopback: real SDK/httpx clients, real wire formats."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import Callable

import httpx
import pytest

from rag.errors import RepoLensError
from rag.providers import (
    ChatRequest,
    Message,
    ProviderError,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    Usage,
    gemini,
    openai_compat,
)
from rag.providers.catalog import PROVIDERS, default_provider, get_provider, list_providers, resolve_model
from rag.providers.pool import ClientPool
from rag.settings import Settings
from tests.support.fake_provider import FAKE_API_KEY, FakeProvider, FakeResponse
from tests.support.provider_streams import GREP, QUESTION, collect, text_of


def settings_for(fake: FakeProvider, provider: str, key: str = FAKE_API_KEY, **extra: str) -> Settings:
    env = {**fake.openai_env(key), **fake.gemini_env(key), "REPOLENS_PROVIDER": provider, **extra}
    return Settings.from_env(env)


@pytest.mark.parametrize("provider", ["openai", "google"])
async def test_streams_token_by_token(fake_provider: FakeProvider, provider: str) -> None:
    fake_provider.script(FakeResponse(text="alpha beta gamma delta", usage=(42, 4)))
    chat = get_provider(provider, settings_for(fake_provider, provider))
    events = await collect(chat, ChatRequest(QUESTION, model=chat.model, max_tokens=100))

    deltas = [event.text for event in events if isinstance(event, TextDelta)]
    assert deltas == ["alpha ", "beta ", "gamma ", "delta"]
    assert Usage(42, 4) in events
    sent = fake_provider.requests[-1]
    assert sent.api_key == FAKE_API_KEY
    if provider == "google":
        assert sent.path == f"/v1beta/models/{chat.model}:streamGenerateContent"
        assert sent.query == {"alt": ["sse"]}
        assert "key" not in sent.query
        assert sent.body["systemInstruction"]["parts"][0]["text"] == "Answer briefly."
        assert sent.body["contents"] == [{"role": "user", "parts": [{"text": "What does main.py do?"}]}]
        assert sent.body["generationConfig"]["maxOutputTokens"] == 100
    else:
        assert sent.path == "/v1/chat/completions"
        assert sent.body["stream"] is True
        assert sent.body["model"] == "gpt-4o-mini"
        assert sent.body["messages"][1] == {"role": "user", "content": "What does main.py do?"}


async def test_first_token_arrives_before_stream_ends(fake_provider: FakeProvider) -> None:
    fake_provider.script(FakeResponse(text="one two three four", delay=0.15))
    chat = get_provider("openai", settings_for(fake_provider, "openai"))
    stream = chat.stream(ChatRequest(QUESTION, model=chat.model))
    loop = asyncio.get_running_loop()
    started = loop.time()
    first = await anext(aiter(stream))
    first_at = loop.time() - started
    rest = [event async for event in stream]
    total = loop.time() - started
    assert isinstance(first, TextDelta) and first.text == "one "
    assert total - first_at > 0.35, "the rest arrived later, piece by piece"
    assert text_of(rest) == "two three four"


@pytest.mark.parametrize("provider", ["openai", "google"])
async def test_tool_calls_are_assembled(fake_provider: FakeProvider, provider: str) -> None:
    calls = [
        {"id": "call_a", "name": "grep", "arguments": {"pattern": "def main", "path": "src/**"}},
        {"id": "call_b", "name": "read_file", "arguments": {"path": "main.py", "start": 1}},
    ]
    fake_provider.script(FakeResponse(text=None, tool_calls=calls))
    chat = get_provider(provider, settings_for(fake_provider, provider))
    events = await collect(chat, ChatRequest(QUESTION, model=chat.model, tools=[GREP]))

    tool_events = [event for event in events if isinstance(event, ToolCallEvent)]
    assert [(event.name, event.arguments) for event in tool_events] == [
        ("grep", {"pattern": "def main", "path": "src/**"}),
        ("read_file", {"path": "main.py", "start": 1}),
    ]
    body = fake_provider.requests[-1].body
    if provider == "google":
        assert body["tools"][0]["functionDeclarations"][0]["name"] == "grep"
    else:
        assert [event.id for event in tool_events] == ["call_a", "call_b"]
        assert body["tools"][0] == {
            "type": "function",
            "function": {"name": "grep", "description": "Search the code", "parameters": GREP.parameters},
        }


async def test_tool_results_are_sent_back_in_openai_shape(fake_provider: FakeProvider) -> None:
    call = ToolCall("call_1", "grep", {"pattern": "x"})
    messages = [
        *QUESTION,
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", "main.py:3: x = 1", tool_call_id="call_1", name="grep"),
    ]
    chat = get_provider("openai", settings_for(fake_provider, "openai"))
    await collect(chat, ChatRequest(messages, model=chat.model, tools=[GREP]))
    sent = fake_provider.requests[-1].body["messages"]
    assert sent[2]["tool_calls"][0]["function"] == {"name": "grep", "arguments": '{"pattern": "x"}'}
    assert sent[3] == {"role": "tool", "content": "main.py:3: x = 1", "tool_call_id": "call_1"}


@pytest.mark.parametrize("provider", ["openai", "google"])
@pytest.mark.parametrize(
    ("response", "code", "words"),
    [
        (FakeResponse(status=401), "auth", "key was rejected"),
        (FakeResponse(status=404), "model_not_found", "not found"),
        (FakeResponse(status=429), "rate_limit", "rate limit"),
        (FakeResponse(status=400, error_code="context_length_exceeded"), "context_length", "too long"),
        (FakeResponse(status=503), "unavailable", "HTTP 503"),
    ],
)
async def test_http_errors_become_clear_provider_errors(
    fake_provider: FakeProvider, provider: str, response: FakeResponse, code: str, words: str
) -> None:
    secret = "sk-very-secret-key-that-must-not-leak-42"
    fake_provider.script(response)
    chat = get_provider(provider, settings_for(fake_provider, provider, key=secret))
    with pytest.raises(ProviderError) as caught:
        await collect(chat, ChatRequest(QUESTION, model="some-model"))
    assert caught.value.code == code
    assert words in caught.value.message
    assert secret not in caught.value.message and secret not in repr(caught.value)
    assert len(fake_provider.requests) == 1, "HTTP errors are not retried"


async def test_bad_key_message_names_the_variable_and_hides_the_key(fake_provider: FakeProvider) -> None:
    fake_provider.expected_key = "sk-the-right-key-000000"
    chat = get_provider("openai", settings_for(fake_provider, "openai", key="sk-wrong-key-123456789"))
    with pytest.raises(ProviderError) as caught:
        await collect(chat, ChatRequest(QUESTION, model=chat.model))
    assert caught.value.code == "auth"
    assert "OPENAI_API_KEY" in caught.value.message
    assert "sk-wrong-key-123456789" not in str(caught.value)


@pytest.mark.parametrize("provider", ["openai", "google"])
@pytest.mark.parametrize("mode", ["error_event", "close"])
async def test_mid_stream_failure_keeps_earlier_tokens(
    fake_provider: FakeProvider, provider: str, mode: str
) -> None:
    fake_provider.script(FakeResponse(text="one two three four", fail_after=2, fail_mode=mode))
    chat = get_provider(provider, settings_for(fake_provider, provider))
    received: list[str] = []
    with pytest.raises(ProviderError) as caught:
        async for event in chat.stream(ChatRequest(QUESTION, model=chat.model)):
            if isinstance(event, TextDelta):
                received.append(event.text)
    assert "".join(received) == "one two "
    assert caught.value.code == "unavailable"
    assert len(fake_provider.requests) == 1, "no retry once tokens were produced"


@pytest.mark.parametrize("provider", ["openai", "google"])
async def test_connection_dropped_before_first_token_is_retried_once(
    fake_provider: FakeProvider, provider: str
) -> None:
    fake_provider.script(FakeResponse(drop=True), FakeResponse(text="second try"))
    chat = get_provider(provider, settings_for(fake_provider, provider))
    events = await collect(chat, ChatRequest(QUESTION, model=chat.model))
    assert text_of(events) == "second try"
    assert len(fake_provider.requests) == 2


async def test_connection_refused_twice_is_unavailable(fake_provider: FakeProvider) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings.from_env(
        {"OPENAI_API_KEY": "sk-abc-123456", "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1"}
    )
    chat = get_provider("openai", settings)
    with pytest.raises(ProviderError) as caught:
        await collect(chat, ChatRequest(QUESTION, model=chat.model))
    assert caught.value.code == "unavailable"
    assert "could not connect" in caught.value.message


@pytest.mark.parametrize("provider", ["openai", "google"])
async def test_aclose_closes_the_http_stream(fake_provider: FakeProvider, provider: str) -> None:
    fake_provider.script(FakeResponse(text="a b c d e f g h", delay=0.1))
    chat = get_provider(provider, settings_for(fake_provider, provider))
    stream = chat.stream(ChatRequest(QUESTION, model=chat.model))
    first = await anext(aiter(stream))
    assert isinstance(first, TextDelta)
    await stream.aclose()
    assert await asyncio.to_thread(fake_provider.wait_for_disconnect, 10.0)
    assert fake_provider.completed == 0


async def test_cancelling_the_consumer_task_closes_the_http_stream(fake_provider: FakeProvider) -> None:
    fake_provider.script(FakeResponse(text="a b c d e f g h", delay=1))
    chat = get_provider("openai", settings_for(fake_provider, "openai"))
    streaming = asyncio.Event()

    async def consume() -> None:
        async for _ in chat.stream(ChatRequest(QUESTION, model=chat.model)):
            streaming.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(streaming.wait(), 60)  # mid-stream: 7 more tokens, a second apart
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(fake_provider.wait_for_disconnect, 10.0)


@pytest.mark.parametrize(
    ("provider", "env", "path"),
    [
        (
            "openrouter",
            {"OPENROUTER_API_KEY": "or-key-1234", "OPENROUTER_BASE_URL": "{base}"},
            "/v1/chat/completions",
        ),
        (
            "dashscope",
            {"DASHSCOPE_API_KEY": "ds-key-1234", "DASHSCOPE_BASE_URL": "{base}"},
            "/v1/chat/completions",
        ),
        ("ollama", {"OLLAMA_HOST": "{root}"}, "/v1/chat/completions"),
        (
            "openai-compatible",
            {"REPOLENS_OPENAI_COMPATIBLE_BASE_URL": "{base}", "REPOLENS_MODEL": "my-llama"},
            "/v1/chat/completions",
        ),
        (
            "azure",
            {"AZURE_OPENAI_API_KEY": "az-key-1234", "AZURE_OPENAI_ENDPOINT": "{root}"},
            "/openai/deployments/gpt-4o-mini/chat/completions",
        ),
    ],
)
async def test_openai_style_providers_reach_their_endpoint(
    fake_provider: FakeProvider, provider: str, env: dict[str, str], path: str
) -> None:
    root = fake_provider.base_url.removesuffix("/v1")
    values = {name: value.format(base=fake_provider.base_url, root=root) for name, value in env.items()}
    values["DASHSCOPE_WORKSPACE_ID"] = "ws-42"
    chat = get_provider(provider, Settings.from_env({**values, "REPOLENS_PROVIDER": provider}))
    events = await collect(chat, ChatRequest(QUESTION, model=chat.model))
    assert "You asked" in text_of(events)
    sent = fake_provider.requests[-1]
    assert sent.path == path
    if provider == "openai-compatible":
        assert sent.body["model"] == "my-llama"
    if provider == "dashscope":
        assert sent.headers["x-dashscope-workspace"] == "ws-42"
    if provider == "azure":
        assert sent.headers["api-key"] == "az-key-1234"


def _without_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


async def test_a_proxy_from_the_environment_carries_the_request(
    fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """`HTTP_PROXY` is honoured, with the proxy's login from the netrc file: here the fake provider plays
    the proxy for a provider host that does not even resolve."""
    _without_proxies(monkeypatch)
    proxy = fake_provider.base_url.removesuffix("/v1")
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login proxy-user password proxy-pass\n")
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HTTP_PROXY", proxy)
    fake_provider.script(FakeResponse(text="through the proxy"))
    settings = Settings.from_env(
        {"OPENAI_API_KEY": FAKE_API_KEY, "OPENAI_BASE_URL": "http://provider.invalid/v1"}
    )
    chat = get_provider("openai", settings)
    events = await collect(chat, ChatRequest(QUESTION, model=chat.model))
    assert text_of(events) == "through the proxy"
    sent = fake_provider.requests[-1]
    assert sent.headers["host"] == "provider.invalid"
    assert sent.path == "/v1/chat/completions"
    login = base64.b64encode(b"proxy-user:proxy-pass").decode()
    assert sent.headers["proxy-authorization"] == f"Basic {login}"
    assert sent.api_key == FAKE_API_KEY


async def test_no_proxy_and_a_netrc_login_for_the_provider_leave_the_request_as_it_is(
    fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """A netrc entry for the provider's own host is not a login for it (the request carries its key; aiohttp's
    `trust_env` would add the entry and then refuse the request), and `NO_PROXY` keeps the host direct."""
    _without_proxies(monkeypatch)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password not-the-key\n")
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    fake_provider.script(FakeResponse(text="alpha beta"))
    chat = get_provider("openai", settings_for(fake_provider, "openai"))
    events = await collect(chat, ChatRequest(QUESTION, model=chat.model))
    assert text_of(events) == "alpha beta"
    sent = fake_provider.requests[-1]
    assert sent.api_key == FAKE_API_KEY
    assert "proxy-authorization" not in sent.headers


def test_offline_is_the_default_without_keys() -> None:
    settings = Settings.from_env({})
    assert default_provider(settings) == "offline"
    assert get_provider(None, settings).name == "offline"
    assert default_provider(Settings.from_env({"GOOGLE_API_KEY": "g-123456"})) == "google"
    assert (
        default_provider(Settings.from_env({"GOOGLE_API_KEY": "g", "REPOLENS_PROVIDER": "ollama"}))
        == "ollama"
    )


def test_unconfigured_and_unknown_providers_are_clear_errors() -> None:
    settings = Settings.from_env({})
    with pytest.raises(ProviderError) as caught:
        get_provider("openai", settings)
    assert caught.value.code == "not_configured" and "OPENAI_API_KEY" in caught.value.message
    with pytest.raises(ProviderError, match="bedrock: not configured: set AWS_ACCESS_KEY_ID and AWS_SECRET"):
        get_provider("bedrock", settings)
    with pytest.raises(Exception, match="unknown provider 'gpt'"):
        get_provider("gpt", settings)


def test_dotenv_file_configures_a_provider(tmp_path) -> None:
    (tmp_path / ".env").write_text("GOOGLE_API_KEY=from-dotenv-123\nREPOLENS_MODEL=gemini-2.5-flash\n")
    settings = Settings.from_env({}, dotenv=tmp_path / ".env")
    chat = get_provider(None, settings)
    assert (chat.name, chat.model) == ("google", "gemini-2.5-flash")


def test_catalogue_models_and_context_windows() -> None:
    settings = Settings.from_env({"OPENAI_API_KEY": "sk-123456"})
    by_id = {entry["id"]: entry for entry in list_providers(settings)}
    assert set(by_id) >= {
        "openai",
        "azure",
        "openrouter",
        "dashscope",
        "ollama",
        "openai-compatible",
        "google",
        "offline",
    }
    assert by_id["openai"]["configured"] and by_id["openai"]["default"]
    assert not by_id["google"]["configured"] and not by_id["ollama"]["configured"]
    openai_models = {model["id"]: model["context_window"] for model in by_id["openai"]["models"]}
    assert openai_models["gpt-4o-mini"] == 128_000
    assert resolve_model(PROVIDERS["google"], settings, None).context_window == 1_048_576
    assert resolve_model(PROVIDERS["dashscope"], settings, None).id == "qwen-plus"
    assert resolve_model(PROVIDERS["ollama"], settings, None).id == "llama3.1"
    custom = resolve_model(
        PROVIDERS["openai"], Settings.from_env({"REPOLENS_CONTEXT_WINDOW": "9000"}), "my-ft"
    )
    assert (custom.id, custom.context_window) == ("my-ft", 9000)


def test_config_routes_in_deepwiki_shapes(live_server_factory, tmp_path) -> None:
    settings = Settings.from_env({"REPOLENS_HOME": str(tmp_path), "GOOGLE_API_KEY": "g-key-123456"})
    server = live_server_factory(settings)
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        health = client.get("/health").json()
        models_config = client.get("/models/config").json()
        lang = client.get("/lang/config").json()
        models = client.get("/api/models").json()

    assert health["status"] == "healthy"
    assert models_config["defaultProvider"] == "google"
    first = models_config["providers"][0]
    assert set(first) == {"id", "name", "models", "supportsCustomModel"}
    assert first["id"] == "google", "configured providers are listed first"
    assert {"id": "gemini-2.0-flash", "name": "Gemini 2.0 Flash"} in first["models"]
    offline = next(entry for entry in models_config["providers"] if entry["id"] == "offline")
    assert offline["supportsCustomModel"] is False
    assert lang["default"] == "en"
    assert lang["supported_languages"]["ja"] == "Japanese (日本語)"
    assert len(lang["supported_languages"]) == 10
    assert models["default_provider"] == "google"
    google = next(entry for entry in models["providers"] if entry["id"] == "google")
    assert google["configured"] is True and google["env"][0] == "GOOGLE_API_KEY"
    assert "g-key-123456" not in json.dumps(models)


@pytest.mark.parametrize("provider", ["openai", "google"])
async def test_a_silent_model_times_out(fake_provider: FakeProvider, provider: str) -> None:
    fake_provider.script(FakeResponse(text="too late", first_delay=2.0))
    chat = get_provider(provider, settings_for(fake_provider, provider, REPOLENS_LLM_TIMEOUT="0.3"))
    with pytest.raises(ProviderError) as caught:
        await collect(chat, ChatRequest(QUESTION, model=chat.model))
    assert caught.value.code == "timeout"


def test_bad_timeout_setting_is_a_clear_error() -> None:
    """Refused when the settings are loaded (start-up), before any provider is built."""
    with pytest.raises(RepoLensError, match="REPOLENS_LLM_TIMEOUT must be a positive number"):
        settings = Settings.from_env({"OPENAI_API_KEY": "sk-123456", "REPOLENS_LLM_TIMEOUT": "soon"})
        get_provider("openai", settings)


def test_a_loop_s_pooled_clients_are_closed_when_the_loop_shuts_down() -> None:
    """One client per loop and key, closed by the loop's shutdown (no socket left to the GC)."""
    pool: ClientPool[httpx.AsyncClient] = ClientPool()

    async def clients() -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
        first = await pool.get("a", httpx.AsyncClient)
        assert await pool.get("a", httpx.AsyncClient) is first and not first.is_closed
        return first, await pool.get("b", httpx.AsyncClient)

    first, other_key = asyncio.run(clients())
    assert first.is_closed and other_key.is_closed and first is not other_key
    again, _ = asyncio.run(clients())
    assert again is not first and again.is_closed


@pytest.mark.parametrize("provider", ["openai", "google"])
def test_a_provider_leaves_no_connection_open_after_its_loop(
    fake_provider: FakeProvider, provider: str
) -> None:
    """`repolens ask` runs one `asyncio.run`: its provider connections close with it, not at GC."""
    fake_provider.script(FakeResponse(text="short answer"))
    chat = get_provider(provider, settings_for(fake_provider, provider))

    async def ask() -> Callable[[], bool]:
        """Whether the pooled client (the one the answer used, asked for again) is closed."""
        assert text_of(await collect(chat, ChatRequest(QUESTION, model=chat.model))) == "short answer"
        if provider == "openai":
            session = await openai_compat._CLIENTS.get(None, openai_compat._new_client)
            return lambda: session.closed
        client = await gemini._CLIENTS.get(None, httpx.AsyncClient)
        return lambda: client.is_closed

    is_closed = asyncio.run(ask())
    assert is_closed()
