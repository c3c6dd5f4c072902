"""The Anthropic adapter over real HTTP against the fake Messages API."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from runtime.config import ProviderConfig
from runtime.errors import GatewayError, UpstreamError
from runtime.json_types import JSON
from runtime.providers.anthropic import AnthropicProvider, messages_url
from runtime.providers.base import Provider
from tests.fakes.anthropic_server import (
    DEFAULT_API_KEY,
    Fail,
    FakeAnthropic,
    Hangup,
    Reply,
    Slow,
    StreamFail,
    closed_port_url,
    fake_anthropic,
    fake_anthropic_server,
)

__all__ = ["fake_anthropic", "fake_anthropic_server"]  # fixtures used by name

MODEL = "claude-haiku-4-5"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def make_provider(base_url: str, **overrides: Any) -> AnthropicProvider:
    config = ProviderConfig(
        id="anthropic",
        kind="anthropic",
        base_url=base_url,
        api_key=overrides.pop("api_key", DEFAULT_API_KEY),
        **overrides,
    )
    return AnthropicProvider(config)


@pytest.fixture
async def provider(fake_anthropic: FakeAnthropic) -> AsyncIterator[AnthropicProvider]:
    adapter = make_provider(fake_anthropic.base_url)
    yield adapter
    await adapter.aclose()


async def collect(stream: AsyncIterator[JSON]) -> list[JSON]:
    return [chunk async for chunk in stream]


def test_messages_url_and_protocol() -> None:
    assert messages_url("https://api.anthropic.com") == "https://api.anthropic.com/v1/messages"
    assert messages_url("https://proxy.example/v1/") == "https://proxy.example/v1/messages"
    assert isinstance(make_provider("http://127.0.0.1:1"), Provider)


async def test_chat_sends_anthropic_headers_and_translated_body(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script([Reply(text="Bonjour !", input_tokens=12, output_tokens=3)])
    completion = await provider.chat(
        {
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "Speak French."},
                {"role": "user", "content": "Hello"},
            ],
            "max_tokens": 64,
            "user": "u-1",
        }
    )
    assert completion["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Bonjour !",
        "refusal": None,
    }
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert completion["model"] == MODEL
    assert completion["usage"]["prompt_tokens"] == 12
    assert completion["usage"]["completion_tokens"] == 3
    sent = fake_anthropic.requests[-1]
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["x-api-key"] == DEFAULT_API_KEY
    assert sent.body["system"] == "Speak French."
    assert sent.body["max_tokens"] == 64
    assert sent.body["metadata"] == {"user_id": "u-1"}
    assert "stream" not in sent.body


async def test_full_tool_round_trip_is_accepted_by_the_validating_server(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(
        [
            Reply(
                text="Checking both.",
                tool_use=[("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})],
            ),
            Reply(text="Sunny in Paris, rain in Rome."),
        ]
    )
    messages: list[JSON] = [{"role": "user", "content": "Weather in Paris and Rome?"}]
    first = await provider.chat({"model": MODEL, "messages": messages, "tools": [WEATHER_TOOL]})
    reply = first["choices"][0]["message"]
    assert first["choices"][0]["finish_reason"] == "tool_calls"
    assert [orjson.loads(c["function"]["arguments"]) for c in reply["tool_calls"]] == [
        {"city": "Paris"},
        {"city": "Rome"},
    ]
    messages.append(reply)
    for call, result in zip(reply["tool_calls"], ["sunny", "rain"], strict=True):
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
    second = await provider.chat({"model": MODEL, "messages": messages, "tools": [WEATHER_TOOL]})
    assert second["choices"][0]["message"]["content"] == "Sunny in Paris, rain in Rome."
    # The server validated that both results answer the previous turn's tool_use ids.
    sent = fake_anthropic.requests[-1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert [b["tool_use_id"] for b in sent[2]["content"]] == [c["id"] for c in reply["tool_calls"]]


async def test_invalid_request_comes_back_as_client_error(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    with pytest.raises(UpstreamError) as info:
        # A tool result that answers no tool_use: Anthropic refuses it with 400.
        await provider.chat(
            {
                "model": MODEL,
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "tool", "tool_call_id": "nope", "content": "x"},
                ],
                "tools": [WEATHER_TOOL],
            }
        )
    assert info.value.status == 400
    assert info.value.client_error and not info.value.retryable
    assert "tool_use_id" in info.value.message


async def test_refused_parameter_never_reaches_the_network(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "functions": [{"name": "f"}]}
    with pytest.raises(GatewayError) as info:
        await provider.chat(body)
    assert info.value.param == "functions"
    with pytest.raises(GatewayError):
        await collect(provider.stream_chat({**body, "stream": True}))
    assert fake_anthropic.requests == []


async def test_ignored_parameters_are_named_and_never_sent(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": 3, "logprobs": True}
    assert provider.ignored_chat_params(body) == ["n", "logprobs"]
    await provider.chat(body)
    assert not {"n", "logprobs"} & set(fake_anthropic.requests[-1].body)


async def test_wrong_key_is_a_non_retryable_401(fake_anthropic: FakeAnthropic) -> None:
    adapter = make_provider(fake_anthropic.base_url, api_key="sk-ant-wrong")
    try:
        with pytest.raises(UpstreamError) as info:
            await adapter.chat({"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
    finally:
        await adapter.aclose()
    assert info.value.status == 401
    assert not info.value.retryable and not info.value.client_error


@pytest.mark.parametrize(
    ("step", "status", "retryable", "retry_after"),
    [
        (Fail(429, retry_after=7), 429, True, 7.0),
        (Fail(500), 500, True, None),
        (Fail(529, retry_after=2), 529, True, 2.0),
        (Fail(403), 403, False, None),
        (Fail(404, error_type="not_found_error", message="model: x"), 404, False, None),
        (Fail(413), 413, False, None),
    ],
)
async def test_http_failures_map_with_retry_after(
    provider: AnthropicProvider,
    fake_anthropic: FakeAnthropic,
    step: Fail,
    status: int,
    retryable: bool,
    retry_after: float | None,
) -> None:
    fake_anthropic.script([step])
    with pytest.raises(UpstreamError) as info:
        await provider.chat({"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
    assert info.value.status == status
    assert info.value.retryable is retryable
    assert info.value.retry_after == retry_after


async def test_stream_text_with_usage_chunk_last(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    fake_anthropic.script([Reply(text=text, thinking="private", input_tokens=9, output_tokens=11)])
    chunks = await collect(
        provider.stream_chat(
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "x"}],
                "stream": True,
                "stream_options": {"include_usage": True},
            }
        )
    )
    assert fake_anthropic.requests[-1].body["stream"] is True
    content = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert "".join(x for x in content if x) == text
    assert len([x for x in content if x]) > 3  # really streamed piecewise
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == 9
    assert chunks[-1]["usage"]["completion_tokens"] == 11
    # Thinking travels only as reasoning state, never as content.
    assert "private" not in orjson.dumps([c for c in chunks if not c["choices"] or "reasoning_parts" not in c["choices"][0]["delta"]]).decode()


async def test_stream_tool_calls_as_indexed_argument_deltas(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    arguments = {"city": "Saint-Étienne", "days": 3, "units": "metric"}
    fake_anthropic.script([Reply(tool_use=[("get_weather", arguments), ("now", {})])])
    chunks = await collect(
        provider.stream_chat(
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "x"}],
                "tools": [WEATHER_TOOL, {"type": "function", "function": {"name": "now"}}],
                "stream": True,
            }
        )
    )
    calls: dict[int, JSON] = {}
    fragments = 0
    for chunk in chunks:
        for call in chunk["choices"][0]["delta"].get("tool_calls") or []:
            if "id" in call:
                assert call["function"]["arguments"] == ""
                assert call["type"] == "function"
                calls[call["index"]] = {
                    "id": call["id"],
                    "name": call["function"]["name"],
                    "args": "",
                }
            else:
                assert set(call) == {"index", "function"}
                calls[call["index"]]["args"] += call["function"]["arguments"]
                fragments += 1
    assert [calls[i]["name"] for i in sorted(calls)] == ["get_weather", "now"]
    assert orjson.loads(calls[0]["args"]) == arguments
    assert orjson.loads(calls[1]["args"]) == {}
    assert fragments >= 4  # the server split the first call's JSON into several fragments
    assert calls[0]["id"].startswith("toolu_")
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_stream_error_event_mid_stream_raises(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script([StreamFail(after_text="Partial answer")])
    received: list[JSON] = []
    with pytest.raises(UpstreamError) as info:
        async for chunk in provider.stream_chat(
            {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": True}
        ):
            received.append(chunk)
    assert info.value.status == 529
    assert received[-1]["choices"][0]["delta"] == {"content": "Partial answer"}


async def test_stream_error_before_content_yields_nothing(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script([StreamFail()])
    received: list[JSON] = []
    with pytest.raises(UpstreamError):
        async for chunk in provider.stream_chat(
            {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": True}
        ):
            received.append(chunk)
    # Nothing reached the caller, so a retry is still allowed.
    assert received == []


async def test_stream_cut_without_message_stop_raises(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script([Hangup(after_text="Half")])
    with pytest.raises(UpstreamError, match="message_stop"):
        await collect(
            provider.stream_chat(
                {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": True}
            )
        )


async def test_stream_http_error_before_body(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script([Fail(529, retry_after=1)])
    with pytest.raises(UpstreamError) as info:
        await collect(
            provider.stream_chat(
                {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": True}
            )
        )
    assert info.value.status == 529 and info.value.retry_after == 1.0


async def test_timeout_and_connection_errors_are_retryable(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script([Slow(2.0)])
    slow = make_provider(fake_anthropic.base_url, timeout_s=0.2)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
    started = time.monotonic()
    try:
        with pytest.raises(UpstreamError, match="timed out") as info:
            await slow.chat(body)
    finally:
        await slow.aclose()
    assert time.monotonic() - started < 1.5
    assert info.value.status is None and info.value.retryable
    closed = make_provider(closed_port_url())
    try:
        with pytest.raises(UpstreamError, match="unreachable") as info:
            await closed.chat(body)
        assert info.value.status is None and info.value.retryable
        with pytest.raises(UpstreamError, match="unreachable"):
            await collect(closed.stream_chat({**body, "stream": True}))
    finally:
        await closed.aclose()


async def test_bearer_authorization_is_accepted_by_the_fake(fake_anthropic: FakeAnthropic) -> None:
    # What recent official SDKs send; the fake must accept it like Anthropic does.
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{fake_anthropic.base_url}/v1/messages",
            headers={
                "authorization": f"Bearer {DEFAULT_API_KEY}",
                "anthropic-version": "2023-06-01",
            },
            json={
                "model": MODEL,
                "max_tokens": 10,
                "messages": [{"role": "user", "content": "ping"}],
            },
        )
        assert response.status_code == 200
        assert response.json()["content"] == [{"type": "text", "text": "echo: ping"}]
        missing = await client.post(
            f"{fake_anthropic.base_url}/v1/messages",
            headers={"x-api-key": DEFAULT_API_KEY, "anthropic-version": "2023-06-01"},
            json={"model": MODEL, "messages": [{"role": "user", "content": "ping"}]},
        )
    assert missing.status_code == 400
    assert missing.json()["type"] == "error"
    assert missing.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in missing.json()["error"]["message"]


async def test_raw_stream_uses_anthropic_event_lines(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script([Reply(text="hi there", tool_use=[("f", {"a": "bcdefghij"})])])
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{fake_anthropic.base_url}/v1/messages",
            headers={"x-api-key": DEFAULT_API_KEY, "anthropic-version": "2023-06-01"},
            json={
                "model": MODEL,
                "max_tokens": 10,
                "stream": True,
                "tools": [{"name": "f", "input_schema": {"type": "object"}}],
                "messages": [{"role": "user", "content": "x"}],
            },
        )
    assert response.headers["content-type"].startswith("text/event-stream")
    names = [line[7:] for line in response.text.splitlines() if line.startswith("event: ")]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert "ping" in names and names.count("content_block_start") == 2
    json_deltas = [line for line in response.text.splitlines() if '"input_json_delta"' in line]
    assert len(json_deltas) >= 3


async def test_responder_answers_when_the_script_is_exhausted(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script([Reply(text="scripted")])
    fake_anthropic.responder = lambda body: Reply(text=f"{len(body['messages'])} turns")
    first = await provider.chat({"model": MODEL, "messages": [{"role": "user", "content": "a"}]})
    second = await provider.chat(
        {
            "model": MODEL,
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "user", "content": "c"},
            ],
        }
    )
    assert first["choices"][0]["message"]["content"] == "scripted"
    assert second["choices"][0]["message"]["content"] == "3 turns"
    assert fake_anthropic.remaining_steps == 0
