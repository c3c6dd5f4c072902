"""A Claude model through the whole gateway: the official OpenAI SDK in front, the fake Messages API behind.

Every test goes client -> uvicorn -> route -> orchestration -> router ->
AnthropicProvider -> HTTP -> FakeAnthropic and back, and checks both what the
client got and what reached Anthropic.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from runtime.json_types import JSON
from tests.e2e.conftest import ACME_PLUGINS, anthropic_provider, sdk_client
from tests.fakes.anthropic_server import Fail, FakeAnthropic, Reply
from tests.fixtures.testkit_plugin import RED_DOT
from tests.support import Gateways, GatewayServer, make_settings

MODEL = "claude-test"
UPSTREAM_MODEL = "claude-haiku-4-5"
WEATHER_SCHEMA: JSON = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
WEATHER_TOOL: JSON = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": WEATHER_SCHEMA,
    },
}
TIME_TOOL: JSON = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
    },
}
# A 1x1 transparent PNG.
PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


@pytest.fixture(scope="module")
def server(
    fake_anthropic_server: FakeAnthropic, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("anthropic-gateway"),
        fake_anthropic_server.base_url,
        providers=[
            anthropic_provider("claude", fake_anthropic_server.base_url, breaker_failures=100),
            # Same fake, wrong key: Anthropic answers 401 authentication_error.
            anthropic_provider(
                "claude-badkey",
                fake_anthropic_server.base_url,
                api_key="sk-ant-wrong",
                max_retries=2,
                breaker_failures=100,
            ),
        ],
        models=[
            {"id": MODEL, "provider": "claude", "upstream_model": UPSTREAM_MODEL},
            {
                "id": "claude-wrongkey",
                "provider": "claude-badkey",
                "upstream_model": UPSTREAM_MODEL,
            },
        ],
        organisations=[{"id": "acme", "plugins": [dict(p) for p in ACME_PLUGINS]}, {"id": "plain"}],
    )
    with Gateways() as started:
        yield started.start(settings)


@pytest.fixture
def client(server: GatewayServer, fake_anthropic: FakeAnthropic) -> openai.OpenAI:
    """A key of "plain" (no plugins): requests pass through without orchestration."""
    return sdk_client(server, "plain")


@pytest.fixture
def acme(server: GatewayServer, fake_anthropic: FakeAnthropic) -> openai.OpenAI:
    """A key of "acme", whose plugins make tool-less requests orchestrated."""
    return sdk_client(server, "acme")


def trace_of(response: Any) -> JSON:
    extra = response.model_extra or {}
    assert "plugway" in extra, "the gateway's trace field is missing"
    trace: JSON = extra["plugway"]
    return trace


# ---------------------------------------------------------------------------
# plain answers and message translation
# ---------------------------------------------------------------------------


def test_plain_answer_maps_content_finish_reason_and_usage(
    client: openai.OpenAI, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(
        [
            Reply(
                text="Hello from Claude.",
                input_tokens=20,
                output_tokens=5,
                cache_read_input_tokens=8,
                cache_creation_input_tokens=2,
            )
        ]
    )

    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello"}]
    )

    choice = response.choices[0]
    assert choice.message.content == "Hello from Claude."
    assert choice.message.role == "assistant"
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert response.model == MODEL
    assert response.usage is not None
    # Anthropic counts cached input apart; OpenAI's prompt_tokens include it.
    assert response.usage.prompt_tokens == 20 + 8 + 2
    assert response.usage.completion_tokens == 5
    assert response.usage.total_tokens == 35
    assert response.usage.prompt_tokens_details is not None
    assert response.usage.prompt_tokens_details.cached_tokens == 8
    assert trace_of(response)["provider"] == "claude"

    [sent] = fake_anthropic.requests
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-test-key"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.body["model"] == UPSTREAM_MODEL
    assert sent.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Say hello"}]}
    ]
    assert isinstance(sent.body["max_tokens"], int) and sent.body["max_tokens"] > 0
    assert "tools" not in sent.body


def test_client_max_tokens_and_stop_are_translated(
    client: openai.OpenAI, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script([Reply(text="cut", stop_reason="max_tokens")])

    response = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "long story"}],
        max_tokens=7,
        stop=["END"],
        temperature=0.5,
    )

    assert response.choices[0].finish_reason == "length"
    body = fake_anthropic.requests[0].body
    assert body["max_tokens"] == 7
    assert body["stop_sequences"] == ["END"]
    assert body["temperature"] == 0.5


def test_system_and_developer_messages_reach_system(
    client: openai.OpenAI, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script([Reply(text="Bonjour.")])

    client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": "Greet me"},
        ],
    )

    body = fake_anthropic.requests[0].body
    assert body["system"] == "You are terse.\n\nAnswer in French."
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert all(
        block["type"] == "text" and "French" not in block["text"]
        for block in body["messages"][0]["content"]
    )


def test_multi_turn_history_alternates(
    client: openai.OpenAI, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script([Reply(text="You said blue, then green.")])

    response = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "My colour is blue."},
            {"role": "user", "content": "Remember it."},
            {"role": "assistant", "content": "Noted: blue."},
            {"role": "user", "content": "Now it is green."},
        ],
    )

    assert response.choices[0].message.content == "You said blue, then green."
    messages = fake_anthropic.requests[0].body["messages"]
    # Consecutive user messages are merged: Anthropic requires strict alternation.
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert [b["text"] for b in messages[0]["content"]] == ["My colour is blue.", "Remember it."]
    assert messages[1]["content"] == [{"type": "text", "text": "Noted: blue."}]
    assert messages[2]["content"] == [{"type": "text", "text": "Now it is green."}]


def test_image_data_url_reaches_anthropic_as_image_block(
    client: openai.OpenAI, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script([Reply(text="A transparent pixel.")])

    response = client.chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {
                        "type": "image_url",
                        "image_url": {
                            "url": f"data:image/png;base64,{PNG_BASE64}",
                            "detail": "low",
                        },
                    },
                ],
            }
        ],
    )

    assert response.choices[0].message.content == "A transparent pixel."
    [user] = fake_anthropic.requests[0].body["messages"]
    assert user["content"] == [
        {"type": "text", "text": "What is in this image?"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": PNG_BASE64},
        },
    ]


# ---------------------------------------------------------------------------
# client tools (no orchestration: tools[] in the request)
# ---------------------------------------------------------------------------


def test_client_tools_round_trip(acme: openai.OpenAI, fake_anthropic: FakeAnthropic) -> None:
    # acme has plugins, but a request with tools[] is passed through and its calls go back to the client.
    fake_anthropic.script(
        [Reply(tool_use=[("get_weather", {"city": "Paris"})]), Reply(text="It is sunny in Paris.")]
    )
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]

    first = acme.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])

    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert isinstance(call.function.arguments, str)
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id.startswith("toolu_")
    assert trace_of(first)["orchestrated"] is False

    sent_tools = fake_anthropic.requests[0].body["tools"]
    assert sent_tools == [
        {
            "name": "get_weather",
            "description": "Weather for a city.",
            "input_schema": WEATHER_SCHEMA,
        }
    ]
    assert not any(
        t["name"].startswith(("calculator__", "clock__", "testkit__")) for t in sent_tools
    )

    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append(
        {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny", "celsius": 24}'}
    )
    second = acme.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])

    assert second.choices[0].message.content == "It is sunny in Paris."
    assert second.choices[0].finish_reason == "stop"
    turns = fake_anthropic.requests[1].body["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"] == [
        {"type": "tool_use", "id": call.id, "name": "get_weather", "input": {"city": "Paris"}}
    ]
    assert turns[2]["content"] == [
        {
            "type": "tool_result",
            "tool_use_id": call.id,
            "content": '{"sky": "sunny", "celsius": 24}',
        }
    ]


def test_tool_choice_translated(client: openai.OpenAI, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script([Reply(tool_use=[("get_time", {"tz": "UTC"})])])

    response = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "time?"}],
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        parallel_tool_calls=False,
    )

    assert response.choices[0].message.tool_calls is not None
    assert response.choices[0].message.tool_calls[0].function.name == "get_time"
    assert fake_anthropic.requests[0].body["tool_choice"] == {
        "type": "tool",
        "name": "get_time",
        "disable_parallel_tool_use": True,
    }


# ---------------------------------------------------------------------------
# streaming
# ---------------------------------------------------------------------------


def test_streamed_text(client: openai.OpenAI, fake_anthropic: FakeAnthropic) -> None:
    text = "Streaming works across several small deltas."
    fake_anthropic.script(
        [Reply(text=text, input_tokens=12, output_tokens=9, cache_read_input_tokens=4)]
    )

    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "stream please"}], stream=True
        )
    )

    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(c.choices[0].delta.content or "" for c in content_chunks) == text
    assert len(content_chunks) > 1, "the answer was not streamed incrementally"
    assert [c.choices[0].delta.role for c in chunks if c.choices and c.choices[0].delta.role] == [
        "assistant"
    ]
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    assert all(c.model == MODEL for c in chunks)
    assert len({c.id for c in chunks}) == 1
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1]
    assert usage_chunks[0].usage is not None
    assert usage_chunks[0].usage.prompt_tokens == 16
    assert usage_chunks[0].usage.completion_tokens == 9

    body = fake_anthropic.requests[0].body
    assert body["stream"] is True
    assert "stream_options" not in body


def test_streamed_client_tool_calls_assembled_by_sdk(
    client: openai.OpenAI, fake_anthropic: FakeAnthropic
) -> None:
    weather_args = {"city": "São Paulo", "details": {"hourly": True, "days": [1, 2, 3]}}
    fake_anthropic.script(
        [
            Reply(
                text="Let me check.",
                tool_use=[
                    ("get_weather", weather_args),
                    ("get_time", {"tz": "America/Sao_Paulo"}),
                    ("get_time", {}),
                ],
            )
        ]
    )

    with client.chat.completions.stream(
        model=MODEL,
        messages=[{"role": "user", "content": "weather and time in SP"}],
        tools=[WEATHER_TOOL, TIME_TOOL],
    ) as stream:
        final = stream.get_final_completion()

    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    assert choice.message.tool_calls is not None
    calls = choice.message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time", "get_time"]
    assert json.loads(calls[0].function.arguments) == weather_args
    assert json.loads(calls[1].function.arguments) == {"tz": "America/Sao_Paulo"}
    # Anthropic streams no fragment for an empty input; OpenAI clients expect "{}".
    assert calls[2].function.arguments == "{}"
    assert len({c.id for c in calls}) == 3
    assert all(c.id.startswith("toolu_") for c in calls)


# ---------------------------------------------------------------------------
# orchestration on a Claude model
# ---------------------------------------------------------------------------


def test_orchestrated_loop_runs_plugin_tool(
    acme: openai.OpenAI, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(
        [
            Reply(
                tool_use=[("calculator__evaluate", {"expression": "6*7"})],
                input_tokens=100,
                output_tokens=10,
            ),
            Reply(text="6 times 7 is 42.", input_tokens=130, output_tokens=8),
        ]
    )

    response = acme.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is 6*7?"}]
    )

    assert response.choices[0].message.content == "6 times 7 is 42."
    assert response.choices[0].message.tool_calls is None
    assert response.choices[0].finish_reason == "stop"
    assert response.usage is not None
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (230, 18)
    trace = trace_of(response)
    assert trace["orchestrated"] is True
    assert trace["rounds"] == 2
    assert trace["stopped_by"] == "answer"
    assert trace["provider"] == "claude" and trace["served_model"] == MODEL
    assert [(t["name"], t["ok"], t["round"]) for t in trace["tool_calls"]] == [
        ("calculator__evaluate", True, 1)
    ]

    first, second = fake_anthropic.requests
    offered = {tool["name"]: tool for tool in first.body["tools"]}
    assert "calculator__evaluate" in offered and "testkit__echo" in offered
    assert offered["calculator__evaluate"]["input_schema"]["type"] == "object"
    assert "expression" in offered["calculator__evaluate"]["input_schema"]["properties"]

    turns = second.body["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    [tool_use] = turns[1]["content"]
    assert tool_use["type"] == "tool_use" and tool_use["name"] == "calculator__evaluate"
    assert tool_use["input"] == {"expression": "6*7"}
    [result] = turns[2]["content"]
    assert result["type"] == "tool_result"
    assert result["tool_use_id"] == tool_use["id"]
    assert "42" in json.dumps(result["content"])
    assert second.body["tools"] == first.body["tools"]


def test_orchestrated_loop_streamed(acme: openai.OpenAI, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(
        [
            Reply(
                tool_use=[("testkit__echo", {"text": "ab", "times": 3})],
                input_tokens=50,
                output_tokens=5,
            ),
            Reply(text="The echo says ababab.", input_tokens=60, output_tokens=6),
        ]
    )

    chunks = list(
        acme.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "echo ab three times"}], stream=True
        )
    )

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The echo says ababab."
    # Server-executed tool calls never reach the client.
    assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop" and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (110, 11)
    trace = (last.model_extra or {})["plugway"]
    assert trace["rounds"] == 2 and trace["provider"] == "claude"
    assert [(t["name"], t["ok"]) for t in trace["tool_calls"]] == [("testkit__echo", True)]

    first, second = fake_anthropic.requests
    assert first.body["stream"] is True and second.body["stream"] is True
    turns = second.body["messages"]
    tool_use = turns[1]["content"][0]
    result = turns[2]["content"][0]
    assert tool_use["input"] == {"text": "ab", "times": 3}
    assert result["type"] == "tool_result" and result["tool_use_id"] == tool_use["id"]
    assert "ababab" in json.dumps(result["content"])


def test_orchestrated_repeated_call_ends_with_tool_choice_none(
    acme: openai.OpenAI, fake_anthropic: FakeAnthropic
) -> None:
    repeated = ("calculator__evaluate", {"expression": "2+2"})
    fake_anthropic.script(
        [Reply(tool_use=[repeated]), Reply(tool_use=[repeated]), Reply(text="It is 4.")]
    )

    response = acme.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "2+2, twice"}]
    )

    assert response.choices[0].message.content == "It is 4."
    assert response.choices[0].message.tool_calls is None
    trace = trace_of(response)
    assert trace["stopped_by"] == "repeated_call"
    assert trace["rounds"] == 3
    assert len(trace["tool_calls"]) == 1
    first, second, final = fake_anthropic.requests
    assert "tool_choice" not in first.body or first.body["tool_choice"] == {"type": "auto"}
    assert second.body["tool_choice"] == {"type": "auto"}
    # The last question is asked with the tools listed but none allowed.
    assert final.body["tool_choice"] == {"type": "none"}
    assert {t["name"] for t in final.body["tools"]} >= {"calculator__evaluate"}
    assert [t["role"] for t in final.body["messages"]] == ["user", "assistant", "user"]


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------


def test_n_greater_than_one_is_ignored_and_named(
    client: openai.OpenAI, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script([Reply(text="one")])
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "two please"}], n=2
    )

    assert raw.headers["x-plugway-ignored-params"] == "n"
    assert [c.message.content for c in raw.parse().choices] == ["one"]
    assert "n" not in fake_anthropic.requests[0].body


def test_anthropic_400_becomes_bad_request(
    client: openai.OpenAI, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script([Fail(400, message="messages.0.content: prompt is too long")])

    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "a very long prompt"}]
        )

    assert caught.value.status_code == 400
    assert caught.value.code == "invalid_request_error"
    assert "prompt is too long" in caught.value.message
    assert len(fake_anthropic.requests) == 1


def test_anthropic_401_becomes_502_and_is_not_retried(
    server: GatewayServer, fake_anthropic: FakeAnthropic
) -> None:
    client = sdk_client(server, "plain")

    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(
            model="claude-wrongkey", messages=[{"role": "user", "content": "hi"}]
        )

    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_unavailable"
    assert "authentication_error" in caught.value.message
    # max_retries=2 on that provider, but a bad key will not get better.
    assert len(fake_anthropic.requests) == 1
    assert fake_anthropic.requests[0].headers["x-api-key"] == "sk-ant-wrong"


def test_tool_images_reach_claude_as_image_blocks(acme: openai.OpenAI, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(
        [Reply(tool_use=[("testkit__picture", {})], input_tokens=10, output_tokens=2), Reply(text="A red dot.", input_tokens=20, output_tokens=3)]
    )
    response = acme.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Show me the picture."}])
    assert response.choices[0].message.content == "A red dot."
    [result] = fake_anthropic.requests[1].body["messages"][2]["content"]
    assert result["type"] == "tool_result"
    text, image = result["content"]
    assert text["type"] == "text" and text["text"].startswith("a red dot")
    assert image == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": RED_DOT}}
