"""The request log end to end: the official ``openai`` client's traffic through a real gateway
(SQLite and PostgreSQL) is the data; ``/admin/v1/requests`` serves it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import func, select

from runtime.requestlog.store import BODIES, ENTRIES, purge_expired
from tests.control.conftest import Admin
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.support import Gateways, GatewayServer, make_settings


def _wait_for(admin: Admin, count: int, **params: Any) -> list[dict[str, Any]]:
    """The log's entries once ``count`` match (the writer is in the background: poll, never sleep a fixed time)."""
    deadline = time.monotonic() + 20
    while True:
        data = admin.get("/requests", params={"limit": 200, **params}).json()["data"]
        if len(data) >= count or time.monotonic() > deadline:
            return data
        time.sleep(0.05)


def _client(server: GatewayServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)


def test_a_success_a_tool_call_a_stream_and_failures_are_logged(server: GatewayServer, admin: Admin, upstream: FakeOpenAI) -> None:
    key = server.mint("acme")
    client = _client(server, key)
    upstream.enqueue(Reply(text="plain answer", prompt_tokens=12, completion_tokens=5))
    plain = client.chat.completions.with_raw_response.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    plain_id = plain.headers["x-request-id"]
    upstream.enqueue(Reply(tool_calls=[("calculator__evaluate", {"expression": "6*7"})]), Reply(text="It is 42."))
    assert client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "6*7?"}]).choices[0].message.content == "It is 42."
    upstream.enqueue(Reply(text="one two three four", chunk_delay_s=0.01))
    chunks = list(client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "count"}], stream=True))
    assert chunks
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        _client(server, "pw_wrong").chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}])

    entries = _wait_for(admin, 5)
    assert len(entries) == 5
    refused, missing_model, streamed, orchestrated, first = entries  # newest first
    assert first["request_id"] == plain_id and first["status"] == 200 and first["error_code"] is None
    assert (first["route"], first["organisation"], first["model"], first["served_model"]) == ("/v1/chat/completions", "acme", "gpt-test", "gpt-test")
    assert (first["prompt_tokens"], first["completion_tokens"]) == (12, 5)
    assert first["cost_usd"] == pytest.approx((12 * 1.0 + 5 * 2.0) / 1e6)
    assert first["key_id"] and first["latency_ms"] > 0 and first["ttfb_ms"] is not None
    assert orchestrated["tools"] == ["calculator__evaluate"] and orchestrated["rounds"] == 2 and orchestrated["tool_calls"] == 1
    assert streamed["ttfb_ms"] is not None and streamed["ttfb_ms"] < streamed["latency_ms"]
    assert (missing_model["status"], missing_model["error_code"], missing_model["organisation"]) == (404, "model_not_found", "acme")
    # Refused before any key was known: no organisation, and the error says why.
    assert (refused["status"], refused["error_code"], refused["organisation"], refused["key_id"]) == (401, "invalid_api_key", None, None)
    assert refused["error_message"]

    # One request opens with its timeline: two rounds and the tool call between them.
    detail = admin.get(f"/requests/{orchestrated['id']}").json()
    rounds, calls = detail["trace"]["rounds"], detail["trace"]["tool_calls"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert [(c["name"], c["plugin"], c["outcome"], c["round"]) for c in calls] == [("calculator__evaluate", "calculator", "ok", 1)]
    call = calls[0]
    assert rounds[0]["start_ms"] + rounds[0]["duration_ms"] <= call["start_ms"] <= rounds[1]["start_ms"]
    assert call["duration_ms"] >= 0 and detail["bodies"] is None
    # ...and by the request id a client saw in X-Request-Id.
    assert admin.get(f"/requests/{plain_id}").json()["id"] == first["id"]
    assert admin.get("/requests/req_not_there").status_code == 404


def test_filters_narrow_the_list_and_the_cursor_pages_it(server: GatewayServer, admin: Admin, upstream: FakeOpenAI) -> None:
    client = _client(server, server.mint("acme"))
    upstream.enqueue(Reply(text="a"), Reply(text="b"), Reply(tool_calls=[("clock__now", {"timezone": "UTC"})]), Reply(text="noon"))
    for question in ("a", "b", "time?"):
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": question}])
    upstream.enqueue(Reply(status=500, error_message="the upstream fell over"))
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="gpt-other", messages=[{"role": "user", "content": "x"}])
    _client(server, server.mint("shop")).models.list()  # another organisation, another route
    assert len(_wait_for(admin, 5)) == 5

    def ids(**params: Any) -> list[int]:
        return [entry["id"] for entry in admin.get("/requests", params=params).json()["data"]]

    every = ids()
    assert every == sorted(every, reverse=True)
    assert len(ids(tool="clock__now")) == 1 and ids(tool="clock") == []
    failed = admin.get("/requests", params={"status": "error"}).json()["data"]
    assert [(e["model"], e["status"] >= 500) for e in failed] == [("gpt-other", True)]
    assert ids(status="5xx") == [failed[0]["id"]] and ids(status=str(failed[0]["status"])) == [failed[0]["id"]]
    assert len(ids(status="2xx")) == 4
    assert ids(model="gpt-other") == [failed[0]["id"]]
    assert len(ids(organisation="acme")) == 4 and len(ids(organisation="shop")) == 1
    assert len(ids(route="/v1/models")) == 1
    assert ids(error=failed[0]["error_code"].upper()) == [failed[0]["id"]]
    assert ids(start=(datetime.now(UTC) + timedelta(hours=1)).isoformat()) == []
    assert len(ids(end=(datetime.now(UTC) + timedelta(hours=1)).isoformat())) == 5

    first = admin.get("/requests", params={"limit": 2}).json()
    second = admin.get("/requests", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    third = admin.get("/requests", params={"limit": 2, "cursor": second["next_cursor"]}).json()
    assert [e["id"] for page in (first, second, third) for e in page["data"]] == every
    assert third["next_cursor"] is None

    for params in ({"status": "teapot"}, {"start": "yesterday"}, {"cursor": "nonsense"}, {"limit": 0}):
        bad = admin.get("/requests", params=params)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request_error", params


def test_only_admin_keys_read_the_request_log(server: GatewayServer, admin: Admin) -> None:
    for path in ("/admin/v1/requests", "/admin/v1/requests/1"):
        url = f"{server.url}{path}"
        assert httpx.get(url).status_code == 401
        forbidden = httpx.get(url, headers={"Authorization": f"Bearer {server.mint('acme')}"})
        assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "insufficient_permissions"
    # The management API's own traffic is not in the log.
    assert admin.get("/requests").json()["data"] == []


def test_the_request_log_is_in_the_openapi_schema(server: GatewayServer) -> None:
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert "get" in paths["/admin/v1/requests"] and "get" in paths["/admin/v1/requests/{id}"]
    names = {p["name"] for p in paths["/admin/v1/requests"]["get"]["parameters"]}
    assert {"organisation", "key", "model", "route", "status", "tool", "error", "start", "end", "cursor", "limit"} <= names


# -- bodies, opt-in, after redaction, with their own retention ---------------------------------


@pytest.fixture
def capturing(database_url: str, gateways: Gateways) -> GatewayServer:
    orgs = [
        {
            "id": "keeper",
            "request_log": {"capture_bodies": True, "retention_days": 3},
            "guardrails": [{"key": "pii", "kind": "pii", "action": "redact", "categories": ["email"]}],
            "guardrails_default": ["pii"],
        }
    ]
    return gateways.start(database_url=database_url, extra_orgs=orgs)


def test_bodies_are_kept_redacted_only_where_the_organisation_asks(capturing: GatewayServer, upstream: FakeOpenAI) -> None:
    admin = Admin(capturing)
    upstream.enqueue(Reply(text="Write to bob@example.com"), Reply(text="no bodies here"))
    kept = _client(capturing, capturing.mint("keeper")).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "mail alice@example.com"}]
    )
    assert "bob@example.com" not in (kept.choices[0].message.content or "")
    _client(capturing, capturing.mint("acme")).chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    entries = {e["organisation"]: e for e in _wait_for(admin, 2)}
    bodies = admin.get(f"/requests/{entries['keeper']['id']}").json()["bodies"]
    assert bodies is not None
    sent = str(bodies["request"]["messages"])
    assert "mail" in sent and "alice@example.com" not in sent
    assert "Write to" in bodies["response"]["content"] and "bob@example.com" not in bodies["response"]["content"]
    assert admin.get(f"/requests/{entries['acme']['id']}").json()["bodies"] is None

    # Retention: the keeper's 3 days, the default 14 days for everyone else.
    engine = capturing.gateway.engine
    settings = capturing.gateway.settings
    assert purge_expired(engine, settings, now=datetime.now(UTC) + timedelta(days=2)) == 0
    assert purge_expired(engine, settings, now=datetime.now(UTC) + timedelta(days=4)) == 1
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(BODIES)).scalar_one() == 0
        assert connection.execute(select(ENTRIES.c.organisation_id)).scalars().all() == ["acme"]
    assert purge_expired(engine, settings, now=datetime.now(UTC) + timedelta(days=15)) == 1
    admin.client.close()


def test_what_is_buffered_is_written_when_the_gateway_stops(tmp_path: Path, upstream: FakeOpenAI, gateways: Gateways) -> None:
    # A flush interval far longer than the test: only the shutdown can write these.
    server = gateways.start(usage={"flush_interval_s": 3600})
    key = server.mint("acme")
    upstream.enqueue(Reply(text="a"), Reply(text="b"))
    for _ in range(2):
        _client(server, key).chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}])
    engine = server.gateway.engine
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(ENTRIES)).scalar_one() == 0
    server.stop()
    from runtime.storage.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'plugway.db'}")
    try:
        with engine.connect() as connection:
            assert connection.execute(select(func.count()).select_from(ENTRIES)).scalar_one() == 2
    finally:
        engine.dispose()


async def _call_a_tool_over_mcp(server: GatewayServer, key: str) -> str:
    import httpx2
    import mcp_types as types
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=20) as http:
        async with Client(streamable_http_client(f"{server.url}/mcp", http_client=http)) as client:  # type: ignore[arg-type]
            result = await client.call_tool("calculator__evaluate", {"expression": "2+3"})
            return "".join(block.text for block in result.content if isinstance(block, types.TextContent))


def test_every_front_door_is_logged_with_its_own_route_and_error_code(server: GatewayServer, admin: Admin, upstream: FakeOpenAI) -> None:
    import asyncio

    import anthropic

    key = server.mint("shop")
    upstream.enqueue(Reply(text="from messages"))
    anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0).messages.create(
        model="gpt-test", max_tokens=32, messages=[{"role": "user", "content": "hi"}]
    )
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=server.url, api_key="pw_wrong", max_retries=0).messages.create(
            model="gpt-test", max_tokens=32, messages=[{"role": "user", "content": "hi"}]
        )
    upstream.enqueue(Reply(text="from responses"))
    openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0).responses.create(model="gpt-test", input="hi")
    upstream.enqueue(Reply(text="from the endpoint"))
    assert httpx.post(f"{server.url}/api/shop/yaml-helper", json={"message": "x"}, headers={"Authorization": f"Bearer {key}"}, timeout=20).status_code == 200
    missing = httpx.post(f"{server.url}/api/shop/no-such-endpoint", json={"message": "x"}, headers={"Authorization": f"Bearer {key}"}, timeout=20)
    assert missing.status_code == 404
    assert "5" in asyncio.run(_call_a_tool_over_mcp(server, key))

    entries = _wait_for(admin, 7)
    by_route: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        by_route.setdefault(entry["route"], []).append(entry)
    refused, answered = by_route["/v1/messages"]
    assert (answered["status"], answered["organisation"], answered["completion_tokens"]) == (200, "shop", 7)
    assert (refused["status"], refused["error_code"], refused["organisation"]) == (401, "authentication_error", None)
    assert by_route["/v1/responses"][0]["status"] == 200
    endpoint_miss, endpoint_hit = by_route["/api/{organisation}/{slug}"]
    assert (endpoint_hit["status"], endpoint_hit["endpoint"], endpoint_hit["model"]) == (200, "yaml-helper", "gpt-test")
    assert endpoint_miss["status"] == 404 and endpoint_miss["error_code"] == missing.json()["code"]
    # /mcp is its own route, and the tool it ran is findable.
    assert by_route["/mcp"] and all(entry["organisation"] == "shop" for entry in by_route["/mcp"])
    assert [entry["route"] for entry in admin.get("/requests", params={"tool": "calculator__evaluate"}).json()["data"]] == ["/mcp"]


async def test_while_the_database_cannot_be_written_the_newest_requests_wait_in_bounded_memory(tmp_path: Path) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from runtime.requestlog.writer import MAX_BUFFERED, RequestLogWriter
    from runtime.storage.db import make_engine
    from runtime.storage.migrations import upgrade
    from runtime.telemetry.record import RequestRecord

    url = f"sqlite:///{tmp_path / 'log.db'}"
    engine = make_engine(url)
    try:
        upgrade(engine)
        writer = RequestLogWriter(engine, make_settings(tmp_path, "http://127.0.0.1:9", database_url=url))
        with engine.begin() as connection:  # the table is gone: every write fails
            connection.execute(text("ALTER TABLE request_log RENAME TO request_log_away"))
        for n in range(MAX_BUFFERED + 50):
            writer.record(RequestRecord(route="/v1/chat/completions", method="POST", started=time.perf_counter(), request_id=f"r{n}", status=200), 0.001)
        with pytest.raises(OperationalError, match="no such table"):
            await writer.flush()
        assert writer.backlog() == MAX_BUFFERED
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE request_log_away RENAME TO request_log"))
        await writer.aclose()
        with engine.connect() as connection:
            written = connection.execute(select(ENTRIES.c.request_id).order_by(ENTRIES.c.id)).scalars().all()
        assert len(written) == MAX_BUFFERED and written[0] == "r50" and written[-1] == f"r{MAX_BUFFERED + 49}"
    finally:
        engine.dispose()
