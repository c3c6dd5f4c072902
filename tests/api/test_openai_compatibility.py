"""Issue 9: what real OpenAI clients hit (items 9, 17, 18, 19, 20, 23, 24), through a real gateway."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import jsonschema
import openai
import orjson
import pytest

from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.support import UPSTREAM_KEY, Gateways, GatewayServer

USER = [{"role": "user", "content": "hi"}]
LEAKY = "Incorrect API key provided: sk-live-ab****WXYZ. You can find your key at http://10.0.0.5/account"


def _provider(upstream: FakeOpenAI, **options: object) -> dict:
    return {"id": "upstream", "kind": "openai", "base_url": upstream.base_url, "api_key": UPSTREAM_KEY, "timeout_s": 10, "max_retries": 0, **options}


@pytest.fixture
def start(gateways: Gateways) -> Callable[..., GatewayServer]:
    return gateways.start


# -- 9: upstream error text stays with the operator -------------------------------------------------


def test_upstream_error_text_is_not_passed_to_the_client(client: openai.OpenAI, upstream: FakeOpenAI, caplog: pytest.LogCaptureFixture) -> None:
    upstream.enqueue(Reply(status=401, error_message=LEAKY))
    with caplog.at_level(logging.WARNING, logger="plugway.router"), pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gpt-test", messages=USER)
    message = info.value.body["message"]  # type: ignore[index]
    assert "upstream" in message and "401" in message
    assert "sk-live" not in message and "10.0.0.5" not in message
    # Operators still see the provider's own words.
    assert any("sk-live-ab****WXYZ" in record.getMessage() for record in caplog.records)


def test_upstream_request_errors_keep_their_words(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(status=400, error_message="This model's maximum context length is 128000 tokens."))
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-test", messages=USER)
    assert "maximum context length" in info.value.body["message"]  # type: ignore[index]


# -- 17: a provider's 429 is a 429, and does not open the breaker ---------------------------------------


def test_upstream_429_reaches_the_client_as_429_with_retry_after(start, upstream: FakeOpenAI) -> None:  # type: ignore[no-untyped-def]
    server = start(providers=[_provider(upstream)])
    upstream.enqueue(Reply(status=429, error_message="Rate limit reached for gpt-4o-mini", headers={"retry-after": "7"}))
    client = openai.OpenAI(base_url=server.base_url, api_key=server.mint("bare"), max_retries=0)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-test", messages=USER)
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]


def test_throttling_never_opens_the_circuit_breaker(start, upstream: FakeOpenAI) -> None:  # type: ignore[no-untyped-def]
    server = start(providers=[_provider(upstream, breaker_failures=2, breaker_cooldown_s=60)])
    client = openai.OpenAI(base_url=server.base_url, api_key=server.mint("bare"), max_retries=0)
    for _ in range(4):
        upstream.enqueue(Reply(status=429, error_message="slow down", headers={"retry-after": "1"}))
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="gpt-test", messages=USER)
    # Another organisation's request is served: the provider was never marked broken.
    upstream.enqueue(Reply(text="served"))
    other = openai.OpenAI(base_url=server.base_url, api_key=server.mint("acme"), max_retries=0)
    assert other.chat.completions.create(model="gpt-test", messages=USER, tools=[{"type": "function", "function": {"name": "x"}}]).choices[0].message.content == "served"


def test_upstream_attempts_are_bounded_per_call(start, upstream: FakeOpenAI) -> None:  # type: ignore[no-untyped-def]
    server = start(
        providers=[_provider(upstream, max_retries=5), {**_provider(upstream, max_retries=5), "id": "backup"}],
        models=[
            {"id": "gpt-test", "provider": "upstream", "fallbacks": ["gpt-backup"]},
            {"id": "gpt-backup", "provider": "backup"},
        ],
        organisations=[{"id": "bare"}],
        routing={"max_attempts_per_call": 3},
    )
    upstream.responder = lambda body: Reply(status=500, error_message="down")
    client = openai.OpenAI(base_url=server.base_url, api_key=server.mint("bare"), max_retries=0)
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gpt-test", messages=USER)
    assert len(upstream.requests) == 3
    # The SDK obeys this and does not multiply our retries with its own.
    assert info.value.response.headers["x-should-retry"] == "false"


# -- 18: routes that do not exist, and one model ------------------------------------------------------------


def test_unknown_route_names_method_and_path(gateway: GatewayServer) -> None:
    response = httpx.post(f"{gateway.base_url}/completions", json={}, headers={"Authorization": f"Bearer {gateway.mint()}"})
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (POST /v1/completions)"


def test_get_one_model(client: openai.OpenAI) -> None:
    model = client.models.retrieve("gpt-test")
    assert (model.id, model.object) == ("gpt-test", "model")
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("no-such-model")
    assert info.value.body["code"] == "model_not_found"  # type: ignore[index]


# -- 19: one request id across both logs --------------------------------------------------------------------


def test_request_id_goes_upstream(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="ok"))
    client.chat.completions.create(model="gpt-test", messages=USER, extra_headers={"X-Request-Id": "follow-me-42"})
    assert upstream.headers[-1]["x-request-id"] == "follow-me-42"


# -- 23: stream_options without stream ------------------------------------------------------------------------


def test_stream_options_without_stream_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-test", messages=USER, stream_options={"include_usage": True})
    assert info.value.body["param"] == "stream_options"  # type: ignore[index]


# -- 24: the SDK's stream helper reads parallel tool calls -----------------------------------------------------


def test_sdk_stream_helper_assembles_parallel_client_tool_calls(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    tools = [
        {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}
        for name in ("lookup", "search")
    ]
    upstream.enqueue(Reply(tool_calls=[("lookup", {"q": "first question"}), ("search", {"q": "second question"})]))
    with client.chat.completions.stream(model="gpt-test", messages=USER, tools=tools) as stream:
        for _event in stream:
            pass
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert [(c.function.name, orjson.loads(c.function.arguments)) for c in calls] == [
        ("lookup", {"q": "first question"}),
        ("search", {"q": "second question"}),
    ]


# -- 20: the demo model shows client tools and structured outputs offline ------------------------------------


DEMO = {
    "providers": [{"id": "demo", "kind": "demo"}],
    "models": [{"id": "demo", "provider": "demo"}],
    "organisations": [{"id": "bare"}],
}


def test_demo_calls_a_client_tool_named_by_the_user(start) -> None:  # type: ignore[no-untyped-def]
    server = start(**DEMO)
    client = openai.OpenAI(base_url=server.base_url, api_key=server.mint("bare"), max_retries=0)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"]}}}]
    reply = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "What is the weather in Lisbon, in fahrenheit?"}], tools=tools)
    (call,) = reply.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"city": "Lisbon", "unit": "fahrenheit"}
    assert reply.choices[0].finish_reason == "tool_calls"


def test_demo_answers_json_schema_with_a_valid_instance(start) -> None:  # type: ignore[no-untyped-def]
    server = start(**DEMO)
    client = openai.OpenAI(base_url=server.base_url, api_key=server.mint("bare"), max_retries=0)
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 40},
            "rating": {"type": "integer", "minimum": 1, "maximum": 5},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "mood": {"type": "string", "enum": ["happy", "sad"]},
            "author": {"$ref": "#/$defs/Person"},
        },
        "required": ["title", "rating", "tags", "mood", "author"],
        "additionalProperties": False,
        "$defs": {"Person": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"], "additionalProperties": False}},
    }
    reply = client.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "Review a sad book"}],
        response_format={"type": "json_schema", "json_schema": {"name": "review", "schema": schema, "strict": True}},
    )
    answer = orjson.loads(reply.choices[0].message.content or "")
    jsonschema.validate(answer, schema)
    assert answer["mood"] == "sad"


def test_request_id_in_the_body_is_the_correlation_id(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="ok"))
    raw = client.chat.completions.with_raw_response.create(model="gpt-test", messages=USER, extra_body={"request_id": "order-7781"})
    assert raw.headers["x-request-id"] == "order-7781"
    assert raw.parse().model_extra["request_id"] == "order-7781"
    assert upstream.headers[-1]["x-request-id"] == "order-7781"
    assert "request_id" not in upstream.requests[-1]
