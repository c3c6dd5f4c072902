"""Daily-token caps and monthly budgets hold under a concurrent burst: each admitted request
reserves its most at admission and settles with its real usage, so a burst overshoots by at
most the usage of the one request admitted last (README, "Limits, usage and budgets").

Each test runs on PostgreSQL + Redis and on the embedded default (SQLite, in-process limits).
"""

from __future__ import annotations

import asyncio
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


@pytest.fixture(params=["postgresql+redis", "sqlite+in-process"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Gateway options for one of the two deployments; Redis counters of minted keys deleted afterwards."""
    if request.param == "sqlite+in-process":
        yield from ({"database_url": url} for url in fresh_database("sqlite", tmp_path, prefix="reserve"))
        return
    redis_url = shared_redis_url()
    for url in fresh_database("postgresql", tmp_path, prefix="reserve"):
        # A generous Redis deadline: this test is about counting, on a CPU shared with other runs.
        options: dict[str, Any] = {"database_url": url, "redis_url": redis_url, "limits": {"redis_timeout_s": 5}}
        yield options
        client = redis.Redis.from_url(redis_url)
        try:
            for key_id in options.get("minted", ()):
                names = list(client.scan_iter(match=f"plugway:rl:{{{key_id}}}*"))
                if names:
                    client.delete(*names)
        finally:
            client.close()


def _start(servers: Gateways, stack: dict[str, Any], **options: Any) -> GatewayServer:
    return servers.start(**{k: v for k, v in stack.items() if k != "minted"}, **options)


def _mint(server: GatewayServer, stack: dict[str, Any], org: str, **limits: Any) -> tuple[str, str]:
    secret = server.mint(org, **limits)
    with Session(server.gateway.engine) as session:
        key_id = session.exec(select(ApiKey.id).where(ApiKey.key_hash == hash_key(secret))).one()
    stack.setdefault("minted", []).append(key_id)
    return secret, key_id


async def _burst(url: str, key: str, body: dict[str, Any], count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=count)) as client:
        return await asyncio.gather(
            *(client.post(f"{url}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}) for _ in range(count))
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
    servers: Gateways, upstream: FakeOpenAI, stack: dict[str, Any]
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
    servers: Gateways, upstream: FakeOpenAI, stack: dict[str, Any]
) -> None:
    server = _start(servers, stack, extra_orgs=[{"id": "small", "monthly_budget_usd": 0.012}])
    key, _ = _mint(server, stack, "small")
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
