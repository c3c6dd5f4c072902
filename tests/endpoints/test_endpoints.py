"""Endpoints end to end: httpx -> a real gateway -> the fake OpenAI upstream."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlmodel import Session, select

from runtime.storage.models import UsageRecord
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.support import GatewayServer, make_settings

ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"sentiment": {"type": "string", "enum": ["positive", "negative"]}, "score": {"type": "integer", "minimum": 0, "maximum": 10}},
    "required": ["sentiment", "score"],
    "additionalProperties": False,
}

ENDPOINTS: list[dict[str, Any]] = [
    {
        "slug": "support",
        "model": "gpt-test",
        "system_prompt": "You are {{company}}'s support assistant.",
        "plugins": ["calculator"],
        "sessions": {"enabled": True, "max_messages": 6, "max_chars": 2000},
    },
    {"slug": "plain", "model": "gpt-test", "plugins": [], "stream": False},
    {
        "slug": "review",
        "model": "gpt-test",
        "plugins": [],
        "input_schema": {"type": "object", "properties": {"text": {"type": "string", "minLength": 1}}, "required": ["text"]},
        "output_schema": ANSWER_SCHEMA,
    },
    {"slug": "capped", "model": "gpt-test", "plugins": [], "max_tokens_per_request": 100},
    {"slug": "retired", "model": "gpt-test", "active": False},
]


def settings_for(directory: Path, upstream: FakeOpenAI, **overrides: Any) -> Any:
    return make_settings(
        directory,
        upstream.base_url,
        extra_orgs=[{"id": "shop", "plugins": [{"id": "calculator"}], "endpoints": ENDPOINTS}, {"id": "broke", "monthly_budget_usd": 0.000001, "endpoints": [{"slug": "plain", "model": "gpt-test"}]}],
        **overrides,
    )


@pytest.fixture
def server(tmp_path: Path, upstream: FakeOpenAI) -> Iterator[GatewayServer]:
    gateway = GatewayServer(settings_for(tmp_path, upstream)).start()
    yield gateway
    gateway.stop()


def call(server: GatewayServer, key: str | None, path: str, body: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{server.url}/api/{path}", json=body, headers=headers, timeout=20)


def error(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert body["ok"] is False and isinstance(body["error"], str)
    return response.status_code, body["code"]


# -- the pipeline, step by step -------------------------------------------------------------------------


def test_a_plain_call_and_its_answer(server: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="Hello from Acme.", prompt_tokens=20, completion_tokens=4))
    response = call(server, server.mint("shop"), "shop/support", {"message": "hi", "variables": {"company": "Acme"}, "request_id": "ep-req-1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True and body["content"] == "Hello from Acme." and body["model"] == "gpt-test"
    assert body["finish_reason"] == "stop" and body["usage"] == {"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24}
    assert body["meta"]["request_id"] == "ep-req-1" and body["meta"]["session_id"].startswith("sess_")
    sent = upstream.requests[0]
    assert sent["messages"] == [{"role": "system", "content": "You are Acme's support assistant."}, {"role": "user", "content": "hi"}]
    assert [t["function"]["name"] for t in sent["tools"]] == ["calculator__evaluate"]
    assert response.headers["x-request-id"] == "ep-req-1"


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("shop/nope", {"message": "hi"}, 404, "endpoint_not_found"),
        ("shop/retired", {"message": "hi"}, 404, "endpoint_not_found"),
        ("shop/plain", {"message": "hi", "stream": True}, 422, "stream_not_allowed"),
        ("shop/plain", {"messages": "not a list"}, 400, "invalid_request"),
        ("shop/capped", {"message": "x" * 800}, 422, "token_cap_exceeded"),
        ("shop/review", {"message": "rate this", "input": {"text": ""}}, 422, "input_schema"),
        ("shop/review", {"message": "rate this"}, 422, "input_schema"),
        ("shop/support", {"message": "hi"}, 422, "missing_variable"),
        ("shop/plain", {"message": "hi", "session_id": "sess_x"}, 422, "sessions_disabled"),
        ("shop/support", {"message": "hi", "variables": {"company": "A"}, "session_id": "sess_unknown"}, 404, "session_not_found"),
    ],
)
def test_each_refusal_costs_no_upstream_call(server: GatewayServer, upstream: FakeOpenAI, path: str, body: dict, status: int, code: str) -> None:
    response = call(server, server.mint("shop"), path, body)
    assert error(response) == (status, code), response.text
    assert upstream.requests == []


def test_auth_and_organisation(server: GatewayServer, upstream: FakeOpenAI) -> None:
    assert error(call(server, None, "shop/plain", {"message": "hi"})) == (401, "invalid_api_key")
    assert error(call(server, "pw_bogus", "shop/plain", {"message": "hi"})) == (401, "invalid_api_key")
    assert error(call(server, server.mint("acme"), "shop/plain", {"message": "hi"})) == (403, "forbidden")
    assert upstream.requests == []


def test_rate_limit_then_budget(server: GatewayServer, upstream: FakeOpenAI) -> None:
    key = server.mint("shop", rpm=1)
    upstream.enqueue(Reply(text="one"))
    assert call(server, key, "shop/plain", {"message": "hi"}).status_code == 200
    limited = call(server, key, "shop/plain", {"message": "hi"})
    assert error(limited) == (429, "rate_limit_exceeded") and int(limited.headers["retry-after"]) >= 1
    broke = server.mint("broke")
    upstream.enqueue(Reply(text="spends the budget", prompt_tokens=1000, completion_tokens=1000))
    assert call(server, broke, "broke/plain", {"message": "hi"}).status_code == 200
    server.flush_usage()
    assert error(call(server, broke, "broke/plain", {"message": "hi"})) == (422, "budget_exceeded")
    assert len(upstream.requests) == 2


def test_a_budget_refusal_spends_none_of_the_keys_rpm(server: GatewayServer, upstream: FakeOpenAI) -> None:
    key = server.mint("broke", rpm=2)
    upstream.enqueue(Reply(text="spends the budget", prompt_tokens=1000, completion_tokens=1000))
    assert call(server, key, "broke/plain", {"message": "hi"}).status_code == 200
    server.flush_usage()
    # Budget before limits: refused requests leave the key's second request of the minute unspent.
    assert error(call(server, key, "broke/plain", {"message": "hi"})) == (422, "budget_exceeded")
    assert error(call(server, key, "broke/plain", {"message": "hi"})) == (422, "budget_exceeded")
    assert len(upstream.requests) == 1


def test_upstream_failure_is_502(server: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(status=500))
    assert error(call(server, server.mint("shop"), "shop/plain", {"message": "hi"})) == (502, "upstream_unavailable")


def test_the_dispatcher_is_the_slug_route(server: GatewayServer, upstream: FakeOpenAI) -> None:
    key = server.mint("shop")
    upstream.enqueue(Reply(text="same"), Reply(text="same"))
    direct = call(server, key, "shop/plain", {"message": "hi"}).json()
    dispatched = call(server, key, "shop/chat/completions", {"endpoint": "plain", "message": "hi"}).json()
    assert {k: v for k, v in direct.items() if k not in ("id", "meta")} == {k: v for k, v in dispatched.items() if k not in ("id", "meta")}
    assert upstream.requests[0] == upstream.requests[1]
    assert error(call(server, key, "shop/chat/completions", {"endpoint": "nope", "message": "hi"})) == (404, "endpoint_not_found")


# -- schemas ----------------------------------------------------------------------------------------------------


def test_input_reaches_the_model_and_output_is_parsed(server: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text='{"sentiment": "positive", "score": 9}'))
    body = call(server, server.mint("shop"), "shop/review", {"message": "Rate this review.", "input": {"text": "Great shoes!"}}).json()
    assert body["output"] == {"sentiment": "positive", "score": 9}
    sent = upstream.requests[0]
    assert sent["messages"][-1]["content"] == 'Rate this review.\n\nInput:\n{"text":"Great shoes!"}'
    assert sent["response_format"]["json_schema"]["schema"] == ANSWER_SCHEMA


def test_one_repair_attempt_tells_the_model_what_failed(server: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text='{"sentiment": "great", "score": 9}', prompt_tokens=10, completion_tokens=5), Reply(text='```json\n{"sentiment": "positive", "score": 9}\n```', prompt_tokens=30, completion_tokens=6))
    body = call(server, server.mint("shop"), "shop/review", {"input": {"text": "ok"}}).json()
    assert body["output"] == {"sentiment": "positive", "score": 9}
    repair = upstream.requests[1]["messages"][-1]
    assert repair["role"] == "user" and "sentiment" in repair["content"] and "great" in repair["content"]
    assert body["usage"]["total_tokens"] == 51
    assert body["plugway"]["rounds"] == 2 and body["plugway"]["output_repaired"] is True


def test_output_that_stays_wrong_is_502(server: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="not json"), Reply(text='{"sentiment": "positive"}'))
    response = call(server, server.mint("shop"), "shop/review", {"input": {"text": "ok"}})
    status, code = error(response)
    assert (status, code) == (502, "output_schema") and "score" in response.json()["error"]
    assert len(upstream.requests) == 2


# -- sessions -----------------------------------------------------------------------------------------------------


def test_a_session_is_resumed_with_its_tool_rounds(server: GatewayServer, upstream: FakeOpenAI) -> None:
    key = server.mint("shop")
    upstream.enqueue(Reply(tool_calls=[("calculator__evaluate", {"expression": "21*2"})]), Reply(text="It is 42."), Reply(text="You asked about 21*2."))
    first = call(server, key, "shop/support", {"message": "21*2?", "variables": {"company": "Acme"}}).json()
    # The orchestration trace, as on chat completions.
    assert [(c["name"], c["ok"]) for c in first["plugway"]["tool_calls"]] == [("calculator__evaluate", True)]
    assert first["plugway"]["rounds"] == 2
    session = first["meta"]["session_id"]
    second = call(server, key, "shop/support", {"message": "What did I ask?", "variables": {"company": "Acme"}, "session_id": session}).json()
    assert second["content"] == "You asked about 21*2." and second["meta"]["session_id"] == session
    history = upstream.requests[2]["messages"]
    assert [m["role"] for m in history] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert history[3]["content"] and orjson.loads(history[3]["content"])["result"] == 42
    # An endpoint without sessions refuses any session id; another organisation's or endpoint's
    # sessions reading as unknown is test_endpoint_gaps.py::test_a_session_id_opens_only_its_organisations_endpoint.
    other = server.mint("broke")
    assert error(call(server, other, "broke/plain", {"message": "x", "session_id": session})) == (422, "sessions_disabled")


def test_history_bounds_drop_the_oldest_turns(server: GatewayServer, upstream: FakeOpenAI) -> None:
    key = server.mint("shop")
    session = None
    for turn in range(6):
        upstream.enqueue(Reply(text=f"answer {turn}"))
        body: dict[str, Any] = {"message": f"question {turn}", "variables": {"company": "A"}}
        if session:
            body["session_id"] = session
        session = call(server, key, "shop/support", body).json()["meta"]["session_id"]
    last = upstream.requests[-1]["messages"]
    # max_messages 6: the last three exchanges before this message, the system prompt kept.
    assert last[0]["role"] == "system" and last[1] == {"role": "user", "content": "question 2"}
    assert last[-1] == {"role": "user", "content": "question 5"} and len(last) == 1 + 6 + 1


def test_concurrent_requests_on_one_session_are_serialised(server: GatewayServer, upstream: FakeOpenAI) -> None:
    key = server.mint("shop")
    upstream.enqueue(Reply(text="first"))
    session = call(server, key, "shop/support", {"message": "start", "variables": {"company": "A"}}).json()["meta"]["session_id"]
    upstream.enqueue(Reply(text="slow answer", delay_s=0.8), Reply(text="second answer"))
    results: list[httpx.Response] = []

    def ask(text: str) -> None:
        results.append(call(server, key, "shop/support", {"message": text, "variables": {"company": "A"}, "session_id": session}))

    threads = [threading.Thread(target=ask, args=(text,)) for text in ("one", "two")]
    threads[0].start()
    wait_until(lambda: len(upstream.requests) == 2)  # the first holds the session and waits for its answer
    threads[1].start()
    for thread in threads:
        thread.join()
    assert [r.status_code for r in results] == [200, 200]
    later = upstream.requests[2]["messages"]
    # The second request saw the first one's whole exchange: never interleaved.
    assert [m["content"] for m in later if m["role"] != "system"][-3:] == ["one", "slow answer", "two"]


def test_streaming_with_a_session(server: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="streamed words here", prompt_tokens=5, completion_tokens=3))
    with httpx.stream("POST", f"{server.url}/api/shop/support", json={"message": "hi", "variables": {"company": "A"}, "stream": True}, headers={"Authorization": f"Bearer {server.mint('shop')}"}, timeout=20) as response:
        data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [orjson.loads(d) for d in data[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")) == "streamed words here"
    assert chunks[-1]["usage"]["total_tokens"] == 8 and chunks[-1]["meta"]["session_id"].startswith("sess_")


def test_usage_records_name_the_endpoint(server: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="ok"))
    call(server, server.mint("shop"), "shop/plain", {"message": "hi"})
    server.flush_usage()
    with Session(server.gateway.engine) as db:
        (record,) = db.exec(select(UsageRecord).where(UsageRecord.organisation_id == "shop"))
    assert (record.source, record.endpoint) == ("endpoint", "plain")


# -- across two gateway processes on PostgreSQL -------------------------------------------------------------------


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    from tests.services import fresh_database

    yield from fresh_database("postgresql", tmp_path, prefix="endpoints")


@pytest.fixture
def two_gateways(tmp_path: Path, upstream: FakeOpenAI, postgres_url: str) -> Iterator[list[GatewayServer]]:
    """Two gateway processes' worth of app on one PostgreSQL database."""
    servers = []
    try:
        for name in ("one", "two"):
            directory = tmp_path / name
            directory.mkdir()
            servers.append(GatewayServer(settings_for(directory, upstream, database_url=postgres_url)).start())
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_a_session_continues_on_another_gateway(two_gateways: list[GatewayServer], upstream: FakeOpenAI) -> None:
    one, two = two_gateways
    key = one.mint("shop")
    upstream.enqueue(Reply(text="Noted: Ada."), Reply(text="Your name is Ada."))
    session = call(one, key, "shop/support", {"message": "I am Ada", "variables": {"company": "A"}}).json()["meta"]["session_id"]
    answer = call(two, key, "shop/support", {"message": "Who am I?", "variables": {"company": "A"}, "session_id": session}).json()
    assert answer["content"] == "Your name is Ada."
    assert [m["content"] for m in upstream.requests[1]["messages"]][1:] == ["I am Ada", "Noted: Ada.", "Who am I?"]


def test_two_gateways_racing_on_one_session_take_turns(two_gateways: list[GatewayServer], upstream: FakeOpenAI) -> None:
    # The lease lives in the session's row: a request on another process waits for it, never interleaves.
    key = two_gateways[0].mint("shop")
    upstream.enqueue(Reply(text="first"))
    session = call(two_gateways[0], key, "shop/support", {"message": "start", "variables": {"company": "A"}}).json()["meta"]["session_id"]
    upstream.enqueue(Reply(text="slow answer", delay_s=0.8), Reply(text="second answer"))
    results: dict[str, httpx.Response] = {}

    def ask(server: GatewayServer, text: str) -> None:
        results[text] = call(server, key, "shop/support", {"message": text, "variables": {"company": "A"}, "session_id": session})

    threads = [threading.Thread(target=ask, args=(server, text)) for server, text in zip(two_gateways, ("one", "two"), strict=True)]
    threads[0].start()
    wait_until(lambda: len(upstream.requests) == 2)  # "one" holds the session on gateway one
    threads[1].start()
    for thread in threads:
        thread.join()
    assert (results["one"].json()["content"], results["two"].json()["content"]) == ("slow answer", "second answer")
    later = upstream.requests[2]["messages"]
    assert [m["content"] for m in later if m["role"] != "system"] == ["start", "first", "one", "slow answer", "two"]


def wait_until(condition: Callable[[], bool], within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
