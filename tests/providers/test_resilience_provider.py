"""Retries, circuit breaker and fallbacks, against scripted upstream failures over real HTTP."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from runtime.config import ProviderConfig
from runtime.errors import UpstreamError
from runtime.json_types import JSON
from runtime.providers.anthropic import AnthropicProvider
from runtime.providers.resilience import (
    CircuitBreaker,
    CircuitOpenError,
    backoff_delay,
    call_with_retries,
    open_stream_with_retries,
)
from tests.fakes.anthropic_server import (
    DEFAULT_API_KEY,
    Fail,
    FakeAnthropic,
    Reply,
    Slow,
    StreamFail,
    closed_port_url,
    fake_anthropic,
    fake_anthropic_server,
)

__all__ = ["fake_anthropic", "fake_anthropic_server"]  # fixtures used by name

BODY: JSON = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hello"}]}
FAST = {"base_delay_s": 0.01, "max_delay_s": 0.5}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_provider(base_url: str, *, timeout_s: float = 5.0) -> AnthropicProvider:
    return AnthropicProvider(
        ProviderConfig(
            id="claude",
            kind="anthropic",
            base_url=base_url,
            api_key=DEFAULT_API_KEY,
            timeout_s=timeout_s,
            connect_timeout_s=0.5,
        )
    )


@pytest.fixture
async def provider(fake_anthropic: FakeAnthropic) -> AsyncIterator[AnthropicProvider]:
    adapter = make_provider(fake_anthropic.base_url, timeout_s=0.3)
    yield adapter
    await adapter.aclose()


@pytest.fixture
async def dead_provider() -> AsyncIterator[AnthropicProvider]:
    adapter = make_provider(closed_port_url())
    yield adapter
    await adapter.aclose()


def stream_text(chunks: list[JSON]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


# -- circuit breaker -------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures_and_half_opens_after_cooldown() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=10, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    breaker.record_success()  # a success in between resets the count
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == "open"
    assert not breaker.allow()
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.state == "half_open"
    assert breaker.allow()  # the single trial call
    assert not breaker.allow()  # nobody else while the trial runs
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.allow()


def test_failed_trial_reopens_for_a_full_cooldown() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    clock.now += 4
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()


def test_trial_that_never_reports_does_not_wedge_the_breaker() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    assert breaker.allow()  # trial started, then cancelled: no outcome recorded
    clock.now += 4
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()


def test_backoff_is_full_jitter_capped() -> None:
    delays = [backoff_delay(4, base_delay_s=0.1, max_delay_s=1.0) for _ in range(200)]
    assert all(0 <= d <= 1.0 for d in delays)
    assert max(delays) > 0.5 and min(delays) < 0.5  # spread, not a constant
    assert all(backoff_delay(0, base_delay_s=0.1, max_delay_s=1.0) <= 0.1 for _ in range(50))


# -- retries against the fake server ---------------------------------------------


async def test_retries_500_then_529_honouring_retry_after(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script([Fail(500), Fail(529, retry_after=0.3), Reply(text="finally")])
    retries: list[tuple[int, int | None, float]] = []
    started = time.monotonic()
    completion = await call_with_retries(
        lambda: provider.chat(BODY),
        max_retries=3,
        on_retry=lambda n, err, delay: retries.append((n, err.status, delay)),
        **FAST,
    )
    elapsed = time.monotonic() - started
    assert completion["choices"][0]["message"]["content"] == "finally"
    assert len(fake_anthropic.requests) == 3
    assert [(n, status) for n, status, _ in retries] == [(1, 500), (2, 529)]
    assert retries[1][2] >= 0.3
    assert elapsed >= 0.3


async def test_client_errors_are_not_retried(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script([Fail(400, message="bad"), Reply(text="never")])
    with pytest.raises(UpstreamError) as info:
        await call_with_retries(lambda: provider.chat(BODY), max_retries=3, **FAST)
    assert info.value.status == 400
    assert len(fake_anthropic.requests) == 1


async def test_exhausted_retries_reraise_the_last_error(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script([Fail(500), Fail(502), Fail(529)])
    with pytest.raises(UpstreamError) as info:
        await call_with_retries(lambda: provider.chat(BODY), max_retries=2, **FAST)
    assert info.value.status == 529
    assert len(fake_anthropic.requests) == 3


async def test_retry_after_beyond_max_delay_fails_fast_for_failover(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script([Fail(429, retry_after=60), Reply(text="later")])
    started = time.monotonic()
    with pytest.raises(UpstreamError) as info:
        await call_with_retries(lambda: provider.chat(BODY), max_retries=3, **FAST)
    assert info.value.status == 429 and info.value.retry_after == 60
    assert time.monotonic() - started < 1
    assert len(fake_anthropic.requests) == 1


async def test_slow_response_beyond_timeout_is_retried(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script([Slow(1.0), Reply(text="fast now")])
    errors: list[UpstreamError] = []
    completion = await call_with_retries(
        lambda: provider.chat(BODY),
        max_retries=2,
        on_retry=lambda n, err, delay: errors.append(err),
        **FAST,
    )
    assert completion["choices"][0]["message"]["content"] == "fast now"
    assert len(errors) == 1 and errors[0].status is None and "timed out" in errors[0].message


async def test_connection_refused_is_retried_then_raised(dead_provider: AnthropicProvider) -> None:
    attempts: list[int] = []
    with pytest.raises(UpstreamError, match="unreachable"):
        await call_with_retries(
            lambda: dead_provider.chat(BODY),
            max_retries=2,
            on_retry=lambda n, err, delay: attempts.append(n),
            **FAST,
        )
    assert attempts == [1, 2]


# -- circuit breaker with real calls ---------------------------------------------


async def test_breaker_stops_calling_a_failing_provider_and_recovers_after_cooldown(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=30, clock=clock)
    fake_anthropic.script([Fail(500)] * 5)
    with pytest.raises(CircuitOpenError):
        await call_with_retries(lambda: provider.chat(BODY), max_retries=5, breaker=breaker, **FAST)
    assert len(fake_anthropic.requests) == 3  # the breaker cut the retries short
    assert breaker.state == "open"

    started = time.monotonic()
    with pytest.raises(CircuitOpenError) as info:
        await call_with_retries(lambda: provider.chat(BODY), max_retries=5, breaker=breaker)
    assert time.monotonic() - started < 0.05  # failed over at once, no network
    assert info.value.retryable and info.value.status is None
    assert len(fake_anthropic.requests) == 3

    clock.now += 30
    fake_anthropic.script([Reply(text="healthy again")])
    completion = await call_with_retries(
        lambda: provider.chat(BODY), max_retries=0, breaker=breaker
    )
    assert completion["choices"][0]["message"]["content"] == "healthy again"
    assert breaker.state == "closed"


async def test_client_errors_do_not_trip_the_breaker(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=30)
    fake_anthropic.script([Fail(400)] * 3)
    for _ in range(3):
        with pytest.raises(UpstreamError):
            await call_with_retries(lambda: provider.chat(BODY), max_retries=1, breaker=breaker)
    assert breaker.state == "closed"


async def test_connection_errors_open_the_breaker(dead_provider: AnthropicProvider) -> None:
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=30)
    with pytest.raises(CircuitOpenError):
        await call_with_retries(
            lambda: dead_provider.chat(BODY), max_retries=4, breaker=breaker, **FAST
        )
    assert breaker.state == "open" and breaker.consecutive_failures == 2


# -- streams -----------------------------------------------------------------------


async def test_stream_is_retried_until_its_first_chunk(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    text = "streamed after two failures"
    fake_anthropic.script([Fail(529, retry_after=0.05), StreamFail(), Reply(text=text)])
    body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
    chunks = [
        c
        async for c in open_stream_with_retries(
            lambda: provider.stream_chat(body), max_retries=3, **FAST
        )
    ]
    assert stream_text(chunks) == text
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert len(fake_anthropic.requests) == 3


async def test_stream_is_never_retried_after_the_first_chunk(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script([StreamFail(after_text="Half an ans"), Reply(text="never sent")])
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=30)
    received: list[JSON] = []
    with pytest.raises(UpstreamError) as info:
        async for chunk in open_stream_with_retries(
            lambda: provider.stream_chat({**BODY, "stream": True}),
            max_retries=3,
            breaker=breaker,
            **FAST,
        ):
            received.append(chunk)
    assert info.value.status == 529
    assert stream_text(received) == "Half an ans"
    assert len(fake_anthropic.requests) == 1
    assert breaker.state == "open"  # a mid-stream failure still counts against the provider


async def test_slow_stream_opening_times_out_and_is_retried(
    provider: AnthropicProvider, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script([Slow(1.0), Reply(text="ok")])
    chunks = [
        c
        async for c in open_stream_with_retries(
            lambda: provider.stream_chat({**BODY, "stream": True}), max_retries=1, **FAST
        )
    ]
    assert stream_text(chunks) == "ok"
