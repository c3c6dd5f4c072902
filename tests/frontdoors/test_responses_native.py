"""A Responses-native upstream (``api: responses``): the official openai SDK -> a real gateway -> a fake
that speaks the Responses API and checks the reasoning items it is sent back were the ones it issued."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from runtime.frontdoors.carry import IGNORED_HEADER
from tests.fakes.responses_server import Call, FakeResponses, Turn, reasoning_items
from tests.support import Gateways, GatewayServer, make_settings

MODEL = "gpt-native"
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city.", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
SHELL_NS = {"type": "namespace", "name": "shell", "description": "Local shell.", "tools": [{"type": "function", "name": "run", "description": "Run a command.", "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}}]}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeResponses]:
    server = FakeResponses().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def native_gateway(fake: FakeResponses, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("responses-native"),
        fake.base_url,
        providers=[
            {"id": "native", "kind": "openai", "api": "responses", "base_url": fake.base_url, "api_key": fake.api_key, "max_retries": 0},
            {"id": "chat-api", "kind": "openai", "base_url": fake.base_url, "api_key": fake.api_key, "max_retries": 0},
        ],
        models=[
            {"id": MODEL, "provider": "native", "upstream_model": "gpt-5.5"},
            # One model of a chat-API provider called with the Responses API.
            {"id": "gpt-override", "provider": "chat-api", "api": "responses"},
        ],
        organisations=[
            {"id": "acme", "plugins": [{"id": "calculator"}, {"id": "testkit"}]},
            {"id": "bare"},
            {"id": "strict", "unsupported_params": "refuse"},
            {
                "id": "shop",
                "plugins": [{"id": "calculator"}],
                "endpoints": [{"slug": "support", "model": MODEL, "plugins": ["calculator"], "sessions": {"enabled": True}}],
            },
        ],
    )
    with Gateways() as started:
        yield started.start(settings)


@pytest.fixture
def bare(native_gateway: GatewayServer, fake: FakeResponses) -> openai.OpenAI:
    fake.reset()
    return openai.OpenAI(base_url=native_gateway.base_url, api_key=native_gateway.mint("bare"), max_retries=0)


@pytest.fixture
def acme(native_gateway: GatewayServer, fake: FakeResponses) -> openai.OpenAI:
    fake.reset()
    return openai.OpenAI(base_url=native_gateway.base_url, api_key=native_gateway.mint("acme"), max_retries=0)


def _items(output: Any) -> list[dict[str, Any]]:
    return [item.model_dump(exclude_none=True) for item in output]


def test_stateless_client_gets_reasoning_items_and_sends_them_back_unchanged(bare: openai.OpenAI, fake: FakeResponses) -> None:
    fake.enqueue(Turn(calls=[Call("get_weather", {"city": "Paris"})], reasoning="The user wants weather."), Turn(text="Sunny in Paris."))
    first = bare.responses.with_raw_response.create(
        model=MODEL,
        input="Weather in Paris?",
        tools=[WEATHER, SHELL_NS, {"type": "web_search"}],  # type: ignore[list-item]
        store=False,
        include=["reasoning.encrypted_content"],
        reasoning={"effort": "high", "summary": "auto"},
        prompt_cache_key="thread-1",
        extra_body={"client_metadata": {"turn_id": "t1"}, "a_field_plugway_does_not_know": 7},
    )
    assert IGNORED_HEADER not in first.headers  # everything reached the Responses upstream
    response = first.parse()
    reasoning = next(item for item in response.output if item.type == "reasoning")
    assert reasoning.model_dump(exclude_none=True) == {k: v for k, v in fake.issued[reasoning.id].items() if v is not None}
    call = next(item for item in response.output if item.type == "function_call")
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})

    sent = fake.requests[0]
    assert sent["reasoning"] == {"effort": "high", "summary": "auto"} and sent["store"] is False
    assert sent["include"] == ["reasoning.encrypted_content"] and sent["prompt_cache_key"] == "thread-1"
    assert sent["client_metadata"] == {"turn_id": "t1"} and sent["a_field_plugway_does_not_know"] == 7
    assert sent["tools"] == [WEATHER, SHELL_NS, {"type": "web_search"}]  # hosted tools and namespaces as they came

    second = bare.responses.create(
        model=MODEL,
        input=[{"role": "user", "content": "Weather in Paris?"}, *_items(response.output), {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],  # type: ignore[list-item]
        tools=[WEATHER],  # type: ignore[list-item]
        store=False,
        include=["reasoning.encrypted_content"],
    )
    assert second.output_text == "Sunny in Paris."
    assert reasoning_items(fake.requests[1]) == fake.issued_in(0)  # byte for byte, encrypted_content included


def test_streamed_reasoning_arrives_in_openai_event_shapes(bare: openai.OpenAI, fake: FakeResponses) -> None:
    fake.enqueue(Turn(text="Hello there.", reasoning="Greeting the user politely."))
    with bare.responses.stream(model=MODEL, input="Hi", store=False, include=["reasoning.encrypted_content"]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    for kind in ("response.reasoning_summary_part.added", "response.reasoning_summary_text.delta", "response.reasoning_summary_text.done", "response.reasoning_summary_part.done"):
        assert kind in kinds
    done = [event.item for event in events if event.type == "response.output_item.done"]
    assert [item.type for item in done] == ["reasoning", "message"]  # the reasoning item comes first, as OpenAI orders it
    issued = fake.issued_in(0)[0]
    assert done[0].encrypted_content == issued["encrypted_content"] and done[0].summary[0].text == "Greeting the user politely."
    assert final.output_text == "Hello there." and [item.type for item in final.output] == ["reasoning", "message"]


@pytest.mark.parametrize("stream", [False, True], ids=["sync", "streamed"])
def test_previous_response_id_keeps_reasoning_the_client_never_saw(bare: openai.OpenAI, fake: FakeResponses, stream: bool) -> None:
    fake.enqueue(Turn(calls=[Call("get_weather", {"city": "Oslo"})], reasoning="Need the weather tool."), Turn(text="Snow in Oslo."))
    if stream:
        with bare.responses.stream(model=MODEL, input="Weather in Oslo?", tools=[WEATHER]) as events:  # type: ignore[list-item]
            first = events.get_final_response()
    else:
        first = bare.responses.create(model=MODEL, input="Weather in Oslo?", tools=[WEATHER])  # type: ignore[list-item]
    shown = next(item for item in first.output if item.type == "reasoning")
    assert shown.encrypted_content is None  # not asked for with include
    call = next(item for item in first.output if item.type == "function_call")
    second = bare.responses.create(
        model=MODEL, previous_response_id=first.id, input=[{"type": "function_call_output", "call_id": call.call_id, "output": "snow"}], tools=[WEATHER]  # type: ignore[list-item]
    )
    assert second.output_text == "Snow in Oslo."
    # plugway kept the whole item, encrypted_content included, and gave it back upstream itself.
    assert reasoning_items(fake.requests[1]) == fake.issued_in(0)
    assert fake.requests[0]["store"] is False and "reasoning.encrypted_content" in fake.requests[0]["include"]


@pytest.mark.parametrize("stream", [False, True], ids=["sync", "streamed"])
def test_every_server_side_round_gets_the_previous_rounds_reasoning(acme: openai.OpenAI, fake: FakeResponses, stream: bool) -> None:
    fake.enqueue(
        Turn(calls=[Call("calculator__evaluate", {"expression": "6*7"})], reasoning="Compute first."),
        Turn(calls=[Call("testkit__echo", {"text": "ab", "times": 2})], reasoning="Now echo."),
        Turn(text="42 and abab.", reasoning="Answer."),
    )
    if stream:
        with acme.responses.stream(model=MODEL, input="Compute and echo.", store=False, include=["reasoning.encrypted_content"]) as events:
            for _ in events:
                pass
            response = events.get_final_response()
    else:
        response = acme.responses.create(model=MODEL, input="Compute and echo.", store=False, include=["reasoning.encrypted_content"])
    assert response.output_text.endswith("42 and abab.")
    assert len(fake.requests) == 3
    assert reasoning_items(fake.requests[1]) == fake.issued_in(0)
    assert reasoning_items(fake.requests[2]) == fake.issued_in(0) + fake.issued_in(1)
    # Plugin tools were merged in beside the client's (none here), run server-side, never sent to the client as calls.
    assert {tool["name"] for tool in fake.requests[0]["tools"]} >= {"calculator__evaluate", "testkit__echo"}
    assert all(tool.get("strict") is False for tool in fake.requests[0]["tools"])
    types = [item.type for item in response.output]
    assert types.count("reasoning") == 3 and types.count("mcp_call") == 2 and "function_call" not in types
    shown = [item.model_dump(exclude_none=True) for item in response.output if item.type == "reasoning"]
    assert shown == [{k: v for k, v in item.items() if v is not None} for item in fake.issued_in(0) + fake.issued_in(1) + fake.issued_in(2)]


def test_a_tools_image_reaches_a_responses_upstream_as_input_image_in_the_call_output(acme: openai.OpenAI, fake: FakeResponses) -> None:
    fake.enqueue(Turn(calls=[Call("testkit__picture", {})]), Turn(text="A red dot."))
    client = openai.OpenAI(base_url=acme.base_url, api_key=acme.api_key, max_retries=0)
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "look"}])
    assert reply.choices[0].message.content == "A red dot."
    (output,) = [item for item in fake.requests[1]["input"] if item.get("type") == "function_call_output"]
    kinds = [part["type"] for part in output["output"]]
    assert kinds == ["input_text", "input_image"]
    assert output["output"][1]["image_url"].startswith("data:image/png;base64,")


def test_namespace_call_goes_back_with_its_namespace(bare: openai.OpenAI, fake: FakeResponses) -> None:
    fake.enqueue(Turn(calls=[Call("run", {"cmd": "ls"}, namespace="shell")]), Turn(text="Listed."))
    first = bare.responses.create(model=MODEL, input="List files.", tools=[SHELL_NS], store=False, include=["reasoning.encrypted_content"])  # type: ignore[list-item]
    call = next(item for item in first.output if item.type == "function_call")
    assert (call.name, call.model_dump().get("namespace")) == ("run", "shell")
    bare.responses.create(
        model=MODEL,
        input=[{"role": "user", "content": "List files."}, *_items(first.output), {"type": "function_call_output", "call_id": call.call_id, "output": "a.txt"}],  # type: ignore[list-item]
        tools=[SHELL_NS],  # type: ignore[list-item]
        store=False,
        include=["reasoning.encrypted_content"],
    )
    sent = [item for item in fake.requests[1]["input"] if item.get("type") == "function_call"]
    assert [(item["name"], item["namespace"]) for item in sent] == [("run", "shell")]


def test_chat_completions_to_a_responses_model_is_translated(native_gateway: GatewayServer, fake: FakeResponses) -> None:
    fake.reset()
    fake.enqueue(Turn(text="Four."), Turn(text="Five."))
    client = openai.OpenAI(base_url=native_gateway.base_url, api_key=native_gateway.mint("bare"), max_retries=0)
    answer = client.chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"}], reasoning_effort="low", max_completion_tokens=50
    )
    assert answer.choices[0].message.content == "Four."
    sent = fake.requests[0]
    assert sent["instructions"] == "Be terse." and sent["reasoning"] == {"effort": "low"} and sent["max_output_tokens"] == 50
    assert sent["input"] == [{"type": "message", "role": "user", "content": "2+2?"}]
    assert answer.usage is not None and answer.usage.completion_tokens_details is not None
    assert answer.usage.completion_tokens_details.reasoning_tokens == 5
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "2+3?"}], stream=True, seed=7, stop=["x"]
    )
    # Chat-only sampling fields have no Responses counterpart: not sent (an upstream would refuse
    # them), and named to the client as every ignored field is.
    assert raw.headers["x-plugway-ignored-params"] == "seed, stop"
    assert "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices) == "Five."
    assert "seed" not in fake.requests[1] and "stop" not in fake.requests[1] and "stream_options" not in fake.requests[1]


def test_input_items_are_listed_and_a_finished_response_cannot_be_cancelled(bare: openai.OpenAI, fake: FakeResponses, native_gateway: GatewayServer) -> None:
    fake.enqueue(Turn(text="Noted."))
    response = bare.responses.create(model=MODEL, input=[{"role": "developer", "content": "Be kind."}, {"role": "user", "content": "Remember 7."}])  # type: ignore[list-item]
    items = list(bare.responses.input_items.list(response.id, order="asc"))
    assert [(item.type, item.role) for item in items] == [("message", "developer"), ("message", "user")]  # type: ignore[union-attr]
    assert items[1].content[0].text == "Remember 7."  # type: ignore[union-attr]
    newest = bare.responses.input_items.list(response.id, limit=1)
    assert [item.role for item in newest.data] == ["user"] and newest.has_more  # type: ignore[union-attr]
    with pytest.raises(openai.BadRequestError, match="background"):
        bare.responses.cancel(response.id)
    with pytest.raises(openai.NotFoundError):
        bare.responses.cancel("resp_unknown")
    with pytest.raises(openai.NotFoundError):
        bare.responses.input_items.list("resp_unknown")
    bad = httpx.get(f"{native_gateway.base_url}/responses/{response.id}/input_items?limit=500", headers={"Authorization": f"Bearer {bare.api_key}"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"


def test_strict_organisation_refuses_nothing_a_responses_upstream_can_take(native_gateway: GatewayServer, fake: FakeResponses) -> None:
    fake.reset()
    fake.enqueue(Turn(text="Fine."))
    strict = openai.OpenAI(base_url=native_gateway.base_url, api_key=native_gateway.mint("strict"), max_retries=0)
    raw = strict.responses.with_raw_response.create(
        model=MODEL,
        input="Hi",
        tools=[{"type": "web_search"}, SHELL_NS],  # type: ignore[list-item]
        reasoning={"summary": "auto"},
        include=["reasoning.encrypted_content"],
        store=False,
        extra_body={"client_metadata": {"a": "b"}},
    )
    assert raw.parse().output_text == "Fine." and IGNORED_HEADER not in raw.headers


def test_tampered_reasoning_item_is_the_clients_error_with_the_upstreams_words(bare: openai.OpenAI, fake: FakeResponses) -> None:
    fake.enqueue(Turn(text="First."))
    first = bare.responses.create(model=MODEL, input="Hi", store=False, include=["reasoning.encrypted_content"])
    reasoning = next(item for item in _items(first.output) if item["type"] == "reasoning")
    reasoning["encrypted_content"] = "forged"
    with pytest.raises(openai.BadRequestError, match="could not be verified"):
        bare.responses.create(model=MODEL, input=[{"role": "user", "content": "Hi"}, reasoning, {"role": "user", "content": "Again"}], store=False)  # type: ignore[list-item]


@pytest.mark.parametrize("stream", [False, True], ids=["sync", "streamed"])
def test_an_endpoint_session_keeps_its_rounds_reasoning(native_gateway: GatewayServer, fake: FakeResponses, stream: bool) -> None:
    fake.reset()
    fake.enqueue(
        Turn(calls=[Call("calculator__evaluate", {"expression": "21*2"})], reasoning="Use the calculator."),
        Turn(text="It is 42.", reasoning="Report it."),
        Turn(text="You asked about 21*2."),
    )
    key = native_gateway.mint("shop")
    if stream:
        with httpx.stream("POST", f"{native_gateway.url}/api/shop/support", json={"message": "21*2?", "stream": True}, headers={"Authorization": f"Bearer {key}"}, timeout=20) as response:
            chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ") and line != "data: [DONE]"]
        first = {"content": "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")), "meta": next(c["meta"] for c in chunks if "meta" in c)}
    else:
        first = httpx.post(f"{native_gateway.url}/api/shop/support", json={"message": "21*2?"}, headers={"Authorization": f"Bearer {key}"}, timeout=20).json()
    assert first["content"] == "It is 42."
    assert reasoning_items(fake.requests[1]) == fake.issued_in(0)  # the server-side round
    session = first["meta"]["session_id"]
    second = httpx.post(f"{native_gateway.url}/api/shop/support", json={"message": "What did I ask?", "session_id": session}, headers={"Authorization": f"Bearer {key}"}, timeout=20).json()
    assert second["content"] == "You asked about 21*2."
    # The session kept the tool round's reasoning item and the final answer's, whole, in order.
    assert reasoning_items(fake.requests[2]) == fake.issued_in(0) + fake.issued_in(1)


def test_a_model_can_be_called_with_the_responses_api_on_a_chat_provider(bare: openai.OpenAI, fake: FakeResponses) -> None:
    fake.enqueue(Turn(text="Via /responses."))
    raw = bare.responses.with_raw_response.create(model="gpt-override", input="Hi", reasoning={"summary": "auto"})
    assert raw.parse().output_text == "Via /responses." and IGNORED_HEADER not in raw.headers
    assert fake.requests[0]["model"] == "gpt-override" and fake.requests[0]["reasoning"] == {"summary": "auto"}


def test_chat_completions_client_tools_round_trip_through_a_responses_model(native_gateway: GatewayServer, fake: FakeResponses) -> None:
    fake.reset()
    fake.enqueue(Turn(calls=[Call("get_weather", {"city": "Rome"})]), Turn(text="Warm in Rome."))
    client = openai.OpenAI(base_url=native_gateway.base_url, api_key=native_gateway.mint("bare"), max_retries=0)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER["parameters"]}}]
    messages: list[Any] = [{"role": "user", "content": "Weather in Rome?"}]
    first = client.chat.completions.create(model=MODEL, messages=messages, tools=tools, tool_choice={"type": "function", "function": {"name": "get_weather"}})  # type: ignore[arg-type]
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls" and json.loads(call.function.arguments) == {"city": "Rome"}  # type: ignore[union-attr]
    assert fake.requests[0]["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert fake.requests[0]["tools"] == [{"type": "function", "name": "get_weather", "parameters": WEATHER["parameters"], "strict": False}]
    messages += [first.choices[0].message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "warm"}]
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=tools)  # type: ignore[arg-type]
    assert second.choices[0].message.content == "Warm in Rome."
    sent = fake.requests[1]["input"]
    # The assistant message carried the turn's reasoning state (reasoning_parts, see runtime/reasoning.py);
    # sent back as the SDK returned it, the reasoning item reaches the upstream unchanged, before the call.
    assert [item["type"] for item in sent] == ["message", "reasoning", "function_call", "function_call_output"]
    assert reasoning_items(fake.requests[1]) == fake.issued_in(0)
    assert sent[2]["call_id"] == sent[3]["call_id"] == call.id


PATCH_TOOL = {"type": "custom", "name": "apply_patch", "description": "Edit files.", "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}}
PATCH = "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch\n"


def test_custom_tool_call_passes_through_a_responses_model_both_ways(bare: openai.OpenAI, fake: FakeResponses) -> None:
    upstream_call = {"type": "custom_tool_call", "id": "ctc_up", "call_id": "call_patch", "name": "apply_patch", "input": PATCH, "status": "completed"}
    fake.enqueue(Turn(items=[upstream_call]), Turn(text="Patched."))
    first = bare.responses.create(model=MODEL, input="Add a.txt", tools=[PATCH_TOOL], store=False, include=["reasoning.encrypted_content"])  # type: ignore[list-item]
    call = next(item for item in first.output if item.type == "custom_tool_call")
    assert (call.call_id, call.name, call.input) == ("call_patch", "apply_patch", PATCH)  # type: ignore[union-attr]
    assert fake.requests[0]["tools"] == [PATCH_TOOL]
    bare.responses.create(
        model=MODEL,
        input=[{"role": "user", "content": "Add a.txt"}, *_items(first.output), {"type": "custom_tool_call_output", "call_id": "call_patch", "output": "Done!"}],  # type: ignore[list-item]
        tools=[PATCH_TOOL],  # type: ignore[list-item]
        store=False,
        include=["reasoning.encrypted_content"],
    )
    sent = [item for item in fake.requests[1]["input"] if item["type"] != "message"]
    assert [item["type"] for item in sent] == ["reasoning", "custom_tool_call", "custom_tool_call_output"]
    assert (sent[1]["name"], sent[1]["input"], sent[2]["output"]) == ("apply_patch", PATCH, "Done!")


def test_custom_tool_is_a_one_string_function_for_a_chat_model(gateway: GatewayServer, upstream: Any) -> None:
    from tests.fakes.openai_server import Reply

    client = openai.OpenAI(base_url=gateway.base_url, api_key=gateway.mint("bare"), max_retries=0)
    upstream.enqueue(Reply(tool_calls=[("apply_patch", {"input": PATCH})]), Reply(text="Patched."))
    raw = client.responses.with_raw_response.create(model="gpt-test", input="Add a.txt", tools=[PATCH_TOOL])  # type: ignore[list-item]
    assert raw.headers[IGNORED_HEADER] == "tools[0].format"  # the grammar cannot hold a chat model
    call = next(item for item in raw.parse().output if item.type == "custom_tool_call")
    assert (call.name, call.input) == ("apply_patch", PATCH)  # type: ignore[union-attr]
    function = upstream.requests[0]["tools"][0]["function"]
    assert function["name"] == "apply_patch" and function["parameters"]["required"] == ["input"]
    second = client.responses.create(
        model="gpt-test",
        input=[{"role": "user", "content": "Add a.txt"}, call.model_dump(exclude_none=True), {"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Done!"}],  # type: ignore[list-item, union-attr]
        tools=[PATCH_TOOL],  # type: ignore[list-item]
    )
    assert second.output_text == "Patched."
    assistant, tool = upstream.requests[1]["messages"][-2:]
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"input": PATCH}
    assert tool == {"role": "tool", "tool_call_id": call.call_id, "content": "Done!"}  # type: ignore[union-attr]


def test_additional_tools_item_offers_its_tools_to_a_chat_model(gateway: GatewayServer, upstream: Any) -> None:
    from tests.fakes.openai_server import Reply

    client = openai.OpenAI(base_url=gateway.base_url, api_key=gateway.mint("bare"), max_retries=0)
    upstream.enqueue(Reply(tool_calls=[("functions__exec", {"input": "text(1+1)"})]))
    extra = {"type": "additional_tools", "role": "developer", "tools": [{"type": "namespace", "name": "functions", "description": "", "tools": [{"type": "custom", "name": "exec", "description": "Run JS."}]}]}
    raw = client.responses.with_raw_response.create(model="gpt-test", input=[extra, {"role": "user", "content": "Compute."}])  # type: ignore[list-item]
    assert IGNORED_HEADER not in raw.headers
    assert [tool["function"]["name"] for tool in upstream.requests[0]["tools"]] == ["functions__exec"]
    call = next(item for item in raw.parse().output if item.type == "custom_tool_call")
    assert (call.name, call.model_dump().get("namespace"), call.input) == ("exec", "functions", "text(1+1)")  # type: ignore[union-attr]


def test_a_hosted_search_the_upstream_ran_streams_with_openais_status_events(bare: openai.OpenAI, fake: FakeResponses) -> None:
    search = {"id": "ws_1", "type": "web_search_call", "status": "completed", "action": {"type": "search", "query": "plugway"}}
    fake.enqueue(Turn(items=[search], text="Found it."))
    with bare.responses.stream(model=MODEL, input="Search plugway", tools=[{"type": "web_search"}], store=False) as stream:  # type: ignore[list-item]
        events = [event for event in stream if getattr(event, "item_id", None) == "ws_1" or getattr(getattr(event, "item", None), "id", None) == "ws_1"]
        final = stream.get_final_response()
    assert [event.type for event in events] == [
        "response.output_item.added",
        "response.web_search_call.in_progress",
        "response.web_search_call.searching",
        "response.web_search_call.completed",
        "response.output_item.done",
    ]
    assert events[0].item.status == "in_progress" and events[-1].item.status == "completed"  # type: ignore[union-attr]
    assert {event.output_index for event in events} == {1}  # type: ignore[union-attr]
    assert final.output[1].model_dump(exclude_none=True) == search and final.output_text == "Found it."
