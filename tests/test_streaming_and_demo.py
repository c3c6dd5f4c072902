"""Stream assembly (index-based, fragments interleaved) and the offline demo model."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson

from runtime.providers.demo import LABEL, DemoProvider
from runtime.providers.streaming import StreamAccumulator, iter_sse_data


async def lines(*items: str) -> AsyncIterator[str]:
    for item in items:
        yield item


async def test_sse_parsing_joins_multiline_data_and_skips_comments() -> None:
    got = [d async for d in iter_sse_data(lines(": keep-alive", "", "data: {\"a\":", "data: 1}", "", "event: x", "data:2", "", "data: [DONE]", "", "data: after"))]
    assert got == ['{"a":\n1}', "2"]


def test_accumulator_assembles_interleaved_fragments_by_index() -> None:
    acc = StreamAccumulator()
    acc.add({"id": "c1", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi "}}]})
    acc.add({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "b", "arguments": ""}}]}}]})
    acc.add({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "a", "arguments": ""}}]}}]})
    for index, piece in [(0, '{"x"'), (1, '{"y":'), (0, ": 1}"), (1, " [1, 2]}")]:
        acc.add({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}}]})
    acc.add({"choices": [{"index": 0, "delta": {"content": "there"}, "finish_reason": "tool_calls"}]})
    acc.add({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}})
    message = acc.message()
    assert message["content"] == "Hi there"
    assert [c["id"] for c in message["tool_calls"]] == ["call_a", "call_b"]
    assert [orjson.loads(c["function"]["arguments"]) for c in message["tool_calls"]] == [{"x": 1}, {"y": [1, 2]}]
    assert acc.finish_reason == "tool_calls" and acc.usage == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


TOOLS = [
    {"type": "function", "function": {"name": "calculator__evaluate", "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}},
    {"type": "function", "function": {"name": "clock__now", "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "crm__lookup_customer", "parameters": {"type": "object", "properties": {"email": {"type": "string"}}, "required": ["email"]}}},
]


def ask(text: str, tools: list | None = None) -> dict:
    import asyncio

    return asyncio.run(DemoProvider().chat({"model": "demo", "messages": [{"role": "user", "content": text}], "tools": tools or TOOLS}))


def test_demo_picks_tools_only_when_asked() -> None:
    calls = ask("What is 12 * (3 + 4)?")["choices"][0]["message"]["tool_calls"]
    assert [(c["function"]["name"], orjson.loads(c["function"]["arguments"])) for c in calls] == [("calculator__evaluate", {"expression": "12 * (3 + 4)"})]
    both = ask("what time is it in Paris and what is 2+2")["choices"][0]["message"]["tool_calls"]
    assert {c["function"]["name"] for c in both} == {"calculator__evaluate", "clock__now"}
    customer = ask("Please look up customer ana@example.com")["choices"][0]["message"]["tool_calls"]
    assert orjson.loads(customer[0]["function"]["arguments"]) == {"email": "ana@example.com"}
    plain = ask("Tell me a story")["choices"][0]
    assert plain["finish_reason"] == "stop" and plain["message"]["content"].startswith(LABEL)


async def test_demo_streams_fragmented_tool_calls_and_usage() -> None:
    acc = StreamAccumulator()
    async for chunk in DemoProvider().stream_chat({"model": "demo", "messages": [{"role": "user", "content": "compute 100 / 8"}], "tools": TOOLS, "stream_options": {"include_usage": True}}):
        acc.add(chunk)
    (call,) = acc.message()["tool_calls"]
    assert orjson.loads(call["function"]["arguments"]) == {"expression": "100 / 8"}
    assert acc.usage and acc.usage["total_tokens"] > 0
