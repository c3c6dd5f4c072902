"""One organisation, one key, the same plugin tools through all four front doors.

Chat completions and Responses (openai SDK), Messages (anthropic SDK), each streamed
through a loop of two server-side tool rounds, and ``/mcp`` (the mcp SDK's client)
calling the same tools: every door gets the tools' results and its answer, and
every door's usage is recorded under its own source.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anthropic
import mcp_types as types
import openai
from sqlmodel import Session, select

from runtime.storage.models import UsageRecord
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.frontdoors.test_mcp_server import connected, text_of
from tests.support import GatewayServer

CALC = ("calculator__evaluate", {"expression": "6*7"})
ECHO = ("testkit__echo", {"text": "ab", "times": 2})
ANSWER = "Done: 42 and abab."


def script(upstream: FakeOpenAI) -> None:
    upstream.reset()
    upstream.enqueue(
        Reply(tool_calls=[CALC], prompt_tokens=10, completion_tokens=2),
        Reply(tool_calls=[ECHO], prompt_tokens=20, completion_tokens=2),
        Reply(text=ANSWER, prompt_tokens=30, completion_tokens=4),
    )


def tool_results_sent(upstream: FakeOpenAI) -> list[str]:
    """What the model was told the tools returned, in its third (last) round."""
    assert len(upstream.requests) == 3
    return [m["content"] for m in upstream.requests[2]["messages"] if m["role"] == "tool"]


def assert_loop_ran(upstream: FakeOpenAI) -> None:
    first, echo = tool_results_sent(upstream)
    assert json.loads(first)["result"] == 42 and echo == "abab"
    assert all(request.get("stream") is True for request in upstream.requests)


async def test_one_key_runs_the_same_tools_through_every_front_door(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    key = gateway.mint("acme")

    def chat() -> str:
        script(upstream)
        client = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=20)
        stream = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "compute and echo"}], stream=True)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert_loop_ran(upstream)
        return text

    def responses() -> Any:
        script(upstream)
        client = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=20)
        with client.responses.stream(model="gpt-test", input="compute and echo") as stream:
            final = stream.get_final_response()
        assert_loop_ran(upstream)
        return final

    def messages() -> Any:
        script(upstream)
        client = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0, timeout=20, default_headers={"anthropic-beta": "mcp-client-2025-11-20"})
        with client.messages.stream(model="gpt-test", max_tokens=200, messages=[{"role": "user", "content": "compute and echo"}]) as stream:
            final = stream.get_final_message()
        assert_loop_ran(upstream)
        return final

    assert await asyncio.to_thread(chat) == ANSWER

    response = await asyncio.to_thread(responses)
    assert response.output_text == ANSWER
    calls = [item for item in response.output if item.type == "mcp_call"]
    assert [(c.server_label, c.name) for c in calls] == [("calculator", "evaluate"), ("testkit", "echo")]
    assert json.loads(calls[0].output)["result"] == 42 and calls[1].output == "abab"

    message = await asyncio.to_thread(messages)
    assert [block.type for block in message.content] == ["mcp_tool_use", "mcp_tool_result", "mcp_tool_use", "mcp_tool_result", "text"]
    assert json.loads(message.content[1].content[0]["text"])["result"] == 42  # type: ignore[union-attr]
    assert message.content[3].content[0]["text"] == "abab"  # type: ignore[union-attr]
    assert message.content[4].text == ANSWER  # type: ignore[union-attr]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (60, 8)

    async with connected(gateway, key) as client:
        evaluated = await client.call_tool("calculator__evaluate", {"expression": "6*7"})
        echoed = await client.call_tool("testkit__echo", {"text": "ab", "times": 2})
    assert not evaluated.is_error and json.loads(text_of(evaluated))["result"] == 42
    assert isinstance(echoed.content[0], types.TextContent) and text_of(echoed) == "abab"

    gateway.flush_usage()
    with Session(gateway.gateway.engine) as session:
        rows = list(session.exec(select(UsageRecord).where(UsageRecord.organisation_id == "acme")))
    by_source: dict[str, list[UsageRecord]] = {}
    for row in rows:
        by_source.setdefault(row.source, []).append(row)
    assert sorted(by_source) == ["api", "mcp", "messages", "responses"]
    for source in ("api", "responses", "messages"):
        (row,) = by_source[source]
        assert (row.prompt_tokens, row.completion_tokens, row.status) == (60, 8, "ok")
        assert (row.tool_calls, row.rounds) == (2, 3)
    assert sorted(row.model for row in by_source["mcp"]) == ["calculator__evaluate", "testkit__echo"]
    assert {row.key_id for row in rows} == {rows[0].key_id}
