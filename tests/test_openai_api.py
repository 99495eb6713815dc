"""The OpenAI-compatible API (`/v1/models`, `/v1/chat/completions`), driven by the `openai` SDK itself.

The session's `chat_server` (a real uvicorn server over an indexed fixture repository, the fake
provider configured as the default) answers; a private repository on a token-guarded git server
is ingested for the access tests.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest
from openai import OpenAI

from ingest.access import clear_cache
from tests.support.chat import ChatServer, provider_env, settings_for, sse_events
from tests.support.fake_provider import FakeProvider, FakeResponse
from tests.support.live_server import LiveServer

PRIVATE_SOURCE = 'def open_vault(code):\n    """Open the vault with a code."""\n    return code * 2\n'
QUESTION = "Where is the retry ceiling defined?"
README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture
def client_for() -> Iterator[Callable[..., OpenAI]]:
    """`client_for(server, **options)`: an `openai` SDK client of `server`'s /v1, closed after the test."""
    clients: list[OpenAI] = []

    def make(server: LiveServer, **options: Any) -> OpenAI:
        options = {"api_key": "unused", "max_retries": 0, "timeout": 60, **options}
        clients.append(OpenAI(base_url=f"{server.base_url}/v1", **options))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def api(chat_server: ChatServer, client_for: Callable[..., OpenAI]) -> OpenAI:
    return client_for(chat_server.server)


@pytest.fixture
def model(chat_server: ChatServer) -> str:
    return f"repolens/{chat_server.repo_id}"


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


def test_models_lists_each_repository_and_its_deep_mode(api: OpenAI, model: str) -> None:
    ids = [entry.id for entry in api.models.list()]
    assert model in ids and f"{model}+deep" in ids
    assert api.models.retrieve(model).owned_by == "repolens"
    with pytest.raises(openai.NotFoundError):
        api.models.retrieve("repolens/github.com/nobody/nothing")


def test_completion_answers_with_sources_and_usage(
    api: OpenAI, model: str, fake_provider: FakeProvider
) -> None:
    fake_provider.script(
        FakeResponse(text="It is set in weatherline/client.py:9-9.", chunks=3, usage=(120, 9))
    )
    completion = api.chat.completions.create(model=model, messages=ask(QUESTION))
    content = completion.choices[0].message.content or ""
    assert content.startswith("It is set in weatherline/client.py:9-9.")
    assert "\n\n**Sources**\n- [weatherline/client.py:" in content
    assert completion.choices[0].finish_reason == "stop" and completion.model == model
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert completion.usage is not None and completion.usage.prompt_tokens == 120
    assert completion.usage.total_tokens == 129
    extras = completion.model_extra["repolens"]
    assert extras["citations"][0]["path"] == "weatherline/client.py"
    # Links to a local repository's lines point back at this server, and work.
    assert extras["sources"][0]["url"].startswith(f"{api.base_url}".removesuffix("v1/"))
    assert httpx.get(extras["sources"][0]["url"], timeout=10).status_code == 200
    sent = fake_provider.requests[-1].body
    assert sent["stream"] is True and QUESTION in sent["messages"][-1]["content"]


def test_stream_sends_openai_chunks_then_usage(api: OpenAI, model: str, fake_provider: FakeProvider) -> None:
    fake_provider.script(FakeResponse(text="The ceiling is seven, see weatherline/client.py:9-9.", chunks=4))
    stream = api.chat.completions.create(
        model=model, messages=ask(QUESTION), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text.startswith("The ceiling is seven, see weatherline/client.py:9-9.")
    assert "**Sources**" in text
    finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert len({chunk.id for chunk in chunks}) == 1
    assert sum(1 for chunk in chunks if chunk.choices and chunk.choices[0].delta.content) >= 4


def test_stream_without_usage_has_no_usage_chunk(api: OpenAI, model: str) -> None:
    chunks = list(api.chat.completions.create(model=model, messages=ask(QUESTION), stream=True))
    assert all(chunk.choices for chunk in chunks) and all(chunk.usage is None for chunk in chunks)


def test_the_repolens_field_selects_the_provider_offline(api: OpenAI, model: str) -> None:
    completion = api.chat.completions.create(
        model=model, messages=ask(QUESTION), extra_body={"repolens": {"provider": "offline", "k": 4}}
    )
    assert "weatherline/client.py" in (completion.choices[0].message.content or "")
    assert completion.model_extra["repolens"]["provider"] == "offline"


def test_deep_model_researches(api: OpenAI, model: str) -> None:
    completion = api.chat.completions.create(
        model=f"{model}+deep",
        messages=ask("How does main reach HttpClient.send?"),
        extra_body={"repolens": {"provider": "offline"}},
    )
    assert "HttpClient" in (completion.choices[0].message.content or "")


def test_content_parts_and_history_are_understood(
    api: OpenAI, model: str, fake_provider: FakeProvider
) -> None:
    messages = [
        {"role": "developer", "content": "Answer in one line."},
        {"role": "user", "content": "What does the CLI do?"},
        {"role": "assistant", "content": "It prints forecasts."},
        {"role": "user", "content": [{"type": "text", "text": "And the retry ceiling?"}]},
    ]
    api.chat.completions.create(model=model, messages=messages)
    sent = fake_provider.requests[-1].body["messages"]
    assert "And the retry ceiling?" in sent[-1]["content"]
    assert any(turn["content"] == "It prints forecasts." for turn in sent)


def test_unknown_model_is_a_404_in_openai_shape(api: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        api.chat.completions.create(model="repolens/github.com/nobody/nothing", messages=ask("x"))
    error = raised.value.body
    assert error["code"] == "model_not_found" and error["type"] == "not_found_error"
    assert "/v1/models" in error["message"] and error["param"] == "model"
    assert "indexed: repolens/" in error["message"]  # what to ask for instead (other tests add repositories)


def test_a_model_may_name_the_repository_by_the_last_part_of_its_id(
    api: OpenAI, chat_server: ChatServer
) -> None:
    """`repolens/<name>`, as `repolens ask <name>` and MCP take it, when one indexed id ends so."""
    short = chat_server.repo_id.rsplit("/", 1)[-1]
    completion = api.chat.completions.create(
        model=f"repolens/{short}", messages=ask("How is the retry done?")
    )
    assert completion.choices[0].message.content
    assert api.models.retrieve(f"repolens/{short}+deep").id == f"repolens/{short}+deep"


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatServer]:
    """A server with no provider configured (its default is `offline`) over the indexed fixture repo."""
    from api.app import create_app
    from ingest import ingest
    from tests.support.repos import make_fixture_repo

    root = tmp_path_factory.mktemp("openai-bare")
    app = create_app(settings_for(root / "home"))
    repo = make_fixture_repo(root / "weatherline")
    report = ingest(str(repo), store=app.state.services.store, embedder=app.state.services.embedder)
    server = LiveServer(lambda: app).start()
    yield ChatServer(server=server, repo=repo, home=root / "home", repo_id=report.repo_id)
    server.stop()


def readme_example() -> str:
    """The Python example of README's "OpenAI-compatible API" section."""
    section = README.read_text(encoding="utf-8").split("## OpenAI-compatible API", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_example_runs_on_a_fresh_install(bare_server: ChatServer) -> None:
    """Copied into a new install (no provider configured), README's example raised `BadRequestError`
    (`openai: not configured`): it named `provider: openai` in `extra_body`. It must print the models and
    an answer with its sources there."""
    code = readme_example().replace("http://127.0.0.1:8000", bare_server.server.base_url)
    code = code.replace("github.com/encode/httpx", bare_server.repo_id)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})  # noqa: S102 (our own README's example)
    assert f"repolens/{bare_server.repo_id}+deep" in printed.getvalue()
    assert "**Sources**" in printed.getvalue()


@pytest.mark.parametrize("stream", [False, True])
def test_a_provider_not_configured_is_refused_not_answered_offline(
    bare_server: ChatServer, client_for: Callable[..., OpenAI], stream: bool
) -> None:
    """On a server without any provider, naming one is a 400 before any chunk (streamed too), not an
    offline answer that only `model_extra["repolens"]["provider"]` would give away."""
    api = client_for(bare_server.server)
    with pytest.raises(openai.BadRequestError) as raised:
        api.chat.completions.create(
            model=f"repolens/{bare_server.repo_id}",
            messages=ask(QUESTION),
            stream=stream,
            extra_body={"repolens": {"provider": "anthropic"}},
        )
    error = raised.value.body
    assert error["code"] == "not_configured" and error["type"] == "invalid_request_error"
    assert error["param"] == "repolens.provider"
    message = error["message"]
    assert "anthropic" in message and "ANTHROPIC_API_KEY" in message and "configured: offline" in message
    assert "then restart the server to pick it up" in message  # it read its settings at start


def test_a_model_the_provider_lacks_is_refused(
    bare_server: ChatServer, client_for: Callable[..., OpenAI]
) -> None:
    api = client_for(bare_server.server)
    with pytest.raises(openai.BadRequestError) as raised:
        api.chat.completions.create(
            model=f"repolens/{bare_server.repo_id}",
            messages=ask(QUESTION),
            extra_body={"repolens": {"model": "gpt-4o"}},
        )
    error = raised.value.body
    assert error["code"] == "not_configured" and error["param"] == "repolens.model"
    assert "gpt-4o" in error["message"] and "grounded-excerpts" in error["message"]
    # What is configured still answers: the default, and the offline provider by name.
    for options in ({}, {"provider": "offline", "model": "grounded-excerpts"}):
        completion = api.chat.completions.create(
            model=f"repolens/{bare_server.repo_id}", messages=ask(QUESTION), extra_body={"repolens": options}
        )
        assert completion.model_extra["repolens"]["provider"] == "offline"
        assert "weatherline/client.py" in (completion.choices[0].message.content or "")


def test_an_unconfigured_provider_fails_before_the_stream_starts(api: OpenAI, model: str) -> None:
    """With other providers configured the request was refused too, but only in an `error` frame
    after a `200`: the SDK raised a bare `APIError` mid-iteration instead of `BadRequestError`."""
    with pytest.raises(openai.BadRequestError) as raised:
        api.chat.completions.create(
            model=model, messages=ask(QUESTION), stream=True, extra_body={"repolens": {"provider": "google"}}
        )
    message = raised.value.body["message"]
    assert "GOOGLE_API_KEY" in message and "openai" in message and "anthropic" in message
    with pytest.raises(openai.BadRequestError) as unknown:
        api.chat.completions.create(
            model=model, messages=ask(QUESTION), extra_body={"repolens": {"provider": "nosuch"}}
        )
    assert unknown.value.body["param"] == "repolens.provider" and "openai" in unknown.value.body["message"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}, "user"),
        ({"messages": [{"role": "user", "content": "x"}], "repolens": {"topk": 3}}, "topk"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "role"),
    ],
)
def test_bad_requests_are_400_in_openai_shape(
    chat_server: ChatServer, model: str, body: dict[str, Any], expected: str
) -> None:
    payload = {"model": model, **body} if expected != "model" else body
    response = httpx.post(f"{chat_server.server.base_url}/v1/chat/completions", json=payload, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "bad_request"
    assert expected in error["message"]


def test_malformed_json_is_a_400(chat_server: ChatServer) -> None:
    response = httpx.post(
        f"{chat_server.server.base_url}/v1/chat/completions",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    # Refused by the app-wide JSON guard (api.middleware) before the route, in the app's error shape.
    assert response.status_code == 400 and response.json()["code"] == "bad_request"


def test_provider_failure_keeps_its_status(api: OpenAI, model: str, fake_provider: FakeProvider) -> None:
    fake_provider.script(FakeResponse(status=429))
    with pytest.raises(openai.RateLimitError) as raised:
        api.chat.completions.create(model=model, messages=ask(QUESTION))
    assert raised.value.body["code"] == "rate_limit"


def test_failure_mid_stream_raises_in_the_client(
    api: OpenAI, model: str, fake_provider: FakeProvider
) -> None:
    fake_provider.script(FakeResponse(text="one two three four five", fail_after=2))
    stream = api.chat.completions.create(model=model, messages=ask(QUESTION), stream=True)
    received: list[str] = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received).startswith("one two")


def test_pages_of_other_sites_are_refused(chat_server: ChatServer, model: str) -> None:
    response = httpx.post(
        f"{chat_server.server.base_url}/v1/chat/completions",
        json={"model": model, "messages": ask("x")},
        headers={"Origin": "https://evil.example"},
        timeout=30,
    )
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden_origin"


@dataclass
class PrivateServer:
    server: LiveServer
    model: str
    token: str


@pytest.fixture(scope="module")
def private_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateServer]:
    from api.app import create_app
    from tests.support.git_http_server import GitHttpServer

    root = tmp_path_factory.mktemp("openai-private")
    git = GitHttpServer(root / "git")
    git.add_repo("acme/vault", {"vault/lock.py": PRIVATE_SOURCE})
    server = LiveServer(lambda: create_app(settings_for(root / "home", **provider_env()))).start()
    try:
        body = {"repo_url": git.url_for("acme/vault"), "type": "git", "token": git.token}
        done = sse_events(httpx.post(f"{server.base_url}/api/repos", json=body, timeout=60).text)[-1]
        assert done["type"] == "done", done
        yield PrivateServer(server=server, model=f"repolens/{done['repo']['id']}", token=git.token)
    finally:
        server.stop()
        git.close()


def test_private_repository_needs_its_token(
    private_server: PrivateServer, client_for: Callable[..., OpenAI]
) -> None:
    clear_cache()
    messages = ask("What does open_vault return?")
    extra = {"provider": "offline"}
    with pytest.raises(openai.AuthenticationError) as raised:
        client_for(private_server.server).chat.completions.create(
            model=private_server.model, messages=messages, extra_body={"repolens": extra}
        )
    assert raised.value.body["code"] == "auth_failed" and "X-Repo-Token" in raised.value.body["message"]
    with pytest.raises(openai.AuthenticationError) as wrong:
        client_for(private_server.server).chat.completions.create(
            model=private_server.model,
            messages=messages,
            extra_body={"repolens": {**extra, "token": "nope-123"}},
        )
    assert "nope-123" not in str(wrong.value.body)
    by_header = client_for(private_server.server, default_headers={"X-Repo-Token": private_server.token})
    completion = by_header.chat.completions.create(
        model=private_server.model, messages=messages, extra_body={"repolens": extra}
    )
    content = completion.choices[0].message.content or ""
    assert "vault/lock.py" in content and private_server.token not in content
    streamed = by_header.chat.completions.create(
        model=private_server.model, messages=messages, stream=True, extra_body={"repolens": extra}
    )
    assert "vault/lock.py" in "".join(chunk.choices[0].delta.content or "" for chunk in streamed)


API_KEY = "rl-server-key-7f3a9c2e51"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server with `REPOLENS_API_KEY` set: `/v1` and `/mcp` are behind the app-wide key."""
    from api.app import create_app

    home = tmp_path_factory.mktemp("keyed") / "home"
    server = LiveServer(lambda: create_app(settings_for(home, REPOLENS_API_KEY=API_KEY))).start()
    yield server
    server.stop()


def test_the_server_api_key_guards_v1(keyed_server: LiveServer, client_for: Callable[..., OpenAI]) -> None:
    with pytest.raises(openai.AuthenticationError):
        client_for(keyed_server).models.list()
    with pytest.raises(openai.AuthenticationError):
        client_for(keyed_server, api_key="wrong").models.list()
    # The `openai` SDK sends its api_key as `Authorization: Bearer`, which is what the server checks.
    keyed = client_for(keyed_server, api_key=API_KEY)
    assert keyed.models.list().data == []
    with pytest.raises(openai.NotFoundError) as raised:
        keyed.chat.completions.create(model="gpt-4o", messages=ask("x"))
    assert "nothing is indexed yet" in raised.value.body["message"]


async def test_the_server_api_key_guards_mcp(keyed_server: LiveServer) -> None:
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    url = f"{keyed_server.base_url}/mcp"
    refused = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=10)
    assert refused.status_code == 401 and API_KEY not in refused.text
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with (
        httpx2.AsyncClient(headers=headers) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        assert "search_code" in {tool.name for tool in (await client.list_tools()).tools}
