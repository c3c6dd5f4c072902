"""When the loop orchestrates, which plugins it offers and how their tools are named (DESIGN rules 1-3)."""

from __future__ import annotations

import pytest

from runtime.orchestration.events import ToolCallStarted
from runtime.providers.function import tool_call, tool_calls
from tests.orchestration.conftest import Loop

pytestmark = pytest.mark.asyncio(loop_scope="session")
CLIENT_TOOL = {"type": "function", "function": {"name": "lookup", "description": "The client's own tool.", "parameters": {"type": "object", "properties": {}}}}


async def test_a_request_with_its_own_tools_is_passed_through_and_its_calls_go_back(loop: Loop) -> None:
    loop.model(lambda messages, tools, body: tool_call("lookup", {}, call_id="call_client"))
    # The chat front door admits a request that brings tools without server-side tools.
    result = await loop.run(tools=[CLIENT_TOOL], server_tools=False)

    assert len(loop.requests) == 1
    assert loop.requests[0]["tools"] == [CLIENT_TOOL]
    assert result.completed.message["tool_calls"][0]["id"] == "call_client"
    assert result.completed.finish_reason == "tool_calls"
    assert not result.completed.trace["orchestrated"]
    assert not [e for e in result.events if isinstance(e, ToolCallStarted)]


async def test_an_organisation_without_plugins_is_not_orchestrated(loop: Loop) -> None:
    loop.model(lambda messages, tools, body: "plain")
    result = await loop.run(plugins=[])
    assert "tools" not in loop.requests[0]
    assert result.text == "plain" and not result.completed.trace["orchestrated"]


async def test_naming_plugins_narrows_the_tools_to_theirs(loop: Loop) -> None:
    loop.model(lambda messages, tools, body: "ok")
    await loop.run(plugins=["clock"])
    offered = {tool["function"]["name"] for tool in loop.requests[0]["tools"]}
    assert offered and all(name.startswith("clock__") for name in offered)


async def test_tools_are_named_plugin__tool_and_calls_map_back_to_their_plugin(loop: Loop) -> None:
    loop.model(lambda messages, tools, body: "ok" if messages[-1]["role"] == "tool" else tool_call("calculator__evaluate", {"expression": "6*7"}))
    result = await loop.run(plugins=["calculator"])
    started = next(e for e in result.events if isinstance(e, ToolCallStarted))
    assert (started.name, started.plugin_id, started.tool_name) == ("calculator__evaluate", "calculator", "evaluate")
    assert "42" in loop.requests[1]["messages"][-1]["content"]


async def test_with_plugins_and_client_tools_server_calls_run_and_the_clients_go_back(loop: Loop) -> None:
    # Responses with MCP entries and function tools: both kinds offered, each call goes where it belongs.
    loop.model(lambda messages, tools, body: tool_calls(("testkit__echo", {"text": "mine"}, "call_server"), ("lookup", {}, "call_client")))
    result = await loop.run(tools=[CLIENT_TOOL], plugins=["testkit"])

    offered = {tool["function"]["name"] for tool in loop.requests[0]["tools"]}
    assert "lookup" in offered and "testkit__echo" in offered
    done = result.completed
    assert done.stopped_by == "client_tools" and done.finish_reason == "tool_calls"
    assert [call["id"] for call in done.message["tool_calls"]] == ["call_client"]
    # The server's call ran; its result is in the conversation the client continues from.
    assert {"role": "tool", "tool_call_id": "call_server", "content": "mine"} in done.messages
