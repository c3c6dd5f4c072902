"""POST /v1/messages, what test_messages.py leaves out: inbound images, top_p, a client tool_use
streamed with input_json_delta, mcp_servers naming a plugin's configured URL, permission_error,
MCP progress on the stream, and client tools and mcp_servers against a Claude model too.

One gateway for the module, on both fakes: ``gpt-test`` (OpenAI-format) and ``claude-test``
(Anthropic-format). Organisation ``acme`` has built-in plugins and ``tk``, the MCP test
server over streamable HTTP; ``plain`` has no plugins.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from tests.e2e.conftest import ACME_PLUGINS, anthropic_provider
from tests.fakes.anthropic_server import FakeAnthropic, fake_anthropic, fake_anthropic_server
from tests.fakes.anthropic_server import Reply as ClaudeReply
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.mcp.mcp_helpers import HttpServer, start_http_server
from tests.support import UPSTREAM_KEY, GatewayServer, make_settings

__all__ = ["fake_anthropic", "fake_anthropic_server"]  # fixtures used by name

CLAUDE = "claude-test"
JSON = dict[str, Any]
PNG = base64.b64encode(bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489")).decode()
IMAGE_MESSAGE = [
    {
        "role": "user",
        "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            {"type": "text", "text": "What is this?"},
        ],
    }
]
WEATHER = [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]


@pytest.fixture(scope="module")
def tk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    server = start_http_server(tmp_path_factory.mktemp("tk-http"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def both(
    tmp_path_factory: pytest.TempPathFactory, upstream_server: FakeOpenAI, fake_anthropic_server: FakeAnthropic, tk_server: HttpServer
) -> Iterator[GatewayServer]:
    tk = {"id": "tk", "mcp": {"url": tk_server.url, "headers": {"Authorization": f"Bearer {tk_server.token}"}}}
    settings = make_settings(
        tmp_path_factory.mktemp("messages-gaps"),
        upstream_server.base_url,
        providers=[
            {"id": "upstream", "kind": "openai", "base_url": upstream_server.base_url, "api_key": UPSTREAM_KEY, "timeout_s": 10, "max_retries": 0},
            anthropic_provider("claude", fake_anthropic_server.base_url, breaker_failures=100),
        ],
        models=[
            {"id": "gpt-test", "provider": "upstream", "upstream_model": "gpt-4o-mini"},
            {"id": "gpt-other", "provider": "upstream"},
            {"id": CLAUDE, "provider": "claude", "upstream_model": "claude-haiku-4-5"},
        ],
        organisations=[{"id": "acme", "plugins": [*(dict(p) for p in ACME_PLUGINS), tk]}, {"id": "plain"}],
    )
    server = GatewayServer(settings).start()
    yield server
    server.stop()


def client_for(server: GatewayServer, org: str = "acme", **key: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=server.mint(org, **key), max_retries=0, timeout=20)


def claude_blocks(body: JSON, kind: str) -> list[JSON]:
    return [b for m in body["messages"] if isinstance(m["content"], list) for b in m["content"] if b.get("type") == kind]


# -- inbound images and parameters ---------------------------------------------------------------------


def test_an_image_block_reaches_an_openai_model_as_an_image_url_part(both: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="A pixel."))
    message = client_for(both, "plain").messages.create(model="gpt-test", max_tokens=50, messages=IMAGE_MESSAGE, extra_body={"top_p": 0.3})  # type: ignore[arg-type]
    assert message.content[0].text == "A pixel."  # type: ignore[union-attr]
    sent = upstream.requests[0]
    assert sent["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "text", "text": "What is this?"},
            ],
        }
    ]
    assert sent["top_p"] == 0.3


def test_an_image_block_reaches_a_claude_model_as_an_image_block_through_the_loop(both: GatewayServer, fake_anthropic: FakeAnthropic) -> None:
    # acme has plugins, so the request is translated and run by the loop, not forwarded as it is.
    fake_anthropic.script([ClaudeReply(text="A pixel.")])
    message = client_for(both).messages.create(model=CLAUDE, max_tokens=50, messages=IMAGE_MESSAGE, extra_body={"top_p": 0.4})  # type: ignore[arg-type]
    assert message.content[0].text == "A pixel."  # type: ignore[union-attr]
    sent = fake_anthropic.requests[-1].body
    assert sent["tools"], "not the loop: no plugin tools were offered"
    (image,) = claude_blocks(sent, "image")
    assert image["source"] == {"type": "base64", "media_type": "image/png", "data": PNG}
    assert sent["top_p"] == 0.4


# -- client tools ---------------------------------------------------------------------------------------


def test_a_client_tool_use_streams_as_input_json_delta(both: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="Let me check.", tool_calls=[("get_weather", {"city": "Rome"})]))
    deltas: list[str] = []
    with client_for(both, "plain").messages.stream(model="gpt-test", max_tokens=100, messages=[{"role": "user", "content": "weather?"}], tools=WEATHER) as stream:  # type: ignore[arg-type]
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                deltas.append(event.delta.partial_json)
        final = stream.get_final_message()
    assert "".join(deltas) and orjson.loads("".join(deltas)) == {"city": "Rome"}
    assert [block.type for block in final.content] == ["text", "tool_use"]
    use = final.content[1]
    assert (use.name, use.input) == ("get_weather", {"city": "Rome"})  # type: ignore[union-attr]
    assert final.stop_reason == "tool_use"


def test_client_tools_round_trip_on_a_claude_model_beside_plugins(both: GatewayServer, fake_anthropic: FakeAnthropic) -> None:
    # Client tools alone mean no plugins (as on chat completions); mcp_servers adds one, so the loop runs.
    fake_anthropic.script([ClaudeReply(tool_use=[("get_weather", {"city": "Oslo"})]), ClaudeReply(text="Snow in Oslo.")])
    client = client_for(both)
    extra = {"mcp_servers": [{"type": "url", "name": "calculator", "url": "plugway://plugins/calculator"}]}
    first = client.messages.create(model=CLAUDE, max_tokens=100, messages=[{"role": "user", "content": "weather?"}], tools=WEATHER, extra_body=extra)  # type: ignore[arg-type]
    (use,) = first.content
    assert use.type == "tool_use" and (use.name, use.input) == ("get_weather", {"city": "Oslo"}) and first.stop_reason == "tool_use"
    offered = [tool["name"] for tool in fake_anthropic.requests[0].body["tools"]]
    assert "get_weather" in offered and "calculator__evaluate" in offered
    second = client.messages.create(
        model=CLAUDE,
        max_tokens=100,
        tools=WEATHER,  # type: ignore[arg-type]
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [use.model_dump()]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "snow"}]},
        ],
        extra_body=extra,
    )
    assert second.content[0].text == "Snow in Oslo."  # type: ignore[union-attr]
    (result,) = claude_blocks(fake_anthropic.requests[1].body, "tool_result")
    assert result["tool_use_id"] == use.id
    assert "snow" in orjson.dumps(result["content"]).decode()


def test_client_tools_alone_on_a_claude_model_go_natively(both: GatewayServer, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script([ClaudeReply(tool_use=[("get_weather", {"city": "Oslo"})])])
    first = client_for(both).messages.create(model=CLAUDE, max_tokens=100, messages=[{"role": "user", "content": "weather?"}], tools=WEATHER)  # type: ignore[arg-type]
    assert [(b.type, b.input) for b in first.content] == [("tool_use", {"city": "Oslo"})]  # type: ignore[union-attr]
    assert fake_anthropic.requests[0].body["tools"] == WEATHER  # the client's body as it is: no plugin tools


# -- mcp_servers ------------------------------------------------------------------------------------------


def test_mcp_servers_may_give_a_plugins_configured_url(both: GatewayServer, upstream: FakeOpenAI, tk_server: HttpServer) -> None:
    upstream.enqueue(Reply(tool_calls=[("tk__echo", {"text": "hi"})]), Reply(text="It said hi."))
    server = {"type": "url", "name": "tk", "url": tk_server.url, "tool_configuration": {"allowed_tools": ["echo"]}}
    message = client_for(both).messages.create(model="gpt-test", max_tokens=50, messages=[{"role": "user", "content": "echo"}], extra_body={"mcp_servers": [server]})
    assert [tool["function"]["name"] for tool in upstream.requests[0]["tools"]] == ["tk__echo"]
    assert [block.type for block in message.content] == ["mcp_tool_use", "mcp_tool_result", "text"]
    assert message.content[1].content[0]["text"] == "hi"  # type: ignore[union-attr]


def test_mcp_servers_choose_plugins_on_a_claude_model(both: GatewayServer, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script([ClaudeReply(tool_use=[("clock__now", {})]), ClaudeReply(text="It is now.")])
    server = {"type": "url", "name": "clock", "url": "plugway://plugins/clock"}
    message = client_for(both).messages.create(model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": "time?"}], extra_body={"mcp_servers": [server]})
    offered = [tool["name"] for tool in fake_anthropic.requests[0].body["tools"]]
    assert "clock__now" in offered and all(name.startswith("clock__") for name in offered)
    assert [block.type for block in message.content] == ["mcp_tool_use", "mcp_tool_result", "text"]
    assert (message.content[0].server_name, message.content[0].name) == ("clock", "now")  # type: ignore[union-attr]
    assert message.content[1].is_error is False  # type: ignore[union-attr]


def test_unconfigured_mcp_servers_are_400_on_a_claude_model(both: GatewayServer) -> None:
    server = {"type": "url", "name": "clock", "url": "https://mcp.example.com/sse"}
    with pytest.raises(anthropic.BadRequestError) as info:
        client_for(both).messages.create(model=CLAUDE, max_tokens=10, messages=[{"role": "user", "content": "hi"}], extra_body={"mcp_servers": [server]})
    assert info.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


# -- permission_error ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt-test", CLAUDE])
@pytest.mark.parametrize("key", [{"scopes": ["mcp"]}, {"models": ["gpt-other"]}], ids=["no-chat-scope", "model-not-allowed"])
def test_a_key_that_may_not_chat_with_the_model_gets_permission_error(both: GatewayServer, upstream: FakeOpenAI, model: str, key: JSON) -> None:
    with pytest.raises(anthropic.PermissionDeniedError) as info:
        client_for(both, "plain", **key).messages.create(model=model, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 403
    assert info.value.body == {"type": "error", "error": {"type": "permission_error", "message": info.value.body["error"]["message"]}}  # type: ignore[index]
    assert upstream.requests == []


# -- progress ---------------------------------------------------------------------------------------------------


def test_mcp_progress_reaches_the_stream_as_comments(both: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("tk__steps", {"count": 3, "seconds": 0.05})]), Reply(text="done"))
    body = {"model": "gpt-test", "max_tokens": 50, "messages": [{"role": "user", "content": "go"}], "stream": True}
    with httpx.stream("POST", f"{both.url}/v1/messages", json=body, headers={"x-api-key": both.mint()}, timeout=20) as response:
        lines = list(response.iter_lines())
    progress = [orjson.loads(line.split(" ", 3)[3]) for line in lines if line.startswith(": plugway tool_progress ")]
    assert [p["progress"] for p in progress] == [1, 2, 3]
    assert progress[-1]["total"] == 3 and progress[-1]["message"] == "step 3 of 3"
    names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    assert names[0] == "message_start" and names[-1] == "message_stop"


def test_the_sdk_reads_a_stream_with_progress_comments(both: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("tk__steps", {"count": 3, "seconds": 0.05})]), Reply(text="All steps done."))
    with client_for(both).messages.stream(model="gpt-test", max_tokens=50, messages=[{"role": "user", "content": "go"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "All steps done."
    assert [block.type for block in final.content] == ["mcp_tool_use", "mcp_tool_result", "text"]
    assert final.content[1].content[0]["text"] == "finished 3 steps"  # type: ignore[union-attr]
