"""Reasoning state when the client speaks one protocol and the model the other.

A stateless Responses client (Codex's way: ``store: false``, ``include`` the encrypted
content, its history sent back each turn) on an Anthropic model, and a Messages client
(Claude Code's way: thinking on, its content blocks sent back) on a Responses-native model.
Each fake checks what its real API checks: the Anthropic fake refuses a tool round whose
thinking is missing or altered, the Responses fake a reasoning item it did not issue. So
these pass only if the model's own state went to the client and came back whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from runtime.frontdoors.carry import IGNORED_HEADER
from runtime.reasoning import CARRIER_PREFIX
from tests.e2e.conftest import anthropic_provider
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.anthropic_server import Reply as ClaudeReply
from tests.fakes.responses_server import Call, FakeResponses, Turn, reasoning_items
from tests.support import Gateways, GatewayServer, make_settings

JSON = dict[str, Any]
CLAUDE = "claude-test"
NATIVE = "gpt-native"
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city.", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
WEATHER_TOOL = {"name": "get_weather", "description": "Weather in a city.", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
ENCRYPTED = ["reasoning.encrypted_content"]


@pytest.fixture(scope="module")
def responses_fake() -> Iterator[FakeResponses]:
    server = FakeResponses().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(fake_anthropic_server: FakeAnthropic, responses_fake: FakeResponses, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("across-protocols"),
        responses_fake.base_url,
        providers=[
            anthropic_provider("claude", fake_anthropic_server.base_url, breaker_failures=100),
            {"id": "native", "kind": "openai", "api": "responses", "base_url": responses_fake.base_url, "api_key": responses_fake.api_key, "max_retries": 0},
        ],
        models=[{"id": CLAUDE, "provider": "claude", "upstream_model": "claude-sonnet-4-5"}, {"id": NATIVE, "provider": "native", "upstream_model": "gpt-5.5"}],
        organisations=[{"id": "bare"}, {"id": "acme", "plugins": [{"id": "calculator"}]}],
    )
    with Gateways() as started:
        yield started.start(settings)


@pytest.fixture
def fake(responses_fake: FakeResponses) -> FakeResponses:
    responses_fake.reset()
    return responses_fake


def openai_client(server: GatewayServer, org: str = "bare") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=server.mint(org), max_retries=0, timeout=20)


def anthropic_client(server: GatewayServer, org: str = "bare") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=server.mint(org), max_retries=0, timeout=20)


def items(output: Any) -> list[JSON]:
    return [item.model_dump(exclude_none=True) for item in output]


def assistant_blocks(body: JSON) -> list[list[JSON]]:
    return [m["content"] for m in body["messages"] if m["role"] == "assistant" and isinstance(m["content"], list)]


# -- a Responses client on an Anthropic model --------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["sync", "streamed"])
def test_a_stateless_responses_client_keeps_an_anthropic_models_signed_thinking(gateway: GatewayServer, fake_anthropic: FakeAnthropic, stream: bool) -> None:
    fake_anthropic.script(
        [
            ClaudeReply(thinking="The user wants the weather.", redacted_thinking=True, tool_use=[("get_weather", {"city": "Oslo"})]),
            ClaudeReply(thinking="Report it.", text="Cold in Oslo."),
        ]
    )
    sdk = openai_client(gateway)
    request: JSON = {"model": CLAUDE, "tools": [WEATHER], "store": False, "include": ENCRYPTED, "reasoning": {"effort": "low"}}
    if stream:
        with sdk.responses.stream(input="Weather in Oslo?", **request) as events:
            kinds = [event.type for event in events]
            first = events.get_final_response()
        assert "response.reasoning_summary_text.delta" in kinds
        ignored = None
    else:
        raw = sdk.responses.with_raw_response.create(input="Weather in Oslo?", **request)
        ignored, first = raw.headers.get(IGNORED_HEADER), raw.parse()
    assert ignored is None  # reasoning.effort was honoured: the model thought
    sent = fake_anthropic.requests[0].body
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2048}

    reasoning = [item for item in items(first.output) if item["type"] == "reasoning"]
    assert [item["encrypted_content"].startswith(CARRIER_PREFIX + "anthropic.") for item in reasoning] == [True, True]
    assert reasoning[0]["summary"] == [{"type": "summary_text", "text": "The user wants the weather."}]
    assert reasoning[1]["summary"] == []  # redacted thinking has no text to show
    call = next(item for item in first.output if item.type == "function_call")

    second = sdk.responses.create(
        input=[{"role": "user", "content": "Weather in Oslo?"}, *items(first.output), {"type": "function_call_output", "call_id": call.call_id, "output": "-3 C"}],  # type: ignore[list-item]
        **request,
    )
    assert second.output_text == "Cold in Oslo."  # the fake refuses a tool round whose thinking is missing or altered
    turn = assistant_blocks(fake_anthropic.requests[1].body)[0]
    assert [block["type"] for block in turn] == ["thinking", "redacted_thinking", "tool_use"]
    assert fake_anthropic.signatures[turn[0]["signature"]] == "The user wants the weather." and turn[1]["data"] in fake_anthropic.redacted


def test_a_stored_response_keeps_an_anthropic_models_thinking_for_previous_response_id(gateway: GatewayServer, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script([ClaudeReply(thinking="Need the tool.", tool_use=[("get_weather", {"city": "Rome"})]), ClaudeReply(thinking="Done.", text="Warm in Rome.")])
    sdk = openai_client(gateway)
    first = sdk.responses.create(model=CLAUDE, input="Weather in Rome?", tools=[WEATHER], reasoning={"effort": "medium"})  # type: ignore[list-item]
    reasoning = next(item for item in first.output if item.type == "reasoning")
    assert reasoning.encrypted_content is None  # not asked for: the stored response holds the state
    call = next(item for item in first.output if item.type == "function_call")
    second = sdk.responses.create(model=CLAUDE, previous_response_id=first.id, input=[{"type": "function_call_output", "call_id": call.call_id, "output": "24 C"}], tools=[WEATHER], reasoning={"effort": "medium"})  # type: ignore[list-item]
    assert second.output_text == "Warm in Rome."
    assert assistant_blocks(fake_anthropic.requests[1].body)[0][0]["signature"] in fake_anthropic.signatures


def test_every_server_side_round_and_the_client_keep_anthropic_thinking_through_the_responses_door(gateway: GatewayServer, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(
        [
            ClaudeReply(thinking="Compute.", tool_use=[("calculator__evaluate", {"expression": "6*7"})]),
            ClaudeReply(thinking="Ask the client's tool.", tool_use=[("get_weather", {"city": "Oslo"})]),
            ClaudeReply(thinking="All known.", text="42 and cold."),
        ]
    )
    sdk = openai_client(gateway, "acme")
    tools = [WEATHER, {"type": "mcp", "server_label": "calculator", "require_approval": "never"}]
    first = sdk.responses.create(model=CLAUDE, input="6*7, and Oslo's weather?", tools=tools, store=False, include=ENCRYPTED, reasoning={"effort": "high"})  # type: ignore[arg-type]
    # The server-side round got the first round's thinking back (the fake refuses it otherwise).
    assert assistant_blocks(fake_anthropic.requests[1].body)[0][0]["signature"] in fake_anthropic.signatures
    assert [item.type for item in first.output] == ["mcp_list_tools", "reasoning", "mcp_call", "reasoning", "function_call"]
    call = first.output[-1]
    second = sdk.responses.create(
        model=CLAUDE, tools=tools, store=False, include=ENCRYPTED, reasoning={"effort": "high"},  # type: ignore[arg-type]
        input=[{"role": "user", "content": "6*7, and Oslo's weather?"}, *items(first.output), {"type": "function_call_output", "call_id": call.call_id, "output": "-3 C"}],  # type: ignore[union-attr,list-item]
    )
    assert second.output_text == "42 and cold."
    turns = assistant_blocks(fake_anthropic.requests[2].body)
    assert [[block["type"] for block in turn] for turn in turns] == [["thinking", "tool_use"], ["thinking", "tool_use"]]
    assert [fake_anthropic.signatures[turn[0]["signature"]] for turn in turns] == ["Compute.", "Ask the client's tool."]


# -- a Messages client on a Responses-native model ------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["sync", "streamed"])
def test_a_messages_client_with_thinking_keeps_a_responses_models_reasoning_items(gateway: GatewayServer, fake: FakeResponses, stream: bool) -> None:
    """Claude Code's request: adaptive thinking and output_config.effort, its own tools."""
    fake.enqueue(Turn(calls=[Call("get_weather", {"city": "Oslo"})], reasoning="Need the weather."), Turn(reasoning=None, calls=[Call("get_weather", {"city": "Bergen"})]), Turn(text="Both cold."))
    sdk = anthropic_client(gateway)
    request: JSON = {"model": NATIVE, "max_tokens": 4000, "thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}, "tools": [WEATHER_TOOL]}
    question = {"role": "user", "content": "Weather in Oslo and Bergen?"}
    if stream:
        with sdk.messages.stream(messages=[question], **request) as events:
            first = events.get_final_message()
        ignored = None
    else:
        raw = sdk.messages.with_raw_response.create(messages=[question], **request)
        ignored, first = raw.headers.get(IGNORED_HEADER), raw.parse()
    assert ignored is None  # thinking and effort were honoured, not dropped
    assert fake.requests[0]["reasoning"] == {"effort": "xhigh"}
    assert [block.type for block in first.content] == ["thinking", "tool_use"]
    thinking = first.content[0]
    assert thinking.thinking == "Need the weather." and thinking.signature.startswith(CARRIER_PREFIX + "openai-responses.")  # type: ignore[union-attr]

    history: list[Any] = [question]
    answer = first
    for result in ("-3 C", "-1 C"):
        call = answer.content[-1]
        history += [
            {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in answer.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": result}]},  # type: ignore[union-attr]
        ]
        answer = sdk.messages.create(messages=history, **request)
    assert answer.content[-1].text == "Both cold."  # type: ignore[union-attr]
    # Every later request carried the first round's reasoning item back, byte for byte (the fake checks it too).
    assert reasoning_items(fake.requests[1]) == fake.issued_in(0) and reasoning_items(fake.requests[2]) == fake.issued_in(0)


def test_a_responses_models_reasoning_without_summary_comes_back_in_redacted_thinking(gateway: GatewayServer, fake: FakeResponses) -> None:
    summaryless = {"type": "reasoning", "id": "rs_opaque", "summary": [], "encrypted_content": "opaque-state"}
    fake.enqueue(Turn(reasoning=None, items=[summaryless], calls=[Call("get_weather", {"city": "Oslo"})]), Turn(text="Cold."))
    fake.issued["rs_opaque"] = dict(summaryless)  # the fake takes back only items it issued
    sdk = anthropic_client(gateway)
    request: JSON = {"model": NATIVE, "max_tokens": 4000, "thinking": {"type": "enabled", "budget_tokens": 2048}, "tools": [WEATHER_TOOL]}
    question = {"role": "user", "content": "Oslo?"}
    first = sdk.messages.create(messages=[question], **request)
    assert fake.requests[0]["reasoning"] == {"effort": "low"}  # a 2,048-token budget is low effort
    assert [block.type for block in first.content] == ["redacted_thinking", "tool_use"]
    second = sdk.messages.create(
        messages=[question, {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]}, {"role": "user", "content": [{"type": "tool_result", "tool_use_id": first.content[1].id, "content": "-3 C"}]}],  # type: ignore[union-attr]
        **request,
    )
    assert second.content[-1].text == "Cold."  # type: ignore[union-attr]
    assert [item for item in fake.requests[1]["input"] if item.get("type") == "reasoning"] == [summaryless]


def test_a_messages_client_that_did_not_ask_for_thinking_gets_plain_content(gateway: GatewayServer, fake: FakeResponses) -> None:
    fake.enqueue(Turn(text="Hello.", reasoning="Greet back."))
    message = anthropic_client(gateway).messages.create(model=NATIVE, max_tokens=100, messages=[{"role": "user", "content": "Hi"}])
    assert [block.type for block in message.content] == ["text"] and message.content[0].text == "Hello."  # type: ignore[union-attr]
    assert "reasoning" not in fake.requests[0]


# -- state carried for one model, sent to another; carriers plugway did not make ---------------------


def test_reasoning_carried_for_another_model_is_named_and_not_sent(gateway: GatewayServer, fake: FakeResponses, fake_anthropic: FakeAnthropic) -> None:
    fake.enqueue(Turn(text="Hi.", reasoning="Greet."))
    first = anthropic_client(gateway).messages.create(model=NATIVE, max_tokens=4000, thinking={"type": "enabled", "budget_tokens": 2048}, messages=[{"role": "user", "content": "Hi"}])
    assert first.content[0].type == "thinking"
    # The same conversation continued on the Anthropic model: the OpenAI item is not Anthropic's to read.
    fake_anthropic.script([ClaudeReply(text="Hello again.")])
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]}, {"role": "user", "content": "Again"}]
    again = anthropic_client(gateway).messages.create(model=CLAUDE, max_tokens=4000, messages=history)  # type: ignore[arg-type]
    assert again.content[0].text == "Hello again."  # type: ignore[union-attr]
    assert assistant_blocks(fake_anthropic.requests[0].body) == [[{"type": "text", "text": "Hi."}]]

    fake_anthropic.script([ClaudeReply(thinking="Hm.", text="Yes.")])
    done = openai_client(gateway).responses.create(model=CLAUDE, input="Go", store=False, include=ENCRYPTED, reasoning={"effort": "low"})
    carried = next(item for item in items(done.output) if item["type"] == "reasoning")
    raw = openai_client(gateway).responses.with_raw_response.create(model=NATIVE, input=[{"role": "user", "content": "Go"}, carried, {"role": "user", "content": "More"}], store=False)  # type: ignore[list-item]
    assert raw.headers[IGNORED_HEADER] == "input[1]"
    assert reasoning_items(fake.requests[-1]) == []


def test_a_carrier_plugway_did_not_make_is_refused_naming_where_it_is(gateway: GatewayServer) -> None:
    key = gateway.mint("bare")
    forged = {"type": "reasoning", "id": "rs_x", "summary": [], "encrypted_content": CARRIER_PREFIX + "anthropic.not base64!"}
    answer = httpx.post(f"{gateway.base_url}/responses", headers={"Authorization": f"Bearer {key}"}, json={"model": CLAUDE, "input": [{"role": "user", "content": "Hi"}, forged]}, timeout=20)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "input[1].encrypted_content"

    block = {"type": "thinking", "thinking": "x", "signature": CARRIER_PREFIX + "martian." + "e30"}
    answer = httpx.post(
        f"{gateway.url}/v1/messages",
        headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
        json={"model": NATIVE, "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": [block, {"type": "text", "text": "Hello"}]}, {"role": "user", "content": "Again"}]},
        timeout=20,
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and "messages[1].content[0]" in error["message"] and "martian" in json.dumps(error)
