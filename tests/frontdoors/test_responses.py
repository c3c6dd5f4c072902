"""POST /v1/responses end to end: the official openai SDK -> a real gateway -> fake upstreams."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import orjson
import pytest

from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.anthropic_server import Reply as ClaudeReply
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.frontdoors.conftest import CLAUDE
from tests.support import GatewayServer, make_settings

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


def test_previous_response_id_across_two_gateways_on_postgresql(tmp_path: Path, upstream: FakeOpenAI, postgres_url: str) -> None:
    first_dir, second_dir = tmp_path / "one", tmp_path / "two"
    first_dir.mkdir()
    second_dir.mkdir()
    one = GatewayServer(make_settings(first_dir, upstream.base_url, database_url=postgres_url)).start()
    two = GatewayServer(make_settings(second_dir, upstream.base_url, database_url=postgres_url)).start()
    try:
        key = one.mint("bare")
        upstream.enqueue(Reply(text="My name is Ada."), Reply(text="You said your name is Ada."))
        first = openai.OpenAI(base_url=one.base_url, api_key=key, max_retries=0).responses.create(model="gpt-test", input="I am Ada.")
        second = openai.OpenAI(base_url=two.base_url, api_key=key, max_retries=0).responses.create(
            model="gpt-test", input="What is my name?", previous_response_id=first.id
        )
        assert second.output_text == "You said your name is Ada."
        assert [m["content"] for m in upstream.requests[1]["messages"]] == ["I am Ada.", "My name is Ada.", "What is my name?"]
    finally:
        one.stop()
        two.stop()


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
