"""Daily-token caps and monthly budgets hold under a concurrent burst: each admitted request
reserves its most at admission and settles with its real usage, so a burst overshoots by at
most the usage of the one request admitted last (README, "Limits, usage and budgets").

Each test runs on PostgreSQL + Redis and on the embedded default (SQLite, in-process limits);
the two-gateway tests run two gateways on one PostgreSQL and one Redis, as ``--workers 2`` or two
hosts do, where only Redis can see every process's holds.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlmodel import Session, select

from runtime.storage.keys import hash_key
from runtime.storage.models import ApiKey
from runtime.storage.usage import cost_usd
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.services import fresh_database, shared_redis_url
from tests.support import Gateways, GatewayServer

BURST = 200


# Test functions name their stack before ``servers``: set up first, torn down last, so gateways
# stop before their PostgreSQL schema is dropped.
@pytest.fixture(params=["postgresql+redis", "sqlite+in-process"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Gateway options for one of the two deployments; Redis counters of minted keys deleted afterwards."""
    if request.param == "sqlite+in-process":
        yield from ({"database_url": url} for url in fresh_database("sqlite", tmp_path, prefix="reserve"))
        return
    yield from _postgresql_and_redis(tmp_path)


@pytest.fixture
def shared_stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Options for gateways sharing one PostgreSQL schema and one Redis."""
    yield from _postgresql_and_redis(tmp_path)


def _postgresql_and_redis(tmp_path: Path) -> Iterator[dict[str, Any]]:
    redis_url = shared_redis_url()
    for url in fresh_database("postgresql", tmp_path, prefix="reserve"):
        # A generous Redis deadline: this test is about counting, on a CPU shared with other runs.
        options: dict[str, Any] = {"database_url": url, "redis_url": redis_url, "limits": {"redis_timeout_s": 5}}
        yield options
        client = redis.Redis.from_url(redis_url)
        try:
            patterns = [f"plugway:rl:{{{key_id}}}*" for key_id in options.get("minted", ())]
            patterns += [f"plugway:budget:{{{org}}}*" for org in options.get("budget_orgs", ())]
            for pattern in patterns:
                names = list(client.scan_iter(match=pattern))
                if names:
                    client.delete(*names)
        finally:
            client.close()


def _budget_org(stack: dict[str, Any], name: str) -> str:
    """An organisation id of this test's own: budgets are held in Redis by organisation, and other
    runs may share the Redis server."""
    org = f"{name}-{secrets.token_hex(4)}"
    stack.setdefault("budget_orgs", []).append(org)
    return org


def _start(servers: Gateways, stack: dict[str, Any], **options: Any) -> GatewayServer:
    return servers.start(**{k: v for k, v in stack.items() if k not in ("minted", "budget_orgs")}, **options)


def _mint(server: GatewayServer, stack: dict[str, Any], org: str, **limits: Any) -> tuple[str, str]:
    secret = server.mint(org, **limits)
    with Session(server.gateway.engine) as session:
        key_id = session.exec(select(ApiKey.id).where(ApiKey.key_hash == hash_key(secret))).one()
    stack.setdefault("minted", []).append(key_id)
    return secret, key_id


async def _burst(url: str | list[str], key: str, body: dict[str, Any], count: int) -> list[httpx.Response]:
    """``count`` concurrent requests, spread in turn over the gateways at ``url``."""
    urls = [url] if isinstance(url, str) else url
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=count)) as client:
        return await asyncio.gather(
            *(
                client.post(f"{urls[i % len(urls)]}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
                for i in range(count)
            )
        )


def _usage(server: GatewayServer, key: str) -> dict[str, Any]:
    server.flush_usage()
    response = httpx.get(f"{server.base_url}/usage", headers={"Authorization": f"Bearer {key}"}, timeout=20)
    assert response.status_code == 200, response.text
    return response.json()


def _settled(server: GatewayServer, expected_requests: int, key: str) -> dict[str, Any]:
    """The organisation's usage once every admitted request's row is written (polled, never slept for)."""
    deadline = time.monotonic() + 30
    while True:
        usage = _usage(server, key)
        if usage["total_requests"] >= expected_requests or time.monotonic() > deadline:
            return usage
        time.sleep(0.05)


def test_a_burst_against_a_daily_token_cap_overshoots_by_at_most_one_request(
    stack: dict[str, Any], servers: Gateways, upstream: FakeOpenAI
) -> None:
    server = _start(servers, stack)
    key, _ = _mint(server, stack, "bare", daily_tokens=100)
    # 15 tokens a request, as in the probe that let 131 of 200 through (1,965 tokens on a 100 cap).
    upstream.responder = lambda body: Reply(text="ok", prompt_tokens=10, completion_tokens=5)
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
    responses = asyncio.run(_burst(server.base_url, key, body, BURST))
    admitted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(admitted) + len(refused) == BURST, {r.status_code for r in responses}
    assert all(r.json()["error"]["type"] == "tokens" for r in refused)
    usage = _settled(server, len(admitted), key)
    assert usage["total_requests"] == len(admitted) == len(upstream.requests)
    # Counted tokens stay under the cap plus the one request admitted last (15 tokens).
    assert usage["total_tokens"] < 100 + 15
    # With the day's tokens settled, the cap refuses once they reach it.
    if usage["total_tokens"] >= 100:
        again = httpx.post(f"{server.base_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=20)
        assert again.status_code == 429


def test_a_burst_against_a_small_budget_overshoots_by_at_most_one_request(
    stack: dict[str, Any], servers: Gateways, upstream: FakeOpenAI
) -> None:
    org = _budget_org(stack, "small")
    server = _start(servers, stack, extra_orgs=[{"id": org, "monthly_budget_usd": 0.012}])
    key, _ = _mint(server, stack, org)
    # gpt-test: $1 / $2 per million tokens, so $0.005 a request; the prompt (4,000 characters,
    # about 1,000 tokens) and max_tokens keep each request within its reservation.
    upstream.responder = lambda body: Reply(text="ok", prompt_tokens=1000, completion_tokens=2000)
    body = {"model": "gpt-test", "max_tokens": 2000, "messages": [{"role": "user", "content": "x" * 4000}]}
    per_request = cost_usd(server.gateway.router.model("gpt-test").price, 1000, 2000)  # type: ignore[union-attr]
    responses = asyncio.run(_burst(server.base_url, key, body, BURST))
    admitted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 402]
    assert len(admitted) + len(refused) == BURST, {r.status_code for r in responses}
    assert all(r.json()["error"]["code"] == "insufficient_credits" for r in refused)
    usage = _settled(server, len(admitted), key)
    assert usage["total_requests"] == len(admitted) == len(upstream.requests)
    assert usage["total_cost_usd"] < 0.012 + per_request


# -- two gateways on one PostgreSQL and one Redis ----------------------------------------------

SMALL_BUDGET = 0.012


def _two_gateways(servers: Gateways, stack: dict[str, Any], org: str, budget: float | None = None) -> list[GatewayServer]:
    extra = [{"id": org, "monthly_budget_usd": budget}] if budget is not None else []
    return [_start(servers, stack, extra_orgs=extra) for _ in range(2)]


def _priced_request(server: GatewayServer, upstream: FakeOpenAI) -> tuple[dict[str, Any], float]:
    """A $0.005 request that stays within its reservation (as in the one-gateway budget test)."""
    upstream.responder = lambda body: Reply(text="ok", prompt_tokens=1000, completion_tokens=2000)
    body = {"model": "gpt-test", "max_tokens": 2000, "messages": [{"role": "user", "content": "x" * 4000}]}
    return body, cost_usd(server.gateway.router.model("gpt-test").price, 1000, 2000)  # type: ignore[union-attr]


def test_a_burst_over_two_gateways_overshoots_a_budget_by_at_most_one_request(
    shared_stack: dict[str, Any], servers: Gateways, upstream: FakeOpenAI
) -> None:
    # Held in each process alone, each gateway admitted three $0.005 requests on a $0.012 budget ($0.03).
    org = _budget_org(shared_stack, "small")
    gateways = _two_gateways(servers, shared_stack, org, SMALL_BUDGET)
    key, _ = _mint(gateways[0], shared_stack, org)
    body, per_request = _priced_request(gateways[0], upstream)
    responses = asyncio.run(_burst([g.base_url for g in gateways], key, body, BURST))
    admitted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 402]
    assert len(admitted) + len(refused) == BURST, {r.status_code for r in responses}
    assert all(r.json()["error"]["code"] == "insufficient_credits" for r in refused)
    for gateway in gateways:
        gateway.flush_usage()
    usage = _settled(gateways[0], len(admitted), key)
    assert usage["total_requests"] == len(admitted) == len(upstream.requests)
    assert usage["total_cost_usd"] < SMALL_BUDGET + per_request


def test_requests_alternating_between_two_gateways_see_each_others_spend_at_once(
    shared_stack: dict[str, Any], servers: Gateways, upstream: FakeOpenAI
) -> None:
    """A cost settled by one gateway counts on the other before its cached database figure shows it."""
    org = _budget_org(shared_stack, "small")
    gateways = _two_gateways(servers, shared_stack, org, SMALL_BUDGET)
    key, _ = _mint(gateways[0], shared_stack, org)
    body, per_request = _priced_request(gateways[0], upstream)
    statuses = []
    for i in range(10):
        response = httpx.post(
            f"{gateways[i % 2].base_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=20
        )
        statuses.append(response.status_code)
    assert set(statuses) == {200, 402}, statuses
    for gateway in gateways:
        gateway.flush_usage()
    usage = _settled(gateways[0], statuses.count(200), key)
    assert usage["total_cost_usd"] < SMALL_BUDGET + per_request


def test_a_burst_over_two_gateways_overshoots_a_daily_token_cap_by_at_most_one_request(
    shared_stack: dict[str, Any], servers: Gateways, upstream: FakeOpenAI
) -> None:
    gateways = _two_gateways(servers, shared_stack, "bare")
    key, _ = _mint(gateways[0], shared_stack, "bare", daily_tokens=100)
    upstream.responder = lambda body: Reply(text="ok", prompt_tokens=10, completion_tokens=5)
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
    responses = asyncio.run(_burst([g.base_url for g in gateways], key, body, BURST))
    admitted = [r for r in responses if r.status_code == 200]
    assert len(admitted) + sum(r.status_code == 429 for r in responses) == BURST, {r.status_code for r in responses}
    for gateway in gateways:
        gateway.flush_usage()
    usage = _settled(gateways[0], len(admitted), key)
    assert usage["total_requests"] == len(admitted) == len(upstream.requests)
    assert usage["total_tokens"] < 100 + 15


# -- refused after admission: the holds go at once --------------------------------------------

DENIED = {"key": "words", "kind": "denylist", "terms": ["project falcon"], "action": "block", "apply_to": ["input"]}
HOLDING_ENDPOINTS: list[dict[str, Any]] = [
    {
        "slug": "review",
        "model": "gpt-test",
        "plugins": [],
        "guardrails": ["words"],
        "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    },
    {"slug": "support", "model": "gpt-test", "plugins": [], "sessions": {"enabled": True}},
]
REFUSALS = {
    "endpoint input schema": ("api", "review", {"message": "rate this", "input": {"txt": 1}}, None),
    "endpoint guardrail": ("api", "review", {"message": "about project falcon", "input": {"text": "x"}}, None),
    "endpoint session not found": ("api", "support", {"message": "hi", "session_id": "sess_nobody"}, None),
    "chat guardrail": ("v1", "chat/completions", {"model": "gpt-test", "messages": [{"role": "user", "content": "project falcon"}]}, None),
    "chat upstream 400": ("v1", "chat/completions", {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}, 400),
    "messages unsupported field": (
        "v1",
        "messages",
        {"model": "gpt-test", "max_tokens": 4096, "messages": [{"role": "user", "content": "hi"}], "thinking": {"type": "enabled", "budget_tokens": 1024}},
        None,
    ),
}


@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_a_request_refused_after_admission_gives_its_holds_back_at_once(
    stack: dict[str, Any], servers: Gateways, upstream: FakeOpenAI, refusal: str
) -> None:
    # One request's hold fills both the key's 100 daily tokens and the $0.001 budget (each is cut
    # to the cap), so the follow-up is admitted only once the refused request has given it back.
    org = _budget_org(stack, "holds")
    server = _start(
        servers,
        stack,
        extra_orgs=[
            {
                "id": org,
                "monthly_budget_usd": 0.001,
                "guardrails": [DENIED],
                "guardrails_default": ["words"],
                "endpoints": HOLDING_ENDPOINTS,
                "unsupported_params": "refuse",
            }
        ],
    )
    key, _ = _mint(server, stack, org, daily_tokens=100)
    prefix, path, body, upstream_status = REFUSALS[refusal]
    if upstream_status is not None:
        upstream.enqueue(Reply(status=upstream_status, error_message="bad request"))
    headers = {"Authorization": f"Bearer {key}"}
    url = f"{server.url}/{prefix}/{path}" if prefix == "v1" else f"{server.url}/api/{org}/{path}"
    refused = httpx.post(url, json=body, headers=headers, timeout=20)
    assert 400 <= refused.status_code < 500 and refused.status_code not in (402, 429), refused.text
    upstream.enqueue(Reply(text="ok", prompt_tokens=1, completion_tokens=1))
    follow_up = httpx.post(
        f"{server.base_url}/chat/completions",
        json={"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]},
        headers=headers,
        timeout=20,
    )
    assert follow_up.status_code == 200, follow_up.text


def test_an_approval_naming_no_pending_request_holds_nothing(
    stack: dict[str, Any], servers: Gateways, upstream: FakeOpenAI
) -> None:
    org = _budget_org(stack, "careful")
    server = _start(
        servers,
        stack,
        extra_orgs=[{"id": org, "monthly_budget_usd": 0.001, "plugins": [{"id": "testkit", "require_approval": "destructive"}]}],
    )
    key, _ = _mint(server, stack, org, daily_tokens=100)
    headers = {"Authorization": f"Bearer {key}"}
    upstream.enqueue(Reply(tool_calls=[("testkit__echo", {"text": "x"})], prompt_tokens=5, completion_tokens=5))
    first = httpx.post(f"{server.base_url}/responses", json={"model": "gpt-test", "input": "echo x"}, headers=headers, timeout=20)
    assert first.status_code == 200, first.text
    assert "mcp_approval_request" in [item["type"] for item in first.json()["output"]]
    answer = [{"type": "mcp_approval_response", "approval_request_id": "mcpr_nobody", "approve": True}]
    refused = httpx.post(
        f"{server.base_url}/responses",
        json={"model": "gpt-test", "previous_response_id": first.json()["id"], "input": answer},
        headers=headers,
        timeout=20,
    )
    assert refused.status_code == 400 and "mcpr_nobody" in refused.text
    upstream.enqueue(Reply(text="ok", prompt_tokens=1, completion_tokens=1))
    follow_up = httpx.post(
        f"{server.base_url}/chat/completions",
        json={"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]},
        headers=headers,
        timeout=20,
    )
    assert follow_up.status_code == 200, follow_up.text
