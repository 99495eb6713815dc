"""Anthropic (native Messages API) and AWS Bedrock (ConverseStream through the AdalFlow bridge)
against the fake provider server over loopback: the real SDK clients (anthropic, boto3/botocore via
AdalFlow's BedrockAPIClient) read the vendors' real wire formats (SSE; AWS event-stream framing)."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap

import httpx
import pytest

from rag.providers import (
    ChatRequest,
    Message,
    ProviderError,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    Usage,
)
from rag.providers.adalflow_bridge import AdalFlowProvider
from rag.providers.catalog import ADALFLOW_OPENAI_VENDORS, PROVIDERS, get_provider, list_providers
from rag.redact import install_log_redaction
from rag.settings import Settings
from tests.support.chat import ChatServer, sse_events
from tests.support.fake_provider import (
    FAKE_API_KEY,
    FAKE_AWS_KEY_ID,
    FAKE_AWS_SECRET,
    FakeProvider,
    FakeResponse,
)
from tests.support.fake_vendors import encode_event_message
from tests.support.git_http_server import closed_port
from tests.support.provider_streams import GREP, QUESTION, collect, text_of

VENDORS = ["anthropic", "bedrock"]
BEDROCK_MODEL = "anthropic.claude-3-5-sonnet-20241022-v2:0"


def settings_for(fake: FakeProvider, **extra: str) -> Settings:
    env = {**fake.anthropic_env(), **fake.bedrock_env(), **extra}
    return Settings.from_env(env, dotenv=None)


def provider(fake: FakeProvider, name: str, **extra: str):
    model = BEDROCK_MODEL if name == "bedrock" else None
    return get_provider(name, settings_for(fake, **extra), model)


@pytest.mark.parametrize("name", VENDORS)
async def test_streams_text_as_it_arrives_with_usage(fake_provider: FakeProvider, name: str) -> None:
    fake_provider.script(FakeResponse(text="alpha beta gamma delta", usage=(42, 4)))
    chat = provider(fake_provider, name)
    events = await collect(chat, ChatRequest(QUESTION, model=chat.model, max_tokens=100))

    assert [event.text for event in events if isinstance(event, TextDelta)] == [
        "alpha ",
        "beta ",
        "gamma ",
        "delta",
    ]
    assert events[-1] == Usage(42, 4)
    sent = fake_provider.requests[-1]
    if name == "anthropic":
        assert sent.path == "/v1/messages"
        assert sent.api_key == FAKE_API_KEY
        assert sent.body["stream"] is True and sent.body["max_tokens"] == 100
        assert sent.body["system"] == "Answer briefly."
        assert sent.body["messages"] == [{"role": "user", "content": "What does main.py do?"}]
    else:
        assert sent.path == "/model/anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse-stream"
        assert sent.api_key == FAKE_AWS_KEY_ID, "signed with SigV4 for the configured access key"
        assert "/us-east-1/bedrock/aws4_request" in sent.headers["authorization"]
        assert FAKE_AWS_SECRET not in json.dumps(sent.headers) + json.dumps(sent.body)
        assert sent.body["system"] == [{"text": "Answer briefly."}]
        assert sent.body["messages"] == [{"role": "user", "content": [{"text": "What does main.py do?"}]}]
        assert sent.body["inferenceConfig"] == {"maxTokens": 100, "temperature": 0.2}


@pytest.mark.parametrize("name", VENDORS)
async def test_first_text_arrives_before_the_stream_ends(fake_provider: FakeProvider, name: str) -> None:
    fake_provider.script(FakeResponse(text="one two three four", delay=0.15))
    chat = provider(fake_provider, name)
    stream = chat.stream(ChatRequest(QUESTION, model=chat.model))
    loop = asyncio.get_running_loop()
    started = loop.time()
    first = await anext(aiter(stream))
    first_at = loop.time() - started
    rest = [event async for event in stream]
    assert first == TextDelta("one ")
    assert loop.time() - started - first_at > 0.35, "the rest arrived later, piece by piece"
    assert text_of(rest) == "two three four"


@pytest.mark.parametrize("name", VENDORS)
async def test_tool_calls_are_assembled_from_streamed_fragments(
    fake_provider: FakeProvider, name: str
) -> None:
    fake_provider.script(
        FakeResponse(
            text="Let me search.",
            tool_calls=[
                {"id": "call_a", "name": "grep", "arguments": {"pattern": "def main", "path": "src/"}},
                {"id": "call_b", "name": "read_file", "arguments": {"path": "main.py"}},
            ],
        )
    )
    chat = provider(fake_provider, name)
    events = await collect(chat, ChatRequest(QUESTION, model=chat.model, tools=[GREP]))

    assert text_of(events) == "Let me search."
    calls = [event for event in events if isinstance(event, ToolCallEvent)]
    assert calls == [
        ToolCallEvent("call_a", "grep", {"pattern": "def main", "path": "src/"}),
        ToolCallEvent("call_b", "read_file", {"path": "main.py"}),
    ]
    body = fake_provider.requests[-1].body
    if name == "anthropic":
        assert body["tools"] == [
            {"name": "grep", "description": "Search the code", "input_schema": GREP.parameters}
        ]
    else:
        spec = body["toolConfig"]["tools"][0]["toolSpec"]
        assert spec == {
            "name": "grep",
            "description": "Search the code",
            "inputSchema": {"json": GREP.parameters},
        }


@pytest.mark.parametrize("name", VENDORS)
async def test_tool_results_are_sent_back_in_the_vendor_shape(fake_provider: FakeProvider, name: str) -> None:
    call = ToolCall("call_a", "grep", {"pattern": "x"})
    history = [
        *QUESTION,
        Message("assistant", "Searching.", tool_calls=(call,)),
        Message("tool", "main.py:1: x = 1", tool_call_id="call_a", name="grep"),
        Message("user", "And then?"),
    ]
    fake_provider.script(FakeResponse(text="Done."))
    chat = provider(fake_provider, name)
    assert text_of(await collect(chat, ChatRequest(history, model=chat.model, tools=[GREP]))) == "Done."
    messages = fake_provider.requests[-1].body["messages"]
    if name == "anthropic":
        assert messages[1] == {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Searching."},
                {"type": "tool_use", "id": "call_a", "name": "grep", "input": {"pattern": "x"}},
            ],
        }
        assert messages[2] == {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "call_a", "content": "main.py:1: x = 1"}],
        }
        assert messages[3] == {"role": "user", "content": "And then?"}
    else:
        assert messages[1]["content"][1] == {
            "toolUse": {"toolUseId": "call_a", "name": "grep", "input": {"pattern": "x"}}
        }
        assert messages[2] == {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": "call_a", "content": [{"text": "main.py:1: x = 1"}]}},
                {"text": "And then?"},
            ],
        }, "Bedrock wants alternating roles: the result and the next question share one user turn"


ERRORS = [
    (FakeResponse(status=429), "rate_limit"),
    (FakeResponse(status=500), "unavailable"),
    (FakeResponse(status=400, error_code="context_length_exceeded"), "context_length"),
]


@pytest.mark.parametrize("name", VENDORS)
@pytest.mark.parametrize(("script", "code"), ERRORS)
async def test_http_errors_become_provider_error_codes(
    fake_provider: FakeProvider, name: str, script: FakeResponse, code: str
) -> None:
    fake_provider.script(script, script)  # a retried request would get the same answer
    chat = provider(fake_provider, name)
    with pytest.raises(ProviderError) as caught:
        await collect(chat, ChatRequest(QUESTION, model=chat.model))
    assert caught.value.code == code
    assert caught.value.provider == name


async def test_anthropic_overload_and_unknown_model(fake_provider: FakeProvider) -> None:
    fake_provider.script(FakeResponse(status=529), FakeResponse(status=404))
    chat = provider(fake_provider, "anthropic")
    with pytest.raises(ProviderError) as overloaded:
        await collect(chat, ChatRequest(QUESTION, model=chat.model))
    with pytest.raises(ProviderError) as missing:
        await collect(chat, ChatRequest(QUESTION, model="claude-nope"))
    assert (overloaded.value.code, missing.value.code) == ("unavailable", "model_not_found")
    assert "claude-nope" in missing.value.message


@pytest.mark.parametrize("name", VENDORS)
async def test_rejected_credentials_name_the_variables_and_hide_the_secrets(
    fake_provider: FakeProvider, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    install_log_redaction()  # what the CLI and the server do at start-up
    caplog.set_level(logging.DEBUG)  # botocore logs every request's headers at DEBUG
    fake_provider.script(FakeResponse(status=401 if name == "anthropic" else 403))
    chat = provider(fake_provider, name)
    with pytest.raises(ProviderError) as caught:
        await collect(chat, ChatRequest(QUESTION, model=chat.model))
    assert caught.value.code == "auth"
    assert ("ANTHROPIC_API_KEY" if name == "anthropic" else "AWS_SECRET_ACCESS_KEY") in caught.value.message
    shown = f"{caught.value} {caught.value!r} {caplog.text}"
    for secret in (FAKE_API_KEY, FAKE_AWS_SECRET, FAKE_AWS_KEY_ID):
        assert secret not in shown


@pytest.mark.parametrize("name", VENDORS)
@pytest.mark.parametrize("mode", ["error_event", "close"])
async def test_a_stream_that_breaks_keeps_the_text_so_far(
    fake_provider: FakeProvider, name: str, mode: str
) -> None:
    fake_provider.script(FakeResponse(text="alpha beta gamma delta", fail_after=2, fail_mode=mode))
    chat = provider(fake_provider, name)
    received: list = []
    with pytest.raises(ProviderError) as caught:
        async for event in chat.stream(ChatRequest(QUESTION, model=chat.model)):
            received.append(event)
    assert text_of(received) == "alpha beta "
    assert caught.value.code == "unavailable"
    assert len(fake_provider.requests) == 1, "no retry once text was produced"


@pytest.mark.parametrize("name", VENDORS)
async def test_cancelling_the_consumer_closes_the_vendor_stream(
    fake_provider: FakeProvider, name: str
) -> None:
    fake_provider.script(FakeResponse(text="word " * 100, delay=0.05))
    chat = provider(fake_provider, name)
    seen = asyncio.Event()

    async def consume() -> None:
        async for event in chat.stream(ChatRequest(QUESTION, model=chat.model)):
            if isinstance(event, TextDelta):
                seen.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(seen.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(fake_provider.wait_for_disconnect, 5)
    assert fake_provider.completed == 0


@pytest.mark.parametrize("name", VENDORS)
async def test_a_refused_connection_is_unavailable(name: str) -> None:
    base = f"http://127.0.0.1:{closed_port()}"
    env = {"ANTHROPIC_API_KEY": FAKE_API_KEY, "ANTHROPIC_BASE_URL": base}
    env |= {"AWS_ACCESS_KEY_ID": FAKE_AWS_KEY_ID, "AWS_SECRET_ACCESS_KEY": FAKE_AWS_SECRET}
    env |= {"AWS_ENDPOINT_URL_BEDROCK_RUNTIME": base}
    chat = get_provider(
        name, Settings.from_env(env, dotenv=None), BEDROCK_MODEL if name == "bedrock" else None
    )
    with pytest.raises(ProviderError) as caught:
        await collect(chat, ChatRequest(QUESTION, model=chat.model))
    assert caught.value.code == "unavailable"


def test_the_fake_event_stream_is_what_botocore_decodes() -> None:
    from botocore.eventstream import EventStreamBuffer

    frame = encode_event_message({":event-type": "contentBlockDelta", ":message-type": "event"}, b'{"x":1}')
    buffer = EventStreamBuffer()
    buffer.add_data(frame[:7])
    buffer.add_data(frame[7:])
    (message,) = list(buffer)
    assert message.headers == {":event-type": "contentBlockDelta", ":message-type": "event"}
    assert message.payload == b'{"x":1}'


def test_catalogue_lists_the_new_providers_with_their_variables() -> None:
    settings = Settings.from_env({"ANTHROPIC_API_KEY": "sk-ant-123456"}, dotenv=None)
    by_id = {entry["id"]: entry for entry in list_providers(settings)}
    assert by_id["anthropic"]["configured"] and by_id["anthropic"]["default"]
    assert by_id["bedrock"]["env"][:4] == [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "AWS_SESSION_TOKEN",
    ]
    assert "AWS_ROLE_ARN" in by_id["bedrock"]["env"]
    assert {vendor.id for vendor in ADALFLOW_OPENAI_VENDORS} <= set(by_id)
    assert all(by_id[name]["models"] for name in by_id)
    with pytest.raises(ProviderError) as caught:
        get_provider("bedrock", Settings.from_env({}, dotenv=None))
    assert caught.value.code == "not_configured" and "AWS_ACCESS_KEY_ID" in caught.value.message


def test_titan_on_bedrock_runs_deep_research_without_tools(fake_provider: FakeProvider) -> None:
    claude = provider(fake_provider, "bedrock")
    titan = get_provider("bedrock", settings_for(fake_provider), "amazon.titan-text-express-v1")
    assert isinstance(claude, AdalFlowProvider) and isinstance(titan, AdalFlowProvider)
    assert (claude.supports_tools, titan.supports_tools) == (True, False)


def test_openai_style_vendors_use_adalflow_clients_endpoints_and_key_names() -> None:
    """The catalogue's base URL and key variable per vendor are the ones AdalFlow's client uses."""
    import inspect

    from rag.providers.adalflow_bridge import load_adalflow

    load_adalflow()
    from adalflow.components.model_client.deepseek_client import DeepSeekClient
    from adalflow.components.model_client.fireworks_client import FireworksClient
    from adalflow.components.model_client.mistral_client import MistralClient
    from adalflow.components.model_client.sambanova_client import SambaNovaClient
    from adalflow.components.model_client.xai_client import XAIClient

    clients = {
        "deepseek": DeepSeekClient,
        "fireworks": FireworksClient,
        "mistral": MistralClient,
        "sambanova": SambaNovaClient,
        "xai": XAIClient,
    }
    vendors = {vendor.id: vendor for vendor in ADALFLOW_OPENAI_VENDORS}
    for name, client in clients.items():
        parameters = inspect.signature(client.__init__).parameters
        assert vendors[name].base_url == parameters["base_url"].default, name
        assert vendors[name].key_variable == parameters["env_api_key_name"].default, name
        assert PROVIDERS[name].required == (vendors[name].key_variable,)


@pytest.mark.parametrize("vendor", [vendor.id for vendor in ADALFLOW_OPENAI_VENDORS])
async def test_openai_style_vendors_stream_from_their_endpoint(
    fake_provider: FakeProvider, vendor: str
) -> None:
    info = next(item for item in ADALFLOW_OPENAI_VENDORS if item.id == vendor)
    env = {info.key_variable: FAKE_API_KEY, info.base_url_variable: fake_provider.base_url}
    fake_provider.script(FakeResponse(text="hello there"))
    chat = get_provider(vendor, Settings.from_env(env, dotenv=None))
    assert text_of(await collect(chat, ChatRequest(QUESTION, model=chat.model))) == "hello there"
    assert fake_provider.requests[-1].body["model"] == info.models[0].id


def test_adalflow_imports_offline_and_without_torch(tmp_path) -> None:
    """In a fresh interpreter with every outbound connection refused and an empty tiktoken cache."""
    script = textwrap.dedent(
        """
        import socket, sys
        def refuse(*args, **kwargs):
            raise OSError("network disabled in this test")
        socket.create_connection = refuse
        socket.socket.connect = lambda self, *a: refuse()
        import asyncio
        from rag.providers import ChatRequest, Message
        from rag.providers.adalflow_bridge import AdalFlowProvider, load_adalflow

        class Adapter:  # the bridge's own path: it must seed tiktoken before importing AdalFlow
            def api_kwargs(self, request, model):
                return {}
            def events(self, chunks):
                yield from chunks
            def error(self, error, model):
                return None
            def close(self, completion):
                pass

        class Client:
            def call(self, api_kwargs, model_type):
                return ["chunk"]
            def parse_chat_completion(self, completion):
                from adalflow.core.types import GeneratorOutput
                return GeneratorOutput(raw_response=iter(completion))

        async def run():
            provider = AdalFlowProvider("test", "m", Client, Adapter())
            return [event async for event in provider.stream(ChatRequest([Message("user", "hi")], "m"))]

        assert asyncio.run(run()) == ["chunk"]
        from adalflow.components.model_client.bedrock_client import BedrockAPIClient
        from adalflow.core.tokenizer import Tokenizer
        assert Tokenizer().count_tokens("hello world") == 2
        print("torch" in sys.modules, "transformers" in sys.modules)
        """
    )
    env = {"REPOLENS_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False", "False"]
    assert "MLflow" not in result.stderr


@pytest.mark.parametrize("name", VENDORS)
def test_chat_api_streams_from_the_vendor_and_keeps_secrets_out_of_frames(
    chat_server: ChatServer, fake_provider: FakeProvider, name: str
) -> None:
    model = BEDROCK_MODEL if name == "bedrock" else "claude-sonnet-4-5"
    url = f"{chat_server.server.base_url}/chat/completions/stream"
    fake_provider.script(FakeResponse(text="Service.run calls send.", chunks=3))
    body = chat_server.request(provider=name, model=model, protocol="events")
    response = httpx.post(url, json=body, timeout=20)
    assert response.status_code == 200
    events = sse_events(response.text)
    assert (
        "".join(event.get("text", "") for event in events if event["type"] == "token")
        == "Service.run calls send."
    )

    fake_provider.script(FakeResponse(status=401 if name == "anthropic" else 403))
    failed = httpx.post(url, json=body, timeout=20)
    errors = [event for event in sse_events(failed.text) if event["type"] == "error"]
    assert [error["code"] for error in errors] == ["auth"]
    for secret in (FAKE_API_KEY, FAKE_AWS_SECRET):
        assert secret not in response.text + failed.text


def test_config_routes_list_the_new_providers_and_their_models(live_server_factory, tmp_path) -> None:
    settings = Settings.from_env(
        {
            "REPOLENS_HOME": str(tmp_path),
            "AWS_ACCESS_KEY_ID": FAKE_AWS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": FAKE_AWS_SECRET,
        },
        dotenv=None,
    )
    server = live_server_factory(settings)
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        models_config = client.get("/models/config").json()
        models = client.get("/api/models").json()
    assert models_config["defaultProvider"] == "bedrock"
    listed = {entry["id"]: entry for entry in models_config["providers"]}
    assert {"anthropic", "bedrock", "deepseek", "mistral", "groq"} <= set(listed)
    assert {"id": BEDROCK_MODEL, "name": "Claude 3.5 Sonnet v2"} in listed["bedrock"]["models"]
    assert {"id": "claude-sonnet-4-5", "name": "Claude Sonnet 4.5"} in listed["anthropic"]["models"]
    bedrock = next(entry for entry in models["providers"] if entry["id"] == "bedrock")
    assert bedrock["configured"] is True
    assert FAKE_AWS_SECRET not in json.dumps(models) + json.dumps(models_config)


async def test_bedrock_assumes_aws_role_arn_first_and_signs_with_the_role(
    fake_provider: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.support.fake_vendors import ROLE_CREDENTIALS

    install_log_redaction()
    caplog.set_level(logging.DEBUG)
    role = "arn:aws:iam::123456789012:role/bedrock-reader"
    fake_provider.script(FakeResponse(text="hello from a role"))
    sts_url = fake_provider.bedrock_endpoint_url
    chat = provider(fake_provider, "bedrock", AWS_ROLE_ARN=role, AWS_ENDPOINT_URL_STS=sts_url)
    assert text_of(await collect(chat, ChatRequest(QUESTION, model=chat.model))) == "hello from a role"

    sts, converse = fake_provider.requests[-2:]
    assert sts.body["Action"] == "AssumeRole" and sts.body["RoleArn"] == role
    assert sts.api_key == FAKE_AWS_KEY_ID, "the configured keys ask for the role"
    assert converse.api_key == ROLE_CREDENTIALS["AccessKeyId"], "the role's keys sign the call"
    assert converse.headers["x-amz-security-token"] == ROLE_CREDENTIALS["SessionToken"]
    for secret in (FAKE_AWS_SECRET, ROLE_CREDENTIALS["SecretAccessKey"], ROLE_CREDENTIALS["SessionToken"]):
        assert secret not in caplog.text


async def test_deep_research_runs_on_anthropic_tools_and_on_titan_in_json_mode(
    fake_provider: FakeProvider,
) -> None:
    """Native tool use on Claude (`tool_use` out, `tool_result` back); Titan cannot take tools in
    Converse, so research drives it with JSON actions in the text."""
    from rag.research import ResearchOptions, run_research
    from tests.test_research_tools import shared_research_index

    index = shared_research_index()

    async def research(name: str, env: dict[str, str], model: str | None = None) -> list[dict]:
        events = run_research(
            index.with_env(env),
            repo_id=index.repo_id,
            question="Where is the HTTP request sent?",
            provider=name,
            model=model,
            options=ResearchOptions(),
        )
        return [event async for event in events]

    fake_provider.script(
        FakeResponse(text="plan"),
        FakeResponse(
            text=None, tool_calls=[{"id": "toolu_1", "name": "find_symbol", "arguments": {"name": "send"}}]
        ),
        FakeResponse(text="enough"),
        FakeResponse(text="answer"),
    )
    events = await research("anthropic", fake_provider.anthropic_env())
    calls = [e for e in events if e["type"] == "research" and e["event"] == "tool_call"]
    assert [call["tool"] for call in calls] == ["find_symbol"]
    third = fake_provider.requests[2].body
    assert third["tools"] and third["messages"][-1]["content"][0]["type"] == "tool_result"
    assert "HttpClient.send" in third["messages"][-1]["content"][0]["content"]

    fake_provider.reset()
    fake_provider.script(
        FakeResponse(text="plan"),
        FakeResponse(text='{"action": "tool", "tool": "grep", "args": {"pattern": "def send"}}'),
        FakeResponse(text='{"action": "finish", "summary": "send is in weatherline/client.py"}'),
        FakeResponse(text="answer"),
    )
    events = await research("bedrock", fake_provider.bedrock_env(), "amazon.titan-text-express-v1")
    calls = [e for e in events if e["type"] == "research" and e["event"] == "tool_call"]
    assert [call["tool"] for call in calls] == ["grep"]
    assert all("toolConfig" not in request.body for request in fake_provider.requests)
