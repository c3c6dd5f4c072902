"""The loop's tool capabilities, with Python plugins through the real gateway: progress that
extends a call's deadline, images in tool results, tool search over a catalogue larger than
the provider accepts, sampling through the request's own model, and client disconnects."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import orjson
import pytest
from sqlmodel import Session, select

from runtime.orchestration.tools import TOOL_SEARCH_NAME, estimated_tokens
from runtime.storage.models import UsageRecord
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.support import GatewayServer

USER = [{"role": "user", "content": "go"}]


def tool_contents(request: dict) -> list:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


# -- progress -----------------------------------------------------------------------------------------------


def test_progress_reports_keep_a_long_tool_alive(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    # tool_timeout_s is 2 in tests: eight 0.5 s steps take 4 s, and each report moves the deadline.
    upstream.enqueue(Reply(tool_calls=[("testkit__steps", {"count": 8, "seconds": 0.5})]), Reply(text="all done"))
    reply = client.chat.completions.create(model="gpt-test", messages=USER)
    assert tool_contents(upstream.requests[1]) == ["finished 8 steps"]
    assert reply.model_extra["plugway"]["tool_calls"][0]["ok"] is True


@pytest.mark.gateway(orchestration={"tool_max_s": 3})
def test_progress_never_extends_beyond_tool_max_s(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("testkit__steps", {"count": 20, "seconds": 0.5})]), Reply(text="too long"))
    started = time.monotonic()
    client.chat.completions.create(model="gpt-test", messages=USER)
    assert time.monotonic() - started < 5
    (content,) = tool_contents(upstream.requests[1])
    assert orjson.loads(content)["error"]["type"] == "timeout"


def test_progress_reaches_the_stream(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("testkit__steps", {"count": 3, "seconds": 0.05})]), Reply(text="done"))
    with httpx.stream("POST", f"{gateway.base_url}/chat/completions", json={"model": "gpt-test", "messages": USER, "stream": True}, headers={"Authorization": f"Bearer {gateway.mint()}"}, timeout=10) as response:
        progress = [line for line in response.iter_lines() if line.startswith(": plugway tool_progress")]
    assert [orjson.loads(line.split(" ", 3)[3])["progress"] for line in progress] == [1, 2, 3]


# -- images -------------------------------------------------------------------------------------------------


def test_a_tools_image_reaches_a_vision_model_as_an_image_part_right_after_the_tool_results(
    client: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    upstream.enqueue(Reply(tool_calls=[("testkit__picture", {}), ("clock__now", {})]), Reply(text="I see a dot"))
    client.chat.completions.create(model="gpt-test", messages=USER)
    messages = upstream.requests[1]["messages"]
    roles = [m["role"] for m in messages]
    # Chat completions takes only text in a tool message: the image follows the round's tool messages.
    assert roles == ["user", "assistant", "tool", "tool", "user"]
    assert all(isinstance(m["content"], str) for m in messages if m["role"] == "tool")
    assert "a red dot" in tool_contents(upstream.requests[1])[0]
    text, image = messages[-1]["content"]
    assert text["type"] == "text" and messages[2]["tool_call_id"] in text["text"]
    assert image["type"] == "image_url" and image["image_url"]["url"].startswith("data:image/png;base64,iVBOR")


@pytest.mark.gateway(
    models=[{"id": "gpt-test", "provider": "upstream", "upstream_model": "gpt-3.5-turbo", "vision": False}]
)
def test_a_model_without_vision_reads_a_description_of_the_image(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("testkit__picture", {})]), Reply(text="I read about a dot"))
    client.chat.completions.create(model="gpt-test", messages=USER)
    (content,) = tool_contents(upstream.requests[1])
    assert content == "a red dot\n[image 'dot.png': image/png, 70 bytes]"
    assert [m["role"] for m in upstream.requests[1]["messages"]] == ["user", "assistant", "tool"]


def test_tool_schemas_reach_an_openai_compatible_upstream_without_schema_keywords_it_refuses(
    client: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"$schema": {"type": "string"}, "when": {"type": "object", "$schema": "x", "properties": {}}},
        "additionalProperties": False,
    }
    upstream.enqueue(Reply(text="ok"))
    client.chat.completions.create(
        model="gpt-test", messages=USER, tools=[{"type": "function", "function": {"name": "pick", "parameters": schema}}]
    )
    sent = upstream.requests[0]["tools"][0]["function"]["parameters"]
    # The keyword goes wherever it is one; a property of that name stays.
    assert sent == {
        "type": "object",
        "properties": {"$schema": {"type": "string"}, "when": {"type": "object", "properties": {}}},
        "additionalProperties": False,
    }


# -- tool search --------------------------------------------------------------------------------------------


@pytest.mark.gateway(plugins=[{"id": "catalogue"}, {"id": "calculator"}])
def test_a_catalogue_beyond_the_limit_is_offered_through_tool_search(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(
        Reply(tool_calls=[(TOOL_SEARCH_NAME, {"query": "weather forecast for a city"})]),
        Reply(tool_calls=[("catalogue__weather_forecast", {"item": "Lisbon"})]),
        Reply(text="Sunny in Lisbon."),
    )
    reply = client.chat.completions.create(model="gpt-test", messages=USER)
    assert reply.choices[0].message.content == "Sunny in Lisbon."
    first, second, third = upstream.requests
    assert [t["function"]["name"] for t in first["tools"]] == [TOOL_SEARCH_NAME]
    found = orjson.loads(tool_contents(second)[0])["tools"]
    assert found[0]["name"] == "catalogue__weather_forecast"
    offered = [t["function"]["name"] for t in second["tools"]]
    assert offered[0] == TOOL_SEARCH_NAME and "catalogue__weather_forecast" in offered and len(offered) <= 9
    assert orjson.loads(tool_contents(third)[1]) == {"tool": "weather_forecast", "item": "Lisbon"}
    trace = reply.model_extra["plugway"]
    assert "catalogue__weather_forecast" in trace["loaded_tools"]
    # What tool search saves on every request: the whole catalogue's definitions.
    assert sum(estimated_tokens(t) for t in first["tools"]) * 20 < 151 * estimated_tokens(second["tools"][1])


# -- sampling -----------------------------------------------------------------------------------------------


def test_a_tool_can_ask_the_requests_model_and_it_is_billed(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    key = gateway.mint()
    client = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    upstream.enqueue(
        Reply(tool_calls=[("testkit__ask_model", {"question": "What is the capital of Portugal?"})], prompt_tokens=100, completion_tokens=10),
        Reply(text="Lisbon", prompt_tokens=30, completion_tokens=2),
        Reply(text="It is Lisbon.", prompt_tokens=150, completion_tokens=5),
    )
    reply = client.chat.completions.create(model="gpt-test", messages=USER)
    assert reply.choices[0].message.content == "It is Lisbon."
    sampling = upstream.requests[1]
    assert "tools" not in sampling and sampling["max_tokens"] == 50
    assert sampling["messages"] == [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is the capital of Portugal?"}]
    assert tool_contents(upstream.requests[2]) == ["the model said: Lisbon (endTurn, 2 tokens)"]
    gateway.flush_usage()
    with Session(gateway.gateway.engine) as session:
        rows = {r.source: r for r in session.exec(select(UsageRecord).where(UsageRecord.organisation_id == "acme"))}
    assert (rows["mcp-sampling"].prompt_tokens, rows["mcp-sampling"].completion_tokens) == (30, 2)
    assert rows["api"].total_tokens == 100 + 10 + 150 + 5


def test_the_models_time_answering_a_tool_does_not_count_against_the_tool(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    # tool_timeout_s is 2 in tests; the model takes 2.5 s to answer the tool's question.
    upstream.enqueue(
        Reply(tool_calls=[("testkit__ask_model", {"question": "slow?"})]),
        Reply(text="yes", delay_s=2.5),
        Reply(text="It said yes."),
    )
    client.chat.completions.create(model="gpt-test", messages=USER)
    assert tool_contents(upstream.requests[2]) == ["the model said: yes (endTurn, 7 tokens)"]


@pytest.mark.gateway(orchestration={"sampling": {"max_calls_per_tool_call": 0}})
def test_sampling_beyond_the_calls_budget_is_refused_to_the_tool(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("testkit__ask_model", {"question": "hi"})]), Reply(text="ok"))
    client.chat.completions.create(model="gpt-test", messages=USER)
    (content,) = tool_contents(upstream.requests[1])
    assert "sampling budget" in orjson.loads(content)["error"]["message"]
    assert len(upstream.requests) == 2


# -- disconnects ----------------------------------------------------------------------------------------------


def test_a_client_that_hangs_up_cancels_the_tools_and_the_loop(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("testkit__slow", {"seconds": 1.5})], prompt_tokens=20, completion_tokens=3), Reply(text="never asked"))
    key = gateway.mint()

    def hang_up() -> None:
        try:
            httpx.post(f"{gateway.base_url}/chat/completions", json={"model": "gpt-test", "messages": USER}, headers={"Authorization": f"Bearer {key}"}, timeout=0.5)
        except httpx.TimeoutException:
            pass

    thread = threading.Thread(target=hang_up)
    thread.start()
    thread.join()
    time.sleep(2.0)  # longer than the tool would have run
    assert len(upstream.requests) == 1, "the loop went on after the client left"
    gateway.flush_usage()
    with Session(gateway.gateway.engine) as session:
        (record,) = session.exec(select(UsageRecord).where(UsageRecord.organisation_id == "acme"))
    assert (record.status, record.tool_calls, record.prompt_tokens) == ("abandoned", 1, 20)
