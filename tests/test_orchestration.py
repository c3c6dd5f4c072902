"""DESIGN.md's orchestration rules where they meet the chat-completions wire format, end to end:
openai SDK -> real gateway -> fake OpenAI upstream. The rules themselves are tested in-process in
tests/orchestration/."""

from __future__ import annotations

import httpx
import openai
import orjson
import pytest

from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.support import GatewayServer

USER = [{"role": "user", "content": "help me"}]


def tool_messages(request: dict) -> list[dict]:
    return [m for m in request["messages"] if m["role"] == "tool"]


def tool_error(request: dict) -> dict:
    (message,) = tool_messages(request)
    return orjson.loads(message["content"])["error"]


# -- rule 1: when orchestration is active ------------------------------------------------


def test_client_tools_pass_through_and_calls_return_to_client(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    client_tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]
    upstream.enqueue(Reply(tool_calls=[("lookup", {"q": "x"})]))
    reply = client.chat.completions.create(model="gpt-test", messages=USER, tools=client_tools, tool_choice="auto")
    assert upstream.requests[0]["tools"] == client_tools
    assert upstream.requests[0]["tool_choice"] == "auto"
    assert len(upstream.requests) == 1
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup" and orjson.loads(call.function.arguments) == {"q": "x"}
    assert reply.choices[0].finish_reason == "tool_calls"


def test_unknown_openai_fields_are_forwarded(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="ok"))
    client.chat.completions.create(
        model="gpt-test", messages=USER, seed=7, temperature=0.2, user="u-1",
        extra_body={"logit_bias": {"50256": -100}, "some_future_field": {"a": 1}},
    )
    sent = upstream.requests[0]
    assert sent["seed"] == 7 and sent["temperature"] == 0.2 and sent["user"] == "u-1"
    assert sent["logit_bias"] == {"50256": -100}
    assert sent["some_future_field"] == {"a": 1}


# -- rule 2: eligible plugins ---------------------------------------------------------------


def test_enabled_plugin_ids_restricts_tools(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="ok"))
    client.chat.completions.create(model="gpt-test", messages=USER, extra_body={"enabled_plugin_ids": ["calculator"]})
    assert [t["function"]["name"] for t in upstream.requests[0]["tools"]] == ["calculator__evaluate"]
    assert "enabled_plugin_ids" not in upstream.requests[0]


def test_enabled_plugin_ids_naming_unconfigured_plugin_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-test", messages=USER, extra_body={"enabled_plugin_ids": ["nope"]})
    assert info.value.body["param"] == "enabled_plugin_ids"


# -- rule 6: usage is summed -----------------------------------------------------------------------


def test_usage_is_summed_over_rounds(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(
        Reply(tool_calls=[("calculator__evaluate", {"expression": "1+1"})], prompt_tokens=100, completion_tokens=10),
        Reply(tool_calls=[("calculator__evaluate", {"expression": "2+2"})], prompt_tokens=150, completion_tokens=20),
        Reply(text="4", prompt_tokens=200, completion_tokens=5),
    )
    reply = client.chat.completions.create(model="gpt-test", messages=USER)
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (450, 35, 485)


# -- rule 7: streaming ----------------------------------------------------------------------------------


def test_streamed_orchestration_hides_tool_calls_and_sums_usage(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(
        Reply(text="Let me check.", tool_calls=[("calculator__evaluate", {"expression": "21*2"}), ("clock__now", {"timezone": "Asia/Tokyo"})], prompt_tokens=30, completion_tokens=12),
        Reply(text="The answer is 42 and it is late in Tokyo.", prompt_tokens=60, completion_tokens=9),
    )
    chunks = list(client.chat.completions.create(model="gpt-test", messages=USER, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Let me check.\n\nThe answer is 42 and it is late in Tokyo."
    assert all(not c.choices or not c.choices[0].delta.tool_calls for c in chunks)
    assert len({c.id for c in chunks}) == 1
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert all(c.choices for c in chunks), "without include_usage, no chunk may have empty choices"
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].usage.total_tokens == 111
    assert chunks[-1].usage.prompt_tokens == 90
    # The fragmented arguments of two parallel calls were assembled by index before execution.
    results = [orjson.loads(m["content"]) for m in tool_messages(upstream.requests[1])]
    assert results[0]["result"] == 42 and results[1]["timezone"] == "Asia/Tokyo"
    assert upstream.requests[0]["stream"] is True and upstream.requests[0]["stream_options"] == {"include_usage": True}


def test_stream_sends_keepalives_and_tool_progress_while_tools_run(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("testkit__slow", {"seconds": 0.7})]), Reply(text="slept"))
    key = gateway.mint()
    lines: list[str] = []
    with httpx.stream(
        "POST", f"{gateway.base_url}/chat/completions",
        json={"model": "gpt-test", "messages": USER, "stream": True},
        headers={"Authorization": f"Bearer {key}"}, timeout=10,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    comments = [line for line in lines if line.startswith(":")]
    assert sum(1 for c in comments if c == ": keep-alive") >= 2  # keepalive_s is 0.2 in tests
    assert any(c.startswith(": plugway tool_call") and "testkit__slow" in c for c in comments)
    assert any(c.startswith(": plugway tool_result") and '"ok":true' in c for c in comments)
    assert lines[-1] == "data: [DONE]"


def test_streamed_passthrough_always_reports_usage(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=gateway.mint("bare"), max_retries=0)
    upstream.enqueue(Reply(text="one two three", prompt_tokens=5, completion_tokens=3))
    chunks = list(client.chat.completions.create(model="gpt-test", messages=USER, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "one two three"
    assert chunks[-1].usage.total_tokens == 8
    assert upstream.requests[0]["stream_options"] == {"include_usage": True}


# -- rule 8: the trace -----------------------------------------------------------------------------------


def test_trace_records_each_call_duration_and_outcome(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("testkit__slow", {"seconds": 0.2}), ("testkit__boom", {})]), Reply(text="ok"))
    reply = client.chat.completions.create(model="gpt-test", messages=USER)
    calls = reply.model_extra["plugway"]["tool_calls"]
    assert calls[0]["name"] == "testkit__slow" and calls[0]["ok"] and calls[0]["duration_ms"] >= 190
    assert calls[1]["name"] == "testkit__boom" and not calls[1]["ok"] and "RuntimeError" in calls[1]["error"]
    assert all(c["round"] == 1 for c in calls)


@pytest.mark.gateway(plugins=[{"id": "forecast", "config": {"units": "imperial"}}])
def test_installed_entry_point_plugin_runs_with_its_config(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("forecast__get_forecast", {"city": "Lisbon", "days": 2})]), Reply(text="Sunny-ish."))
    client.chat.completions.create(model="gpt-test", messages=USER)
    assert [t["function"]["name"] for t in upstream.requests[0]["tools"]] == ["forecast__get_forecast"]
    (content,) = (orjson.loads(c) for c in (m["content"] for m in tool_messages(upstream.requests[1])))
    assert content["city"] == "Lisbon" and content["units"] == "imperial" and len(content["days"]) == 2
