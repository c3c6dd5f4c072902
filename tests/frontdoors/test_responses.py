"""POST /v1/responses end to end: the official openai SDK -> a real gateway -> fake upstreams."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import httpx
import openai
import orjson
import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import BaseModel
from sqlalchemy import func, select, update

from runtime.frontdoors.responses.store import StoredResponse, purge_expired
from runtime.json_types import JSON
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.anthropic_server import Reply as ClaudeReply
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.frontdoors.conftest import CLAUDE
from tests.mcp.mcp_helpers import TEST_SERVER
from tests.services import fresh_database
from tests.support import Gateways, GatewayServer, make_settings

CALC = ("calculator__evaluate", {"expression": "6*7"})


@pytest.fixture
def responses_client(client: openai.OpenAI) -> openai.OpenAI:
    return client


def _types(response: object) -> list[str]:
    return [item.type for item in response.output]  # type: ignore[attr-defined]


# -- plain, and the organisation's plugins run server-side ------------------------------------------


def test_plain_answer_with_instructions(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=gateway.mint("bare"), max_retries=0)
    upstream.enqueue(Reply(text="Bonjour.", prompt_tokens=12, completion_tokens=3))
    response = client.responses.create(model="gpt-test", input="Say hello in French.", instructions="Be brief.")
    assert response.output_text == "Bonjour."
    assert response.status == "completed" and response.id.startswith("resp_")
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (12, 3, 15)
    assert upstream.requests[0]["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello in French."}]
    assert "tools" not in upstream.requests[0]


def test_plugins_run_server_side_as_mcp_items(responses_client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(
        Reply(text="Let me compute.", tool_calls=[CALC], prompt_tokens=100, completion_tokens=10),
        Reply(text="It is 42.", prompt_tokens=150, completion_tokens=5),
    )
    response = responses_client.responses.create(model="gpt-test", input="What is 6*7?")
    assert response.output_text.endswith("It is 42.")
    types = _types(response)
    assert types[: types.index("message")] == ["mcp_list_tools"] * 3  # clock, calculator, testkit
    listed = {item.server_label: item for item in response.output if item.type == "mcp_list_tools"}
    assert {t.name for t in listed["calculator"].tools} == {"evaluate"}
    call = next(item for item in response.output if item.type == "mcp_call")
    assert (call.server_label, call.name, json.loads(call.arguments)) == ("calculator", "evaluate", {"expression": "6*7"})
    assert json.loads(call.output)["result"] == 42 and call.error is None
    assert types[-3:] == ["message", "mcp_call", "message"]
    assert (response.usage.input_tokens, response.usage.output_tokens) == (250, 15)


def test_streamed_multi_round_loop(responses_client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(
        Reply(tool_calls=[CALC], prompt_tokens=10, completion_tokens=2),
        Reply(tool_calls=[("testkit__echo", {"text": "ab", "times": 2})], prompt_tokens=20, completion_tokens=2),
        Reply(text="Done: 42 and abab.", prompt_tokens=30, completion_tokens=4),
    )
    kinds: list[str] = []
    deltas: list[str] = []
    with responses_client.responses.stream(model="gpt-test", input="compute and echo") as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert "".join(deltas) == "Done: 42 and abab." == final.output_text
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert kinds.count("response.mcp_call.completed") == 2
    assert kinds.index("response.mcp_call.completed") < kinds.index("response.output_text.delta")
    assert [i.name for i in final.output if i.type == "mcp_call"] == ["evaluate", "echo"]
    assert final.usage.total_tokens == 68


def test_sequence_numbers_count_up(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[CALC]), Reply(text="42"))
    client = openai.OpenAI(base_url=gateway.base_url, api_key=gateway.mint(), max_retries=0)
    numbers = [event.sequence_number for event in client.responses.create(model="gpt-test", input="6*7?", stream=True)]
    assert numbers == list(range(len(numbers)))


# -- the client's own function tools ------------------------------------------------------------------


WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def test_function_calls_go_back_and_continue_with_previous_response_id(responses_client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("get_weather", {"city": "Lisbon"})]), Reply(text="Sunny in Lisbon."))
    first = responses_client.responses.create(model="gpt-test", input="Weather in Lisbon?", tools=[WEATHER])
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Lisbon"})
    assert upstream.requests[0]["tools"] == [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER["parameters"]}}]
    second = responses_client.responses.create(
        model="gpt-test",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"sky": "clear"}'}],
        tools=[WEATHER],
    )
    assert second.output_text == "Sunny in Lisbon."
    sent = upstream.requests[1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[2] == {"role": "tool", "tool_call_id": call.call_id, "content": '{"sky": "clear"}'}
    assert second.previous_response_id == first.id


def test_function_tools_beside_plugin_tools(responses_client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[CALC, ("get_weather", {"city": "Oslo"})]))
    response = responses_client.responses.create(
        model="gpt-test",
        input="both",
        tools=[WEATHER, {"type": "mcp", "server_label": "calculator", "require_approval": "never"}],
    )
    assert [t["function"]["name"] for t in upstream.requests[0]["tools"]] == ["get_weather", "calculator__evaluate"]
    types = _types(response)
    assert types == ["mcp_list_tools", "mcp_call", "function_call"]


# -- MCP tool entries and approvals -----------------------------------------------------------------------


def test_mcp_entries_choose_plugins_and_tools(responses_client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="ok"))
    responses_client.responses.create(
        model="gpt-test",
        input="hi",
        tools=[{"type": "mcp", "server_label": "clock", "server_url": "plugway://plugins/clock", "allowed_tools": ["now"], "require_approval": "never"}],
    )
    assert [t["function"]["name"] for t in upstream.requests[0]["tools"]] == ["clock__now"]


@pytest.mark.parametrize(
    ("tool", "param"),
    [
        ({"type": "mcp", "server_label": "not-configured", "require_approval": "never"}, "tools[0].server_label"),
        ({"type": "mcp", "server_label": "clock", "server_url": "https://evil.example/mcp"}, "tools[0].server_url"),
    ],
)
def test_unknown_plugins_and_bad_server_urls_are_400(responses_client: openai.OpenAI, tool: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        responses_client.responses.create(model="gpt-test", input="hi", tools=[tool])
    assert info.value.body["param"] == param  # type: ignore[index]


def test_approval_ends_the_response_and_resumes(responses_client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    mcp = {"type": "mcp", "server_label": "testkit", "require_approval": {"never": {"tool_names": ["echo"]}}}
    upstream.enqueue(Reply(tool_calls=[("testkit__whoami", {}), ("testkit__echo", {"text": "x"})]), Reply(text="you are acme"))
    first = responses_client.responses.create(model="gpt-test", input="who am I?", tools=[mcp])
    (request,) = [item for item in first.output if item.type == "mcp_approval_request"]
    assert (request.server_label, request.name) == ("testkit", "whoami")
    assert not [item for item in first.output if item.type == "mcp_call"]  # nothing ran yet
    assert len(upstream.requests) == 1
    second = responses_client.responses.create(
        model="gpt-test",
        previous_response_id=first.id,
        input=[{"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}],
        tools=[mcp],
    )
    calls = {item.name: item for item in second.output if item.type == "mcp_call"}
    assert set(calls) == {"whoami", "echo"}
    assert json.loads(calls["whoami"].output)["organisation"] == "acme"
    assert second.output_text == "you are acme"
    assert not any(item.type == "mcp_list_tools" for item in second.output)  # listed in the first response already


def test_a_refused_approval_is_told_to_the_model(responses_client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    mcp = {"type": "mcp", "server_label": "testkit", "require_approval": "always"}
    upstream.enqueue(Reply(tool_calls=[("testkit__whoami", {})]), Reply(text="ok, I will not"))
    first = responses_client.responses.create(model="gpt-test", input="who am I?", tools=[mcp])
    (request,) = [item for item in first.output if item.type == "mcp_approval_request"]
    second = responses_client.responses.create(
        model="gpt-test",
        previous_response_id=first.id,
        input=[{"type": "mcp_approval_response", "approval_request_id": request.id, "approve": False}],
        tools=[mcp],
    )
    (call,) = [item for item in second.output if item.type == "mcp_call"]
    assert call.status == "failed" and "did not approve" in json.dumps(call.error.model_dump() if call.error else {})
    tool_message = upstream.requests[1]["messages"][-1]
    assert tool_message["role"] == "tool" and orjson.loads(tool_message["content"])["error"]["type"] == "not_approved"


# -- storage ---------------------------------------------------------------------------------------------


def test_stored_responses_are_per_organisation(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    acme = openai.OpenAI(base_url=gateway.base_url, api_key=gateway.mint("acme"), max_retries=0)
    bare = openai.OpenAI(base_url=gateway.base_url, api_key=gateway.mint("bare"), max_retries=0)
    upstream.enqueue(Reply(text="stored"), Reply(text="not stored"))
    kept = acme.responses.create(model="gpt-test", input="a", tools=[WEATHER])
    assert acme.responses.retrieve(kept.id).output_text == "stored"
    with pytest.raises(openai.NotFoundError):
        bare.responses.retrieve(kept.id)
    with pytest.raises(openai.NotFoundError) as info:
        bare.responses.create(model="gpt-test", input="b", previous_response_id=kept.id)
    assert info.value.body["param"] == "previous_response_id"  # type: ignore[index]
    ephemeral = acme.responses.create(model="gpt-test", input="c", store=False, tools=[WEATHER])
    with pytest.raises(openai.NotFoundError):
        acme.responses.retrieve(ephemeral.id)
    acme.responses.delete(kept.id)
    with pytest.raises(openai.NotFoundError):
        acme.responses.retrieve(kept.id)


# -- structured output and parameters ------------------------------------------------------------------


def test_text_format_and_parameters_are_translated(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=gateway.mint("bare"), max_retries=0)
    upstream.enqueue(Reply(text='{"city": "Lisbon"}'))
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}
    client.responses.create(
        model="gpt-test",
        input="city?",
        max_output_tokens=50,
        temperature=0.3,
        text={"format": {"type": "json_schema", "name": "place", "schema": schema, "strict": True}},
    )
    sent = upstream.requests[0]
    assert sent["response_format"] == {"type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": True}}
    assert (sent["max_completion_tokens"], sent["temperature"]) == (50, 0.3)


def test_background_is_refused_by_name(responses_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        responses_client.responses.create(model="gpt-test", input="hi", background=True)
    assert info.value.body["code"] == "unsupported_parameter" and info.value.body["param"] == "background"  # type: ignore[index]


def test_fields_a_chat_upstream_cannot_receive_are_ignored_and_named(responses_client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="ok"))
    raw = responses_client.responses.with_raw_response.create(
        model="gpt-test", input="hi", tools=[{"type": "web_search"}], extra_body={"conversation": "conv_1", "prompt": {"id": "p"}}
    )
    assert raw.parse().output_text == "ok"
    assert raw.headers["x-plugway-ignored-params"] == "conversation, prompt, tools[0]"
    sent = upstream.requests[0]
    assert not {"conversation", "prompt"} & set(sent)
    # Without the hosted tool the request has no tools of its own: the organisation's plugins are offered.
    assert {t["type"] for t in sent["tools"]} == {"function"}


def test_errors_raise_the_sdks_classes(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gateway.base_url, api_key="pw_nope", max_retries=0).responses.create(model="gpt-test", input="x")
    client = openai.OpenAI(base_url=gateway.base_url, api_key=gateway.mint("bare"), max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="x")
    upstream.enqueue(Reply(status=500))
    with pytest.raises(openai.InternalServerError):
        client.responses.create(model="gpt-test", input="x")


# -- a stored response read from a second gateway process on PostgreSQL -----------------------------------


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    from tests.services import fresh_database

    yield from fresh_database("postgresql", tmp_path, prefix="responses")


def test_previous_response_id_across_two_gateways_on_postgresql(tmp_path: Path, upstream: FakeOpenAI, postgres_url: str, gateways: Gateways) -> None:
    one = gateways.start(database_url=postgres_url, directory=tmp_path / "one")
    two = gateways.start(database_url=postgres_url, directory=tmp_path / "two")
    key = one.mint("bare")
    upstream.enqueue(Reply(text="My name is Ada."), Reply(text="You said your name is Ada."))
    first = openai.OpenAI(base_url=one.base_url, api_key=key, max_retries=0).responses.create(model="gpt-test", input="I am Ada.")
    second = openai.OpenAI(base_url=two.base_url, api_key=key, max_retries=0).responses.create(
        model="gpt-test", input="What is my name?", previous_response_id=first.id
    )
    assert second.output_text == "You said your name is Ada."
    assert [m["content"] for m in upstream.requests[1]["messages"]] == ["I am Ada.", "My name is Ada.", "What is my name?"]


# -- the same front door over an Anthropic-format upstream ---------------------------------------------


def test_streamed_loop_on_a_claude_model(claude_gateway: GatewayServer, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(
        [
            ClaudeReply(tool_use=[("calculator__evaluate", {"expression": "19*3"})], input_tokens=40, output_tokens=6),
            ClaudeReply(text="19*3 is 57.", input_tokens=60, output_tokens=7),
        ]
    )
    client = openai.OpenAI(base_url=claude_gateway.base_url, api_key=claude_gateway.mint("acme"), max_retries=0)
    with client.responses.stream(model=CLAUDE, input="19*3?", tools=[{"type": "mcp", "server_label": "calculator", "require_approval": "never"}]) as stream:
        final = stream.get_final_response()
    assert final.output_text == "19*3 is 57."
    (call,) = [i for i in final.output if i.type == "mcp_call"]
    assert json.loads(call.output)["result"] == 57
    assert (final.usage.input_tokens, final.usage.output_tokens) == (100, 13)
    assert [t["name"] for t in fake_anthropic.requests[0].body["tools"]] == ["calculator__evaluate"]


# -- streamed tools and approvals, the event sequence, parts and parameters, retention, Claude models, progress ---
# The official openai SDK (and httpx for the raw stream) -> one gateway on PostgreSQL -> fake upstreams.

TABLE = StoredResponse.__table__  # type: ignore[attr-defined]
RETENTION_DAYS = 7


def mcp(label: str, approval: Any = "never") -> JSON:
    return {"type": "mcp", "server_label": label, "require_approval": approval}


# The openai package's class for every Responses stream event type.
_UNION, *_ = get_args(ResponseStreamEvent)
EVENT_TYPES: dict[str, type[BaseModel]] = {get_args(cls.model_fields["type"].annotation)[0]: cls for cls in get_args(_UNION)}


@pytest.fixture(scope="module")
def gw(upstream_server: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """One gateway on PostgreSQL; acme has the in-process plugins and the MCP test server (stdio) as ``tk``."""
    directory = tmp_path_factory.mktemp("responses-postgresql")
    for database_url in fresh_database("postgresql", directory, prefix="responses_postgresql"):
        plugins = [
            {"id": "clock"},
            {"id": "calculator"},
            {"id": "testkit", "config": {"flavour": "vanilla"}},
            {"id": "tk", "mcp": {"command": [sys.executable, str(TEST_SERVER)]}},
        ]
        settings = make_settings(
            directory, upstream_server.base_url, plugins=plugins, database_url=database_url, responses={"retention_days": RETENTION_DAYS}
        )
        with Gateways() as started:
            yield started.start(settings)


@pytest.fixture(scope="module")
def acme(gw: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=gw.mint("acme"), max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def bare(gw: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=gw.mint("bare"), max_retries=0, timeout=30)


def raw_stream(gw: GatewayServer, client: openai.OpenAI, body: JSON) -> tuple[list[JSON], list[str]]:
    """The SSE stream as sent: each event's data (its ``event:`` name checked), and every
    event type and comment line in the order they came."""
    events: list[JSON] = []
    order: list[str] = []
    headers = {"Authorization": f"Bearer {client.api_key}"}
    with httpx.stream("POST", f"{gw.base_url}/responses", json={**body, "stream": True}, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        name: str | None = None
        for line in response.iter_lines():
            if line.startswith(":"):
                order.append(line)
            elif line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                event = orjson.loads(line.removeprefix("data: "))
                assert event["type"] == name
                events.append(event)
                order.append(event["type"])
                name = None
    return events, order


def validated(events: list[JSON]) -> list[BaseModel]:
    """Each event validated (not merely constructed) as the openai package's class for its type."""
    return [EVENT_TYPES[event["type"]].model_validate(event) for event in events]


def collapsed(kinds: list[str]) -> list[str]:
    """Event types, with a run of text deltas as one (how a text is chunked is the upstream's choice)."""
    out: list[str] = []
    for kind in kinds:
        if not (kind == "response.output_text.delta" and out and out[-1] == kind):
            out.append(kind)
    return out


def streamed(client: openai.OpenAI, **params: Any) -> tuple[list[Any], Any]:
    """The SDK stream helper's events and final response."""
    with client.responses.stream(**params) as stream:
        events = list(stream)
        final = stream.get_final_response()
    return events, final


# -- 1 and 3: streamed function tools, approvals and previous_response_id -----------------------------------


def test_a_streamed_function_call_round_trip_continues_with_previous_response_id(acme: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(tool_calls=[("get_weather", {"city": "Lisbon"})]), Reply(text="Sunny in Lisbon."))
    events, first = streamed(acme, model="gpt-test", input="Weather in Lisbon?", tools=[WEATHER])
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert (call.name, json.loads(call.arguments), call.status) == ("get_weather", {"city": "Lisbon"}, "completed")
    kinds = [event.type for event in events]
    added = next(i for i, e in enumerate(events) if e.type == "response.output_item.added" and e.item.type == "function_call")
    assert kinds[added:] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    delta, done = events[added + 1], events[added + 2]
    assert delta.item_id == done.item_id == call.id and delta.output_index == done.output_index == first.output.index(call)
    assert json.loads(delta.delta) == json.loads(done.arguments) == {"city": "Lisbon"}
    assert upstream.requests[0]["stream"] is True
    assert acme.responses.retrieve(first.id).output[-1].call_id == call.call_id  # a streamed response is stored too

    _, second = streamed(
        acme,
        model="gpt-test",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"sky": "clear"}'}],
        tools=[WEATHER],
    )
    assert second.output_text == "Sunny in Lisbon." and second.previous_response_id == first.id
    sent = upstream.requests[1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[1]["tool_calls"][0]["id"] == call.call_id
    assert sent[2] == {"role": "tool", "tool_call_id": call.call_id, "content": '{"sky": "clear"}'}


def test_a_streamed_approval_request_then_a_streamed_resume(acme: openai.OpenAI, upstream: FakeOpenAI) -> None:
    tools = [mcp("testkit", "always")]
    upstream.enqueue(Reply(tool_calls=[("testkit__whoami", {})]), Reply(text="You are acme."))
    events, first = streamed(acme, model="gpt-test", input="Who am I?", tools=tools)
    (request,) = [item for item in first.output if item.type == "mcp_approval_request"]
    assert (request.server_label, request.name, first.status) == ("testkit", "whoami", "completed")
    kinds = [event.type for event in events]
    assert "response.mcp_call.in_progress" not in kinds and not any(item.type == "mcp_call" for item in first.output)
    assert [e.item.id for e in events if e.type == "response.output_item.done" and e.item.type == "mcp_approval_request"] == [request.id]
    assert len(upstream.requests) == 1

    events, second = streamed(
        acme,
        model="gpt-test",
        previous_response_id=first.id,
        input=[{"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}],
        tools=tools,
    )
    (call,) = [item for item in second.output if item.type == "mcp_call"]
    assert call.name == "whoami" and json.loads(call.output)["organisation"] == "acme"
    kinds = [event.type for event in events]
    assert kinds.index("response.mcp_call.in_progress") < kinds.index("response.mcp_call.completed") < kinds.index("response.output_text.delta")
    assert second.output_text == "You are acme."
    assert upstream.requests[1]["messages"][-1]["role"] == "tool"


def test_a_streamed_continuation_carries_the_previous_conversation(acme: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="Hello Ada."), Reply(text="Your name is Ada."))
    _, first = streamed(acme, model="gpt-test", input="I am Ada.", tools=[WEATHER])
    events, second = streamed(acme, model="gpt-test", input="What is my name?", previous_response_id=first.id, tools=[WEATHER])
    assert second.output_text == "Your name is Ada."
    assert events[0].type == "response.created" and events[0].response.previous_response_id == first.id
    assert [(m["role"], m["content"]) for m in upstream.requests[1]["messages"]] == [
        ("user", "I am Ada."),
        ("assistant", "Hello Ada."),
        ("user", "What is my name?"),
    ]


# -- 2: the stream's event sequence for an MCP tool loop, each event validated as the SDK's type ----------------


def test_an_mcp_tool_loop_streams_every_event_in_order_and_each_validates(gw: GatewayServer, acme: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(
        Reply(text="Let me compute.", tool_calls=[CALC]),
        Reply(tool_calls=[("testkit__boom", {})]),
        Reply(text="42; the other tool failed."),
    )
    body = {"model": "gpt-test", "input": "go", "tools": [mcp("calculator"), {**mcp("testkit"), "allowed_tools": ["boom"]}]}
    events, _ = raw_stream(gw, acme, body)
    models = validated(events)
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    list_tools = [
        "response.output_item.added",
        "response.mcp_list_tools.in_progress",
        "response.mcp_list_tools.completed",
        "response.output_item.done",
    ]
    mcp_call = [
        "response.output_item.added",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
    ]
    message = [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    assert collapsed([event["type"] for event in events]) == [
        "response.created",
        "response.in_progress",
        *list_tools,  # calculator
        *list_tools,  # testkit
        *message,  # "Let me compute."
        *mcp_call,
        "response.mcp_call.completed",
        "response.output_item.done",
        *mcp_call,
        "response.mcp_call.failed",
        "response.output_item.done",
        *message,  # the answer
        "response.completed",
    ]
    created, completed = models[0], models[-1]
    assert created.response.status == "in_progress" and created.response.output == []  # type: ignore[attr-defined]
    final = completed.response  # type: ignore[attr-defined]
    assert [item.type for item in final.output] == ["mcp_list_tools", "mcp_list_tools", "message", "mcp_call", "mcp_call", "message"]
    listed = {item.server_label: [t.name for t in item.tools] for item in final.output if item.type == "mcp_list_tools"}
    assert listed == {"calculator": ["evaluate"], "testkit": ["boom"]}
    ok, failed = (item for item in final.output if item.type == "mcp_call")
    assert (ok.status, json.loads(ok.output)["result"], ok.error) == ("completed", 42, None)
    assert failed.status == "failed" and failed.output is None and "flux capacitor" in json.dumps(failed.error.model_dump())
    failed_event = next(e for e in events if e["type"] == "response.mcp_call.failed")
    assert (failed_event["item_id"], failed_event["output_index"]) == (failed.id, 4)
    texts = [e["text"] for e in events if e["type"] == "response.output_text.done"]
    assert texts == ["Let me compute.", "42; the other tool failed."] and final.output_text == "Let me compute.42; the other tool failed."
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(e["delta"] for e in deltas if e["output_index"] == 5) == "42; the other tool failed."


# -- 4: input parts, and parameters passed and echoed ---------------------------------------------------------

DOT = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="


def test_an_input_image_and_an_assistants_output_text_reach_the_upstream(bare: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="Still red."))
    response = bare.responses.create(
        model="gpt-test",
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "What colour?"}, {"type": "input_image", "image_url": DOT, "detail": "low"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Red.", "annotations": []}]},
            {"role": "user", "content": "Sure?"},
        ],
    )
    assert response.output_text == "Still red."
    assert upstream.requests[0]["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "What colour?"}, {"type": "image_url", "image_url": {"url": DOT, "detail": "low"}}]},
        {"role": "assistant", "content": "Red."},
        {"role": "user", "content": "Sure?"},
    ]


@pytest.mark.parametrize(
    ("tool_choice", "sent"),
    [
        ("required", "required"),
        ({"type": "function", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
        ({"type": "mcp", "server_label": "calculator", "name": "evaluate"}, {"type": "function", "function": {"name": "calculator__evaluate"}}),
    ],
)
def test_tool_choice_parallel_tool_calls_top_p_and_metadata(acme: openai.OpenAI, upstream: FakeOpenAI, tool_choice: Any, sent: Any) -> None:
    upstream.enqueue(Reply(text="ok"))
    response = acme.responses.create(
        model="gpt-test",
        input="hi",
        tools=[WEATHER, mcp("calculator")],
        tool_choice=tool_choice,
        parallel_tool_calls=False,
        top_p=0.25,
        metadata={"ticket": "T-1"},
    )
    request = upstream.requests[0]
    assert (request["tool_choice"], request["parallel_tool_calls"], request["top_p"]) == (sent, False, 0.25)
    assert "metadata" not in request  # the gateway's bookkeeping, not the model's
    for echoed in (response, acme.responses.retrieve(response.id)):
        assert (echoed.parallel_tool_calls, echoed.top_p, echoed.metadata) == (False, 0.25, {"ticket": "T-1"})
        choice = echoed.tool_choice
        assert (choice if isinstance(choice, str) else choice.model_dump(exclude_none=True)) == tool_choice


def test_parameters_left_out_are_echoed_as_defaults(bare: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="ok"))
    response = bare.responses.create(model="gpt-test", input="hi")
    assert (response.tool_choice, response.parallel_tool_calls, response.top_p, response.metadata) == ("auto", True, None, {})
    assert not {"tool_choice", "parallel_tool_calls", "top_p", "metadata"} & set(upstream.requests[0])


# -- 5: retention, the purge, and another organisation's id --------------------------------------------------


def _rows(gw: GatewayServer, response_id: str) -> int:
    with gw.gateway.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(TABLE).where(TABLE.c.id == response_id)).scalar_one())


def test_a_response_past_its_retention_is_gone_and_purged(gw: GatewayServer, bare: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="old"), Reply(text="new"))
    old = bare.responses.create(model="gpt-test", input="a")
    new = bare.responses.create(model="gpt-test", input="b")
    with gw.gateway.engine.begin() as connection:
        created, expires = connection.execute(select(TABLE.c.created_at, TABLE.c.expires_at).where(TABLE.c.id == old.id)).one()
        assert expires - created == timedelta(days=RETENTION_DAYS)  # responses.retention_days
        connection.execute(update(TABLE).where(TABLE.c.id == old.id).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    with pytest.raises(openai.NotFoundError):
        bare.responses.retrieve(old.id)  # reads already ignore it
    with pytest.raises(openai.NotFoundError) as info:
        bare.responses.create(model="gpt-test", input="c", previous_response_id=old.id)
    assert info.value.body["param"] == "previous_response_id"  # type: ignore[index]

    assert purge_expired(gw.gateway.engine) >= 1
    assert (_rows(gw, old.id), _rows(gw, new.id)) == (0, 1)
    with pytest.raises(openai.NotFoundError):
        bare.responses.retrieve(old.id)
    assert bare.responses.retrieve(new.id).output_text == "new"


def test_deleting_another_organisations_response_is_404_and_leaves_it(acme: openai.OpenAI, bare: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="mine"))
    kept = acme.responses.create(model="gpt-test", input="a", tools=[WEATHER])
    with pytest.raises(openai.NotFoundError) as info:
        bare.responses.delete(kept.id)
    assert info.value.body["code"] == "not_found"  # type: ignore[index]
    assert acme.responses.retrieve(kept.id).output_text == "mine"
    with pytest.raises(openai.NotFoundError):
        acme.responses.delete("resp_no_such_response")


# -- 6: function tools and approvals on a Claude model (Anthropic-format upstream) ---------------------------


def test_function_tools_on_a_claude_model(claude_gateway: GatewayServer, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script([ClaudeReply(tool_use=[("get_weather", {"city": "Lisbon"})]), ClaudeReply(text="Sunny in Lisbon.")])
    client = openai.OpenAI(base_url=claude_gateway.base_url, api_key=claude_gateway.mint("acme"), max_retries=0)
    first = client.responses.create(model=CLAUDE, input="Weather in Lisbon?", tools=[WEATHER])
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Lisbon"})
    assert [t["name"] for t in fake_anthropic.requests[0].body["tools"]] == ["get_weather"]
    second = client.responses.create(
        model=CLAUDE,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "clear sky"}],
        tools=[WEATHER],
    )
    assert second.output_text == "Sunny in Lisbon."
    assistant, result = fake_anthropic.requests[1].body["messages"][-2:]
    (use,) = [block for block in assistant["content"] if block["type"] == "tool_use"]
    assert (use["id"], use["name"], use["input"]) == (call.call_id, "get_weather", {"city": "Lisbon"})
    (block,) = result["content"]
    assert block["type"] == "tool_result" and block["tool_use_id"] == call.call_id
    assert "clear sky" in json.dumps(block["content"])


def test_approvals_on_a_claude_model(claude_gateway: GatewayServer, fake_anthropic: FakeAnthropic) -> None:
    tools = [mcp("testkit", "always")]
    fake_anthropic.script([ClaudeReply(tool_use=[("testkit__whoami", {})]), ClaudeReply(text="You are acme.")])
    client = openai.OpenAI(base_url=claude_gateway.base_url, api_key=claude_gateway.mint("acme"), max_retries=0)
    first = client.responses.create(model=CLAUDE, input="Who am I?", tools=tools)
    (request,) = [item for item in first.output if item.type == "mcp_approval_request"]
    assert (request.server_label, request.name) == ("testkit", "whoami")
    assert len(fake_anthropic.requests) == 1
    second = client.responses.create(
        model=CLAUDE,
        previous_response_id=first.id,
        input=[{"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}],
        tools=tools,
    )
    (call,) = [item for item in second.output if item.type == "mcp_call"]
    assert json.loads(call.output)["organisation"] == "acme" and second.output_text == "You are acme."
    (block,) = fake_anthropic.requests[1].body["messages"][-1]["content"]
    assert block["type"] == "tool_result" and "acme" in json.dumps(block["content"])


# -- 7: MCP progress in a Responses stream ---------------------------------------------------------------------


def test_mcp_progress_reaches_the_responses_stream_as_comments(gw: GatewayServer, acme: openai.OpenAI, upstream: FakeOpenAI) -> None:
    steps = ("tk__steps", {"count": 3, "seconds": 0.05})
    upstream.enqueue(Reply(tool_calls=[steps]), Reply(text="done"))
    body = {"model": "gpt-test", "input": "go", "tools": [mcp("tk")]}
    events, order = raw_stream(gw, acme, body)
    validated(events)
    progress = [line for line in order if line.startswith(": plugway tool_progress ")]
    assert progress, order
    # Reported while the call runs: after its mcp_call.in_progress, before its mcp_call.completed.
    assert order.index("response.mcp_call.in_progress") < order.index(progress[0])
    assert order.index(progress[-1]) < order.index("response.mcp_call.completed")
    reports = [orjson.loads(line.removeprefix(": plugway tool_progress ")) for line in progress]
    assert [(r["progress"], r["total"], r["message"]) for r in reports] == [(1, 3, "step 1 of 3"), (2, 3, "step 2 of 3"), (3, 3, "step 3 of 3")]
    call = next(e["item"] for e in events if e["type"] == "response.output_item.done" and e["item"]["type"] == "mcp_call")
    assert {r["item_id"] for r in reports} == {call["id"]} and call["output"] == "finished 3 steps"

    # The SDK's stream helper skips the comments and still parses every event.
    upstream.enqueue(Reply(tool_calls=[steps]), Reply(text="done"))
    sdk_events, final = streamed(acme, **body)
    assert [e.sequence_number for e in sdk_events] == list(range(len(sdk_events)))
    (item,) = [i for i in final.output if i.type == "mcp_call"]
    assert item.output == "finished 3 steps" and final.output_text == "done"
