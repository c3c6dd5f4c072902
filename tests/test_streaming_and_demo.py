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


# -- the demo model keeps formats, through the gateway, with the official SDKs ----------------------

import json  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import openai  # noqa: E402
import pytest  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from runtime.config import settings_from_dict  # noqa: E402
from tests.support import Gateways, GatewayServer  # noqa: E402


class Calculation(BaseModel):
    expression: str
    result: float
    explanation: str


@pytest.fixture(scope="module")
def demo_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    directory: Path = tmp_path_factory.mktemp("demo")
    settings = settings_from_dict({
        "database_url": f"sqlite:///{directory / 'plugway.db'}",
        "providers": [{"id": "demo", "kind": "demo"}],
        "models": [{"id": "demo", "provider": "demo"}],
        "organisations": [{"id": "acme", "plugins": [{"id": "calculator"}, {"id": "clock"}]}],
        "usage": {"flush_interval_s": 0.05},
    })
    with Gateways() as started:
        yield started.start(settings)


@pytest.fixture(scope="module")
def demo_client(demo_gateway: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=demo_gateway.base_url, api_key=demo_gateway.mint(), max_retries=0, timeout=30)


def test_chat_parse_gets_the_pydantic_model_after_a_server_side_tool_round(demo_client: openai.OpenAI) -> None:
    completion = demo_client.chat.completions.parse(
        model="demo", messages=[{"role": "user", "content": "What is 12.5% of 1,840?"}], response_format=Calculation,
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Calculation)
    assert parsed.result == 230 and parsed.expression == "12.5 / 100 * 1840"
    assert completion.model_extra is not None
    assert [call["name"] for call in completion.model_extra["plugway"]["tool_calls"]] == ["calculator__evaluate"]


def test_responses_parse_gets_the_pydantic_model_after_a_server_side_tool_round(demo_client: openai.OpenAI) -> None:
    response = demo_client.responses.parse(model="demo", input="Convert 26.2 miles to km", text_format=Calculation)
    assert "mcp_call" in [item.type for item in response.output]
    parsed = response.output_parsed
    assert isinstance(parsed, Calculation) and round(parsed.result, 3) == 42.165


def test_json_mode_answers_with_the_keys_asked_for_after_a_tool_round(demo_client: openai.OpenAI) -> None:
    completion = demo_client.chat.completions.create(
        model="demo", response_format={"type": "json_object"},
        messages=[{"role": "system", "content": "Reply in JSON with keys result and explanation."},
                  {"role": "user", "content": "What is 17 * 23?"}],
    )
    answer = json.loads(completion.choices[0].message.content or "")
    assert set(answer) == {"result", "explanation"} and answer["result"] == 391
    assert completion.model_extra is not None and completion.model_extra["plugway"]["rounds"] == 2


def test_the_demo_calls_client_tools_named_in_camel_case_and_keeps_the_format_after(demo_client: openai.OpenAI) -> None:
    tools = [{"type": "function", "function": {"name": "getWeather", "description": "Weather in a city.", "strict": True, "parameters": {
        "type": "object", "properties": {"cityName": {"type": "string"}}, "required": ["cityName"], "additionalProperties": False}}}]
    messages: list = [{"role": "user", "content": "What's the weather in Paris?"}]
    first = demo_client.chat.completions.create(model="demo", messages=messages, tools=tools)
    (call,) = first.choices[0].message.tool_calls or []
    assert call.function.name == "getWeather" and json.loads(call.function.arguments) == {"cityName": "Paris"}

    class Weather(BaseModel):
        city: str
        temperature_c: float

    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"city": "Paris", "temperature_c": 18.5})}]
    final = demo_client.chat.completions.parse(model="demo", messages=messages, tools=tools, response_format=Weather)
    assert final.choices[0].message.parsed == Weather(city="Paris", temperature_c=18.5)


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("What is 12.5% of 1,840?", "12.5% of 1840 = 230"),
        ("How many kilometers is 10 miles?", "10 miles in kilometers = 16.09344"),
        ("What is 212 °F in celsius?", "212 °f in celsius = 100"),
        ("What day of the week is 2026-12-25?", "2026-12-25 (Friday)"),
        ("How many days between 2026-01-01 and 2026-03-01?", "59 days"),
        ("What date is 30 days from 2026-01-15?", "2026-02-14 (Saturday)"),
    ],
)
def test_the_demo_understands_percentages_conversions_and_dates(demo_client: openai.OpenAI, question: str, expected: str) -> None:
    reply = demo_client.chat.completions.create(model="demo", messages=[{"role": "user", "content": question}])
    assert expected in (reply.choices[0].message.content or ""), reply.choices[0].message.content


def test_agents_sdk_output_type_after_a_client_tool_round(demo_gateway: GatewayServer) -> None:
    agents = pytest.importorskip("agents", reason="openai-agents is in the test extra")
    import asyncio

    class Forecast(BaseModel):
        city: str
        temperature_c: float
        summary: str

    @agents.function_tool
    def get_weather(city: str) -> dict:  # type: ignore[type-arg]
        """The weather in a city."""
        return {"city": city, "temperature_c": 21.0}

    client = openai.AsyncOpenAI(base_url=demo_gateway.base_url, api_key=demo_gateway.mint(), max_retries=0)
    agent = agents.Agent(
        name="forecaster", instructions="Answer with the forecast.", tools=[get_weather], output_type=Forecast,
        model=agents.OpenAIResponsesModel(model="demo", openai_client=client),
    )
    agents.set_tracing_disabled(True)
    result = asyncio.run(agents.Runner.run(agent, "What's the weather in Lisbon?"))
    assert isinstance(result.final_output, Forecast)
    assert result.final_output.city == "Lisbon" and result.final_output.temperature_c == 21.0
