"""POST /v1/messages end to end: the official anthropic SDK -> a real gateway -> fake upstreams
(OpenAI-format and Anthropic-format)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from runtime.json_types import JSON
from tests.e2e.conftest import ACME_PLUGINS, anthropic_provider
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.anthropic_server import Reply as ClaudeReply
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.frontdoors.conftest import CLAUDE
from tests.mcp.mcp_helpers import HttpServer, start_http_server
from tests.support import UPSTREAM_KEY, Gateways, GatewayServer, make_settings

HELLO = [{"role": "user", "content": "hello"}]


def claude_client(server: GatewayServer, org: str = "acme", **limits: int) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=server.mint(org, **limits), max_retries=0, timeout=20)


# A client of the MCP connector (its beta header): server-side calls are shown to it as MCP blocks.
MCP_CONNECTOR = {"anthropic-beta": "mcp-client-2025-11-20"}


def connector_client(server: GatewayServer, org: str = "acme") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=server.mint(org), max_retries=0, timeout=20, default_headers=MCP_CONNECTOR)


# -- any model, translated ------------------------------------------------------------------------------


def test_an_openai_model_answers_in_anthropics_shape(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="Hi there.", prompt_tokens=21, completion_tokens=4))
    message = claude_client(gateway, "bare").messages.create(
        model="gpt-test", max_tokens=100, system="Be kind.", messages=HELLO, stop_sequences=["END"], metadata={"user_id": "u-7"},
        service_tier="auto", extra_body={"temperature": 0.5, "top_k": 3},
    )
    assert message.content[0].type == "text" and message.content[0].text == "Hi there."
    assert (message.role, message.stop_reason, message.model) == ("assistant", "end_turn", "gpt-test")
    assert (message.usage.input_tokens, message.usage.output_tokens) == (21, 4)
    sent = upstream.requests[0]
    assert sent["messages"] == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hello"}]
    assert (sent["max_tokens"], sent["temperature"], sent["stop"], sent["user"]) == (100, 0.5, ["END"], "u-7")
    assert "top_k" not in sent


def test_plugins_run_server_side_as_mcp_blocks(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(
        Reply(text="Computing.", tool_calls=[("calculator__evaluate", {"expression": "6*7"})], prompt_tokens=50, completion_tokens=5),
        Reply(text="It is 42.", prompt_tokens=70, completion_tokens=4),
    )
    message = connector_client(gateway).messages.create(model="gpt-test", max_tokens=200, messages=[{"role": "user", "content": "6*7?"}])
    assert [block.type for block in message.content] == ["text", "mcp_tool_use", "mcp_tool_result", "text"]
    use, result = message.content[1], message.content[2]
    assert (use.name, use.server_name, use.input) == ("evaluate", "calculator", {"expression": "6*7"})  # type: ignore[union-attr]
    assert result.tool_use_id == use.id and result.is_error is False  # type: ignore[union-attr]
    assert json.loads(result.content[0]["text"])["result"] == 42  # type: ignore[union-attr]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (120, 9)
    assert message.stop_reason == "end_turn"


def test_streamed_loop_with_pings_while_tools_run(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("testkit__slow", {"seconds": 0.5})], prompt_tokens=10, completion_tokens=2), Reply(text="Slept well.", prompt_tokens=20, completion_tokens=3))
    kinds: list[str] = []
    with connector_client(gateway).messages.stream(model="gpt-test", max_tokens=100, messages=HELLO) as stream:
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "ping" not in kinds  # the SDK swallows pings; counted over raw HTTP below
    assert [block.type for block in final.content] == ["mcp_tool_use", "mcp_tool_result", "text"]
    assert final.content[2].text == "Slept well."  # type: ignore[union-attr]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (30, 5)


def test_raw_stream_has_pings_and_anthropic_event_names(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("testkit__slow", {"seconds": 0.6})]), Reply(text="done"))
    body = {"model": "gpt-test", "max_tokens": 50, "messages": HELLO, "stream": True}
    with httpx.stream("POST", f"{gateway.url}/v1/messages", json=body, headers={"x-api-key": gateway.mint()}, timeout=10) as response:
        lines = [line for line in response.iter_lines() if line.startswith("event: ")]
    names = [line.removeprefix("event: ") for line in lines]
    assert names.count("ping") >= 2
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]


def test_client_tools_round_trip(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    client = claude_client(gateway, "bare")
    upstream.enqueue(Reply(tool_calls=[("get_weather", {"city": "Rome"})]))
    first = client.messages.create(model="gpt-test", max_tokens=100, messages=[{"role": "user", "content": "weather?"}], tools=tools, tool_choice={"type": "any"})  # type: ignore[arg-type]
    (use,) = first.content
    assert use.type == "tool_use" and use.input == {"city": "Rome"} and first.stop_reason == "tool_use"
    assert upstream.requests[0]["tool_choice"] == "required"
    upstream.enqueue(Reply(text="Rainy in Rome."))
    second = client.messages.create(
        model="gpt-test",
        max_tokens=100,
        tools=tools,  # type: ignore[arg-type]
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [use.model_dump()]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "rain"}, {"type": "text", "text": "and so?"}]},
        ],
    )
    assert second.content[0].text == "Rainy in Rome."  # type: ignore[union-attr]
    roles = [m["role"] for m in upstream.requests[1]["messages"]]
    assert roles == ["user", "assistant", "tool", "user"]


# -- MCP servers naming plugins -----------------------------------------------------------------------------


def test_mcp_servers_choose_plugins_and_tools(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="ok"))
    claude_client(gateway).messages.create(
        model="gpt-test",
        max_tokens=10,
        messages=HELLO,
        extra_body={"mcp_servers": [{"type": "url", "name": "clock", "url": "plugway://plugins/clock", "tool_configuration": {"allowed_tools": ["now"]}}]},
    )
    assert [t["function"]["name"] for t in upstream.requests[0]["tools"]] == ["clock__now"]


@pytest.mark.parametrize(
    ("server", "param"),
    [
        ({"type": "url", "name": "unknown-plugin", "url": "plugway://plugins/unknown-plugin"}, "unknown-plugin"),
        ({"type": "url", "name": "clock", "url": "https://mcp.example.com/sse"}, "https://mcp.example.com/sse"),
    ],
)
def test_unconfigured_mcp_servers_are_400(gateway: GatewayServer, server: dict, param: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        claude_client(gateway).messages.create(model="gpt-test", max_tokens=10, messages=HELLO, extra_body={"mcp_servers": [server]})
    assert info.value.body["type"] == "error" and info.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert param in info.value.body["error"]["message"]  # type: ignore[index]


# -- errors in Anthropic's envelope, raised as the SDK's own classes -------------------------------------------


def test_errors_are_anthropic_shaped(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    with pytest.raises(anthropic.AuthenticationError) as auth:
        anthropic.Anthropic(base_url=gateway.url, api_key="pw_wrong", max_retries=0).messages.create(model="gpt-test", max_tokens=5, messages=HELLO)
    assert auth.value.body == {"type": "error", "error": {"type": "authentication_error", "message": auth.value.body["error"]["message"]}}  # type: ignore[index]
    client = claude_client(gateway, "bare")
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="no-such-model", max_tokens=5, messages=HELLO)
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="gpt-test", max_tokens=0, messages=HELLO)
    with pytest.raises(anthropic.BadRequestError) as bad_role:
        client.messages.create(model="gpt-test", max_tokens=50, messages=[*HELLO, {"role": "tool", "content": "x"}])  # type: ignore[list-item, typeddict-item]
    assert "messages[1].role" in bad_role.value.message
    upstream.enqueue(Reply(status=500))
    with pytest.raises(anthropic.InternalServerError) as upstream_error:
        client.messages.create(model="gpt-test", max_tokens=5, messages=HELLO)
    assert upstream_error.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    limited = claude_client(gateway, "bare", rpm=1)
    upstream.enqueue(Reply(text="one"))
    limited.messages.create(model="gpt-test", max_tokens=5, messages=HELLO)
    with pytest.raises(anthropic.RateLimitError) as limit:
        limited.messages.create(model="gpt-test", max_tokens=5, messages=HELLO)
    assert limit.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert int(limit.value.response.headers["retry-after"]) >= 1


def test_bearer_and_x_api_key_both_work(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    key = gateway.mint("bare")
    upstream.enqueue(Reply(text="a"), Reply(text="b"))
    by_header = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)
    by_bearer = anthropic.Anthropic(base_url=gateway.url, auth_token=key, max_retries=0)
    assert by_header.messages.create(model="gpt-test", max_tokens=5, messages=HELLO).content[0].text == "a"  # type: ignore[union-attr]
    assert by_bearer.messages.create(model="gpt-test", max_tokens=5, messages=HELLO).content[0].text == "b"  # type: ignore[union-attr]


def test_output_config_format_is_structured_output(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}
    upstream.enqueue(Reply(text='{"city": "Porto"}'))
    claude_client(gateway, "bare").messages.create(model="gpt-test", max_tokens=50, messages=HELLO, output_config={"format": {"type": "json_schema", "schema": schema}})
    assert upstream.requests[0]["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}}


def test_count_tokens(gateway: GatewayServer) -> None:
    counted = claude_client(gateway, "bare").messages.count_tokens(model="gpt-test", messages=[{"role": "user", "content": "x" * 400}])
    assert 100 <= counted.input_tokens <= 150


@pytest.mark.parametrize("key", [{"scopes": ["mcp"]}, {"models": ["gpt-other"]}], ids=["no-chat-scope", "model-not-allowed"])
def test_count_tokens_refuses_a_key_that_may_not_use_the_model(gateway: GatewayServer, key: dict) -> None:
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        claude_client(gateway, "bare", **key).messages.count_tokens(model="gpt-test", messages=HELLO)
    assert refused.value.body["error"]["type"] == "permission_error"  # type: ignore[index]


def test_count_tokens_takes_from_the_keys_rpm(gateway: GatewayServer) -> None:
    client = claude_client(gateway, "bare", rpm=1)
    assert client.messages.count_tokens(model="gpt-test", messages=HELLO).input_tokens >= 1
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.count_tokens(model="gpt-test", messages=HELLO)
    assert int(limited.value.response.headers["retry-after"]) >= 1


# -- Anthropic models: natively forwarded, or translated when tools run -------------------------------------


def test_a_claude_model_gets_the_clients_body_as_it_is(claude_gateway: GatewayServer, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script([ClaudeReply(text="Deep thought.", thinking="Let me think.", input_tokens=33, output_tokens=8)])
    body = {
        "model": CLAUDE,
        "max_tokens": 2048,
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        "messages": HELLO,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    message = claude_client(claude_gateway, "plain").messages.create(**body, extra_body={"top_k": 5})  # type: ignore[arg-type]
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.model == CLAUDE and (message.usage.input_tokens, message.usage.output_tokens) == (33, 8)
    sent = fake_anthropic.requests[-1].body
    assert sent == {**body, "model": "claude-haiku-4-5", "top_k": 5}


def test_a_claude_model_streams_natively(claude_gateway: GatewayServer, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script([ClaudeReply(text="Streaming straight through.", input_tokens=12, output_tokens=5)])
    with claude_client(claude_gateway, "plain").messages.stream(model=CLAUDE, max_tokens=100, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Streaming straight through."
    assert final.model == CLAUDE and (final.usage.input_tokens, final.usage.output_tokens) == (12, 5)
    assert fake_anthropic.requests[-1].body["stream"] is True


EMAIL = "ana.silva@example.com"
CARD = "4111 1111 1111 1111"


def test_a_claude_model_called_natively_keeps_the_organisations_guardrails(claude_gateway: GatewayServer, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script([ClaudeReply(text=f"Your card {CARD} is on file.", thinking="Checking.")])
    body = {
        "model": CLAUDE,
        "max_tokens": 2048,
        "system": f"The customer is {EMAIL}.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": f"Write to {EMAIL}, please."}]}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    message = claude_client(claude_gateway, "guarded").messages.create(**body)  # type: ignore[arg-type]
    sent = fake_anthropic.requests[-1].body
    assert sent["thinking"] == body["thinking"]  # still the native path
    assert sent["system"] == "The customer is [EMAIL]."
    assert sent["messages"][0]["content"][0]["text"] == "Write to [EMAIL], please."
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[1].text == "Your card [CREDIT_CARD] is on file."  # type: ignore[union-attr]


def test_a_claude_models_native_stream_is_redacted_as_it_streams(claude_gateway: GatewayServer, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script([ClaudeReply(text=f"Card {CARD} noted, thanks.")])
    with claude_client(claude_gateway, "guarded").messages.stream(model=CLAUDE, max_tokens=100, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
    assert text == "Card [CREDIT_CARD] noted, thanks."
    assert fake_anthropic.requests[-1].body["stream"] is True


def test_a_blocked_term_on_the_native_path_never_reaches_the_model(claude_gateway: GatewayServer, fake_anthropic: FakeAnthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude_client(claude_gateway, "guarded").messages.create(
            model=CLAUDE, max_tokens=100, messages=[{"role": "user", "content": "Status of project falcon?"}]
        )
    assert refused.value.body["error"]["message"] == "Content blocked by guardrail"  # type: ignore[index]
    assert fake_anthropic.requests == []


def test_a_claude_model_runs_the_loop_when_plugins_apply(claude_gateway: GatewayServer, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(
        [
            ClaudeReply(tool_use=[("calculator__evaluate", {"expression": "2**10"})], input_tokens=40, output_tokens=6),
            ClaudeReply(text="1024.", input_tokens=50, output_tokens=2),
        ]
    )
    with connector_client(claude_gateway, "acme").messages.stream(model=CLAUDE, max_tokens=100, messages=[{"role": "user", "content": "2**10?"}]) as stream:
        final = stream.get_final_message()
    assert [block.type for block in final.content] == ["mcp_tool_use", "mcp_tool_result", "text"]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (90, 8)


def test_openai_sdk_and_anthropic_sdk_share_one_key(claude_gateway: GatewayServer, fake_anthropic: FakeAnthropic) -> None:
    key = claude_gateway.mint("plain")
    fake_anthropic.script([ClaudeReply(text="one"), ClaudeReply(text="two")])
    via_openai = openai.OpenAI(base_url=claude_gateway.base_url, api_key=key, max_retries=0).chat.completions.create(model=CLAUDE, messages=HELLO)  # type: ignore[arg-type]
    via_anthropic = anthropic.Anthropic(base_url=claude_gateway.url, api_key=key, max_retries=0).messages.create(model=CLAUDE, max_tokens=10, messages=HELLO)  # type: ignore[arg-type]
    assert (via_openai.choices[0].message.content, via_anthropic.content[0].text) == ("one", "two")  # type: ignore[union-attr]


# -- images, client tool_use streaming, mcp_servers, permissions and progress, on OpenAI and Claude models ---
# One gateway for these, on both fakes: ``gpt-test`` (OpenAI-format) and ``claude-test``
# (Anthropic-format). Organisation ``acme`` has built-in plugins and ``tk``, the MCP test
# server over streamable HTTP; ``plain`` has no plugins.
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
        tmp_path_factory.mktemp("messages-both-formats"),
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
    with Gateways() as started:
        yield started.start(settings)


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
    with connector_client(both).messages.stream(model="gpt-test", max_tokens=50, messages=[{"role": "user", "content": "go"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "All steps done."
    assert [block.type for block in final.content] == ["mcp_tool_use", "mcp_tool_result", "text"]
    assert final.content[1].content[0]["text"] == "finished 3 steps"  # type: ignore[union-attr]
