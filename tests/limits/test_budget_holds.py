"""Budgets held in Redis (``RedisLimiter.holds_budgets``): checked and held in the limit check's
script call, shared by every limiter (gateway process), settled costs kept until the database
figure every process reads shows them."""

from __future__ import annotations

import asyncio
import time

from runtime.limits import BudgetAsk, RedisLimiter, create_limiter


def _limiter(redis_url: str, key_prefix: str, **options: float) -> RedisLimiter:
    limiter = create_limiter(redis_url, timeout_s=2.0, key_prefix=key_prefix, **options)
    assert isinstance(limiter, RedisLimiter) and limiter.holds_budgets
    return limiter


def _ask(reserve_usd: float, *, spent_usd: float = 0.0, budget_usd: float = 1.0) -> BudgetAsk:
    return BudgetAsk("org", budget_usd=budget_usd, spent_usd=spent_usd, reserve_usd=reserve_usd)


async def test_two_limiters_see_each_others_budget_holds(redis_url: str, key_prefix: str) -> None:
    first, second = _limiter(redis_url, key_prefix), _limiter(redis_url, key_prefix)
    try:
        decisions = await asyncio.gather(
            *((first if i % 2 else second).acquire(f"k{i}", rpm=None, daily_tokens=None, budget=_ask(0.3)) for i in range(40))
        )
        # Holds of $0.30 on a $1 budget: admitted while held < $1, so four (the last one to $1.20).
        assert sum(d.allowed for d in decisions) == 4
        assert {d.reason for d in decisions if not d.allowed} == {"budget"}
        refused = next(d for d in decisions if not d.allowed)
        assert refused.budget_pending_usd == 1.2
        assert all(d.budget_held and d.reservation_id for d in decisions if d.allowed)
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_budget_refusal_counts_nothing_against_the_keys_limits(redis_url: str, key_prefix: str) -> None:
    limiter = _limiter(redis_url, key_prefix)
    try:
        spent = await limiter.acquire("key", rpm=1, daily_tokens=100, reserve_tokens=50, budget=_ask(0.1, spent_usd=1.0))
        assert not spent.allowed and spent.reason == "budget" and spent.reservation_id is None
        # The key's one request of the minute and its tokens are still there.
        allowed = await limiter.acquire("key", rpm=1, daily_tokens=100, reserve_tokens=100)
        assert allowed.allowed and allowed.remaining_tokens == 100
    finally:
        await limiter.aclose()


async def test_settling_swaps_the_hold_for_the_real_cost_until_the_database_shows_it(redis_url: str, key_prefix: str) -> None:
    limiter = _limiter(redis_url, key_prefix, budget_visibility_s=0.3)
    try:
        held = await limiter.acquire("key", rpm=None, daily_tokens=None, budget=_ask(0.9))
        assert held.allowed and held.reservation_id is not None
        assert not (await limiter.acquire("key", rpm=None, daily_tokens=None, budget=_ask(0.01, spent_usd=0.1))).allowed
        await limiter.settle_budget("org", held.reservation_id, 0.5)
        # The hold is gone, the $0.50 counts: $0.40 left under the budget whatever the database shows yet.
        assert (await limiter.acquire("key", rpm=None, daily_tokens=None, budget=_ask(0.0, spent_usd=0.45))).allowed
        refused = await limiter.acquire("key", rpm=None, daily_tokens=None, budget=_ask(0.0, spent_usd=0.5))
        assert not refused.allowed and refused.budget_pending_usd == 0.5
        # Once the database figure has had time to show it, the settled cost stops counting here.
        deadline = time.monotonic() + 20
        while not (await limiter.acquire("key", rpm=None, daily_tokens=None, budget=_ask(0.0, spent_usd=0.5))).allowed:
            assert time.monotonic() < deadline, "the settled cost never stopped counting"
            await asyncio.sleep(0.05)
    finally:
        await limiter.aclose()


async def test_a_call_within_a_request_is_not_held_back_by_that_requests_own_hold(redis_url: str, key_prefix: str) -> None:
    limiter = _limiter(redis_url, key_prefix)
    try:
        outer = await limiter.acquire("key", rpm=None, daily_tokens=None, budget=_ask(1.0))
        assert outer.allowed and outer.reservation_id is not None
        assert not (await limiter.acquire("key", rpm=None, daily_tokens=None, budget=_ask(0.1))).allowed
        inner = await limiter.acquire(
            "key", rpm=None, daily_tokens=None, within_reservation=outer.reservation_id, budget=_ask(0.1)
        )
        assert inner.allowed
    finally:
        await limiter.aclose()
