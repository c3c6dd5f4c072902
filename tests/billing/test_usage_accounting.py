"""Every request's usage reaches usage_records and GET /v1/usage exactly as the client was told,
streamed, non-streamed, orchestrated and abandoned midway, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import openai
import pytest
from sqlmodel import Session, select

from runtime.storage.models import UsageRecord
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.support import Gateways, GatewayServer, wait_until

PRICE_IN, PRICE_OUT = 1.0, 2.0  # gpt-test, per million tokens (tests/support.py)


def _records(server: GatewayServer, org: str) -> list[UsageRecord]:
    server.flush_usage()
    with Session(server.gateway.engine) as session:
        return list(session.exec(select(UsageRecord).where(UsageRecord.organisation_id == org)))


def _usage(server: GatewayServer, key: str, **params: str) -> httpx.Response:
    return httpx.get(f"{server.base_url}/usage", params=params, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def _cost(prompt: int, completion: int) -> float:
    return (prompt * PRICE_IN + completion * PRICE_OUT) / 1_000_000


def test_usage_records_and_summary_match_what_clients_were_told(
    servers: Gateways, upstream: FakeOpenAI, database_url: str
) -> None:
    server = servers.start(database_url=database_url)
    acme = server.mint("acme")  # has plugins: orchestrated
    bare = server.mint("bare")  # no plugins: passed through
    told: list[dict[str, int]] = []

    bare_client = openai.OpenAI(base_url=server.base_url, api_key=bare, max_retries=0, timeout=20)
    acme_client = openai.OpenAI(base_url=server.base_url, api_key=acme, max_retries=0, timeout=20)

    upstream.enqueue(Reply(text="plain answer", prompt_tokens=120, completion_tokens=30))
    plain = bare_client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    assert plain.usage is not None
    told.append(plain.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}))

    upstream.enqueue(Reply(text="streamed answer in words", prompt_tokens=210, completion_tokens=44))
    stream = bare_client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    last_usage = None
    for chunk in stream:
        last_usage = chunk.usage or last_usage
    assert last_usage is not None
    told.append(last_usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}))

    # Orchestrated: two upstream rounds (a tool call, then the answer), billed as their sum.
    upstream.enqueue(
        Reply(tool_calls=[("testkit__echo", {"text": "x"})], prompt_tokens=300, completion_tokens=20),
        Reply(text="done", prompt_tokens=340, completion_tokens=15),
    )
    orchestrated = acme_client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "echo"}])
    assert orchestrated.usage is not None and orchestrated.usage.total_tokens == 300 + 20 + 340 + 15
    told.append(orchestrated.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}))

    upstream.enqueue(
        Reply(tool_calls=[("testkit__echo", {"text": "y"})], prompt_tokens=400, completion_tokens=25),
        Reply(text="streamed after a tool", prompt_tokens=450, completion_tokens=18),
    )
    last_usage = None
    for chunk in acme_client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "echo"}], stream=True
    ):
        last_usage = chunk.usage or last_usage
    assert last_usage is not None and last_usage.total_tokens == 400 + 25 + 450 + 18
    told.append(last_usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}))

    records = _records(server, "bare") + _records(server, "acme")
    assert len(records) == 4
    assert sorted(r.total_tokens for r in records) == sorted(t["total_tokens"] for t in told)
    assert sum(r.prompt_tokens for r in records) == sum(t["prompt_tokens"] for t in told)
    assert all(r.status == "ok" for r in records)
    assert {r.rounds for r in records} == {1, 2}

    for key, org_told in ((bare, told[:2]), (acme, told[2:])):
        summary = _usage(server, key).json()
        assert summary["total_tokens"] == sum(t["total_tokens"] for t in org_told)
        expected_cost = sum(_cost(t["prompt_tokens"], t["completion_tokens"]) for t in org_told)
        assert summary["total_cost_usd"] == pytest.approx(expected_cost)
        assert summary["breakdown_by_model"] == [
            {
                "model": "gpt-test",
                "requests": 2,
                "prompt_tokens": sum(t["prompt_tokens"] for t in org_told),
                "completion_tokens": sum(t["completion_tokens"] for t in org_told),
                "tokens": summary["total_tokens"],
                "cost_usd": pytest.approx(expected_cost),
            }
        ]
        assert "credit_remaining_usd" not in summary  # no budget configured


def test_an_abandoned_stream_is_billed_with_the_upstreams_real_usage(
    servers: Gateways, upstream: FakeOpenAI, database_url: str
) -> None:
    server = servers.start(database_url=database_url)
    key = server.mint("bare")
    words = " ".join(f"word{i}" for i in range(30))
    upstream.enqueue(Reply(text=words, prompt_tokens=1234, completion_tokens=567, chunk_delay_s=0.03))
    client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=20)
    stream = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True)
    received = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            received += 1
            if received == 3:
                break
    stream.close()  # the client hangs up after three words

    records = wait_until(lambda: _records(server, "bare"), "the abandoned stream's usage row", within_s=10)
    assert len(records) == 1
    record = records[0]
    # Not the ~4-characters-a-token estimate of what was streamed: the provider's own figures.
    assert (record.prompt_tokens, record.completion_tokens) == (1234, 567)
    assert record.status == "abandoned"
    assert record.cost_usd == pytest.approx(_cost(1234, 567))
    assert _usage(server, key).json()["total_tokens"] == 1234 + 567


def test_an_abandoned_orchestrated_stream_starts_no_new_round(
    servers: Gateways, upstream: FakeOpenAI, database_url: str
) -> None:
    server = servers.start(database_url=database_url)
    key = server.mint("acme")
    upstream.enqueue(
        Reply(text="thinking " * 20, tool_calls=[("testkit__echo", {"text": "z"})], prompt_tokens=500, completion_tokens=60, chunk_delay_s=0.03),
        Reply(text="never asked for", prompt_tokens=999, completion_tokens=99),
    )
    client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=20)
    stream = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "go"}], stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()
    records = wait_until(lambda: _records(server, "acme"), "the abandoned run's usage row", within_s=10)
    assert [(r.prompt_tokens, r.completion_tokens, r.status) for r in records] == [(500, 60, "abandoned")]
    assert len(upstream.requests) == 1  # the second round was never sent
    assert upstream.script  # and its scripted reply is still waiting


def test_usage_period_parameters(servers: Gateways, upstream: FakeOpenAI, database_url: str) -> None:
    server = servers.start(database_url=database_url)
    key = server.mint("bare")
    now = datetime.now(UTC)
    this_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    with Session(server.gateway.engine) as session:
        session.add(UsageRecord(request_id="old", organisation_id="bare", model="gpt-test", total_tokens=1000, prompt_tokens=1000, cost_usd=0.5, created_at=last_month + timedelta(days=3)))
        session.add(UsageRecord(request_id="new", organisation_id="bare", model="gpt-other", total_tokens=10, prompt_tokens=10, cost_usd=0.0, created_at=now - timedelta(seconds=5)))
        session.commit()

    current = _usage(server, key)
    assert current.status_code == 200
    body = current.json()
    assert body["period_start"] == this_month.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert body["total_tokens"] == 10
    assert [b["model"] for b in body["breakdown_by_model"]] == ["gpt-other"]

    previous = _usage(server, key, start=last_month.date().isoformat(), end=this_month.date().isoformat()).json()
    assert (previous["total_tokens"], previous["total_cost_usd"]) == (1000, pytest.approx(0.5))
    both = _usage(server, key, start=last_month.isoformat().replace("+00:00", "Z")).json()
    assert both["total_tokens"] == 1010

    for params, param in (({"start": "yesterday"}, "start"), ({"end": "2026-13-01"}, "end"), ({"start": "2026-05-02", "end": "2026-05-01"}, "end"), ({"month": "5"}, "month")):
        refused = _usage(server, key, **params)
        assert refused.status_code == 400, params
        error = refused.json()["error"]
        assert (error["code"], error["param"]) == ("invalid_request_error", param)
    assert httpx.get(f"{server.base_url}/usage", timeout=10).status_code == 401
