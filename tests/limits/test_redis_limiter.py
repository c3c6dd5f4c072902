"""Redis-only behaviour: limits shared across processes, and failing closed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from redis.asyncio import Redis

from runtime.limits import LimiterUnavailable, RedisLimiter, create_limiter
from tests.limits.limits_redis_server import RedisServer

TIMEOUT_S = 0.25
# Headroom over the configured timeout for scheduling on a busy shared machine.
MARGIN_S = 0.25


async def _elapsed_until_unavailable(call: Callable[[], Awaitable[object]]) -> float:
    started = time.monotonic()
    with pytest.raises(LimiterUnavailable):
        await call()
    return time.monotonic() - started


async def test_two_limiter_objects_share_one_budget(redis_url: str, key_prefix: str) -> None:
    # Two limiters = two connection pools, as two gateway processes would have.
    first = create_limiter(redis_url, timeout_s=2.0, key_prefix=key_prefix)
    second = create_limiter(redis_url, timeout_s=2.0, key_prefix=key_prefix)
    try:
        decisions = await asyncio.gather(
            *(
                (first if i % 2 else second).acquire("shared", rpm=30, daily_tokens=1000)
                for i in range(300)
            )
        )
        assert sum(d.allowed for d in decisions) == 30
        await first.record_tokens("shared", 1000)
        refused = await second.acquire("shared", rpm=None, daily_tokens=1000)
        assert not refused.allowed and refused.reason == "daily_tokens"
    finally:
        await first.aclose()
        await second.aclose()


async def test_key_prefix_separates_deployments(redis_url: str, key_prefix: str) -> None:
    one = create_limiter(redis_url, key_prefix=key_prefix + "a:", timeout_s=2.0)
    two = create_limiter(redis_url, key_prefix=key_prefix + "b:", timeout_s=2.0)
    try:
        assert (await one.acquire("k", rpm=1, daily_tokens=None)).allowed
        assert not (await one.acquire("k", rpm=1, daily_tokens=None)).allowed
        assert (await two.acquire("k", rpm=1, daily_tokens=None)).allowed
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_redis_error_reply_fails_closed(redis_url: str, key_prefix: str) -> None:
    raw = Redis.from_url(redis_url)
    limiter = create_limiter(redis_url, timeout_s=2.0, key_prefix=key_prefix)
    try:
        # A key of the wrong type makes the script error out (WRONGTYPE).
        await raw.set(f"{key_prefix}rl:{{broken}}:req", "not a sorted set")
        with pytest.raises(LimiterUnavailable, match="WRONGTYPE"):
            await limiter.acquire("broken", rpm=5, daily_tokens=None)
    finally:
        await limiter.aclose()
        await raw.aclose()


async def test_script_cache_flush_falls_back_to_eval_and_keeps_counts(
    own_redis: RedisServer,
) -> None:
    limiter = create_limiter(own_redis.url, timeout_s=1.0)
    raw = Redis.from_url(own_redis.url)
    try:
        assert (await limiter.acquire("k", rpm=3, daily_tokens=None)).remaining_requests == 2
        await raw.script_flush()
        after_flush = await limiter.acquire("k", rpm=3, daily_tokens=None)
        assert after_flush.allowed and after_flush.remaining_requests == 1
    finally:
        await limiter.aclose()
        await raw.aclose()


async def test_killed_redis_fails_closed_fast_then_recovers_on_restart(
    own_redis: RedisServer,
) -> None:
    limiter = create_limiter(own_redis.url, timeout_s=TIMEOUT_S)
    try:
        # Several pooled connections, all of which die with the server.
        warm = await asyncio.gather(
            *(limiter.acquire("warm", rpm=None, daily_tokens=100) for _ in range(8))
        )
        assert all(d.allowed for d in warm)
        assert (await limiter.acquire("k", rpm=5, daily_tokens=100)).allowed
        assert await limiter.ping()

        own_redis.kill()
        for call in (
            lambda: limiter.acquire("k", rpm=5, daily_tokens=100),
            lambda: limiter.record_tokens("k", 10),
        ):
            assert await _elapsed_until_unavailable(call) < TIMEOUT_S + MARGIN_S
        assert not await limiter.ping()
        # A key without limits needs no answer from Redis.
        assert (await limiter.acquire("k", rpm=None, daily_tokens=None)).allowed

        own_redis.start()  # same port, empty data, empty script cache
        # The very first call after the restart must pass: no restart of the gateway,
        # no request lost to a dead pooled connection.
        again = await limiter.acquire("k", rpm=5, daily_tokens=100)
        assert again.allowed and again.remaining_requests == 4
        burst = await asyncio.gather(
            *(limiter.acquire("warm", rpm=None, daily_tokens=100) for _ in range(8))
        )
        assert all(d.allowed for d in burst)
        await limiter.record_tokens("k", 10)
        assert (await limiter.acquire("k", rpm=5, daily_tokens=100)).remaining_tokens == 90
        assert await limiter.ping()
    finally:
        await limiter.aclose()


async def test_hung_redis_times_out_then_recovers_when_resumed(own_redis: RedisServer) -> None:
    limiter = create_limiter(own_redis.url, timeout_s=TIMEOUT_S)
    try:
        assert (await limiter.acquire("k", rpm=50, daily_tokens=None)).allowed

        own_redis.freeze()
        # Pooled and brand-new connections alike: the kernel still accepts TCP
        # connections for a stopped process, only the replies never come.
        started = time.monotonic()
        outcomes = await asyncio.gather(
            *(limiter.acquire("k", rpm=50, daily_tokens=None) for _ in range(5)),
            return_exceptions=True,
        )
        elapsed = time.monotonic() - started
        assert all(isinstance(o, LimiterUnavailable) for o in outcomes)
        assert TIMEOUT_S - 0.05 <= elapsed < TIMEOUT_S + MARGIN_S
        elapsed = await _elapsed_until_unavailable(lambda: limiter.record_tokens("k", 5))
        assert elapsed < TIMEOUT_S + MARGIN_S
        started = time.monotonic()
        assert not await limiter.ping()
        assert time.monotonic() - started < TIMEOUT_S + MARGIN_S

        own_redis.thaw()
        # Fresh keys: a late reply to a timed-out call read by a later call would
        # show up as a wrong count here.
        first = await limiter.acquire("after", rpm=50, daily_tokens=None)
        second = await limiter.acquire("after", rpm=50, daily_tokens=None)
        assert (first.remaining_requests, second.remaining_requests) == (49, 48)
        assert await limiter.ping()
    finally:
        await limiter.aclose()


async def test_unreachable_redis_at_startup_fails_closed() -> None:
    limiter = RedisLimiter("redis://127.0.0.1:1/0", timeout_s=TIMEOUT_S)
    try:
        elapsed = await _elapsed_until_unavailable(
            lambda: limiter.acquire("k", rpm=1, daily_tokens=None)
        )
        assert elapsed < TIMEOUT_S + MARGIN_S
        assert not await limiter.ping()
    finally:
        await limiter.aclose()


async def test_concurrent_token_counts_share_round_trips_and_stay_exact(own_redis: RedisServer) -> None:
    limiter = create_limiter(own_redis.url, timeout_s=2.0)
    stats = Redis.from_url(own_redis.url)
    try:
        await stats.config_resetstat()
        amounts = [(f"key-{i % 3}", 1 + i % 7) for i in range(300)]
        await asyncio.gather(*(limiter.record_tokens(key, tokens) for key, tokens in amounts))
        for key in ("key-0", "key-1", "key-2"):
            expected = sum(tokens for k, tokens in amounts if k == key)
            decision = await limiter.acquire(key, rpm=None, daily_tokens=10_000)
            assert decision.remaining_tokens == 10_000 - expected
        # Three acquires plus the token counts: far fewer script calls than 300 counts.
        calls = (await stats.info("commandstats"))["cmdstat_evalsha"]["calls"]
        assert calls <= 3 + 2 * 3

        # A count made while Redis is gone fails every caller waiting on it, and counts nothing later.
        own_redis.kill()
        outcomes = await asyncio.gather(*(limiter.record_tokens("key-0", 5) for _ in range(10)), return_exceptions=True)
        assert all(isinstance(outcome, LimiterUnavailable) for outcome in outcomes)
        own_redis.start()
        await limiter.record_tokens("key-0", 5)
        assert (await limiter.acquire("key-0", rpm=None, daily_tokens=10_000)).remaining_tokens == 10_000 - 5
    finally:
        await stats.aclose()
        await limiter.aclose()
