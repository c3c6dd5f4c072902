"""An organisation's require_approval: a person approves destructive tools, or they are not offered."""

from __future__ import annotations

import json

import openai
import pytest

from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.support import GatewayServer

CAREFUL = [
    {
        "id": "careful",
        "plugins": [
            {"id": "clock", "require_approval": "destructive"},  # read-only tools: never asked
            {"id": "testkit", "config": {"flavour": "vanilla"}, "require_approval": "destructive"},  # no hints: destructive
        ],
    }
]
careful = pytest.mark.gateway(organisations=CAREFUL)


def _client(gateway: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=gateway.mint("careful"), max_retries=0, timeout=20)


@careful
def test_responses_ask_before_a_destructive_tool_even_when_the_request_says_never(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("clock__now", {}), ("testkit__echo", {"text": "x"})]), Reply(text="done"))
    tools = [{"type": "mcp", "server_label": label, "require_approval": "never"} for label in ("clock", "testkit")]
    first = _client(gateway).responses.create(model="gpt-test", input="time, then echo", tools=tools)  # type: ignore[arg-type]
    requests = [item for item in first.output if item.type == "mcp_approval_request"]
    assert [(r.server_label, r.name) for r in requests] == [("testkit", "echo")]
    assert not [item for item in first.output if item.type == "mcp_call"]  # nothing ran before the decision

    second = _client(gateway).responses.create(
        model="gpt-test",
        previous_response_id=first.id,
        input=[{"type": "mcp_approval_response", "approval_request_id": requests[0].id, "approve": True}],
        tools=tools,  # type: ignore[arg-type]
    )
    calls = {item.name: item for item in second.output if item.type == "mcp_call"}
    assert set(calls) == {"now", "echo"} and calls["echo"].error is None
    assert json.loads(calls["now"].output)["timezone"] == "UTC"
    assert second.output_text == "done"


@careful
def test_front_doors_that_cannot_ask_do_not_offer_the_tools(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="ok"))
    _client(gateway).chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    offered = [tool["function"]["name"] for tool in upstream.requests[0]["tools"]]
    assert offered and all(name.startswith("clock__") for name in offered)


@careful
def test_a_tool_the_model_calls_anyway_is_refused(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("testkit__echo", {"text": "x"})]), Reply(text="could not"))
    answer = _client(gateway).chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "echo"}])
    assert answer.choices[0].message.content == "could not"
    tool_message = upstream.requests[1]["messages"][-1]
    assert tool_message["role"] == "tool" and json.loads(tool_message["content"])["error"]["type"] == "unknown_tool"
