"""The same behaviour from both backends: Redis (shared) and in-process."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from runtime.limits import InProcessLimiter, Limiter, RedisLimiter, create_limiter

MakeLimiter = Callable[..., Limiter]


@pytest.fixture(params=["redis", "in-process"])
async def make_limiter(request: pytest.FixtureRequest) -> AsyncIterator[MakeLimiter]:
    made: list[Limiter] = []
    if request.param == "redis":
        url: str | None = request.getfixturevalue("redis_url")
        prefix: str = request.getfixturevalue("key_prefix")
    else:
        url, prefix = None, "unused:"

    def make(**kwargs: object) -> Limiter:
        # A generous timeout: these tests are about counting, not about latency
        # on a CPU shared with other test runs.
        limiter = create_limiter(url, timeout_s=2.0, key_prefix=prefix, **kwargs)  # type: ignore[arg-type]
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.aclose()


async def test_backend_follows_the_redis_url() -> None:
    assert isinstance(create_limiter(None), InProcessLimiter)
    limiter = create_limiter("redis://127.0.0.1:1/0")
    assert isinstance(limiter, RedisLimiter)
    assert isinstance(limiter, Limiter)
    await limiter.aclose()


async def test_concurrent_burst_of_ten_times_rpm_lets_exactly_rpm_through(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter()
    decisions = await asyncio.gather(
        *(limiter.acquire("burst", rpm=20, daily_tokens=None) for _ in range(200))
    )
    allowed = [d for d in decisions if d.allowed]
    assert len(allowed) == 20
    # Each admitted request saw a distinct count: no two read the same state.
    assert sorted(d.remaining_requests for d in allowed) == list(range(20))
    refused = [d for d in decisions if not d.allowed]
    assert all(d.reason == "rpm" and d.remaining_requests == 0 for d in refused)
    assert all(d.retry_after_s is not None and 0 < d.retry_after_s <= 60 for d in refused)


async def test_refused_requests_do_not_consume_quota_and_window_slides(
    make_limiter: MakeLimiter,
) -> None:
    window = 1.0
    limiter = make_limiter(window_s=window)

    async def admitted(count: int) -> int:
        results = [await limiter.acquire("slide", rpm=3, daily_tokens=None) for _ in range(count)]
        return sum(d.allowed for d in results)

    assert await admitted(2) == 2
    await asyncio.sleep(window / 2)
    assert await admitted(1) == 1
    # Hammering a full window must not push its reset further out.
    assert await admitted(10) == 0
    refused = await limiter.acquire("slide", rpm=3, daily_tokens=None)
    assert not refused.allowed and refused.retry_after_s is not None
    # The first two requests age out first; the third is still in the window.
    assert refused.retry_after_s <= window / 2 + 0.01
    await asyncio.sleep(refused.retry_after_s + 0.05)
    # A fixed window would grant 3 here; a log counting refusals would grant 0.
    assert await admitted(5) == 2


async def test_headers_count_down_and_reset_within_the_window(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    first = await limiter.acquire("hdr", rpm=5, daily_tokens=1000)
    second = await limiter.acquire("hdr", rpm=5, daily_tokens=1000)
    assert (first.remaining_requests, second.remaining_requests) == (4, 3)
    assert second.limit_requests == 5 and second.limit_tokens == 1000
    assert second.reset_requests_s is not None and 59 < second.reset_requests_s <= 60
    headers = second.headers()
    assert headers["x-ratelimit-remaining-requests"] == "3"
    assert headers["x-ratelimit-remaining-tokens"] == "1000"
    assert headers["x-ratelimit-reset-tokens"] == "0s"  # nothing used yet today
    assert "Retry-After" not in headers


async def test_daily_token_cap_refuses_once_reached_without_using_rpm(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter()
    assert (await limiter.acquire("tok", rpm=10, daily_tokens=100)).allowed
    await limiter.record_tokens("tok", 60)
    after_60 = await limiter.acquire("tok", rpm=10, daily_tokens=100)
    assert after_60.allowed and after_60.remaining_tokens == 40
    # The cap is checked before a call, usage arrives after it: overshoot is possible.
    await limiter.record_tokens("tok", 50)
    refused = await limiter.acquire("tok", rpm=10, daily_tokens=100)
    assert not refused.allowed
    assert refused.reason == "daily_tokens"
    assert refused.remaining_tokens == 0
    assert refused.remaining_requests == 8  # the refusal took no RPM slot
    now = time.time()
    until_midnight = 86_400 - now % 86_400
    assert refused.retry_after_s == pytest.approx(until_midnight, abs=2)
    assert refused.reset_tokens_s == pytest.approx(until_midnight, abs=2)
    assert refused.headers()["Retry-After"] == str(math.ceil(refused.retry_after_s))
    # Another key is untouched.
    assert (await limiter.acquire("other", rpm=10, daily_tokens=100)).allowed


async def test_token_counter_starts_over_in_the_next_period(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(token_period_s=1)
    # Start just after a period boundary so the whole setup lands in one period.
    await asyncio.sleep(1.02 - time.time() % 1)
    await limiter.record_tokens("day", 500)
    refused = await limiter.acquire("day", rpm=None, daily_tokens=500)
    assert not refused.allowed and refused.retry_after_s is not None
    assert refused.retry_after_s <= 1
    await asyncio.sleep(refused.retry_after_s + 0.05)
    fresh = await limiter.acquire("day", rpm=None, daily_tokens=500)
    assert fresh.allowed and fresh.remaining_tokens == 500


async def test_zero_and_unlimited_limits(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    unlimited = await limiter.acquire("free", rpm=None, daily_tokens=None)
    assert unlimited.allowed and unlimited.headers() == {}
    blocked = await limiter.acquire("zero", rpm=0, daily_tokens=None)
    assert not blocked.allowed and blocked.reason == "rpm"
    assert blocked.retry_after_s == pytest.approx(60)
    await limiter.record_tokens("free", 0)  # a no-op, not an error


async def _run_in_thread_loop(job: Callable[[], Awaitable[int]]) -> int:
    return await asyncio.to_thread(lambda: asyncio.run(job()))  # type: ignore[arg-type]


async def test_in_process_windows_of_addresses_that_went_quiet_are_swept() -> None:
    """One window per key or client address: a flood of addresses does not stay in memory."""
    limiter = InProcessLimiter(window_s=0.05)
    for wave in range(3):
        for address in range(2000):
            assert (await limiter.acquire(f"ip:{wave}:{address}", rpm=5, daily_tokens=None)).allowed
        await asyncio.sleep(0.06)  # the whole wave goes quiet
    assert len(limiter._requests) <= 2 * 2000  # not 6,000: earlier waves were swept


async def test_in_process_limits_hold_across_event_loops_in_threads() -> None:
    limiter = InProcessLimiter()

    async def burst() -> int:
        decisions = await asyncio.gather(
            *(limiter.acquire("threads", rpm=15, daily_tokens=None) for _ in range(60))
        )
        return sum(d.allowed for d in decisions)

    totals = await asyncio.gather(*(_run_in_thread_loop(burst) for _ in range(4)))
    assert sum(totals) == 15


async def test_reservations_hold_the_cap_for_a_concurrent_burst(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    # 200 requests at once, each reserving 30 tokens of a 100-token day: admitted while
    # settled + reserved stays under the cap, so 4 (0, 30, 60, 90 held before each).
    decisions = await asyncio.gather(
        *(limiter.acquire("held", rpm=None, daily_tokens=100, reserve_tokens=30) for _ in range(200))
    )
    admitted = [d for d in decisions if d.allowed]
    assert len(admitted) == 4
    assert sorted(d.remaining_tokens for d in admitted) == [10, 40, 70, 100]
    assert all(d.reservation_id and d.reserved_tokens == 30 for d in admitted)
    assert all(d.reason == "daily_tokens" and d.reservation_id is None for d in decisions if not d.allowed)
    # Settling with the real (smaller) figures gives the unused reservations back.
    for decision in admitted:
        await limiter.record_tokens("held", 10, reservation_id=decision.reservation_id)
    after = await limiter.acquire("held", rpm=None, daily_tokens=100, reserve_tokens=30)
    assert after.allowed and after.remaining_tokens == 60


async def test_a_failed_request_releases_its_whole_reservation(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    first = await limiter.acquire("fail", rpm=None, daily_tokens=100, reserve_tokens=1000)
    assert first.allowed
    assert not (await limiter.acquire("fail", rpm=None, daily_tokens=100, reserve_tokens=1)).allowed
    await limiter.record_tokens("fail", 0, reservation_id=first.reservation_id)
    again = await limiter.acquire("fail", rpm=None, daily_tokens=100, reserve_tokens=1)
    assert again.allowed and again.remaining_tokens == 100


async def test_a_reservation_never_settled_lapses(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(reservation_ttl_s=0.2)
    assert (await limiter.acquire("lapse", rpm=None, daily_tokens=100, reserve_tokens=500)).allowed
    assert not (await limiter.acquire("lapse", rpm=None, daily_tokens=100)).allowed
    deadline = time.monotonic() + 10
    while not (decision := await limiter.acquire("lapse", rpm=None, daily_tokens=100)).allowed:
        assert time.monotonic() < deadline, "the reservation never lapsed"
        await asyncio.sleep(0.05)
    assert decision.remaining_tokens == 100


async def test_settling_a_reservation_twice_releases_it_once(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    one = await limiter.acquire("twice", rpm=None, daily_tokens=100, reserve_tokens=40)
    two = await limiter.acquire("twice", rpm=None, daily_tokens=100, reserve_tokens=40)
    await limiter.record_tokens("twice", 5, reservation_id=one.reservation_id)
    await limiter.record_tokens("twice", 0, reservation_id=one.reservation_id)
    check = await limiter.acquire("twice", rpm=None, daily_tokens=100)
    assert check.remaining_tokens == 100 - 5 - 40  # two's 40 still held
    assert two.allowed


async def test_a_call_inside_a_request_is_not_held_back_by_that_requests_own_reservation(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    # An orchestrated request holds the whole cap; its tool's sampling call still gets through...
    outer = await limiter.acquire("inner", rpm=None, daily_tokens=100, reserve_tokens=100)
    inner = await limiter.acquire("inner", rpm=None, daily_tokens=100, reserve_tokens=20, within_reservation=outer.reservation_id)
    assert inner.allowed and inner.remaining_tokens == 100
    # ...while another request of the key, and a call inside no request, are refused.
    assert not (await limiter.acquire("inner", rpm=None, daily_tokens=100, reserve_tokens=1)).allowed
    assert not (await limiter.acquire("inner", rpm=None, daily_tokens=100, within_reservation="unknown")).allowed
