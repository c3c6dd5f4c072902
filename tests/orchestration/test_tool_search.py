"""More tools than the provider accepts: the model gets a tool search, and what it finds is callable
from the next round on; a request never fails for having too many tools (DESIGN rule 9)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from runtime.json_types import JSON
from runtime.orchestration.tools import TOOL_SEARCH_NAME
from runtime.providers.function import tool_call
from tests.orchestration.conftest import Loop, Loops, tool_results

pytestmark = pytest.mark.asyncio(loop_scope="session")


def names(body: JSON) -> list[str]:
    return [tool["function"]["name"] for tool in body.get("tools") or ()]


async def test_past_the_tool_limit_the_model_searches_and_calls_what_it_found(loop: Loop) -> None:
    def model(messages: list[JSON], tools: list[JSON], body: JSON) -> Any:
        round_no = len(loop.requests)
        if round_no == 1:
            return tool_call(TOOL_SEARCH_NAME, {"query": "weather forecast for a city"}, call_id="call_search")
        if round_no == 2:
            return tool_call("catalogue__weather_forecast", {"item": "Lisbon"}, call_id="call_weather")
        return "Sunny."

    loop.model(model)
    result = await loop.run(organisation="big")

    assert result.text == "Sunny."
    # 150 catalogue tools, more than the 128 a provider accepts: only the search is offered at first.
    assert names(loop.requests[0]) == [TOOL_SEARCH_NAME]
    found = orjson.loads(tool_results(loop.requests[1])["call_search"])
    assert "catalogue__weather_forecast" in [tool["name"] for tool in found["tools"]]
    # What the search found is offered from the next round on, beside the search.
    assert names(loop.requests[1])[0] == TOOL_SEARCH_NAME and "catalogue__weather_forecast" in names(loop.requests[1])
    assert orjson.loads(tool_results(loop.requests[2])["call_weather"]) == {"tool": "weather_forecast", "item": "Lisbon"}
    assert result.completed.trace["loaded_tools"] == [tool["name"] for tool in found["tools"]]


async def test_a_small_catalogue_is_offered_whole_without_a_search(loop: Loop) -> None:
    loop.model(lambda messages, tools, body: "ok")
    await loop.run()
    assert TOOL_SEARCH_NAME not in names(loop.requests[0])


async def test_a_prompt_budget_smaller_than_the_catalogue_also_means_a_search(loops: Loops) -> None:
    loop = await loops.get(tool_prompt_budget_tokens=100)
    loop.model(lambda messages, tools, body: "ok")
    await loop.run()
    assert names(loop.requests[0]) == [TOOL_SEARCH_NAME]
