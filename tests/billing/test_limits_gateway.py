"""Per-key limits through the real gateway on real Redis: exact RPM under a burst, shared by two
gateways, the daily token cap, and fail-closed 503 when Redis dies or freezes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from sqlmodel import Session, select

from runtime.storage.keys import hash_key
from runtime.storage.models import ApiKey
from tests.fakes.openai_server import FakeOpenAI, Reply, free_port
from tests.limits.limits_redis_server import RedisServer
from tests.support import Gateways, GatewayServer, wait_until

BODY = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def minted(redis_url: str) -> Iterator[list[str]]:
    """Key ids minted by the test; their counters are deleted from the shared Redis afterwards."""
    ids: list[str] = []
    yield ids
    client = redis.Redis.from_url(redis_url)
    try:
        for key_id in ids:
            names = list(client.scan_iter(match=f"plugway:rl:{{{key_id}}}*"))
            if names:
                client.delete(*names)
    finally:
        client.close()


def _mint(server: GatewayServer, minted: list[str], org: str = "bare", **limits: int) -> str:
    secret = server.mint(org, **limits)
    with Session(server.gateway.engine) as session:
        minted.append(session.exec(select(ApiKey.id).where(ApiKey.key_hash == hash_key(secret))).one())
    return secret


async def _burst(urls: list[str], key: str, count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=20, limits=httpx.Limits(max_connections=count)) as client:
        return await asyncio.gather(
            *(
                client.post(f"{urls[i % len(urls)]}/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"})
                for i in range(count)
            )
        )


def test_exact_rpm_under_a_concurrent_burst(servers: Gateways, upstream: FakeOpenAI, redis_url: str, minted: list[str]) -> None:
    server = servers.start(redis_url=redis_url)
    key = _mint(server, minted, rpm=5)
    upstream.responder = lambda body: Reply(text="ok")
    responses = asyncio.run(_burst([server.base_url], key, 40))
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert (len(ok), len(refused)) == (5, 35)
    assert len(upstream.requests) == 5
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok) == [0, 1, 2, 3, 4]
    for response in refused:
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
        assert response.json()["error"]["type"] == "requests"
        assert int(response.headers["Retry-After"]) >= 1
        assert response.headers["x-ratelimit-limit-requests"] == "5"
        assert response.headers["x-ratelimit-remaining-requests"] == "0"
        assert response.headers["x-ratelimit-reset-requests"].endswith("s")


def test_two_gateways_share_one_limit(
    servers: Gateways, upstream: FakeOpenAI, redis_url: str, minted: list[str], database_url: str
) -> None:
    # Two gateways on one database and one Redis, as behind a load balancer.
    one = servers.start(redis_url=redis_url, database_url=database_url)
    two = servers.start(redis_url=redis_url, database_url=database_url)
    key = _mint(one, minted, rpm=6)  # minted through one, used on both
    upstream.responder = lambda body: Reply(text="ok", prompt_tokens=5, completion_tokens=5)
    responses = asyncio.run(_burst([one.base_url, two.base_url], key, 30))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 6 and statuses.count(429) == 24
    # Each gateway now refuses on its own: both read the one shared window.
    for server in (one, two):
        again = httpx.post(f"{server.base_url}/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"}, timeout=20)
        assert again.status_code == 429
    one.flush_usage()
    two.flush_usage()
    summary = httpx.get(f"{one.base_url}/usage", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
    assert (summary["total_requests"], summary["total_tokens"]) == (6, 60)


def test_daily_token_cap(servers: Gateways, upstream: FakeOpenAI, redis_url: str, minted: list[str]) -> None:
    server = servers.start(redis_url=redis_url)
    key = _mint(server, minted, daily_tokens=100)
    upstream.responder = lambda body: Reply(text="ok", prompt_tokens=40, completion_tokens=20)
    headers = {"Authorization": f"Bearer {key}"}
    counter = redis.Redis.from_url(redis_url)

    def settled() -> tuple[int, int]:
        """The key's daily-token hash in Redis: tokens settled, and tokens still held by requests in flight."""
        used, held = counter.hmget(f"plugway:rl:{{{minted[-1]}}}:tok", "used", "held")
        return int(used or 0), int(held or 0)

    def ask() -> httpx.Response:
        before = settled()[0]
        response = httpx.post(f"{server.base_url}/chat/completions", json=BODY, headers=headers, timeout=20)
        if response.status_code == 200:
            # Tokens are counted just after the response: wait for Redis to have them, and the hold released.
            wait_until(lambda: settled() == (before + 60, 0), "the answer's 60 tokens counted in Redis")
        return response

    first, second, third = ask(), ask(), ask()
    assert first.status_code == 200 and first.headers["x-ratelimit-remaining-tokens"] == "100"
    # 60 used: under the cap, so this one runs, and pushes usage to 120.
    assert second.status_code == 200 and second.headers["x-ratelimit-remaining-tokens"] == "40"
    assert third.status_code == 429
    assert third.json()["error"]["type"] == "tokens"
    assert third.headers["x-ratelimit-remaining-tokens"] == "0"
    assert int(third.headers["Retry-After"]) >= 1
    assert len(upstream.requests) == 2
    counter.close()


def _limited_server(servers: Gateways, own_redis: RedisServer) -> GatewayServer:
    return servers.start(redis_url=own_redis.url, limits={"redis_timeout_s": 0.25})


def _timed(server: GatewayServer, key: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.post(
        f"{server.base_url}/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"}, timeout=20
    )
    return response, time.monotonic() - started


def _ready(server: GatewayServer) -> tuple[int, bool]:
    response = httpx.get(f"{server.url}/readyz", timeout=10)
    return response.status_code, response.json()["checks"]["redis"]["ok"]


def test_killed_redis_fails_closed_and_recovers_without_restart(
    servers: Gateways, upstream: FakeOpenAI, own_redis: RedisServer
) -> None:
    server = _limited_server(servers, own_redis)
    key = server.mint("bare", rpm=100)
    upstream.responder = lambda body: Reply(text="ok")
    assert _timed(server, key)[0].status_code == 200
    assert _ready(server) == (200, True)

    own_redis.kill()
    response, took = _timed(server, key)
    assert response.status_code == 503 and took < 1.5
    assert response.json()["error"]["code"] == "rate_limiter_unavailable"
    assert response.headers["Retry-After"] == "1"
    assert _ready(server) == (503, False)
    assert len(upstream.requests) == 1

    own_redis.start()  # same port, empty: the gateway reconnects by itself
    wait_until(lambda: _timed(server, key)[0].status_code == 200, "the gateway recovers once Redis is back", within_s=5)
    assert _ready(server) == (200, True)


def test_frozen_redis_fails_closed_within_the_timeout(
    servers: Gateways, upstream: FakeOpenAI, own_redis: RedisServer
) -> None:
    server = _limited_server(servers, own_redis)
    key = server.mint("bare", rpm=100)
    upstream.responder = lambda body: Reply(text="ok")
    assert _timed(server, key)[0].status_code == 200
    own_redis.freeze()
    try:
        response, took = _timed(server, key)
        assert response.status_code == 503
        assert took < 1.0  # redis_timeout_s is 0.25: nobody waits on a hung Redis
        assert _ready(server)[1] is False
    finally:
        own_redis.thaw()
    wait_until(lambda: _timed(server, key)[0].status_code == 200, "the gateway recovers once Redis thaws", within_s=5)
    assert _ready(server) == (200, True)


def test_two_plugway_serve_processes_share_limits_and_usage(
    tmp_path: Path, upstream: FakeOpenAI, redis_url: str, postgres_url: str
) -> None:
    """The documented way to scale out: two real `plugway serve` processes, one PostgreSQL, one Redis."""
    config = tmp_path / "plugway.yaml"
    config.write_text(
        json.dumps(
            {
                "database_url": postgres_url,
                "redis_url": redis_url,
                "providers": [{"id": "up", "kind": "openai", "base_url": upstream.base_url, "api_key": "sk-test-upstream", "max_retries": 0}],
                "models": [{"id": "gpt-test", "provider": "up", "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}],
                "organisations": [{"id": "scale"}],
                "usage": {"flush_interval_s": 0.1},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGWAY_")}
    created = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "keys", "create", "--org", "scale", "--rpm", "5", "--config", str(config)],
        capture_output=True, text=True, timeout=60, env=env, check=True,
    )
    key = created.stdout.strip().splitlines()[-1]
    ports = [free_port(), free_port()]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "runtime.cli", "serve", "--config", str(config), "--port", str(port), "--no-worker"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        for port in ports
    ]
    try:
        urls = [f"http://127.0.0.1:{port}/v1" for port in ports]
        deadline = time.monotonic() + 60
        for url in urls:
            while True:
                try:
                    if httpx.get(url.removesuffix("/v1") + "/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "plugway serve did not become ready"
                time.sleep(0.2)
        upstream.responder = lambda body: Reply(text="ok", prompt_tokens=7, completion_tokens=3)
        responses = asyncio.run(_burst(urls, key, 40))
        statuses = [r.status_code for r in responses]
        assert statuses.count(200) == 5 and statuses.count(429) == 35

        def flushed() -> dict | None:  # both processes flush their usage (flush_interval_s 0.1)
            summary: dict = httpx.get(f"{urls[1]}/usage", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
            return summary if summary["total_requests"] >= 5 else None

        summary = wait_until(flushed, "both processes' usage is written")
        assert (summary["total_requests"], summary["total_tokens"]) == (5, 50)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=20)
