"""Provider resilience, independent of the wire format: retries and a circuit breaker.

Policy, shared by every provider kind:

- only an :class:`UpstreamError` with ``retryable=True`` is retried (connection
  errors, timeouts, 429, 5xx, 529); request errors never are;
- the wait is ``max(retry_after, full-jitter exponential backoff)``; a
  ``retry_after`` longer than ``max_delay_s`` is not waited for: the error is
  raised at once so the caller can fail over to a fallback instead;
- a stream is retried only until its first chunk is in hand: once a chunk has
  been yielded to the caller nothing is retried, because bytes may have reached
  the client;
- a :class:`CircuitBreaker` per provider opens after ``failure_threshold``
  consecutive failures, refuses calls (``CircuitOpenError``, immediately) for
  ``cooldown_s``, then lets one trial call through (half-open).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, TypeVar

from runtime.errors import UpstreamError

T = TypeVar("T")

BreakerState = Literal["closed", "open", "half_open"]
OnRetry = Callable[[int, UpstreamError, float], None]


class CircuitOpenError(UpstreamError):
    """Raised without calling the provider while its breaker is open."""

    def __init__(self, message: str = "circuit breaker open: provider recently failing") -> None:
        super().__init__(message, status=None, retryable=True)


class CircuitBreaker:
    """Consecutive-failure breaker with a single half-open trial call.

    Not thread-safe by design: each gateway process runs one event loop and
    keeps its own breakers (a process that has not seen failures keeps calling).
    """

    def __init__(
        self,
        *,
        failure_threshold: int,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_started_at: float | None = None

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self._trial_started_at is not None:
            return "half_open"
        if self._clock() - self._opened_at >= self.cooldown_s:
            return "half_open"
        return "open"

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def allow(self) -> bool:
        """May a call go out now? In half-open state this admits a single trial."""
        if self._opened_at is None:
            return True
        now = self._clock()
        if self._trial_started_at is not None:
            # A trial whose outcome never came back (cancelled) must not wedge the breaker.
            if now - self._trial_started_at < self.cooldown_s:
                return False
            self._trial_started_at = now
            return True
        if now - self._opened_at < self.cooldown_s:
            return False
        self._trial_started_at = now
        return True

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_started_at = None

    def record_failure(self) -> None:
        self._failures += 1
        if self._trial_started_at is not None or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
            self._trial_started_at = None


def backoff_delay(attempt: int, *, base_delay_s: float, max_delay_s: float) -> float:
    """Full jitter: uniform in [0, min(max, base * 2**attempt)] (attempt counts from 0)."""
    ceiling = min(max_delay_s, base_delay_s * (2**attempt))
    return random.uniform(0.0, ceiling)


def _record(breaker: CircuitBreaker | None, error: UpstreamError | None) -> None:
    if breaker is None:
        return
    # A request the provider rightly refused says nothing about its health, and a
    # provider that throttles one organisation is busy, not broken: opening the
    # breaker would turn one tenant's 429s into an outage for every tenant.
    if error is not None and error.throttled:
        return
    if error is None or error.client_error:
        breaker.record_success()
    else:
        breaker.record_failure()


async def call_with_retries(
    op: Callable[[], Awaitable[T]],
    *,
    max_retries: int,
    base_delay_s: float = 0.2,
    max_delay_s: float = 8.0,
    on_retry: OnRetry | None = None,
    breaker: CircuitBreaker | None = None,
) -> T:
    """Await ``op()``, retrying retryable :class:`UpstreamError`s up to ``max_retries`` times.

    ``on_retry(retry_number, error, delay_s)`` is called before each wait
    (retry_number counts from 1). With a ``breaker``, every attempt asks it
    first (an open breaker raises :class:`CircuitOpenError` at once, never
    retried) and reports its outcome to it. The last error is re-raised.
    """
    attempt = 0
    while True:
        if breaker is not None and not breaker.allow():
            raise CircuitOpenError()
        try:
            result = await op()
        except UpstreamError as error:
            _record(breaker, error)
            if not error.retryable or attempt >= max_retries:
                raise
            delay = backoff_delay(attempt, base_delay_s=base_delay_s, max_delay_s=max_delay_s)
            if error.retry_after is not None:
                if error.retry_after > max_delay_s:
                    raise
                delay = max(delay, error.retry_after)
            attempt += 1
            if on_retry is not None:
                on_retry(attempt, error, delay)
            await asyncio.sleep(delay)
            continue
        _record(breaker, None)
        return result


async def _aclose(stream: AsyncIterator[Any]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


async def _open(start: Callable[[], AsyncIterator[T]]) -> tuple[AsyncIterator[T], list[T]]:
    """A fresh stream and its first item (none if it is empty), closed on failure."""
    stream = start()
    try:
        return stream, [await anext(stream)]
    except StopAsyncIteration:
        return stream, []
    except BaseException:
        await _aclose(stream)
        raise


async def open_stream_with_retries(
    start: Callable[[], AsyncIterator[T]],
    *,
    max_retries: int,
    base_delay_s: float = 0.2,
    max_delay_s: float = 8.0,
    on_retry: OnRetry | None = None,
    breaker: CircuitBreaker | None = None,
) -> AsyncIterator[T]:
    """Yield a stream whose opening (up to its first item) is retried.

    Each attempt calls ``start()`` for a fresh stream and pulls its first item
    under the retry policy of :func:`call_with_retries`. That item and the rest
    are then yielded with no further retries: an error after the first item
    propagates as is (and counts as a breaker failure).
    """

    stream, head = await call_with_retries(
        lambda: _open(start),
        max_retries=max_retries,
        base_delay_s=base_delay_s,
        max_delay_s=max_delay_s,
        on_retry=on_retry,
        breaker=breaker,
    )
    try:
        for item in head:
            yield item
        if not head:
            return
        try:
            async for item in stream:
                yield item
        except UpstreamError as error:
            if breaker is not None and not error.client_error:
                breaker.record_failure()
            raise
    finally:
        await _aclose(stream)
