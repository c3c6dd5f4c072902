"""Tools that need a person's approval: the run stops before they run and resumes with the decisions;
a front door that cannot ask is not offered them at all."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.json_types import JSON
from runtime.orchestration.events import ApprovalRequired, ToolCallFinished
from runtime.orchestration.loop import REFUSED_BY_CLIENT
from runtime.providers.function import tool_call
from runtime.request import Resume
from tests.orchestration.conftest import Loop, tool_results

pytestmark = pytest.mark.asyncio(loop_scope="session")


def echo_then_answer(messages: list[JSON], tools: list[JSON], body: JSON) -> Any:
    if messages[-1]["role"] == "tool":
        return f"The tool said: {messages[-1]['content']}"
    return tool_call("testkit__echo", {"text": "approved work"}, call_id="call_echo")


async def test_a_call_that_needs_approval_stops_the_run_before_it_runs(loop: Loop) -> None:
    loop.model(echo_then_answer)
    result = await loop.run(organisation="careful", source="responses")

    (stop,) = [e for e in result.events if isinstance(e, ApprovalRequired)]
    assert [(c.call_id, c.plugin_id, c.tool_name) for c in stop.calls] == [("call_echo", "testkit", "echo")]
    assert not [e for e in result.events if isinstance(e, ToolCallFinished)]
    assert result.completed.stopped_by == "approval" and result.completed.finish_reason == "tool_calls"
    assert len(loop.requests) == 1


async def test_an_approved_call_runs_when_the_run_resumes(loop: Loop) -> None:
    loop.model(echo_then_answer)
    stopped = await loop.run(organisation="careful", source="responses")
    (stop,) = [e for e in stopped.events if isinstance(e, ApprovalRequired)]

    resumed = await loop.run(organisation="careful", source="responses", resume=Resume(stop.assistant_message, {"call_echo": True}))

    assert resumed.text == "The tool said: approved work"
    assert tool_results(loop.requests[-1]) == {"call_echo": "approved work"}


async def test_a_refused_call_tells_the_model_it_was_not_run(loop: Loop) -> None:
    loop.model(echo_then_answer)
    stopped = await loop.run(organisation="careful", source="responses")
    (stop,) = [e for e in stopped.events if isinstance(e, ApprovalRequired)]

    resumed = await loop.run(organisation="careful", source="responses", resume=Resume(stop.assistant_message, {"call_echo": False}))

    assert REFUSED_BY_CLIENT in tool_results(loop.requests[-1])["call_echo"]
    assert resumed.completed.stopped_by == "answer"


async def test_a_front_door_that_cannot_ask_is_not_offered_tools_that_need_approval(loop: Loop) -> None:
    loop.model(lambda messages, tools, body: "no tools for me")
    result = await loop.run(organisation="careful", source="api")
    assert result.text == "no tools for me"
    assert "tools" not in loop.requests[0]
