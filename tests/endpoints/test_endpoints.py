"""Endpoints end to end: httpx -> a real gateway -> the fake OpenAI upstream."""

from __future__ import annotations

import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import update
from sqlmodel import Session, SQLModel, select

from runtime.config import ConfigError, load_settings
from runtime.endpoints.sessions import purge_expired
from runtime.storage.models import UsageRecord
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.support import Gateways, GatewayServer, make_settings, wait_until

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
def server(tmp_path: Path, upstream: FakeOpenAI, gateways: Gateways) -> GatewayServer:
    return gateways.start(settings_for(tmp_path, upstream))


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
    # sessions reading as unknown is test_a_session_id_opens_only_its_organisations_endpoint below.
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
def two_gateways(tmp_path: Path, upstream: FakeOpenAI, postgres_url: str, gateways: Gateways) -> list[GatewayServer]:
    """Two gateway processes' worth of app on one PostgreSQL database."""
    directories = [tmp_path / name for name in ("one", "two")]
    for directory in directories:
        directory.mkdir()
    return [gateways.start(settings_for(directory, upstream, database_url=postgres_url)) for directory in directories]


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


# -- one module gateway for what follows: sessions by organisation, expiry and purging, history bounds, a streamed schema ---

SCHEMA = {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"], "additionalProperties": False}
SHOP_ENDPOINTS: list[dict[str, Any]] = [
    {"slug": "chat", "model": "gpt-test", "plugins": [], "sessions": {"enabled": True, "max_chars": 100, "ttl_hours": 0.5}},
    {"slug": "notes", "model": "gpt-test", "plugins": [], "sessions": {"enabled": True}},
    {"slug": "tight", "model": "gpt-test", "plugins": [], "sessions": {"enabled": True}, "max_tokens_per_request": 150},
    {"slug": "scored", "model": "gpt-test", "plugins": [], "output_schema": SCHEMA},
    {"slug": "plain", "model": "gpt-test", "plugins": []},
]
# The same slug in another organisation: only the organisation tells the two sessions apart.
OTHER_ENDPOINTS: list[dict[str, Any]] = [{"slug": "chat", "model": "gpt-test", "plugins": [], "sessions": {"enabled": True}}]
SESSIONS = SQLModel.metadata.tables["endpoint_sessions"]


@pytest.fixture(scope="module")
def shop_gateway(tmp_path_factory: pytest.TempPathFactory, upstream_server: FakeOpenAI) -> Iterator[GatewayServer]:
    orgs = [{"id": "shop", "endpoints": SHOP_ENDPOINTS}, {"id": "other", "endpoints": OTHER_ENDPOINTS}]
    with Gateways(tmp_path_factory.mktemp("endpoint-shop"), upstream_server.base_url) as started:
        yield started.start(extra_orgs=orgs)


def call_endpoint(shop_gateway: GatewayServer, org: str, slug: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{shop_gateway.url}/api/{org}/{slug}", json=body, headers={"Authorization": f"Bearer {shop_gateway.mint(org)}"}, timeout=20)


def stream(shop_gateway: GatewayServer, org: str, path: str, body: dict[str, Any]) -> tuple[int, list[str]]:
    """The status and every SSE data payload, ``[DONE]`` included."""
    with httpx.stream("POST", f"{shop_gateway.url}/api/{org}/{path}", json={**body, "stream": True}, headers={"Authorization": f"Bearer {shop_gateway.mint(org)}"}, timeout=20) as response:
        return response.status_code, [line[6:] for line in response.iter_lines() if line.startswith("data: ")]


def streamed_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))


def start_session(shop_gateway: GatewayServer, upstream: FakeOpenAI, org: str, slug: str, message: str = "hi", answer: str = "hello") -> str:
    upstream.enqueue(Reply(text=answer))
    response = call_endpoint(shop_gateway, org, slug, {"message": message})
    assert response.status_code == 200, response.text
    session: str = response.json()["meta"]["session_id"]
    return session


def code_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["code"]


# -- whose session an id opens ---------------------------------------------------------------------------


def test_a_session_id_opens_only_its_organisations_endpoint(shop_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    session = start_session(shop_gateway, upstream, "shop", "chat")
    assert code_of(call_endpoint(shop_gateway, "other", "chat", {"message": "x", "session_id": session})) == (404, "session_not_found")
    assert code_of(call_endpoint(shop_gateway, "shop", "notes", {"message": "x", "session_id": session})) == (404, "session_not_found")
    assert len(upstream.requests) == 1
    # The refusals neither took nor spoilt it: its own endpoint still resumes it.
    upstream.enqueue(Reply(text="again"))
    resumed = call_endpoint(shop_gateway, "shop", "chat", {"message": "still me", "session_id": session})
    assert resumed.status_code == 200 and resumed.json()["meta"]["session_id"] == session
    assert [m["content"] for m in upstream.requests[1]["messages"]] == ["hi", "hello", "still me"]


# -- expiry ------------------------------------------------------------------------------------------------------


def test_an_expired_session_is_not_resumed_and_is_purged(shop_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    expired, alive = start_session(shop_gateway, upstream, "shop", "chat"), start_session(shop_gateway, upstream, "shop", "chat")
    engine = shop_gateway.gateway.engine
    with engine.connect() as connection:
        updated_at, expires_at = connection.execute(select(SESSIONS.c.updated_at, SESSIONS.c.expires_at).where(SESSIONS.c.id == alive)).one()
    assert expires_at - updated_at == timedelta(minutes=30)  # ttl_hours: 0.5, from the last save
    with engine.begin() as connection:
        connection.execute(update(SESSIONS).where(SESSIONS.c.id == expired).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    # Expired reads as unknown (DESIGN: ignored on read), like any id the endpoint never issued.
    assert code_of(call_endpoint(shop_gateway, "shop", "chat", {"message": "x", "session_id": expired})) == (404, "session_not_found")
    assert len(upstream.requests) == 2
    assert purge_expired(engine) == 1
    with engine.connect() as connection:
        left = set(connection.execute(select(SESSIONS.c.id).where(SESSIONS.c.id.in_([expired, alive]))).scalars())
    assert left == {alive}


# -- history bounds ----------------------------------------------------------------------------------------------


def test_max_chars_drops_the_oldest_exchange(shop_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    # chat keeps 100 characters of history: two 30-character exchanges (120) are one too many.
    session = start_session(shop_gateway, upstream, "shop", "chat", "a" * 30, "b" * 30)
    upstream.enqueue(Reply(text="d" * 30), Reply(text="f" * 30))
    for message in ("c" * 30, "e" * 30):
        assert call_endpoint(shop_gateway, "shop", "chat", {"message": message, "session_id": session}).status_code == 200
    assert [m["content"] for m in upstream.requests[1]["messages"]] == ["a" * 30, "b" * 30, "c" * 30]
    assert [m["content"] for m in upstream.requests[2]["messages"]] == ["c" * 30, "d" * 30, "e" * 30]


def test_history_is_dropped_to_fit_max_tokens_per_request(shop_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    # About 26 tokens a 100-character message; the cap is 150, and at least 37 must stay for the answer.
    turns = [c * 100 for c in "uvwxyz"]
    session = start_session(shop_gateway, upstream, "shop", "tight", turns[0], turns[1])
    upstream.enqueue(Reply(text=turns[3]), Reply(text=turns[5]))
    for message in (turns[2], turns[4]):
        assert call_endpoint(shop_gateway, "shop", "tight", {"message": message, "session_id": session}).status_code == 200
    second, third = upstream.requests[1], upstream.requests[2]
    assert [m["content"] for m in second["messages"]] == turns[:3] and second["max_tokens"] == 150 - 3 * 26
    # All of it would leave 20: the oldest exchange goes, the rest fits.
    assert [m["content"] for m in third["messages"]] == turns[2:5] and third["max_tokens"] == 150 - 3 * 26


# -- the output schema on a streamed answer ------------------------------------------------------------------


def test_a_streamed_answer_is_checked_at_its_end_without_a_repair(shop_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text='{"score": 7}'))
    status, data = stream(shop_gateway, "shop", "scored", {"message": "rate"})
    assert status == 200 and data[-1] == "[DONE]"
    assert orjson.loads(data[-2])["output"] == {"score": 7}

    upstream.enqueue(Reply(text='{"score": "high"}'), Reply(text='{"score": 8}'))
    status, data = stream(shop_gateway, "shop", "scored", {"message": "rate"})
    # The text has gone out with 200; the end is an error chunk instead of the usage chunk and [DONE].
    assert status == 200 and "[DONE]" not in data
    chunks = [orjson.loads(d) for d in data]
    assert streamed_text(chunks[:-1]) == '{"score": "high"}'
    end = chunks[-1]
    assert (end["ok"], end["code"]) == (False, "output_schema") and "score" in end["error"]
    assert not any("usage" in c or "output" in c for c in chunks)
    assert len(upstream.requests) == 2  # the unused repair reply is still queued


# -- the dispatcher, streamed -------------------------------------------------------------------------------------


def test_the_streamed_dispatcher_is_the_slug_route(shop_gateway: GatewayServer, upstream: FakeOpenAI) -> None:
    upstream.enqueue(Reply(text="one two three", prompt_tokens=4, completion_tokens=3), Reply(text="one two three", prompt_tokens=4, completion_tokens=3))
    direct = stream(shop_gateway, "shop", "plain", {"message": "hi"})
    dispatched = stream(shop_gateway, "shop", "chat/completions", {"endpoint": "plain", "message": "hi"})
    assert direct[0] == dispatched[0] == 200 and direct[1][-1] == dispatched[1][-1] == "[DONE]"

    def comparable(data: list[str]) -> list[dict[str, Any]]:
        varying = ("id", "created", "meta", "plugway")
        return [{k: v for k, v in orjson.loads(d).items() if k not in varying} for d in data[:-1]]

    assert comparable(direct[1]) == comparable(dispatched[1])
    assert streamed_text(comparable(direct[1])) == "one two three"
    assert upstream.requests[0] == upstream.requests[1]


# -- configuration errors name the path ---------------------------------------------------------------------------

BASE = """\
providers: [{id: p, kind: openai, base_url: 'http://127.0.0.1:9/v1', api_key: k}]
models: [{id: m, provider: p}, {id: n, provider: p}]
"""
APP = "{id: wa, organisation: a, phone_number_id: '1', access_token: t, app_secret: s, verify_token: v, endpoint: ghost}"


@pytest.mark.parametrize(
    ("organisations", "message"),
    [
        ("[{id: a, endpoints: [{slug: s, model: ghost}]}]", "organisations[0].endpoints[0].model: unknown model 'ghost'"),
        ("[{id: a, models: [m], endpoints: [{slug: s, model: n}]}]", "organisations[0].endpoints[0].model: model 'n' is not allowed for organisation 'a'"),
        (
            "[{id: z}, {id: a, plugins: [{id: clock}], endpoints: [{slug: s, model: m, plugins: [clock, ghost]}]}]",
            "organisations[1].endpoints[0].plugins[1]: plugin 'ghost' is not configured for organisation 'a'",
        ),
        (
            "[{id: a, guardrails: [{key: pii, kind: pii, action: redact}], endpoints: [{slug: s, model: m, guardrails: [pii, nope]}]}]",
            "organisations[0].endpoints[0].guardrails[1]: no guardrail 'nope' in organisation 'a'",
        ),
        ("[{id: a, endpoints: [{slug: s, model: m}, {slug: t, model: m}, {slug: s, model: n}]}]", "organisations[0].endpoints[2].slug: duplicate endpoint 's'"),
        ("[{id: a, guardrails: [{key: pii, kind: pii, action: log}], guardrails_default: [pii, nope]}]", "organisations[0].guardrails_default[1]: no guardrail 'nope' in this organisation"),
        (f"[{{id: a, endpoints: [{{slug: s, model: m}}]}}]\nwhatsapp: {{apps: [{APP}]}}", "whatsapp.apps[0].endpoint: organisation 'a' has no endpoint 'ghost'"),
    ],
)
def test_endpoint_settings_errors_name_the_path(tmp_path: Path, organisations: str, message: str) -> None:
    path = tmp_path / "plugway.yaml"
    path.write_text(BASE + textwrap.dedent(f"organisations: {organisations}\n"))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == f"{path}: {message}"
