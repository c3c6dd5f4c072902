"""The HTTP surface: error envelopes the openai SDK maps to its exception classes, auth, ids, health."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import httpx
import openai
import pytest

from runtime.storage.keys import list_keys, revoke_key
from tests.fakes.openai_server import FakeOpenAI, Reply, free_port
from tests.support import Gateways, GatewayServer

USER = [{"role": "user", "content": "hi"}]


def error_of(exc: openai.APIStatusError) -> dict:
    body = exc.body
    assert isinstance(body, dict)
    return body


# -- 400 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"messages": USER, "extra_body": {"stream": "yes"}}, "stream"),
        ({"messages": USER, "temperature": "hot"}, "temperature"),
        ({"messages": USER, "max_tokens": 0}, "max_tokens"),
    ],
)
def test_invalid_bodies_are_400_with_param(client: openai.OpenAI, kwargs: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-test", **kwargs)
    error = error_of(info.value)
    assert error["code"] == "invalid_request_error" and error["type"] == "invalid_request_error"
    assert error["param"] == param


@pytest.mark.parametrize("legacy", ["functions", "function_call"])
def test_legacy_function_fields_are_unsupported(client: openai.OpenAI, upstream: FakeOpenAI, legacy: str) -> None:
    value = [{"name": "f", "parameters": {}}] if legacy == "functions" else "auto"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-test", messages=USER, extra_body={legacy: value})
    assert error_of(info.value)["code"] == "unsupported_parameter"
    assert error_of(info.value)["param"] == legacy
    assert upstream.requests == []


def test_unparseable_json_is_400(gateway: GatewayServer) -> None:
    response = httpx.post(
        f"{gateway.base_url}/chat/completions", content=b"{nope", headers={"Authorization": f"Bearer {gateway.mint()}"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request_error"


def test_upstream_request_error_is_passed_back_as_400(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(status=400, error_message="Invalid 'messages[0].content': string too long."))
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-test", messages=USER)
    assert "string too long" in error_of(info.value)["message"]


def test_n_above_one_runs_one_tool_loop_per_choice_and_sums_usage(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    # Every loop calls the calculator, then answers with what it was told.
    def loop(body: dict) -> Reply:  # type: ignore[type-arg]
        assert body.get("n") in (None, 1)  # the upstream is asked for one choice per loop
        if body["messages"][-1]["role"] == "tool":
            return Reply(text=f"it is {json.loads(body['messages'][-1]['content'])['result']}", prompt_tokens=20, completion_tokens=5)
        return Reply(tool_calls=[("calculator__evaluate", {"expression": "6 * 7"})], prompt_tokens=10, completion_tokens=3)

    upstream.responder = loop
    reply = client.chat.completions.create(model="gpt-test", messages=USER, n=3)
    assert [choice.index for choice in reply.choices] == [0, 1, 2]
    assert all(choice.message.content == "it is 42" for choice in reply.choices)
    assert reply.usage is not None and (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (3 * 30, 3 * 8)
    traces = reply.model_extra["plugway"]["choices"]
    assert [trace["tool_calls"][0]["name"] for trace in traces] == ["calculator__evaluate"] * 3
    assert len(upstream.requests) == 6


@pytest.mark.parametrize("include_usage", [True, False], ids=["include_usage", "usage_on_last_choice"])
def test_streamed_n_above_one_runs_one_tool_loop_per_choice_and_sums_usage(
    client: openai.OpenAI, upstream: FakeOpenAI, include_usage: bool
) -> None:
    def loop(body: dict) -> Reply:  # type: ignore[type-arg]
        assert body.get("n") in (None, 1)
        if body["messages"][-1]["role"] == "tool":
            return Reply(text=f"it is {json.loads(body['messages'][-1]['content'])['result']}", prompt_tokens=20, completion_tokens=5)
        return Reply(tool_calls=[("calculator__evaluate", {"expression": "6 * 7"})], prompt_tokens=10, completion_tokens=3)

    upstream.responder = loop
    stream = client.chat.completions.create(
        model="gpt-test", messages=USER, n=3, stream=True,
        **({"stream_options": {"include_usage": True}} if include_usage else {}),  # type: ignore[arg-type]
    )
    texts: dict[int, str] = {}
    finished: dict[int, str] = {}
    usages = []
    ids = set()
    for chunk in stream:
        ids.add(chunk.id)
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finished[choice.index] = choice.finish_reason
        if chunk.usage is not None:
            usages.append(chunk.usage)
            traces = (chunk.model_extra or {})["plugway"]["choices"]
    assert texts == {0: "it is 42", 1: "it is 42", 2: "it is 42"}
    assert finished == {0: "stop", 1: "stop", 2: "stop"}
    assert len(ids) == 1  # one completion, three choices
    assert [(usage.prompt_tokens, usage.completion_tokens) for usage in usages] == [(3 * 30, 3 * 8)]
    assert [trace["tool_calls"][0]["name"] for trace in traces] == ["calculator__evaluate"] * 3
    assert len(upstream.requests) == 6


# -- 401 ----------------------------------------------------------------------------------------


def test_missing_and_unknown_keys_are_401(gateway: GatewayServer) -> None:
    response = httpx.post(f"{gateway.base_url}/chat/completions", json={"model": "gpt-test", "messages": USER})
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    client = openai.OpenAI(base_url=gateway.base_url, api_key="pw_not-a-real-key-at-all", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model="gpt-test", messages=USER)
    assert error_of(info.value)["code"] == "invalid_api_key"
    assert "pw_not-a-real-key-at-all" not in error_of(info.value)["message"]


def test_basic_auth_with_key_as_user_name(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="hello basic"))
    key = gateway.mint()
    response = httpx.post(f"{gateway.base_url}/chat/completions", json={"model": "gpt-test", "messages": USER}, auth=(key, ""))
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "hello basic"
    wrong = httpx.post(f"{gateway.base_url}/chat/completions", json={"model": "gpt-test", "messages": USER}, auth=("pw_wrong", ""))
    assert wrong.status_code == 401


@pytest.mark.gateway(key_cache_ttl_s=0.3)
def test_revoked_key_stops_working_within_the_cache_ttl(gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.responder = lambda body: Reply(text="ok")
    key = gateway.mint("bare")
    client = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    client.models.list()
    (row,) = list_keys(gateway.gateway.engine, "bare")
    assert revoke_key(gateway.gateway.engine, row.id)
    time.sleep(0.4)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_key_minted_while_running_works_at_once(gateway: GatewayServer) -> None:
    response = httpx.get(f"{gateway.base_url}/models", headers={"Authorization": "Bearer pw_x"})
    assert response.status_code == 401
    fresh = gateway.mint()
    assert httpx.get(f"{gateway.base_url}/models", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200


# -- 404, 413, 502 ----------------------------------------------------------------------------------


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-nope", messages=USER)
    assert error_of(info.value)["code"] == "model_not_found" and error_of(info.value)["param"] == "model"


def test_model_outside_the_organisation_allow_list_is_404(gateway: GatewayServer) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=gateway.mint("bare"), max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-other", messages=USER)
    assert [m.id for m in client.models.list()] == ["gpt-test"]


def test_body_over_4_mb_is_413(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    huge = "x" * (4 * 1024 * 1024 + 10)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": huge}])
    assert info.value.status_code == 413
    assert error_of(info.value)["code"] == "request_too_large"
    assert upstream.requests == []


def test_chunked_body_over_limit_is_413(gateway: GatewayServer) -> None:
    def body():  # type: ignore[no-untyped-def]
        for _ in range(5):
            yield b"x" * (1024 * 1024)

    response = httpx.post(f"{gateway.base_url}/chat/completions", content=body(), headers={"Authorization": f"Bearer {gateway.mint()}"})
    assert response.status_code == 413


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_client_that_writes_the_whole_body_before_reading_gets_its_413(gateway: GatewayServer, declared: bool) -> None:
    # Python's urllib sends every byte before it reads a byte of the answer: closing the
    # connection on it mid-body would reset it (ECONNRESET / EPIPE) instead of answering.
    body = b'{"model": "gpt-test", "messages": [{"role": "user", "content": "' + b"x" * (5 * 1024 * 1024) + b'"}]}'
    data: bytes | Iterator[bytes] = body if declared else iter([body[i : i + 65536] for i in range(0, len(body), 65536)])
    request = urllib.request.Request(
        f"{gateway.base_url}/chat/completions", data=data, method="POST",
        headers={"Authorization": f"Bearer {gateway.mint()}", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    assert info.value.code == 413
    assert json.loads(info.value.read())["error"]["code"] == "request_too_large"


def test_upstream_failure_is_502(client: openai.OpenAI, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(status=500))
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gpt-test", messages=USER)
    assert info.value.status_code == 502
    assert error_of(info.value)["code"] == "upstream_unavailable"


def test_unreachable_upstream_is_502_streamed_too(gateways: Gateways) -> None:
    server = gateways.start(upstream_url=f"http://127.0.0.1:{free_port()}/v1")
    client = openai.OpenAI(base_url=server.base_url, api_key=server.mint(), max_retries=0)
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gpt-test", messages=USER, stream=True)
    assert info.value.status_code == 502


# -- ids, models, health -------------------------------------------------------------------------------


def test_request_id_is_echoed_or_minted_on_every_response(client: openai.OpenAI, gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="ok"))
    raw = client.chat.completions.with_raw_response.create(model="gpt-test", messages=USER, extra_headers={"X-Request-Id": "abc-123"})
    assert raw.headers["x-request-id"] == "abc-123"
    assert httpx.get(f"{gateway.url}/healthz").headers["x-request-id"].startswith("req_")
    denied = httpx.get(f"{gateway.base_url}/models", headers={"X-Request-Id": "denied-1"})
    assert denied.status_code == 401 and denied.headers["x-request-id"] == "denied-1"


def test_models_health_and_readiness(gateway: GatewayServer) -> None:
    key = gateway.mint()
    models = httpx.get(f"{gateway.base_url}/models", headers={"Authorization": f"Bearer {key}"}).json()
    assert models["object"] == "list" and {m["id"] for m in models["data"]} == {"gpt-test", "gpt-other"}
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["database"]["ok"] is True


def test_unknown_route_uses_the_envelope(gateway: GatewayServer) -> None:
    response = httpx.get(f"{gateway.url}/v1/nothing-here")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
