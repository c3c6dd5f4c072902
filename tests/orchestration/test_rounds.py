"""Rounds: the loop ends at the first answer, stops on a repeated call or the round limit with one
final ``tool_choice: "none"`` round, and bills the sum of every round's usage (DESIGN rules 5, 6, 8)."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from sqlmodel import Session, select

from runtime.json_types import JSON
from runtime.providers.function import tool_call
from runtime.storage.models import UsageRecord
from tests.orchestration.conftest import Loop, Loops, answered, tool_results

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_tool_call_then_an_answer_takes_two_rounds(loop: Loop) -> None:
    def model(messages: list[JSON], tools: list[JSON], body: JSON) -> Any:
        if messages[-1]["role"] == "tool":
            return f"It is {orjson.loads(messages[-1]['content'])['timezone']} time."
        return tool_call("clock__now", {"timezone": "Europe/Paris"}, call_id="call_clock")

    loop.model(model)
    result = await loop.run("What time is it in Paris?")

    assert result.text == "It is Europe/Paris time."
    assert len(loop.requests) == 2
    assert "call_clock" in tool_results(loop.requests[1])
    # The assistant's tool-call turn precedes its result in the second request.
    turn = loop.requests[1]["messages"][-2]
    assert turn["role"] == "assistant" and turn["tool_calls"][0]["id"] == "call_clock"
    trace = result.completed.trace
    assert trace["rounds"] == 2 and trace["stopped_by"] == "answer" and trace["orchestrated"]
    assert [(c["name"], c["ok"]) for c in trace["tool_calls"]] == [("clock__now", True)]


async def test_an_answer_without_tool_calls_ends_the_loop_at_once(loop: Loop) -> None:
    loop.model(lambda messages, tools, body: "Nothing to look up.")
    result = await loop.run()
    assert result.text == "Nothing to look up."
    assert len(loop.requests) == 1
    assert result.completed.stopped_by == "answer"
    # The first round lets the model choose; the plugin tools are offered by their public names.
    assert loop.requests[0]["tool_choice"] == "auto"
    offered = {t["function"]["name"] for t in loop.requests[0]["tools"]}
    assert {"clock__now", "testkit__echo"} <= offered


async def test_a_repeated_identical_call_stops_with_a_final_round_without_tools(loop: Loop) -> None:
    def model(messages: list[JSON], tools: list[JSON], body: JSON) -> Any:
        if body.get("tool_choice") == "none":
            return "Final answer."
        # The same call, arguments in another key order: still the same call.
        arguments = '{"text": "a", "times": 2}' if len(loop.requests) % 2 else '{"times": 2, "text": "a"}'
        return tool_call("testkit__echo", arguments)

    loop.model(model)
    result = await loop.run()

    assert result.text == "Final answer."
    assert result.completed.stopped_by == "repeated_call"
    assert [r["tool_choice"] for r in loop.requests] == ["auto", "auto", "none"]
    # The repeated call never ran: one execution only.
    assert len(result.completed.trace["tool_calls"]) == 1


async def test_upstream_calls_are_bounded_by_max_tool_rounds_plus_one(loops: Loops) -> None:
    loop = await loops.get(max_tool_rounds=2)
    numbers = itertools.count()

    def model(messages: list[JSON], tools: list[JSON], body: JSON) -> Any:
        if body.get("tool_choice") == "none":
            return "Enough."
        return tool_call("testkit__echo", {"text": f"call {next(numbers)}"})

    loop.model(model)
    result = await loop.run()

    assert len(loop.requests) == 2 + 1
    assert loop.requests[-1]["tool_choice"] == "none"
    assert result.completed.stopped_by == "max_tool_rounds"
    assert result.text == "Enough."
    assert result.completed.trace["rounds"] == 3


async def test_tool_calls_in_the_final_round_never_reach_the_client(loops: Loops) -> None:
    loop = await loops.get(max_tool_rounds=1)
    numbers = itertools.count()
    # A model that ignores tool_choice "none" and calls a tool anyway.
    loop.model(lambda messages, tools, body: tool_call("testkit__echo", {"text": str(next(numbers))}))

    result = await loop.run()

    assert len(loop.requests) == 2
    assert "tool_calls" not in result.completed.message
    assert result.completed.finish_reason == "stop"
    assert len(result.completed.trace["tool_calls"]) == 1


async def test_usage_is_the_sum_over_every_round_and_is_what_gets_billed(loop: Loop) -> None:
    usages = iter(
        [
            {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
            {"prompt_tokens": 130, "completion_tokens": 20, "total_tokens": 150},
        ]
    )

    def model(messages: list[JSON], tools: list[JSON], body: JSON) -> Any:
        usage = next(usages)
        if messages[-1]["role"] == "tool":
            return answered("done", usage)
        reply = answered("", usage)
        reply["choices"][0]["message"] = tool_call("clock__now", {})
        reply["choices"][0]["finish_reason"] = "tool_calls"
        return reply

    loop.model(model)
    result = await loop.run()

    assert result.completed.usage == {"prompt_tokens": 230, "completion_tokens": 30, "total_tokens": 260}
    assert result.usage["total_tokens"] == 260
    await loop.gateway.usage.flush()
    with Session(loop.gateway.engine) as session:
        (row,) = session.exec(select(UsageRecord).where(UsageRecord.request_id == result.state.request_id))
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens, row.rounds) == (230, 30, 260, 2)
    # price: 1 USD per million input tokens, 2 per million output tokens
    assert row.cost_usd == pytest.approx((230 * 1.0 + 30 * 2.0) / 1_000_000)
