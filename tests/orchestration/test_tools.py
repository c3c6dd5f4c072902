"""Tool calls in a round: concurrent, each under its timeout; every failure becomes a result the
model reads, never a failed request; long results are cut with the one notice (DESIGN rule 4)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from runtime.json_types import JSON
from runtime.providers.function import tool_call, tool_calls
from runtime.text import TRUNCATION_NOTICE
from tests.orchestration.conftest import Loop, Loops, tool_results

pytestmark = pytest.mark.asyncio(loop_scope="session")


def calls_then_answer(*calls: tuple[str, JSON | str], answer: str = "done") -> Any:
    """A model that makes these calls in its first round, then answers."""

    def model(messages: list[JSON], tools: list[JSON], body: JSON) -> Any:
        if messages[-1]["role"] == "tool":
            return answer
        return tool_calls(*((name, arguments, f"call_{i}") for i, (name, arguments) in enumerate(calls)))

    return model


def error_of(content: str) -> JSON:
    error: JSON = orjson.loads(content)["error"]
    return error


async def test_the_calls_of_one_round_run_concurrently(loop: Loop) -> None:
    loop.model(calls_then_answer(("testkit__slow", {"seconds": 0.05}), ("testkit__slow", {"seconds": 0.05})))
    result = await loop.run()
    first, second = (orjson.loads(c) for c in tool_results(loop.requests[1]).values())
    # Each started before the other ended.
    assert first["started"] < second["ended"] and second["started"] < first["ended"]
    assert result.text == "done"


async def test_results_reach_the_model_in_the_order_of_its_calls(loop: Loop) -> None:
    # The slower call is first: its result still comes first.
    loop.model(calls_then_answer(("testkit__slow", {"seconds": 0.05}), ("testkit__echo", {"text": "quick"})))
    await loop.run()
    tool_messages = [m for m in loop.requests[1]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == ["call_0", "call_1"]
    assert tool_messages[1]["content"] == "quick"


async def test_a_tool_that_outlives_its_timeout_becomes_a_timeout_result(loops: Loops) -> None:
    loop = await loops.get(tool_timeout_s=0.05)
    loop.model(calls_then_answer(("testkit__slow", {"seconds": 30}), ("testkit__echo", {"text": "still here"})))
    result = await loop.run()
    results = tool_results(loop.requests[1])
    assert error_of(results["call_0"])["type"] == "timeout"
    assert results["call_1"] == "still here"
    assert result.text == "done"
    trace = result.completed.trace["tool_calls"]
    assert [c["ok"] for c in trace] == [False, True]


async def test_an_unknown_tool_becomes_a_result_naming_the_tools_there_are(loops: Loops) -> None:
    loop = await loops.get(max_tool_result_chars=20000)
    loop.model(calls_then_answer(("nowhere__nothing", {})))
    result = await loop.run()
    error = error_of(tool_results(loop.requests[1])["call_0"])
    assert error["type"] == "unknown_tool"
    assert "nowhere__nothing" in error["message"] and "clock__now" in error["message"]
    assert result.text == "done"


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ({"times": 2}, "text"),  # a required argument missing
        ({"text": "a", "times": "many"}, "times"),  # the wrong type
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
    ],
)
async def test_arguments_that_fail_the_schema_become_a_result(loop: Loop, arguments: JSON | str, says: str) -> None:
    loop.model(calls_then_answer(("testkit__echo", arguments)))
    result = await loop.run()
    error = error_of(tool_results(loop.requests[1])["call_0"])
    assert error["type"] == "invalid_arguments" and says in error["message"]
    assert result.text == "done"


async def test_a_failing_tool_becomes_a_result_and_a_refusal_carries_its_reason(loop: Loop) -> None:
    loop.model(calls_then_answer(("testkit__boom", {}), ("testkit__refuse", {"reason": "not today"})))
    result = await loop.run()
    results = tool_results(loop.requests[1])
    assert "flux capacitor" in error_of(results["call_0"])["message"]
    assert error_of(results["call_1"]) == {"type": "tool_error", "message": "refused: not today"}
    assert result.text == "done"


async def test_a_long_result_is_cut_with_the_notice(loop: Loop) -> None:
    loop.model(calls_then_answer(("testkit__echo", {"text": "x", "times": 1000})))
    await loop.run()
    content = tool_results(loop.requests[1])["call_0"]
    assert len(content) <= 300  # max_tool_result_chars of these tests
    shown = content.count("x")
    assert content == "x" * shown + TRUNCATION_NOTICE.format(shown=shown, total=1000)


async def test_images_in_tool_results_reach_a_provider_whose_profile_shows_them(loop: Loop) -> None:
    # The function kind's profile has tool_result_images: the picture goes to the model as an image part.
    loop.model(calls_then_answer(("testkit__picture", {})))
    await loop.run()
    (message,) = [m for m in loop.requests[1]["messages"] if m["role"] == "tool"]
    kinds = [part["type"] for part in message["content"]]
    assert kinds == ["text", "image_url"]
    assert message["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")


async def test_a_tool_reads_its_context(loop: Loop) -> None:
    loop.model(lambda messages, tools, body: "ok" if messages[-1]["role"] == "tool" else tool_call("testkit__whoami", {}))
    result = await loop.run()
    (content,) = tool_results(loop.requests[1]).values()
    context = orjson.loads(content)
    assert context["organisation"] == "acme" and context["plugin"] == "testkit"
    assert context["request_id"] == result.state.request_id
